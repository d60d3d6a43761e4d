"""Small shared helpers: devices, seeding, version stamps, optional extras, atomic writes."""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import importlib
import json
import logging
import os
import platform
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

# The package version (pyproject.toml says the same); here, in the lowest layer, so that every
# layer can stamp it.
__version__ = "0.1.0"


# The optional dependencies, by top-level module, and the extra (pyproject.toml) that installs each.
# The core (DRIndex, DeepRetrieval on arrays, bundles) needs none of them.
EXTRAS = {
    "pandas": "pandas",
    "implicit": "baselines",
    "faiss": "baselines",
    "threadpoolctl": "baselines",
    "matplotlib": "plots",
    "pyarrow": "parquet",
    "fastapi": "serve",
    "uvicorn": "serve",
    "prometheus_client": "serve",
    "scann": "scann",
}


class MissingExtra(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, purpose: str) -> Any:
    """Import ``module`` (one of :data:`EXTRAS`' packages, or a submodule of one), or raise
    :class:`MissingExtra`: one line saying what ``purpose`` needs and the ``pip install`` to run.

    Only the package itself being absent becomes that message; an installed package that fails
    to import (a broken build) raises its own error.
    """
    top = module.partition(".")[0]
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if exc.name is None or exc.name.partition(".")[0] != top:
            raise
        raise MissingExtra(
            f"{purpose} needs {top}, which is not installed; install it with"
            f" pip install 'deep-retrieval[{EXTRAS[top]}]'"
        ) from exc


class LazyModule:
    """A module imported on first attribute access through :func:`require`, for modules that use
    an optional package in many places: ``pd = LazyModule("pandas", "reading rating files")``."""

    def __init__(self, module: str, purpose: str) -> None:
        self._module, self._purpose = module, purpose

    def __getattr__(self, name: str) -> Any:
        return getattr(require(self._module, self._purpose), name)


# ------------------------------------------------------------------------- progress of long steps
# The factory of progress bars for the steps inside a show_progress block (None: no bars). A
# context variable rather than an argument threaded through every layer: the steps that report
# (network-step batches, path scoring, assignment sweeps) sit several calls below fit().
_BARS: contextvars.ContextVar[Callable[..., Any] | None] = contextvars.ContextVar(
    "deep_retrieval_bars", default=None
)


@contextlib.contextmanager
def show_progress(bars: Callable[..., Any] | None = None) -> Iterator[None]:
    """Within this block, the long steps of training (network-step batches, path scoring, path
    assignment sweeps) show progress bars made by ``bars(total=N or None, desc=…, unit=…)``:
    anything with tqdm's signature, ``update(n)`` and ``close()``; default
    ``tqdm.auto.tqdm(leave=False)``. The library shows none outside such a block.

    Example::

        with deep_retrieval.show_progress():
            model.fit(split)
    """
    if bars is None:
        from tqdm.auto import tqdm

        def bars(**kwargs: Any) -> Any:
            return tqdm(leave=False, **kwargs)

    token = _BARS.set(bars)
    try:
        yield
    finally:
        _BARS.reset(token)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@contextlib.contextmanager
def progress(total: int | None, desc: str, unit: str) -> Iterator[Any]:
    """A progress bar for one step (``update(n)``), or one that shows nothing outside
    :func:`show_progress`."""
    bars = _BARS.get()
    bar = _NoBar() if bars is None else bars(total=total, desc=desc, unit=unit)
    try:
        yield bar
    finally:
        bar.close()


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` → ``"cuda"`` when a GPU is visible, else ``"cpu"``; other values are checked."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda[:N], got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} asked for, but torch sees no CUDA GPU; use --device cpu"
        )
    return device


def adam(params: Any, lr: float, weight_decay: float) -> Any:
    """``torch.optim.Adam`` over ``params`` (tensors or param groups), fused where the device
    supports it: the per-step update of the (V, E) tables is a noticeable share of a CPU step,
    and the fused kernel is several times faster than foreach."""
    import torch

    params = list(params)
    try:
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's global state and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def versions() -> dict[str, str]:
    """Library versions stamped into results and saved models."""
    import torch

    return {
        "deep_retrieval": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so a crash never leaves
    half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fault_point(name: str) -> None:
    """Kill this process with SIGKILL when ``$DEEP_RETRIEVAL_CRASH_AT`` equals ``name``.

    Fault injection for the crash tests (``tests/test_checkpoint.py``): a real SIGKILL at a named
    point of training, of a checkpoint write or of a directory swap, nothing else. Unset, it
    costs one lookup.
    """
    if os.environ.get("DEEP_RETRIEVAL_CRASH_AT") == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------- directories written whole
def _swap_old(path: Path) -> Path:
    return path.with_name(f".{path.name}.old")


def recover_directory(path: str | os.PathLike) -> None:
    """Undo a swap cut short: a process stopped between the two renames of
    :func:`write_directory` leaves ``path`` absent and its last complete version in
    ``.NAME.old``; move that back (nothing else ever deletes it)."""
    path = Path(path)
    old = _swap_old(path)
    if not path.exists() and old.is_dir():
        os.replace(old, path)
        logging.getLogger("deep_retrieval").warning(
            "%s was being replaced when a process stopped: restored its last complete version",
            path,
        )



def file_record(file: Path) -> dict[str, Any]:
    return {"bytes": file.stat().st_size, "sha256": _sha256(file)}


def _sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def check_files(path: Path, files: dict[str, Any] | None, *, verify: bool) -> None:
    """Every file the manifest lists exists with its recorded size (and SHA-256 with ``verify``)."""
    if files is None:  # format version 1 recorded no files
        return
    for name, record in files.items():
        file = path / name
        if Path(name).name != name:
            raise ValueError(f"{path}/manifest.json lists an invalid file name {name!r}")
        if file.is_symlink():  # it could be read from anywhere outside the directory
            raise ValueError(f"{file} is a symbolic link; a saved directory holds its own files")
        if not file.is_file():
            raise ValueError(
                f"{path} is incomplete: {name} is missing; re-save or retrain the model"
            )
        size = file.stat().st_size
        if size != record["bytes"]:
            raise ValueError(
                f"{file} is truncated or altered: {size} bytes, the manifest says"
                f" {record['bytes']}; re-save or retrain the model"
            )
        if verify and _sha256(file) != record["sha256"]:
            raise ValueError(
                f"{file} is corrupt: its SHA-256 differs from the manifest's; re-save or retrain"
                " the model (or load with verify=False to skip the check)"
            )


def fsync_tree(directory: Path) -> None:
    """Flush every file of ``directory`` and the directory itself (before the rename)."""
    for f in directory.iterdir():
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_directory(
    path: Path, fill: Callable[[Path], dict[str, Any]], *, manifest: str = "manifest.json"
) -> Path:
    """Write directory ``path`` atomically: ``fill(tmp)`` writes the files into a temporary
    directory beside it and returns the manifest (JSON), which gets the size and SHA-256 of every
    file under ``"files"``; everything is flushed to disk, then renamed over ``path``.

    A crash leaves the old directory or the new one, never a mix; one between the two renames
    leaves the old one in ``.NAME.old``, which :func:`recover_directory` (run by every write and
    every bundle load) moves back. Entries of an existing ``path``
    that ``fill`` did not write (e.g. a ``checkpoints/`` folder, a plot) are carried over as hard
    links before the swap, so they survive it without a copy.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_directory(path)  # so that the .old removed below is never the only complete copy
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp"))
    try:
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700; give the usual permissions
        doc = fill(tmp)
        for f in tmp.iterdir():  # writers differ (safetensors makes 0600): the umask decides
            if f.is_file():
                f.chmod(0o666 & ~_umask())
        doc["files"] = {f.name: file_record(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        (tmp / manifest).write_text(json.dumps(doc, indent=2) + "\n")
        fsync_tree(tmp)
        if path.exists():
            old_files: set[str] = set()
            with contextlib.suppress(OSError, ValueError, AttributeError):
                listed = json.loads((path / manifest).read_text()).get("files", {})
                old_files = set(listed) | {manifest}
            for entry in path.iterdir():
                if entry.name in old_files or (tmp / entry.name).exists():
                    continue
                if entry.is_dir():
                    shutil.copytree(entry, tmp / entry.name, copy_function=os.link)
                else:
                    os.link(entry, tmp / entry.name)
            old = _swap_old(path)
            shutil.rmtree(old, ignore_errors=True)  # stale: path exists
            os.replace(path, old)
            fault_point("swap-between-renames")  # the one moment path is absent
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path
