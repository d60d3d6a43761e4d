"""Golden files: the exact recommendations of DR and brute force on latest-small with fixed seeds,
a saved bundle's manifest fields, and a bundle saved before the redesign (issue 12) that must
still load and answer as it did.

Written once before the redesign; a refactor must leave them passing unchanged. Regenerate only
for a change that is meant to move results: ``DR_UPDATE_GOLDEN=1 pytest tests/test_golden.py``
(and say why in the commit).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from deep_retrieval import (
    DeepRetrieval,
    DRConfig,
    ProtocolConfig,
    load_config,
    load_dataset,
    paper_split,
)
from deep_retrieval.baselines import SoftmaxRecommender
from deep_retrieval.config import SoftmaxConfig
from deep_retrieval.data.synthetic import make_clustered

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("DR_UPDATE_GOLDEN") == "1"

DR_SETTINGS = [
    "structure.n_layers=2",
    "structure.n_nodes=16",
    "structure.paths_per_item=2",
    "train.epochs=2",
    "train.joint_epochs=1",
    "train.reranker_epochs=0",  # the golden files predate the default schedule
    "retrieval.target_recall=none",
    "assignment.penalty_scale=none",
    "train.embedding_dim=32",
    "train.n_negatives=128",
    "train.batch_size=512",
    "assignment.n_candidates=8",
]
N = 20
N_QUERIES = 40
# Manifest fields that describe the model (not when or with which library versions it was saved).
MANIFEST_FIELDS = ("format", "format_version", "config", "n_items", "ordered", "encoder",
                   "reranker")


def _check(name: str, doc: dict) -> None:
    file = GOLDEN / f"{name}.json"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        file.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    want = json.loads(file.read_text())
    assert sorted(doc) == sorted(want)
    for key, value in want.items():
        if key.endswith("scores"):
            np.testing.assert_allclose(
                np.asarray(doc[key], float), np.asarray(value, float), rtol=1e-4, atol=1e-4
            )
        else:
            assert doc[key] == value, key


def _recs(ids: np.ndarray, scores: np.ndarray) -> dict:
    return {"ids": ids.tolist(), "scores": np.round(scores.astype(float), 5).tolist()}


@pytest.fixture(scope="module")
def split():
    return paper_split(load_dataset("movielens-latest-small"), ProtocolConfig(seed=0))


def _queries(split):
    hist = split.test_history.rows(np.arange(N_QUERIES))
    return hist, hist  # the history itself is excluded (the paper protocol excludes nothing)


def test_dr_recommendations_and_manifest(split, tmp_path):
    model = DeepRetrieval(load_config(DRConfig, overrides=DR_SETTINGS), device="cpu")
    model.fit(split.train, split.n_items, item_ids=split.item_ids)
    hist, excl = _queries(split)
    ids, scores = model.recommend(hist, N, exclude=excl)
    paths_ids, paths_scores = model.recommend(hist, N, exclude=excl, rerank=False)
    bundle = model.save(tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    _check("dr-latest-small", {
        **_recs(ids, scores),
        "paths_only_ids": paths_ids.tolist(),
        "paths_only_scores": np.round(paths_scores.astype(float), 5).tolist(),
        "item_paths_sha": _sha(model.item_paths_.path_ids.astype(np.int64)),  # values, not width
        "beam_for_n": model.beam_size_for(N),
        "largest_path_size": model.diagnostics()["largest_path_size"],
        "manifest": {k: manifest[k] for k in MANIFEST_FIELDS},
        "files": sorted(manifest["files"]),
    })
    loaded = DeepRetrieval.load(bundle, device="cpu")
    np.testing.assert_array_equal(loaded.recommend(hist, N, exclude=excl)[0], ids)


def test_brute_force_recommendations(split):
    config = SoftmaxConfig(epochs=2, embedding_dim=32, n_negatives=128, batch_size=512)
    model = SoftmaxRecommender(config, seed=0, device="cpu").fit(split.train, split.n_items)
    hist, excl = _queries(split)
    _check("brute-force-latest-small", _recs(*model.recommend(hist, N, exclude=excl)))


def _sha(arr: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _tiny_bundle_inputs():
    data = make_clustered(n_users=300, n_items=120, n_clusters=6, interactions_per_user=20, seed=3)
    split = paper_split(
        data.interactions, ProtocolConfig(n_valid_users=0, n_test_users=50, min_rating=0)
    )
    return split


def test_bundle_saved_before_the_redesign_still_loads(tmp_path):
    """``tests/golden/bundle-v2`` was written by the pre-redesign code (format version 2)."""
    split = _tiny_bundle_inputs()
    bundle = GOLDEN / "bundle-v2"
    if UPDATE:
        model = DeepRetrieval(load_config(DRConfig, overrides=DR_SETTINGS), device="cpu")
        model.fit(split.train, split.n_items, item_ids=split.item_ids)
        model.set_known_users(np.arange(len(split.train)), split.train)
        shutil.rmtree(bundle, ignore_errors=True)
        model.save(bundle)
    loaded = DeepRetrieval.load(bundle, device="cpu")
    ids, scores = loaded.recommend(split.test_history, 10, exclude=split.test_history)
    _check(
        "bundle-v2-recommendations",
        {**_recs(ids, scores), "user_7": loaded.user_history(7).tolist()},
    )
