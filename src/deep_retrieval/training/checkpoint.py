"""Training checkpoints: everything needed to continue a fit exactly where it stopped.

A checkpoint is a directory ``ckpt-<run>-<epoch>-<phase>`` under the checkpoint folder (``run``:
a hash of the fit's config and data), written atomically
(:func:`~deep_retrieval.utils.write_directory`): ``state.safetensors`` (network weights,
optimiser tensors, torch RNG), ``item_paths.npy`` and ``state.json`` (format version, position,
per-epoch log, optimiser settings, numpy / Python / sampler RNG states, a fingerprint of the
config and data), with the size and SHA-256 of each file. ``LATEST`` names the newest; the newest
``keep`` of a fit are kept, and a fit never prunes or resumes another fit's. Phases: ``network``
(after the epoch's network step, before its path assignment) and ``epoch`` (the epoch done). A
process killed at any point loses at most the work since the newest complete checkpoint; a
checkpoint that fails its checksums is skipped for the one before it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..utils import atomic_write_text, check_files, fault_point, write_directory

if TYPE_CHECKING:
    from ..index.state import DRState

log = logging.getLogger("deep_retrieval")

FORMAT = "deep-retrieval-checkpoint"
FORMAT_VERSION = 2  # 2: random states per process
PHASES = ("network", "epoch")
# ckpt-<run>-<epoch>-<phase>: the run is a hash of the fit's fingerprint (config and data), so
# that fits of other settings sharing a folder never prune or resume each other's checkpoints.
# (Names without a run are of an older version.)
_NAME = re.compile(r"^ckpt-(?:([0-9a-f]{12})-)?(\d{4})-(network|epoch)$")

__all__ = ["fault_point", "latest_checkpoint", "load_checkpoint", "run_id", "save_checkpoint"]


def run_id(fingerprint: dict[str, Any]) -> str:
    """The 12 hex digits naming a fit's checkpoints: a hash of its fingerprint."""
    text = json.dumps(fingerprint, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _order(name: str) -> tuple[int, int]:
    m = _NAME.match(name)
    return (int(m.group(2)), PHASES.index(m.group(3))) if m else (-1, -1)


def _checkpoints(folder: Path, run: str | None) -> list[Path]:
    """The checkpoints in ``folder`` of fit ``run`` (all of them for ``None``), oldest first."""
    found = []
    for p in folder.iterdir():
        m = _NAME.match(p.name)
        if m and (run is None or m.group(1) == run):
            found.append(p)
    return sorted(found, key=lambda p: _order(p.name))


def save_checkpoint(
    folder: str | os.PathLike,
    *,
    epoch: int,
    phase: str,
    state: DRState,
    optimizer: torch.optim.Optimizer,
    rng: list[dict[str, Any]],
    fingerprint: dict[str, Any],
    pending: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``(epoch, phase)`` of a fit in progress; returns its directory.

    ``rng``: :func:`capture_rng` of every process, by rank (one entry for a single process).
    """
    from safetensors.torch import save_file

    folder = Path(folder)
    run = run_id(fingerprint)
    name = f"ckpt-{run}-{epoch:04d}-{phase}"

    def fill(tmp: Path) -> dict[str, Any]:
        tensors = {
            f"net.{k}": v.detach().cpu().contiguous().clone()
            for k, v in state.net.state_dict().items()
        }
        opt = optimizer.state_dict()
        scalars: dict[str, dict[str, Any]] = {}
        for pid, entry in opt["state"].items():
            for key, value in entry.items():
                if torch.is_tensor(value):
                    tensors[f"opt.{pid}.{key}"] = value.detach().cpu().contiguous().clone()
                else:
                    scalars.setdefault(str(pid), {})[key] = value
        for rank, states in enumerate(rng):
            tensors[f"rng.torch.{rank}"] = states["torch"]
            if states.get("cuda") is not None:
                tensors[f"rng.cuda.{rank}"] = states["cuda"]
        save_file(tensors, tmp / "state.safetensors")
        # Half written: only the temporary directory exists.
        fault_point(f"checkpoint-write-{epoch:04d}-{phase}")
        np.save(tmp / "item_paths.npy", state.item_paths.path_ids, allow_pickle=False)
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "epoch": epoch,
            "phase": phase,
            "history": state.history,
            "pending": pending,
            "fingerprint": fingerprint,
            "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
            "rng": [
                {k: v for k, v in states.items() if k not in ("torch", "cuda")} for states in rng
            ],
        }

    out = write_directory(folder / name, fill, manifest="state.json")
    atomic_write_text(folder / "LATEST", name + "\n")
    for old in _checkpoints(folder, run)[:-keep]:  # this fit's own, never another's
        shutil.rmtree(old, ignore_errors=True)
    return out


def capture_rng(sampler_rng: np.random.Generator) -> dict[str, Any]:
    """This process's random states: torch (and the current CUDA device's), numpy's global,
    Python's, and the sample shuffler's generator."""
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None,
        "numpy": [x.tolist() if isinstance(x, np.ndarray) else x for x in np.random.get_state()],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "sampler": sampler_rng.bit_generator.state,
    }


def latest_checkpoint(
    folder: str | os.PathLike, fingerprint: dict[str, Any] | None = None
) -> Path | None:
    """The newest checkpoint in ``folder`` that passes its checks, of the fit with
    ``fingerprint`` (any fit's for ``None``); ``None`` when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    run = None if fingerprint is None else run_id(fingerprint)
    for path in reversed(_checkpoints(folder, run)):
        try:
            doc = json.loads((path / "state.json").read_text())
            if doc.get("format") != FORMAT or doc.get("format_version") != FORMAT_VERSION:
                raise ValueError(
                    f"unknown checkpoint format {doc.get('format')!r}"
                    f" {doc.get('format_version')!r}"
                )
            check_files(path, doc.get("files") or {}, verify=True)
            return path
        except (OSError, ValueError) as exc:
            log.warning("skipping checkpoint %s: %s", path, exc)
    return None


def load_checkpoint(
    path: str | os.PathLike,
    *,
    state: DRState,
    optimizer: torch.optim.Optimizer,
    sampler_rng: np.random.Generator,
    fingerprint: dict[str, Any],
    rank: int = 0,
) -> dict[str, Any]:
    """Restore a checkpoint into a fit set up as the one that wrote it (process ``rank`` takes
    its own random states); returns its ``state.json``.

    Raises ``ValueError`` when the checkpoint was written for another config or data set.
    """
    from safetensors.torch import load_file

    path = Path(path)
    doc = json.loads((path / "state.json").read_text())
    if doc["fingerprint"] != fingerprint:
        raise ValueError(
            f"the checkpoints in {path.parent} come from another config or data set; resume with"
            " the same settings, or write to a fresh --out"
        )
    tensors = load_file(path / "state.safetensors")
    state.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
    opt_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = value
    for pid, scalars in doc["optimizer"]["scalars"].items():
        opt_state.setdefault(int(pid), {}).update(scalars)
    optimizer.load_state_dict(
        {"state": opt_state, "param_groups": doc["optimizer"]["param_groups"]}
    )
    torch.set_rng_state(tensors[f"rng.torch.{rank}"])
    if f"rng.cuda.{rank}" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors[f"rng.cuda.{rank}"])
    rng = doc["rng"][rank]
    np_state = rng["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    random.setstate((rng["python"][0], tuple(rng["python"][1]), rng["python"][2]))
    sampler_rng.bit_generator.state = rng["sampler"]
    state.set_paths(np.load(path / "item_paths.npy", allow_pickle=False))
    state.history = doc["history"]
    return doc
