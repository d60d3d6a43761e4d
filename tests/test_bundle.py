"""The model bundle (versioned, checksummed, atomic) and catalogue changes (add / remove items)."""

from __future__ import annotations

import copy
import json
import os
import time

import numpy as np
import pytest
from test_model import TINY

from deep_retrieval.config import DRConfig, ProtocolConfig, load_config
from deep_retrieval.data.protocols import paper_split
from deep_retrieval.data.synthetic import make_clustered
from deep_retrieval.data.types import Sequences
from deep_retrieval.estimator import DeepRetrieval
from deep_retrieval.index.bundle import FORMAT_VERSION
from deep_retrieval.index.catalogue import (
    context_path_scores,
    context_path_scores_reference,
    occurrence_contexts,
)
from deep_retrieval.utils import file_record

N_NEW = 16


@pytest.fixture(scope="module")
def planted():
    """Planted clusters; the last N_NEW items are kept out of training, to be added later."""
    data = make_clustered(n_users=500, n_items=160, n_clusters=8, interactions_per_user=24, seed=0)
    split = paper_split(
        data.interactions, ProtocolConfig(n_valid_users=0, n_test_users=100, min_rating=0)
    )
    cluster = data.item_cluster[split.item_ids.astype(int)]  # per internal id
    n_old = split.n_items - N_NEW
    old_train = _without_new(split.train, n_old)
    model = DeepRetrieval(load_config(DRConfig, overrides=TINY), device="cpu")
    model.fit(old_train, n_old, item_ids=split.item_ids[:n_old])
    model.set_known_users(split.train_user_ids, old_train)
    return split, cluster, model, _without_new(split.test_history, n_old)


def _without_new(rows: Sequences, n_old: int) -> Sequences:
    keep = rows.items < n_old
    lengths = np.bincount(rows.row_ids()[keep], minlength=len(rows))
    return Sequences(np.r_[0, np.cumsum(lengths)], rows.items[keep], rows.ordered)


@pytest.fixture()
def model(planted):
    return copy.deepcopy(planted[2])


def _cluster_queries(
    cluster: np.ndarray, n_old: int, c: int, n_queries: int, seed: int
) -> Sequences:
    pool = np.flatnonzero((cluster == c) & (np.arange(len(cluster)) < n_old))
    rng = np.random.default_rng(seed)
    return Sequences.from_lists([rng.choice(pool, 8, replace=False) for _ in range(n_queries)])


# ---------------------------------------------------------------------------------------- bundle
def test_bundle_round_trip_keeps_index_flags_and_users(model, planted, tmp_path):
    split, queries = planted[0], planted[3]
    model.remove_items(np.array([3, 5]))
    out = model.save(tmp_path / "b")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    listed = set(manifest["files"])
    assert listed == {p.name for p in out.iterdir()} - {"manifest.json"}
    assert {"path_items.npy", "path_indptr.npy", "occupied_paths.npy", "item_flags.npy",
            "user_ids.npy"} <= listed
    assert not any(p.suffix == ".pkl" for p in out.iterdir())
    loaded = DeepRetrieval.load(out, device="cpu")
    for name in ("path_ids", "occupied_paths", "path_indptr", "path_items"):
        np.testing.assert_array_equal(
            getattr(loaded.item_paths_, name), getattr(model.item_paths_, name)
        )
    np.testing.assert_array_equal(loaded.removed_, model.removed_)
    np.testing.assert_array_equal(
        loaded.user_history(split.train_user_ids[7]), model.user_history(split.train_user_ids[7])
    )
    a = model.recommend(queries, 10)
    b = loaded.recommend(queries, 10)
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize(
    "damage, message",
    [
        ("flip", "SHA-256"),
        ("truncate", "truncated"),
        ("delete", "missing"),
        ("version", "version 99"),
        ("manifest", "corrupt"),
    ],
)
def test_load_refuses_damaged_bundles(model, tmp_path, damage, message):
    out = model.save(tmp_path / "b")
    target = out / "item_paths.npy"
    data = target.read_bytes()
    if damage == "flip":
        target.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    elif damage == "truncate":
        target.write_bytes(data[:-8])
    elif damage == "delete":
        target.unlink()
    elif damage == "version":
        manifest = json.loads((out / "manifest.json").read_text())
        manifest["format_version"] = 99
        (out / "manifest.json").write_text(json.dumps(manifest))
    else:
        (out / "manifest.json").write_text('{"format": "deep-retrieval-model", ')
    with pytest.raises(ValueError, match=message):
        DeepRetrieval.load(out, device="cpu")


def _manifest(out, change):
    manifest = json.loads((out / "manifest.json").read_text())
    change(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest))


def _rewrite(out, name, arr):
    """Replace an array and its manifest record: the checksums agree, the contents do not."""
    np.save(out / f"{name}.npy", arr, allow_pickle=False)
    _manifest(out, lambda m: m["files"].update({f"{name}.npy": file_record(out / f"{name}.npy")}))


def _set(key, value):
    return lambda out: _manifest(out, lambda m: m.update({key: value}))


def _drop_sha(out):
    _manifest(out, lambda m: m["files"]["item_counts.npy"].pop("sha256"))


def _symlink(out):
    outside = out.parent / "elsewhere.npy"
    (out / "item_counts.npy").rename(outside)
    (out / "item_counts.npy").symlink_to(outside)


def _unlisted(out):
    _manifest(out, lambda m: m["files"].pop("item_flags.npy"))


def _object_array(out):
    # np.save writes objects only by pickling: the file a loader must never unpickle.
    np.save(out / "item_ids.npy", np.array(["a"] * 3, object), allow_pickle=True)
    _manifest(out, lambda m: m["files"].update({"item_ids.npy": file_record(out / "item_ids.npy")}))


def _users_out_of_range(out):
    items = np.load(out / "user_items.npy")
    items[3] = 10_000
    _rewrite(out, "user_items", items)


CRAFTED = {
    "huge n_items": (_set("n_items", 30_000_000), r"item_paths.npy has shape \(\d+, 2\),"
                     r" expected \(30000000, 2\) \(n_items = 30,000,000"),
    "files a list": (_set("files", []), "files must map each file name to its bytes and sha256"),
    "no sha256": (_drop_sha, "files must map each file name to its bytes and sha256"),
    "no config": (lambda out: _manifest(out, lambda m: m.pop("config")),
                  "config must be an object"),
    "config a list": (_set("config", [1, 2]), "config must be an object"),
    "float n_items": (_set("n_items", 1e12), "n_items must be an integer ≥ 1, got 1000000000000.0"),
    "1-D calibration": (lambda out: _rewrite(out, "beam_calibration", np.arange(4.0)),
                        r"beam_calibration.npy has shape \(4,\), expected 2 dimensions"),
    "short counts": (lambda out: _rewrite(out, "item_counts", np.zeros(5, np.int64)),
                     r"item_counts.npy has shape \(5,\), expected"),
    "short ids": (lambda out: _rewrite(out, "item_ids", np.arange(7)),
                  r"item_ids.npy has shape \(7,\)"),
    "users out of range": (_users_out_of_range, r"user_items holds item ids outside \[0, "),
    "a symlink": (_symlink, "item_counts.npy is a symbolic link"),
    "an unlisted file": (_unlisted, "item_flags.npy is not in the manifest's file list"),
    "an object array": (_object_array, "holds Python objects"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_a_crafted_bundle_is_refused_before_anything_is_allocated(model, tmp_path, case):
    change, message = CRAFTED[case]
    out = model.save(tmp_path / "b")
    change(out)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match=message):
        DeepRetrieval.load(out, device="cpu")
    assert time.perf_counter() - t0 < 5  # e.g. no (30M, E) tables built first


def test_every_saved_file_has_the_umask_permissions(model, tmp_path):
    out = model.save(tmp_path / "b")
    mask = os.umask(0)
    os.umask(mask)
    modes = {f.name: f.stat().st_mode & 0o777 for f in out.iterdir()}
    assert set(modes.values()) == {0o666 & ~mask}, modes  # weights.safetensors too


def test_a_flipped_byte_loads_only_with_verify_off(model, tmp_path):
    out = model.save(tmp_path / "b")
    target = out / "item_counts.npy"
    data = target.read_bytes()
    target.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert DeepRetrieval.load(out, device="cpu", verify=False).n_items_ == model.n_items_


def test_a_failed_save_leaves_the_old_bundle_whole(model, tmp_path, monkeypatch):
    out = model.save(tmp_path / "b")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    model.remove_items(np.array([0]))

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("deep_retrieval.index.bundle.np.save", crash)
    with pytest.raises(OSError, match="No space"):
        model.save(out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(os.listdir(tmp_path)) == ["b"]  # no temporary directory left behind
    assert not DeepRetrieval.load(out, device="cpu").removed_.any()


def test_format_version_1_bundles_load_unverified_to_be_saved_again(model, planted, tmp_path):
    """Version 1 had no checksums, inverted index, flags or users."""
    queries = planted[3]
    out = model.save(tmp_path / "b")
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format_version"] = 1
    del manifest["files"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    for name in ("occupied_paths", "path_indptr", "path_items", "item_flags", "user_ids",
                 "user_indptr", "user_items"):
        (out / f"{name}.npy").unlink()
    with pytest.raises(ValueError, match="records no checksums .* load it once with"
                       r" DeepRetrieval.load\(path, verify=False\) and save it again"):
        DeepRetrieval.load(out, device="cpu")
    loaded = DeepRetrieval.load(out, device="cpu", verify=False)
    np.testing.assert_array_equal(loaded.recommend(queries, 10)[0], model.recommend(queries, 10)[0])
    loaded.save(out)  # now of this version, with checksums
    assert DeepRetrieval.load(out, device="cpu").n_items_ == model.n_items_


# ------------------------------------------------------------------------------------- catalogue
def test_context_path_scores_equal_the_reference_loop():
    rng = np.random.default_rng(0)
    n_items, n_paths, width = 30, 50, 6
    items = rng.integers(0, n_items, 200)
    path_ids = np.stack([rng.choice(n_paths, width, replace=False) for _ in range(200)])
    probs = rng.random((200, width))
    fast = context_path_scores(items, path_ids, probs, n_items, n_paths, 4)
    ids, scores = context_path_scores_reference(items, path_ids, probs, n_items, 4)
    np.testing.assert_array_equal(fast.path_ids, ids)
    np.testing.assert_allclose(fast.scores, scores)
    np.testing.assert_array_equal(fast.counts, np.bincount(items, minlength=n_items))


def test_occurrence_contexts_take_the_items_before_else_the_row():
    rows = Sequences.from_lists([[0, 1, 9, 2], [8, 3], [9, 8]], ordered=True)  # new items: 8, 9
    items, ctx = occurrence_contexts(rows, n_old=5, history_len=10)
    got = [
        (int(v), ctx.items[ctx.indptr[i] : ctx.indptr[i + 1]].tolist()) for i, v in enumerate(items)
    ]
    # row 2 holds no existing item: no context
    assert got == [(9, [0, 1]), (8, [3])]


def test_removed_items_are_never_returned(model, planted):
    queries = planted[3]
    ids, _ = model.recommend(queries, 10)
    gone = np.unique(ids[ids >= 0])[:20]
    assert model.remove_items(gone) == len(gone)
    assert model.remove_items(gone[:3]) == 0  # already removed
    ids2, _ = model.recommend(queries, 10)
    assert not np.isin(ids2, gone).any()
    assert not np.isin(model.popular_items(50)[0], gone).any()
    with pytest.raises(ValueError, match="item ids must lie"):
        model.remove_items(np.array([10_000]))


@pytest.mark.parametrize("source", ["interactions", "features", "neighbours"])
def test_added_items_are_retrieved_for_users_of_their_neighbours(model, planted, source):
    """New items land on their cluster's paths: queries of 8 items of the cluster retrieve them."""
    split, cluster = planted[:2]
    n_old = model.n_items_
    new_ids = split.item_ids[n_old:]
    if source == "interactions":
        new = model.add_items(new_ids, interactions=split.train)
    elif source == "features":
        noise = np.random.default_rng(0).normal(size=(len(cluster), 8))
        features = np.eye(8)[cluster] + 0.3 * noise
        new = model.add_items(new_ids, features=features)
    else:
        nb = [
            np.flatnonzero((cluster == cluster[v]) & (np.arange(len(cluster)) < n_old))[:5]
            for v in range(n_old, len(cluster))
        ]
        new = model.add_items(new_ids, neighbours=Sequences.from_lists(nb))
    assert model.n_items_ == len(cluster)
    assert model.cold_[new].all() == (source != "interactions")
    retrieved, top_new, top_old = [], [], []
    for v in new:
        queries = _cluster_queries(cluster, n_old, cluster[v], 10, int(v))
        cand = model.retrieve(queries, n=10)
        retrieved += [
            v in cand.items[cand.indptr[i] : cand.indptr[i + 1]] for i in range(len(queries))
        ]
        ids, _ = model.recommend(queries, 10)
        top_new.append(np.mean([v in row for row in ids]))
        same = np.flatnonzero((cluster == cluster[v]) & (np.arange(len(cluster)) < n_old))
        top_old.append(np.mean([np.isin(same, row).mean() for row in ids]))
    # Observed: 1.0 for every source.
    assert np.mean(retrieved) >= 0.9
    if source == "interactions":
        # A warm item ranks like the existing items of its cluster. Observed: 0.53 against 0.50.
        assert np.mean(top_new) >= 0.7 * np.mean(top_old)
    # Items of another cluster's queries do not include them.
    other = (cluster[new[0]] + 1) % 8
    ids, _ = model.recommend(_cluster_queries(cluster, n_old, other, 10, 0), 10)
    assert not np.isin(ids, new[cluster[new] == cluster[new[0]]]).any()


def test_add_items_errors_say_what_to_fix(model, planted):
    split = planted[0]
    n_old = model.n_items_
    with pytest.raises(ValueError, match="already in the model"):
        model.add_items(split.item_ids[:2], interactions=split.train)
    with pytest.raises(ValueError, match="nothing says where to put them"):
        model.add_items(["brand-new"], interactions=Sequences.from_lists([[0, 1]]))
    with pytest.raises(ValueError, match="outside"):
        model.add_items(["x"], interactions=Sequences.from_lists([[0, n_old + 5]]))
    assert model.n_items_ == n_old  # nothing changed
    # Identity ids (0 .. V-1, recorded when no ids are given) continue with the next integers;
    # other ids must be given.
    model.state.item_ids = np.arange(n_old)
    added = model.add_items(n_new=1, neighbours=Sequences.from_lists([[0]]))
    assert model.item_ids_.dtype == np.int64 and model.item_ids_[added].tolist() == [n_old]
    model.state.item_ids = model.item_ids_.astype(str)
    with pytest.raises(ValueError, match="pass item_ids"):
        model.add_items(n_new=1, neighbours=Sequences.from_lists([[0]]))


def test_added_items_survive_save_and_load(model, planted, tmp_path):
    split, queries = planted[0], planted[3]
    n_old = model.n_items_
    model.add_items(split.item_ids[n_old:], interactions=split.train)
    loaded = DeepRetrieval.load(model.save(tmp_path / "b"), device="cpu")
    assert loaded.n_items_ == split.n_items
    np.testing.assert_array_equal(loaded.cold_, model.cold_)
    np.testing.assert_array_equal(loaded.recommend(queries, 10)[0], model.recommend(queries, 10)[0])


def test_nan_weights_and_a_diverging_fit_give_clear_errors(model, planted, tmp_path):
    import torch

    with torch.no_grad():
        model.net_.structure.parameters().__next__()[0].fill_(float("nan"))
    out = model.save(tmp_path / "b")
    with pytest.raises(ValueError, match="NaN or inf"):
        DeepRetrieval.load(out, device="cpu")
    split = planted[0]
    cfg = load_config(
        DRConfig, overrides=[*TINY, "train.lr=1e30", "train.epochs=1", "train.joint_epochs=1"]
    )
    with pytest.raises(FloatingPointError, match="diverged"):
        DeepRetrieval(cfg, device="cpu").fit(split.train, split.n_items)
