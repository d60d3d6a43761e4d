"""Packaging: the core installs with six dependencies and works without any extra; a missing
extra is one line naming it."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from deep_retrieval.utils import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]


def test_core_needs_only_the_six_dependencies():
    core = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert core == {"numpy", "scipy", "torch", "safetensors", "numba", "tqdm"}


def test_every_optional_module_has_the_extra_that_installs_it():
    extras = PYPROJECT["project"]["optional-dependencies"]
    distribution = {"faiss": "faiss-cpu", "pyarrow": "pyarrow",
                    "prometheus_client": "prometheus-client"}
    for module, extra in EXTRAS.items():
        assert distribution.get(module, module) in {_name(r) for r in extras[extra]}, module
    # `all` (and so `dev`, which make test installs) covers every extra but scann.
    assert set(EXTRAS.values()) - {"scann"} <= set(
        extras["all"][0].partition("[")[2].rstrip("]").split(",")
    )


# Runs in a fresh interpreter where every optional package is absent (None in sys.modules makes
# `import` raise ModuleNotFoundError, as when it is not installed; torch's probes see "absent").
_WITHOUT_EXTRAS = textwrap.dedent(
    """
    import sys
    for name in {blocked!r}:
        sys.modules[name] = None
    import numpy as np
    import deep_retrieval as dr
    from deep_retrieval.cli import main

    rng = np.random.default_rng(0)
    items = rng.normal(size=(400, 8)).astype(np.float32)
    queries = rng.normal(size=(200, 8)).astype(np.float32)
    index = dr.DRIndex(n_nodes=8, epochs=1).fit(items, queries=queries)
    assert index.search(queries[:3], 5)[0].shape == (3, 5)
    model = dr.DeepRetrieval(dr.load_config(dr.DRConfig, overrides={tiny!r}))
    model.fit([[1, 2, 3], [2, 3, 4], [0, 1, 4]] * 20, n_items=5)
    assert model.recommend([[1, 2]], 3)[0].shape == (1, 3)
    for call in (
        lambda: dr.load_dataset("movielens-latest-small"),
        lambda: dr.ItemCF().fit([[1, 2]], 5),
    ):
        try:
            call()
        except dr.utils.MissingExtra as exc:
            print("MISSING", exc)
    sys.exit(main(["-q", "train", "--dataset", "movielens-latest-small", "--out", {out!r}]))
    """
)


def test_the_core_works_without_any_extra_and_names_the_missing_one(tmp_path):
    tiny = [
        "structure.n_layers=2", "structure.n_nodes=4", "train.epochs=1",
        "train.reranker_epochs=0", "train.joint_epochs=1", "train.embedding_dim=8",
        "train.encoder=mean",
    ]
    script = _WITHOUT_EXTRAS.format(
        blocked=sorted({*EXTRAS, "pydantic"}), tiny=tiny, out=str(tmp_path / "model")
    )
    run = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 2, run.stderr
    missing = [line for line in run.stdout.splitlines() if line.startswith("MISSING")]
    assert missing == [
        "MISSING reading rating files needs pandas, which is not installed; install it with"
        " pip install 'deep-retrieval[pandas]'",
        "MISSING the item-cf baseline needs implicit, which is not installed; install it with"
        " pip install 'deep-retrieval[baselines]'",
    ]
    # The CLI's error is one line and names the extra.
    assert run.stderr.strip().splitlines() == [
        "deep-retrieval train: error: reading rating files needs pandas, which is not"
        " installed; install it with pip install 'deep-retrieval[pandas]'"
    ]
