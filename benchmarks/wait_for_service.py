"""Wait until the service at URL answers /healthz (at most 120 s), for the benchmark scripts."""

import sys
import time

from deep_retrieval.serving.client import RetrievalClient

deadline = time.time() + 120
while True:
    try:
        RetrievalClient(sys.argv[1], timeout=2).health()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("the server did not come up")
        time.sleep(0.5)
