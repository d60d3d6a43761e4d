"""``python -m deep_retrieval`` → the ``deep-retrieval`` command line."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
