"""Shared fixtures. Keep this file small: fixtures used by one test module belong in that module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only folder of real data sets: ``$DEEP_RETRIEVAL_SHARED_DATA`` or
    ``<repo>/../shared/data``.

    Fails (never skips) when it is missing, so that a test run cannot look green without the checks
    against the real data.
    """
    env = os.environ.get("DEEP_RETRIEVAL_SHARED_DATA")
    path = Path(env) if env else REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.fail(
            f"shared data folder not found at {path}: set DEEP_RETRIEVAL_SHARED_DATA to the folder"
            " that holds movielens-100k/, gowalla-lightgcn/, … (see its README.md)",
            pytrace=False,
        )
    return path
