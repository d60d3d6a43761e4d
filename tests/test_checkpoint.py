"""Checkpoints and resume: a training run killed with SIGKILL (mid-epoch, mid-assignment, while
writing a checkpoint) and resumed ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file
from test_model import TINY as TINY_DR

from deep_retrieval.config import DRConfig, ProtocolConfig, load_config
from deep_retrieval.data.protocols import paper_split
from deep_retrieval.data.synthetic import make_clustered
from deep_retrieval.estimator import DeepRetrieval
from deep_retrieval.training.checkpoint import latest_checkpoint

TINY = [
    "dr.structure.n_layers=2",
    "dr.structure.n_nodes=16",
    "dr.train.encoder=mean",
    "dr.train.epochs=3",
    "dr.train.joint_epochs=2",
    "dr.train.reranker_epochs=0",
    "dr.train.embedding_dim=16",
    "dr.assignment.penalty=1e-4",
]


def _train(out, *, crash: str | None = None, resume: bool = False) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "deep_retrieval", "-q", "train",
           "--dataset", "movielens-latest-small", "--out", str(out), "--set", *TINY]
    env = {k: v for k, v in os.environ.items() if k != "DEEP_RETRIEVAL_CRASH_AT"}
    if crash:
        env["DEEP_RETRIEVAL_CRASH_AT"] = crash
    return subprocess.run(
        cmd + (["--resume"] if resume else []), env=env, capture_output=True, text=True, timeout=600
    )


def _result(out) -> tuple[dict, np.ndarray, list]:
    manifest = json.loads((out / "manifest.json").read_text())
    history = [
        {k: v for k, v in e.items() if not k.endswith("_seconds")} for e in manifest["history"]
    ]
    return load_file(out / "weights.safetensors"), np.load(out / "item_paths.npy"), history


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "model"
    done = _train(out)
    assert done.returncode == 0, done.stderr
    return _result(out)


@pytest.mark.parametrize("crash", ["network-1", "assignment-1", "checkpoint-write-0001-epoch"])
def test_killed_training_resumes_to_the_uninterrupted_result(tmp_path, reference, crash):
    out = tmp_path / "model"
    killed = _train(out, crash=crash)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "manifest.json").exists()
    # The newest complete checkpoint survived the kill whole (checksums verified).
    survivor = latest_checkpoint(out / "checkpoints")
    expected = {"network-1": "-0000-epoch", "assignment-1": "-0001-network",
                "checkpoint-write-0001-epoch": "-0001-network"}[crash]
    assert survivor is not None and survivor.name.endswith(expected)
    resumed = _train(out, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    weights, paths, history = _result(out)
    ref_weights, ref_paths, ref_history = reference
    np.testing.assert_array_equal(paths, ref_paths)
    assert weights.keys() == ref_weights.keys()
    for k in weights:
        np.testing.assert_array_equal(weights[k], ref_weights[k], err_msg=k)
    assert history == ref_history
    # kept through the final save
    assert (out / "checkpoints" / "LATEST").read_text().strip().endswith("-0002-epoch")


def test_resume_refuses_checkpoints_of_other_settings(tmp_path):
    out = tmp_path / "model"
    assert _train(out, crash="network-1").returncode == -signal.SIGKILL
    other = subprocess.run(
        [sys.executable, "-m", "deep_retrieval", "-q", "train",
         "--dataset", "movielens-latest-small", "--out", str(out),
         "--resume", "--set", *TINY, "dr.seed=7"], capture_output=True, text=True, timeout=600)
    assert other.returncode == 2 and "another config or data set" in other.stderr


def test_a_corrupt_newest_checkpoint_falls_back_to_the_one_before(tmp_path):
    data = make_clustered(n_users=200, n_items=80, n_clusters=4, interactions_per_user=12, seed=0)
    split = paper_split(
        data.interactions, ProtocolConfig(n_valid_users=0, n_test_users=20, min_rating=0)
    )
    cfg = load_config(DRConfig, overrides=[*TINY_DR, "train.epochs=2", "train.joint_epochs=1"])
    folder = tmp_path / "ckpt"
    model = DeepRetrieval(cfg, device="cpu").fit(split.train, split.n_items, checkpoint_dir=folder)
    kept = sorted(p.name for p in folder.iterdir() if p.name.startswith("ckpt-"))
    run = kept[0].split("-")[1]
    assert kept == [f"ckpt-{run}-0001-epoch", f"ckpt-{run}-0001-network"]  # the newest two
    newest = folder / f"ckpt-{run}-0001-epoch" / "item_paths.npy"
    raw = newest.read_bytes()
    newest.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    assert latest_checkpoint(folder).name == f"ckpt-{run}-0001-network"
    # Saving a model over a directory keeps what else the directory holds (checkpoints, plots).
    out = model.save(tmp_path / "m")
    (out / "path_sizes.png").write_bytes(b"png")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "LATEST").write_text("x\n")
    model.save(out)
    assert (out / "path_sizes.png").read_bytes() == b"png"
    assert (out / "checkpoints" / "LATEST").exists()
    with pytest.raises(ValueError, match="resume needs"):
        DeepRetrieval(cfg, device="cpu").fit(split.train, split.n_items, resume=True)


def test_resume_from_a_reranker_epoch_ends_where_the_uninterrupted_fit_ends(tmp_path):
    """Reranker epochs count in the checkpoints' epochs: a fit resumed from the checkpoint after
    the first reranker epoch equals the uninterrupted fit."""
    import shutil

    data = make_clustered(n_users=200, n_items=80, n_clusters=4, interactions_per_user=12, seed=0)
    split = paper_split(
        data.interactions, ProtocolConfig(n_valid_users=0, n_test_users=20, min_rating=0)
    )
    cfg = load_config(DRConfig, overrides=[*TINY_DR, "train.epochs=1", "train.joint_epochs=0",
                                           "train.reranker_epochs=2"])
    folder, early = tmp_path / "ckpt", tmp_path / "early"

    def keep_first(entry):
        if entry["epoch"] == 1:
            shutil.copytree(folder, early)

    reference = DeepRetrieval(cfg, device="cpu").fit(
        split.train, split.n_items, checkpoint_dir=folder, on_event=keep_first
    )
    assert latest_checkpoint(early).name.endswith("-0000-epoch")
    resumed = DeepRetrieval(cfg, device="cpu").fit(
        split.train, split.n_items, checkpoint_dir=early, resume=True
    )
    np.testing.assert_array_equal(resumed.item_paths_.path_ids, reference.item_paths_.path_ids)
    for k, v in reference.state.net.state_dict().items():
        np.testing.assert_array_equal(resumed.state.net.state_dict()[k].numpy(), v.numpy(), k)

    def timeless(history):
        return [{k: v for k, v in e.items() if not k.endswith("_seconds")} for e in history]

    assert timeless(resumed.history_) == timeless(reference.history_)  # restored, then continued


class _Stop(Exception):
    pass


def test_fits_of_other_settings_never_prune_each_others_checkpoints(tmp_path):
    # Fit A runs to its end; fit B (other settings, same folder) stops after its first epoch.
    # B's one checkpoint must survive A's later-numbered ones, and B resumes to B's own result.
    data = make_clustered(n_users=200, n_items=80, n_clusters=4, interactions_per_user=12, seed=0)
    split = paper_split(
        data.interactions, ProtocolConfig(n_valid_users=0, n_test_users=20, min_rating=0)
    )
    base = [*TINY_DR, "train.epochs=3", "train.joint_epochs=1"]
    a_cfg, b_cfg = (load_config(DRConfig, overrides=[*base, f"seed={s}"]) for s in (0, 1))
    folder = tmp_path / "ckpt"
    DeepRetrieval(a_cfg, device="cpu").fit(split.train, split.n_items, checkpoint_dir=folder)

    def stop_after_first(entry):
        if entry["epoch"] == 1:
            raise _Stop

    with pytest.raises(_Stop):
        DeepRetrieval(b_cfg, device="cpu").fit(split.train, split.n_items, checkpoint_dir=folder,
                                               on_event=stop_after_first)
    runs = {p.name.split("-")[1] for p in folder.iterdir() if p.name.startswith("ckpt-")}
    assert len(runs) == 2  # both fits' checkpoints are there
    resumed = DeepRetrieval(b_cfg, device="cpu").fit(split.train, split.n_items,
                                                     checkpoint_dir=folder, resume=True)
    reference = DeepRetrieval(b_cfg, device="cpu").fit(split.train, split.n_items)
    np.testing.assert_array_equal(resumed.item_paths_.path_ids, reference.item_paths_.path_ids)


def test_a_kill_between_the_renames_of_a_swap_loses_nothing(tmp_path):
    data = make_clustered(n_users=200, n_items=80, n_clusters=4, interactions_per_user=12, seed=0)
    split = paper_split(
        data.interactions, ProtocolConfig(n_valid_users=0, n_test_users=20, min_rating=0)
    )
    model = DeepRetrieval(load_config(DRConfig, overrides=[*TINY_DR, "train.epochs=1",
                                                          "train.joint_epochs=1"]), device="cpu")
    model.fit(split.train, split.n_items)
    out = model.save(tmp_path / "model")
    before = np.load(out / "item_paths.npy")
    # A second save, killed at the one moment the directory is absent.
    script = (
        "import sys; from deep_retrieval import DeepRetrieval;"
        " m = DeepRetrieval.load(sys.argv[1], device='cpu');"
        " m.remove_items([0]); m.save(sys.argv[1])"
    )
    env = {**os.environ, "DEEP_RETRIEVAL_CRASH_AT": "swap-between-renames"}
    killed = subprocess.run([sys.executable, "-c", script, str(out)], env=env, timeout=300)
    assert killed.returncode == -signal.SIGKILL
    assert not out.exists() and (tmp_path / ".model.old").is_dir()
    # The next load (or write) restores the last complete bundle, and nothing deletes it.
    loaded = DeepRetrieval.load(out, device="cpu")
    np.testing.assert_array_equal(loaded.item_paths_.path_ids, before)
    assert not loaded.removed_.any() and not (tmp_path / ".model.old").exists()
