"""Wait until the service at URL answers /healthz (at most 120 s), for the benchmark scripts."""

import sys

from deep_retrieval.serving.client import RetrievalClient

try:
    RetrievalClient(sys.argv[1], timeout=2).wait_until_up()
except TimeoutError as exc:
    sys.exit(str(exc))
