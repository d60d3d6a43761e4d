"""The model bundle: a directory that holds one :class:`~deep_retrieval.index.state.DRState`.

Files: ``manifest.json`` (format version, config, sizes, history, versions, and the byte size
and SHA-256 of every other file), ``weights.safetensors``, ``item_paths.npy`` ``(V, J)`` path ids,
the inverted index ``occupied_paths.npy`` / ``path_indptr.npy`` / ``path_items.npy``,
``item_flags.npy`` ``(V,)`` (1 = cold, 2 = removed), ``item_counts.npy``, ``beam_calibration.npy``
``(2, b)`` (beams, mean candidates); with recall-targeted calibration ``beam_recall.npy``
``(m, 1 + b)`` (``n``, then recall@n per beam, ``nan`` past the scoring budget); when known,
``item_ids.npy`` (external ids) and the known users' histories ``user_ids.npy`` /
``user_indptr.npy`` / ``user_items.npy``; for an index over given vectors, its anchor queries
``anchor_queries.npy`` ``(A, E)`` and ``anchor_thresholds.npy`` ``(A,)``. No pickle. Written
into a temporary directory beside the target, flushed, then renamed over it
(:func:`~deep_retrieval.utils.write_directory`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ConfigError, DRConfig, from_mapping, to_dict
from ..core.modules.softmax import SoftmaxModel
from ..core.paths import ItemPathMap, PathCodec
from ..data.types import Sequences
from ..utils import check_files, recover_directory, versions, write_directory
from .state import ATTRIBUTE_NAME, FLAG_COLD, FLAG_REMOVED, DRState, build_state

FORMAT = "deep-retrieval-model"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


def reranker_options(head: SoftmaxModel) -> dict[str, Any]:
    """The constructor options that rebuild ``head`` (saved in the manifest)."""
    return {
        "bias": head.item_bias is not None,
        "project": head.encoder.proj is not None,
        "normalize": head.normalize,
        "temperature": head.temperature,
    }


def save_bundle(
    state: DRState, path: str | os.PathLike, *, item_ids: np.ndarray | None = None,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write ``state`` into directory ``path``, atomically; ``item_ids`` / ``training`` override
    the state's. Returns the path."""
    from safetensors.torch import save_file

    if state.beam_calibration is None:
        raise ValueError("the model has no beam calibration yet: fit it before saving")
    calibration = state.beam_calibration

    def fill(tmp: Path) -> dict[str, Any]:
        tensors, storages = {}, set()
        for k, v in state.net.state_dict().items():
            v = v.detach().cpu().contiguous()
            # safetensors refuses tensors that share memory (tied tables, e.g. an encoder
            # and item table that are one matrix): store each such tensor on its own.
            ptr = v.untyped_storage().data_ptr()
            tensors[k] = v.clone() if ptr in storages else v
            storages.add(ptr)
        save_file(tensors, tmp / "weights.safetensors")
        index = state.item_paths
        arrays = {
            "item_paths": index.path_ids,
            "occupied_paths": index.occupied_paths,
            "path_indptr": index.path_indptr,
            "path_items": index.path_items,
            "item_flags": state.item_flags(),
            "item_counts": state.item_counts,
            "beam_calibration": np.stack(calibration).astype(np.float64),
        }
        if state.recall_calibration is not None:  # (m, 1 + b): n, then recall@n per beam
            ns, recall = state.recall_calibration
            arrays["beam_recall"] = np.column_stack([ns, recall]).astype(np.float64)
        ids = item_ids if item_ids is not None else state.item_ids
        if ids is not None:
            ids = np.asarray(ids)
            arrays["item_ids"] = ids.astype(str) if ids.dtype == object else ids
        if state.anchors is not None:
            arrays["anchor_queries"], arrays["anchor_thresholds"] = state.anchors
        for name, column in state.item_attributes.items():
            arrays[ATTRIBUTE_FILE.format(name)] = column
        if state.user_histories is not None and state.user_ids is not None:
            arrays["user_ids"] = state.user_ids
            arrays["user_indptr"] = state.user_histories.indptr
            arrays["user_items"] = state.user_histories.items
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", arr, allow_pickle=False)
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": to_dict(state.config),
            "n_items": state.n_items,
            "ordered": state.ordered,
            "encoder": state.encoder_kind,
            "reranker": reranker_options(state.net.reranker),
            "history": state.history,
            "training": training if training is not None else state.training,
            "item_attributes": sorted(state.item_attributes),
            "versions": versions(),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    path = Path(path)
    write_directory(path, fill)
    return path


# Every array a bundle may hold, with its number of dimensions.
_ARRAYS = {
    "item_paths": 2, "occupied_paths": 1, "path_indptr": 1, "path_items": 1, "item_flags": 1,
    "item_counts": 1, "beam_calibration": 2, "beam_recall": 2, "item_ids": 1,
    "anchor_queries": 2, "anchor_thresholds": 1, "user_ids": 1, "user_indptr": 1, "user_items": 1,
}
_KNOWN_FILES = frozenset({"weights.safetensors", *(f"{name}.npy" for name in _ARRAYS)})
#: An item attribute's array (the name is checked by ``ATTRIBUTE_NAME`` before it is used).
ATTRIBUTE_FILE = "item_attribute_{}"


def read_manifest(path: Path) -> dict[str, Any]:
    """The bundle's manifest, refused unless it is a readable version of this format."""
    recover_directory(path)
    manifest_file = path / "manifest.json"
    if manifest_file.is_symlink():
        raise ValueError(f"{manifest_file} is a symbolic link; a bundle holds its own files")
    if not manifest_file.is_file():
        raise FileNotFoundError(f"{path} is not a saved Deep Retrieval model (no manifest.json)")
    try:
        manifest = json.loads(manifest_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{manifest_file} is corrupt: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        raise ValueError(f"{path} holds {fmt!r}, not a {FORMAT}")
    version = manifest.get("format_version")
    if version not in READABLE_VERSIONS:
        raise ValueError(
            f"{path} has model format version {version}; this deep-retrieval reads versions"
            f" {', '.join(map(str, READABLE_VERSIONS))}: upgrade the package or retrain"
        )
    return manifest


def _npy_header(file: Path) -> tuple[tuple[int, ...], np.dtype]:
    """The shape and dtype a ``.npy`` file declares, read from its header alone, and checked
    against the file's size (a header may claim anything)."""
    fmt = np.lib.format
    try:
        with open(file, "rb") as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            offset = f.tell()
    except (ValueError, OSError, SyntaxError) as exc:
        raise ValueError(f"{file} is not a readable .npy array ({exc})") from None
    if dtype.hasobject:
        raise ValueError(f"{file} holds Python objects; a bundle holds plain arrays")
    size = file.stat().st_size
    if size < offset + int(np.prod(shape, dtype=np.float64)) * dtype.itemsize:
        raise ValueError(f"{file} declares shape {shape}, more than its {size} bytes hold")
    return shape, dtype


def _check_manifest(path: Path, manifest: dict[str, Any], *, verify: bool) -> dict[str, tuple]:
    """Everything about the manifest and the directory that can be checked before loading:
    field types, the file list against the directory (no symbolic links, no unlisted files the
    loader would read), sizes and checksums, and each array's declared shape.

    Returns ``{array name: shape}`` of the arrays present.
    """
    where = path / "manifest.json"

    def bad(problem: str) -> ValueError:
        return ValueError(f"{where}: {problem}; re-save or retrain the model")

    files = manifest.get("files")
    version = manifest.get("format_version")
    if files is None:
        if verify:
            raise ValueError(
                f"{path} records no checksums (format version {version}): load it once with"
                " DeepRetrieval.load(path, verify=False) and save it again with this version"
            )
    elif not isinstance(files, dict) or not all(
        isinstance(record, dict)
        and type(record.get("bytes")) is int and record["bytes"] >= 0
        and isinstance(record.get("sha256"), str) and len(record["sha256"]) == 64
        for record in files.values()
    ):
        raise bad("files must map each file name to its bytes and sha256")
    if not isinstance(manifest.get("config"), dict):
        raise bad("config must be an object of settings")
    n_items = manifest.get("n_items")
    if type(n_items) is not int or n_items < 1:
        raise bad(f"n_items must be an integer ≥ 1, got {n_items!r}")
    for key, kind in (("ordered", bool), ("encoder", str), ("reranker", dict), ("history", list)):
        if key in manifest and not isinstance(manifest[key], kind):
            raise bad(f"{key} must be a {kind.__name__}")
    if manifest.get("training") is not None and not isinstance(manifest["training"], dict):
        raise bad("training must be an object")
    attributes = manifest.get("item_attributes", [])
    if not isinstance(attributes, list) or not all(
        isinstance(a, str) and ATTRIBUTE_NAME.fullmatch(a) for a in attributes
    ):
        raise bad("item_attributes must be a list of attribute names")
    if files is not None:
        for entry in path.iterdir():
            read = entry.name in _KNOWN_FILES or entry.name.startswith("item_attribute_")
            if read and entry.name not in files:
                raise ValueError(
                    f"{entry} is not in the manifest's file list, so nothing vouches for it;"
                    " remove it, or re-save the model"
                )
        check_files(path, files, verify=verify)
    shapes = {}
    for name in _ARRAYS:
        file = path / f"{name}.npy"
        if file.is_symlink():
            raise ValueError(f"{file} is a symbolic link; a bundle holds its own files")
        if file.exists():
            shape, _ = _npy_header(file)
            if len(shape) != _ARRAYS[name]:
                raise ValueError(f"{file} has shape {shape}, expected {_ARRAYS[name]} dimensions")
            shapes[name] = shape
    for name in attributes:
        file = path / f"{ATTRIBUTE_FILE.format(name)}.npy"
        if file.is_symlink() or not file.is_file():
            raise ValueError(f"{file} is missing (or a link); re-save the model")
        shape, dtype = _npy_header(file)
        if shape != (manifest["n_items"],) or dtype.kind not in "iU":
            raise ValueError(f"{file} has shape {shape} and dtype {dtype}, expected"
                             f" ({manifest['n_items']},) integers or text")
    for required in ("item_paths", "beam_calibration", "item_counts"):
        if required not in shapes:
            raise ValueError(f"{path} is incomplete: {required}.npy is missing")
    return shapes


def _check_shapes(path: Path, shapes: dict[str, tuple], n_items: int, config: DRConfig) -> None:
    """Every array's declared shape agrees with ``n_items`` and the config, and the arrays with
    each other; so nothing sized by a wrong ``n_items`` is ever allocated."""
    j, dim = config.structure.paths_per_item, config.train.embedding_dim
    expected: dict[str, tuple[int | None, ...]] = {
        "item_paths": (n_items, j), "item_flags": (n_items,), "item_counts": (n_items,),
        "item_ids": (n_items,), "beam_calibration": (2, None), "anchor_queries": (None, dim),
    }
    if "beam_recall" in shapes:
        expected["beam_recall"] = (None, shapes["beam_calibration"][1] + 1)
    if "user_ids" in shapes:
        expected["user_indptr"] = (shapes["user_ids"][0] + 1,)
    if "anchor_queries" in shapes:
        expected["anchor_thresholds"] = (shapes["anchor_queries"][0],)
    if "occupied_paths" in shapes:
        expected["path_indptr"] = (shapes["occupied_paths"][0] + 1,)
    for name, want in expected.items():
        got = shapes.get(name)
        if got is not None and any(w is not None and g != w for g, w in zip(got, want,
                                                                            strict=True)):
            shown = tuple("*" if w is None else w for w in want)
            raise ValueError(
                f"{path / (name + '.npy')} has shape {got}, expected {shown} (n_items ="
                f" {n_items:,}, paths_per_item = {j}); re-save or retrain the model"
            )
    if shapes["beam_calibration"][1] < 1:
        raise ValueError(f"{path / 'beam_calibration.npy'} holds no beams")
    pairs = [("user_ids", "user_indptr"), ("user_ids", "user_items"),
             ("occupied_paths", "path_indptr"), ("occupied_paths", "path_items"),
             ("anchor_queries", "anchor_thresholds")]
    for a, b in pairs:
        if (a in shapes) != (b in shapes):
            raise ValueError(f"{path} holds {a if a in shapes else b}.npy without its partner")


def load_bundle(
    path: str | os.PathLike, *, device: torch.device | str = "cpu", verify: bool = True
) -> DRState:
    """Read a bundle written by :func:`save_bundle`.

    Refuses, with a message that names the file and what is wrong: a directory without a
    manifest, another format, an unknown format version, a missing or truncated file (size
    against the manifest) and, with ``verify`` (default), a file whose SHA-256 differs
    (about 1 s per GB); a malformed manifest, a symbolic link, a file the loader would read that
    the manifest does not list, an array whose declared shape disagrees with ``n_items`` or its
    partners (checked from the headers, before anything is allocated), known users' histories
    out of range. Bundles of format version 1 (no checksums, no index) load only with
    ``verify=False``, to be saved again.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest = read_manifest(path)
    shapes = _check_manifest(path, manifest, verify=verify)
    try:
        config = from_mapping(DRConfig, manifest["config"])
    except ConfigError as exc:
        raise ValueError(
            f"{path / 'manifest.json'}: stored config does not fit this version: {exc}"
        ) from exc
    n_items = manifest["n_items"]
    _check_shapes(path, shapes, n_items, config)  # before anything of n_items is allocated
    s = config.structure
    codec = PathCodec(s.n_layers, s.n_nodes)

    def array(name: str) -> np.ndarray:
        return np.load(path / f"{name}.npy", allow_pickle=False)

    def optional_array(name: str) -> np.ndarray | None:
        """The array, or None where the bundle has no such file (never an unlisted one:
        :func:`_check_manifest` refused those)."""
        return array(name) if name in shapes else None

    try:
        weights = load_file(path / "weights.safetensors")
        bad = [
            k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()
        ]
        if bad:
            raise ValueError(
                f"weights.safetensors holds NaN or inf in {', '.join(bad[:5])}: the model diverged"
                " before it was saved; retrain it (a lower train.lr helps)"
            )
        item_paths = array("item_paths")
        calib = array("beam_calibration")
        recall = optional_array("beam_recall")
        if recall is not None and (recall.ndim != 2 or recall.shape[1] != calib.shape[1] + 1):
            raise ValueError(
                f"beam_recall.npy has shape {recall.shape}, expected (m, {calib.shape[1] + 1})"
            )
        if recall is not None:
            measured = recall[:, 1:][~np.isnan(recall[:, 1:])]  # nan: past the scoring budget
            if not (recall[:, 0] >= 1).all() or ((measured < 0) | (measured > 1)).any():
                raise ValueError(
                    "beam_recall.npy holds result counts < 1 or recalls outside [0, 1]"
                )
        flags = optional_array("item_flags")
        flags = np.zeros(n_items, np.uint8) if flags is None else flags
        if item_paths.shape[0] != n_items or flags.shape != (n_items,):
            raise ValueError(f"item arrays do not have n_items = {n_items} rows")
        removed = (flags & FLAG_REMOVED) != 0
        if (path / "path_items.npy").exists():
            index = ItemPathMap.from_index(
                item_paths,
                codec,
                array("occupied_paths"),
                array("path_indptr"),
                array("path_items"),
                excluded=removed,
            )
        else:
            index = ItemPathMap(item_paths, codec, excluded=removed)
        state = build_state(
            config, n_items, ordered=bool(manifest["ordered"]), encoder=manifest["encoder"],
            reranker_options=manifest.get("reranker", {}), item_paths=index,
            item_counts=array("item_counts"),
        )
        state.net.load_state_dict(weights)
        # A bundle of an older version may record no ids: keep that (None), never the identity
        # build_state would fill in, so that nothing reads ids sent to it as rows.
        state.item_ids = optional_array("item_ids")
        state.cold = (flags & FLAG_COLD) != 0
        state.removed = removed
        anchors = optional_array("anchor_queries")
        if anchors is not None:
            thresholds = array("anchor_thresholds")
            dim = config.train.embedding_dim
            shape_ok = anchors.ndim == 2 and anchors.shape[1] == dim
            if not shape_ok or thresholds.shape != anchors.shape[:1]:
                raise ValueError(
                    f"anchor_queries.npy has shape {anchors.shape} and anchor_thresholds.npy"
                    f" {thresholds.shape}, expected (A, {dim}) and (A,)"
                )
            state.anchors = (anchors, thresholds)
        for name in manifest.get("item_attributes", []):
            state.set_item_attribute(name, array(ATTRIBUTE_FILE.format(name)))
        user_ids = optional_array("user_ids")
        if user_ids is not None:
            indptr, items = array("user_indptr"), array("user_items")
            if indptr[0] != 0 or (np.diff(indptr) < 0).any() or indptr[-1] != len(items):
                raise ValueError("user_indptr does not delimit user_items")
            if len(items) and (items.min() < 0 or items.max() >= n_items):
                raise ValueError(f"user_items holds item ids outside [0, {n_items})")
            state.set_known_users(user_ids, Sequences(indptr, items, state.ordered))
        beams, means = calib
        if (beams < 1).any() or (np.diff(beams) <= 0).any() or not np.isfinite(means).all():
            raise ValueError("beam_calibration's beams are not increasing integers ≥ 1")
    except (SafetensorError, RuntimeError, ValueError, OSError, EOFError) as exc:
        raise ValueError(
            f"{path} is incomplete or corrupt ({exc}); re-save or retrain the model"
        ) from exc
    state.net = state.net.to(device).eval()
    state.device = device
    state.history = manifest.get("history", [])
    state.training = manifest.get("training")
    state.beam_calibration = (calib[0].astype(np.int64), calib[1])
    if recall is not None:
        state.recall_calibration = (recall[:, 0].astype(np.int64), recall[:, 1:])
    return state
