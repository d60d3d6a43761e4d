"""Registry: every shared data set with the counts of its README, the embedded default, the
user-downloaded layouts (ML-20M/25M, Amazon Books), data-dir resolution and the datasets table."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from deep_retrieval.data.registry import (
    DATASETS,
    DatasetNotFoundError,
    cache_dir,
    dataset_counts,
    dataset_table,
    find_dataset,
    load_dataset,
    resolve_data_dir,
)
from deep_retrieval.data.types import FixedSplit, Interactions

# Figures copied from the READMEs in the shared data folder (not from the registry, so that a typo
# in either place fails): (users, items, interactions, {part: interactions}).
SHARED = {
    "movielens-100k": (943, 1_682, 100_000, {}),
    "movielens-latest-small-2016": (671, 9_066, 100_004, {}),
    "movielens-1m-m1": (6_022, 3_043, 995_154, {"train": 796_244, "valid": 99_455, "test": 99_455}),
    "gowalla": (29_858, 40_981, 1_027_370, {"train": 810_128, "test": 217_242}),
    "amazon-book": (70_679, 24_915, 846_434, {"train": 652_514, "test": 193_920}),
}
EMBEDDED = ("movielens-latest-small", (610, 9_724, 100_836, {}))
USER_PROVIDED = ("movielens-20m", "movielens-25m", "amazon-books")

CSV = "userId,movieId,rating,timestamp\n1,10,4.0,100\n1,20,3.5,101\n2,10,5.0,102\n"


def test_registered_names() -> None:
    assert set(DATASETS) == set(SHARED) | {EMBEDDED[0]} | set(USER_PROVIDED)
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.paths and spec.description and spec.licence
        assert spec.kind in ("ratings", "fixed-split")
        assert spec.default_protocol == ("paper" if spec.kind == "ratings" else "fixed-split")
        assert spec.embedded == (name == EMBEDDED[0])
        assert spec.embedded or (spec.how_to_get and spec.hint)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DATASETS["gowalla"].name = "x"  # type: ignore[misc]


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_dataset_counts(shared_data: Path, name: str) -> None:
    users, items, interactions, parts = SHARED[name]
    spec = DATASETS[name]
    assert spec.expected is not None
    assert (spec.expected.users, spec.expected.items, spec.expected.interactions) == (
        users,
        items,
        interactions,
    )
    assert dict(spec.expected.splits) == parts

    data = load_dataset(name, shared_data)
    counts = dataset_counts(data)
    assert (counts["n_users"], counts["n_items"], counts["n_interactions"]) == (
        users,
        items,
        interactions,
    )
    if parts:
        assert isinstance(data, FixedSplit) and spec.kind == "fixed-split"
        assert {k: counts[f"n_{k}"] for k in parts} == parts
        assert (data.valid is not None) == ("valid" in parts)
        for part in (data.train, data.test, data.valid):
            if part is not None:
                assert part.users.dtype == np.int64 and part.items.dtype == np.int64
                assert part.ratings is None and part.timestamps is None
    else:
        assert isinstance(data, Interactions) and spec.kind == "ratings"
        assert data.ratings is not None and data.timestamps is not None


def test_fixed_splits_are_disjoint(shared_data: Path) -> None:
    # README: train, valid and test are pairwise disjoint (checked on ML-1M m1, the 3-part split).
    split = load_dataset("movielens-1m-m1", shared_data)
    assert isinstance(split, FixedSplit) and split.valid is not None
    keys = [p.users * 10_000 + p.items for p in (split.train, split.valid, split.test)]
    assert len(np.unique(np.concatenate(keys))) == sum(len(k) for k in keys)


def test_embedded_default_needs_no_data_dir(tmp_path: Path) -> None:
    users, items, interactions, _ = EMBEDDED[1]
    for data_dir in (None, tmp_path / "empty"):
        data = load_dataset("movielens-latest-small", data_dir)
        assert isinstance(data, Interactions)
        assert (data.n_users, data.n_items, len(data)) == (users, items, interactions)
    path = find_dataset("movielens-latest-small")
    assert path is not None and path.name == "ratings.csv.gz"
    # The embedded file is the v2018 release (sha256 of the stored .gz, from the README).
    assert hashlib.sha256(path.read_bytes()).hexdigest() == (
        "45bde19444c5e56e69d209e993c30a237edc6d4f98703c8a2f9cf97fdf4bc5c3"
    )


def test_embedded_equals_shared_v2018(shared_data: Path) -> None:
    from deep_retrieval.data.readers import read_movielens

    a = load_dataset("movielens-latest-small")
    b = read_movielens(shared_data / "movielens-latest-small" / "v2018" / "ratings.csv.gz")
    assert isinstance(a, Interactions)
    for name in ("users", "items", "ratings", "timestamps"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


# ---------------------------------------------------------------------------------------------
# User-downloaded sets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stem"), [("movielens-20m", "ml-20m"), ("movielens-25m", "ml-25m")]
)
@pytest.mark.parametrize("layout", ["folder", "folder-gz", "zip"])
def test_movielens_large_layouts(tmp_path: Path, name: str, stem: str, layout: str) -> None:
    if layout == "folder":
        (tmp_path / stem).mkdir()
        (tmp_path / stem / "ratings.csv").write_text(CSV)
        expected_path = tmp_path / stem / "ratings.csv"
    elif layout == "folder-gz":
        (tmp_path / stem).mkdir()
        (tmp_path / stem / "ratings.csv.gz").write_bytes(gzip.compress(CSV.encode()))
        expected_path = tmp_path / stem / "ratings.csv.gz"
    else:
        with zipfile.ZipFile(tmp_path / f"{stem}.zip", "w") as zf:
            zf.writestr(f"{stem}/movies.csv", "movieId,title,genres\n")
            zf.writestr(f"{stem}/ratings.csv", CSV)
        expected_path = tmp_path / f"{stem}.zip"
    assert find_dataset(name, tmp_path) == expected_path
    data = load_dataset(name, tmp_path)
    assert isinstance(data, Interactions)
    assert data.users.tolist() == [1, 1, 2] and data.items.tolist() == [10, 20, 10]
    assert data.ratings.tolist() == [4.0, 3.5, 5.0] and data.timestamps.tolist() == [100, 101, 102]


@pytest.mark.parametrize(
    ("name", "stem"), [("movielens-20m", "ml-20m"), ("movielens-25m", "ml-25m")]
)
def test_movielens_large_missing_says_how_to_get_it(tmp_path: Path, name: str, stem: str) -> None:
    assert find_dataset(name, tmp_path) is None
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset(name, tmp_path)
    msg = str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert str(tmp_path / stem / "ratings.csv") in msg and str(tmp_path / f"{stem}.zip") in msg
    assert f"deep-retrieval download {name}" in msg
    assert f"https://files.grouplens.org/datasets/movielens/{stem}.zip" in msg


def test_amazon_books(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        load_dataset("amazon-books", tmp_path)
    msg = str(err.value)
    assert str(tmp_path / "ratings_Books.csv") in msg and "http://snap.stanford.edu/" in msg
    (tmp_path / "ratings_Books.csv").write_text("AX,0001,5.0,100\nAY,0002,4.0,200\n")
    data = load_dataset("amazon-books", tmp_path)
    assert isinstance(data, Interactions)
    assert data.users.tolist() == ["AX", "AY"] and data.items.tolist() == ["0001", "0002"]


def test_official_layouts(tmp_path: Path) -> None:
    # ML-100K as extracted from the official zip, and as the zip itself.
    (tmp_path / "a" / "ml-100k").mkdir(parents=True)
    (tmp_path / "a" / "ml-100k" / "u.data").write_text("1\t2\t3\t4\n5\t6\t1\t8\n")
    assert find_dataset("movielens-100k", tmp_path / "a") == tmp_path / "a" / "ml-100k" / "u.data"
    (tmp_path / "b").mkdir()
    with zipfile.ZipFile(tmp_path / "b" / "ml-100k.zip", "w") as zf:
        zf.writestr("ml-100k/u1.base", "9\t9\t9\t9\n")
        zf.writestr("ml-100k/u.data", "1\t2\t3\t4\n5\t6\t1\t8\n")
    for d in ("a", "b"):
        data = load_dataset("movielens-100k", tmp_path / d)
        assert isinstance(data, Interactions) and data.users.tolist() == [1, 5]
    # Gowalla in the LightGCN repository layout (data/gowalla/train.txt, test.txt).
    (tmp_path / "gowalla").mkdir()
    (tmp_path / "gowalla" / "train.txt").write_text("0 1 2\n1 3\n")
    assert find_dataset("gowalla", tmp_path) is None  # test.txt missing: not a complete split
    with pytest.raises(
        DatasetNotFoundError, match=r"gowalla/ holding train\.txt\[\.gz\], test\.txt\[\.gz\]"
    ):
        load_dataset("gowalla", tmp_path)
    (tmp_path / "gowalla" / "test.txt").write_text("0 4\n1\n")
    split = load_dataset("gowalla", tmp_path)
    assert isinstance(split, FixedSplit) and split.valid is None
    assert split.train.items.tolist() == [1, 2, 3] and split.test.items.tolist() == [4]


def test_unknown_name_lists_registered() -> None:
    with pytest.raises(
        ValueError, match=r"unknown data set 'ml-20m' \(did you mean 'movielens-20m'\?\)"
    ) as err:
        load_dataset("ml-20m")
    assert all(name in str(err.value) for name in DATASETS)
    with pytest.raises(ValueError, match="registered"):
        find_dataset("nope")


# ---------------------------------------------------------------------------------------------
# Data dir
# ---------------------------------------------------------------------------------------------


def test_resolve_data_dir(tmp_path: Path) -> None:
    assert resolve_data_dir(tmp_path / "x", "/env/dir") == tmp_path / "x"
    assert resolve_data_dir(str(tmp_path), None) == tmp_path
    assert resolve_data_dir(None, "/env/dir") == Path("/env/dir")
    assert resolve_data_dir(None, "") == cache_dir()
    assert resolve_data_dir(None, None) == Path.home() / ".cache" / "deep-retrieval"
    assert (
        resolve_data_dir(None, None, {"XDG_CACHE_HOME": str(tmp_path)})
        == tmp_path / "deep-retrieval"
    )
    assert cache_dir({"XDG_CACHE_HOME": ""}) == Path.home() / ".cache" / "deep-retrieval"


def test_library_reads_no_environment(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Only the CLI turns DEEP_RETRIEVAL_DATA / XDG_CACHE_HOME into arguments.
    monkeypatch.setenv("DEEP_RETRIEVAL_DATA", str(shared_data))
    monkeypatch.setenv("XDG_CACHE_HOME", str(shared_data))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "deep-retrieval"
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / ".cache" / "deep-retrieval")):
        load_dataset("movielens-100k")


def test_dataset_table(shared_data: Path, tmp_path: Path) -> None:
    rows = {row["name"]: row for row in dataset_table(shared_data)}
    assert list(rows) == list(DATASETS)
    for name, (users, items, interactions, _) in [*SHARED.items(), EMBEDDED]:
        row = rows[name]
        assert row["available"] is True and Path(str(row["path"])).exists()
        assert (row["n_users"], row["n_items"], row["n_interactions"]) == (
            users,
            items,
            interactions,
        )
        assert row["hint"] == ""
    for name in USER_PROVIDED:
        row = rows[name]
        assert row["available"] is False and row["path"] is None and row["n_users"] is None
        assert row["hint"]
    assert rows["movielens-20m"]["hint"] == "deep-retrieval download movielens-20m"
    assert rows["gowalla"]["kind"] == "fixed-split" and rows["movielens-100k"]["kind"] == "ratings"

    (tmp_path / "ml-20m").mkdir()
    (tmp_path / "ml-20m" / "ratings.csv").write_text(CSV)
    rows = {row["name"]: row for row in dataset_table(tmp_path)}
    assert {n for n, r in rows.items() if r["available"]} == {
        "movielens-latest-small",
        "movielens-20m",
    }
    assert (rows["movielens-20m"]["n_users"], rows["movielens-20m"]["n_interactions"]) == (2, 3)
    assert rows["gowalla"]["hint"] == f"copy gowalla-lightgcn/ into {tmp_path}"
    rows = {row["name"]: row for row in dataset_table(tmp_path, counts=False)}
    assert rows["movielens-20m"]["available"] and rows["movielens-20m"]["n_users"] is None
