"""Registered data sets: where their files are looked for, how they are read, what they should
contain.

A data set is found inside a *data dir* by trying each of its candidate relative paths in turn, so
both the layout of the shared folder (``movielens-100k/u.data.gz``,
``gowalla-lightgcn/train.txt.gz``) and the official layouts (``ml-100k/u.data``, ``ml-100k.zip``,
``ml-20m/ratings.csv``) work.
``movielens-latest-small`` (the 2018 release) is embedded in the package and needs no data dir.

The library never reads environment variables itself: the CLI passes ``DEEP_RETRIEVAL_DATA`` (and,
if it likes, ``XDG_CACHE_HOME``) to :func:`resolve_data_dir` / :func:`cache_dir`.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.resources
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from deep_retrieval.data.readers import (
    read_amazon_ratings,
    read_json_lists,
    read_movielens,
    read_user_items_lines,
)
from deep_retrieval.data.types import FixedSplit, Interactions
from deep_retrieval.utils import require

__all__ = [
    "DATASETS",
    "DatasetNotFoundError",
    "DatasetSpec",
    "ExpectedCounts",
    "cache_dir",
    "dataset_counts",
    "dataset_table",
    "find_dataset",
    "load_dataset",
    "resolve_data_dir",
]

Kind = Literal["ratings", "fixed-split"]

_GROUPLENS = "https://files.grouplens.org/datasets/movielens"
_GROUPLENS_LICENCE = (
    "GroupLens terms: research use only, acknowledge (Harper & Konstan 2015), no commercial use, "
    "no redistribution without permission."
)


class DatasetNotFoundError(FileNotFoundError):
    """A registered data set whose files are not in the data dir; the message says how to get
    them."""


@dataclass(frozen=True)
class ExpectedCounts:
    """Published / verified sizes of a data set (``splits``: interactions per part of a fixed
    split)."""

    users: int
    items: int
    interactions: int
    splits: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """How to find and read one data set.

    Attributes:
        name: the registered name (``deep-retrieval … --dataset NAME``).
        description: one line for ``deep-retrieval datasets``.
        kind: ``"ratings"`` (one log, split by the paper protocol by default) or ``"fixed-split"``
            (given train/test[/valid] files, evaluated with the fixed-split protocol).
        paths: candidates relative to the data dir, tried in order. ``ratings``: the ratings file,
            a zip, or a folder the reader accepts. ``fixed-split``: folders holding ``split_files``.
        reader: turns one found path (file, zip or folder) into :class:`Interactions`.
        split_files: ``fixed-split`` only: ``(part, file name)`` with part
            ``train``/``valid``/``test``; each name is tried as is and with ``.gz``.
        expected: sizes from the data set's README, or ``None`` when unknown.
        licence: the terms of use, in short.
        embedded: shipped inside the package (``paths`` are then relative to the package folder).
        how_to_get: what to tell a user whose data dir lacks it (``{data_dir}`` is filled in).
        hint: the same in a few words, for one row of ``deep-retrieval datasets``.
    """

    name: str
    description: str
    kind: Kind
    paths: tuple[str, ...]
    reader: Callable[[Path], Interactions]
    split_files: tuple[tuple[str, str], ...] = ()
    expected: ExpectedCounts | None = None
    licence: str = ""
    embedded: bool = False
    how_to_get: str = ""
    hint: str = ""

    @property
    def default_protocol(self) -> str:
        """``"paper"`` for rating logs, ``"fixed-split"`` for given splits."""
        return "paper" if self.kind == "ratings" else "fixed-split"


def _shared_copy_hint(folder: str) -> str:
    return (
        f"These files are not distributed with the package (their licence forbids redistribution). "
        f"Copy the folder `{folder}/` of the shared data collection (or the official files) into "
        "{data_dir}."
    )


def _grouplens_hint(name: str, stem: str) -> str:
    return (
        f"Run `deep-retrieval download {name}` (saves {{data_dir}}/{stem}.zip), or download "
        f"{_GROUPLENS}/{stem}.zip yourself and place it at {{data_dir}}/{stem}.zip "
        f"(or extract it there, so that {{data_dir}}/{stem}/ratings.csv exists)."
    )


def _ratings_candidates(*stems: str, names: tuple[str, ...] = ("ratings.csv",)) -> tuple[str, ...]:
    out: list[str] = []
    for stem in stems:
        for name in names:
            out += [f"{stem}/{name}", f"{stem}/{name}.gz"]
    return tuple(out)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            name="movielens-latest-small",
            description="MovieLens latest-small (2018 release), ratings 0.5–5 + time; embedded",
            kind="ratings",
            paths=("movielens-latest-small/ratings.csv.gz",),
            reader=read_movielens,
            expected=ExpectedCounts(610, 9_724, 100_836),
            licence=_GROUPLENS_LICENCE.replace(
                "no redistribution without permission.",
                "redistribution allowed under the same terms (hence embedded).",
            ),
            embedded=True,
        ),
        DatasetSpec(
            name="movielens-latest-small-2016",
            description="MovieLens latest-small (2016 release, LensKit copy), ratings 0.5–5 + time",
            kind="ratings",
            paths=_ratings_candidates(
                "movielens-latest-small/v2016-lenskit", "ml-latest-small-2016"
            ),
            reader=read_movielens,
            expected=ExpectedCounts(671, 9_066, 100_004),
            licence=_GROUPLENS_LICENCE.replace(
                "no redistribution without permission.",
                "redistribution allowed under the same terms.",
            ),
            how_to_get=(
                "GroupLens no longer publishes this release; the LensKit project keeps a copy "
                "(github.com/lenskit/lkpy, data/ml-latest-small/). Place its ratings.csv at "
                "{data_dir}/ml-latest-small-2016/ratings.csv."
            ),
            hint="place the 2016 ratings.csv at {data_dir}/ml-latest-small-2016/",
        ),
        DatasetSpec(
            name="movielens-100k",
            description="MovieLens 100K (GroupLens u.data), ratings 1–5 + time",
            kind="ratings",
            paths=(
                *_ratings_candidates("movielens-100k", "ml-100k", names=("u.data",)),
                "ml-100k.zip",
            ),
            reader=read_movielens,
            expected=ExpectedCounts(943, 1_682, 100_000),
            licence=_GROUPLENS_LICENCE,
            how_to_get=(
                f"Download {_GROUPLENS}/ml-100k.zip and place it at {{data_dir}}/ml-100k.zip "
                "(or extract it there, so that {data_dir}/ml-100k/u.data exists)."
            ),
            hint="place ml-100k.zip in {data_dir}",
        ),
        DatasetSpec(
            name="movielens-1m-m1",
            description="MovieLens-1M implicit 20-core 80/10/10 split (LCFN/BARS Movielens1M_m1)",
            kind="fixed-split",
            paths=("movielens-1m-m1-bars", "Movielens1M_m1", "movielens-1m-m1"),
            reader=read_json_lists,
            split_files=(
                ("train", "train_data.json"),
                ("valid", "validation_data.json"),
                ("test", "test_data.json"),
            ),
            expected=ExpectedCounts(
                6_022, 3_043, 995_154, (("train", 796_244), ("valid", 99_455), ("test", 99_455))
            ),
            licence=_GROUPLENS_LICENCE + " Split by Yu & Qin (LCFN, ICML 2020); cite LCFN.",
            how_to_get=_shared_copy_hint("movielens-1m-m1-bars")
            + " Source: github.com/Wenhui-Yu/LCFN dataset/Movielens/"
            " (train/validation/test_data.json).",
            hint="copy movielens-1m-m1-bars/ into {data_dir}",
        ),
        DatasetSpec(
            name="gowalla",
            description="Gowalla check-ins, NGCF/LightGCN 10-core split (implicit)",
            kind="fixed-split",
            paths=("gowalla-lightgcn", "gowalla", "Gowalla_m1"),
            reader=read_user_items_lines,
            split_files=(("train", "train.txt"), ("test", "test.txt")),
            expected=ExpectedCounts(
                29_858, 40_981, 1_027_370, (("train", 810_128), ("test", 217_242))
            ),
            licence=(
                "NGCF/LightGCN code MIT; raw data SNAP loc-gowalla; cite NGCF/LightGCN and SNAP."
            ),
            how_to_get=_shared_copy_hint("gowalla-lightgcn")
            + " Source: github.com/gusye1234/LightGCN-PyTorch data/gowalla/"
            " (train.txt, test.txt).",
            hint="copy gowalla-lightgcn/ into {data_dir}",
        ),
        DatasetSpec(
            name="amazon-book",
            description="Amazon-book 2014 10-core, KGAT release train/test (implicit)",
            kind="fixed-split",
            paths=("amazon-book-kgat", "kgat-amazon-book"),
            reader=read_user_items_lines,
            split_files=(("train", "train.txt"), ("test", "test.txt")),
            expected=ExpectedCounts(
                70_679, 24_915, 846_434, (("train", 652_514), ("test", 193_920))
            ),
            licence=(
                "KGAT data terms: research use only, cite KGAT, no redistribution,"
                " no commercial use."
            ),
            how_to_get=_shared_copy_hint("amazon-book-kgat")
            + " Source: github.com/xiangwang1223/knowledge_graph_attention_network"
            " Data/amazon-book/.",
            hint="copy amazon-book-kgat/ into {data_dir}",
        ),
        DatasetSpec(
            name="movielens-20m",
            description=(
                "MovieLens 20M, ratings 0.5–5 + time (the paper's data set); user-downloaded"
            ),
            kind="ratings",
            paths=(*_ratings_candidates("ml-20m", "movielens-20m"), "ml-20m.zip"),
            reader=read_movielens,
            expected=ExpectedCounts(138_493, 26_744, 20_000_263),
            licence=_GROUPLENS_LICENCE,
            how_to_get=_grouplens_hint("movielens-20m", "ml-20m"),
            hint="deep-retrieval download movielens-20m",
        ),
        DatasetSpec(
            name="movielens-25m",
            description="MovieLens 25M, ratings 0.5–5 + time; user-downloaded",
            kind="ratings",
            paths=(*_ratings_candidates("ml-25m", "movielens-25m"), "ml-25m.zip"),
            reader=read_movielens,
            expected=ExpectedCounts(162_541, 59_047, 25_000_095),
            licence=_GROUPLENS_LICENCE,
            how_to_get=_grouplens_hint("movielens-25m", "ml-25m"),
            hint="deep-retrieval download movielens-25m",
        ),
        DatasetSpec(
            name="amazon-books",
            description=(
                "Amazon Books ratings-only CSV (McAuley 2014 ratings_Books.csv); user-provided"
            ),
            kind="ratings",
            paths=(
                "ratings_Books.csv",
                "ratings_Books.csv.gz",
                "amazon-books/ratings_Books.csv",
                "amazon-books/ratings_Books.csv.gz",
                "amazon-books/Books.csv",
                "amazon-books/Books.csv.gz",
            ),
            reader=read_amazon_ratings,
            licence="Amazon review data (McAuley et al.): research use; cite the data set papers.",
            how_to_get=(
                "Download the 2014 ratings-only file "
                "http://snap.stanford.edu/data/amazon/productGraph/categoryFiles/ratings_Books.csv "
                "(or the 2018 one, "
                "https://jmcauley.ucsd.edu/data/amazon_v2/categoryFilesSmall/Books.csv, "
                "saved as {data_dir}/amazon-books/Books.csv) and place it at "
                "{data_dir}/ratings_Books.csv (plain or gzip-compressed as .csv.gz)."
            ),
            hint="place ratings_Books.csv in {data_dir}",
        ),
    ]
}


# --------------------------------------------------------------------------------------------
# Data dir
# --------------------------------------------------------------------------------------------


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The per-user cache folder ``$XDG_CACHE_HOME/deep-retrieval`` or ``~/.cache/deep-retrieval``.

    ``env`` is the environment to honour (the CLI passes ``os.environ``); by default none is read.
    """
    base = (env or {}).get("XDG_CACHE_HOME") or ""
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "deep-retrieval"


def resolve_data_dir(
    explicit: str | Path | None,
    env_value: str | None,
    env: Mapping[str, str] | None = None,
) -> Path:
    """The data dir to use: ``explicit`` (``--data-dir``), else ``env_value`` (the CLI passes
    ``os.environ.get("DEEP_RETRIEVAL_DATA")``), else :func:`cache_dir` (given ``env``, if any).

    Nothing is created or checked here.
    """
    for value in (explicit, env_value):
        if value is not None and str(value) != "":
            return Path(value).expanduser()
    return cache_dir(env)


# --------------------------------------------------------------------------------------------
# Finding and loading
# --------------------------------------------------------------------------------------------


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, DATASETS, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown data set {name!r}{hint}; registered: {', '.join(DATASETS)}"
        ) from None


@contextlib.contextmanager
def _embedded_path(relative: str) -> Iterator[Path]:
    """A real file path for a file shipped in ``deep_retrieval/datasets/`` (extracted if zipped)."""
    resource = importlib.resources.files("deep_retrieval").joinpath(
        "datasets", *relative.split("/")
    )
    with importlib.resources.as_file(resource) as path:
        yield path


def _split_paths(folder: Path, spec: DatasetSpec) -> dict[str, Path] | None:
    """``part → file`` when ``folder`` holds every part of ``spec``'s split, else ``None``."""
    found: dict[str, Path] = {}
    for part, name in spec.split_files:
        for cand in (folder / name, folder / f"{name}.gz"):
            if cand.is_file():
                found[part] = cand
                break
        else:
            return None
    return found


def _root(data_dir: str | Path | None) -> Path:
    return Path(data_dir).expanduser() if data_dir is not None else cache_dir()


def _looked_at(spec: DatasetSpec, data_dir: Path) -> list[str]:
    if spec.kind == "ratings":
        return [str(data_dir / p) for p in spec.paths]
    files = ", ".join(f"{name}[.gz]" for _, name in spec.split_files)
    return [f"{data_dir / p}/ holding {files}" for p in spec.paths]


def find_dataset(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The path a data set would be loaded from (a file, zip or folder), or ``None`` if absent.

    Embedded sets are always found (``data_dir`` is ignored for them). ``data_dir=None`` means
    :func:`cache_dir`. Raises ``ValueError`` for an unknown name.
    """
    spec = _spec(name)
    if spec.embedded:
        with _embedded_path(spec.paths[0]) as path:
            return path
    root = _root(data_dir)
    for rel in spec.paths:
        cand = root / rel
        if spec.kind == "ratings" and cand.exists():
            return cand
        if spec.kind == "fixed-split" and cand.is_dir() and _split_paths(cand, spec):
            return cand
    return None


def _not_found(spec: DatasetSpec, data_dir: Path) -> DatasetNotFoundError:
    looked = "\n".join(f"  {p}" for p in _looked_at(spec, data_dir))
    hint = spec.how_to_get.format(data_dir=data_dir)
    return DatasetNotFoundError(
        f"Data set {spec.name!r} was not found in the data dir {data_dir}. Looked for:\n{looked}\n"
        f"{hint}\nIf your copy is in another folder, pass --data-dir (or set DEEP_RETRIEVAL_DATA) "
        "to the folder that holds it."
    )


def load_dataset(name: str, data_dir: str | Path | None = None) -> Interactions | FixedSplit:
    """Load a registered data set.

    Args:
        name: a key of :data:`DATASETS`.
        data_dir: the folder holding the data sets (see :func:`resolve_data_dir`); ``None`` means
            :func:`cache_dir`. Not needed for the embedded ``movielens-latest-small``.

    Returns:
        :class:`Interactions` for ``kind="ratings"``, :class:`FixedSplit` for
        ``kind="fixed-split"``.

    Raises:
        ValueError: unknown name (the message lists the registered names).
        DatasetNotFoundError: the files are missing; the message lists where they were looked for
            and how to get them.
    """
    spec = _spec(name)
    if spec.embedded:
        with _embedded_path(spec.paths[0]) as path:
            return spec.reader(path)
    root = _root(data_dir)
    found = find_dataset(name, root)
    if found is None:
        raise _not_found(spec, root)
    if spec.kind == "ratings":
        return spec.reader(found)
    parts = _split_paths(found, spec)
    assert parts is not None  # find_dataset checked it
    loaded = {part: spec.reader(path) for part, path in parts.items()}
    return FixedSplit(train=loaded["train"], test=loaded["test"], valid=loaded.get("valid"))


def _distinct(arrays: list[np.ndarray]) -> int:
    # Hash-based (pd.unique) rather than np.unique's sort: much faster on 20M string ids.
    pd = require("pandas", "reading data sets")
    return len(pd.unique(np.concatenate(arrays))) if arrays else 0


def dataset_counts(data: Interactions | FixedSplit) -> dict[str, int]:
    """``n_users``, ``n_items``, ``n_interactions`` of a loaded data set; a fixed split is counted
    as a whole, and its parts' sizes are added as ``n_train``, ``n_valid`` (if any), ``n_test``."""
    if isinstance(data, Interactions):
        parts = {"all": data}
    else:
        given = {"train": data.train, "valid": data.valid, "test": data.test}
        parts = {k: v for k, v in given.items() if v is not None}
    out = {
        "n_users": _distinct([p.users for p in parts.values()]),
        "n_items": _distinct([p.items for p in parts.values()]),
        "n_interactions": sum(len(p) for p in parts.values()),
    }
    if isinstance(data, FixedSplit):
        out.update({f"n_{k}": len(v) for k, v in parts.items()})
    return out


def dataset_table(data_dir: str | Path | None, *, counts: bool = True) -> list[dict[str, object]]:
    """One row per registered data set, for ``deep-retrieval datasets``.

    Each row: ``name``, ``kind``, ``description``, ``embedded``, ``available`` (bool), ``path``
    (``str`` or ``None``), ``hint`` (how to get it, in a few words; ``""`` when available), and
    ``n_users``, ``n_items``, ``n_interactions`` — computed by reading the files when available and
    ``counts`` is true (seconds for the large sets), else ``None``.
    """
    root = _root(data_dir)
    rows: list[dict[str, object]] = []
    for name, spec in DATASETS.items():
        path = find_dataset(name, root)
        row: dict[str, object] = {
            "name": name,
            "kind": spec.kind,
            "description": spec.description,
            "embedded": spec.embedded,
            "available": path is not None,
            "path": None if path is None else str(path),
            "hint": "" if path is not None else spec.hint.format(data_dir=root),
            "n_users": None,
            "n_items": None,
            "n_interactions": None,
        }
        if path is not None and counts:
            c = dataset_counts(load_dataset(name, root))
            row.update(
                n_users=c["n_users"], n_items=c["n_items"], n_interactions=c["n_interactions"]
            )
        rows.append(row)
    return rows
