from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import numpy as np
import pytest

from deep_retrieval.core.paths import (
    ItemPathMap,
    PathCodec,
    kmeans,
    kmeans_path_ids,
    random_distinct_path_ids,
)


@pytest.mark.parametrize(("n_layers", "n_nodes"), [(1, 1), (1, 7), (2, 3), (3, 100), (5, 4)])
def test_codec_round_trip(n_layers: int, n_nodes: int) -> None:
    codec = PathCodec(n_layers, n_nodes)
    rng = np.random.default_rng(0)
    paths = rng.integers(0, n_nodes, size=(6, 5, n_layers))
    ids = codec.encode(paths)
    assert ids.shape == (6, 5) and ids.dtype == np.int64
    np.testing.assert_array_equal(codec.decode(ids), paths)
    some_ids = rng.integers(0, codec.n_paths, size=50)
    np.testing.assert_array_equal(codec.encode(codec.decode(some_ids)), some_ids)


@pytest.mark.parametrize(("n_layers", "n_nodes"), [(1, 5), (2, 3), (3, 4)])
def test_codec_ids_sort_like_paths(n_layers: int, n_nodes: int) -> None:
    codec = PathCodec(n_layers, n_nodes)
    lexicographic = np.array(list(itertools.product(range(n_nodes), repeat=n_layers)))
    np.testing.assert_array_equal(codec.encode(lexicographic), np.arange(n_nodes**n_layers))
    assert codec.n_paths == n_nodes**n_layers


def test_codec_paper_example() -> None:
    codec = PathCodec(n_layers=3, n_nodes=100)
    assert int(codec.encode(np.array([36, 27, 20]))) == 362720
    assert codec.decode(np.int64(362720)).tolist() == [36, 27, 20]


def test_codec_rejects_bad_input() -> None:
    codec = PathCodec(2, 3)
    with pytest.raises(ValueError, match="n_nodes=3"):
        codec.encode(np.array([[0, 3]]))
    with pytest.raises(ValueError, match="n_nodes=3"):
        codec.encode(np.array([[-1, 0]]))
    with pytest.raises(ValueError, match="n_layers=2"):
        codec.encode(np.array([[0, 1, 2]]))
    with pytest.raises(ValueError, match="integer"):
        codec.encode(np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="n_paths=9"):
        codec.decode(np.array([9]))
    with pytest.raises(ValueError, match="n_layers"):
        PathCodec(0, 3)
    with pytest.raises(ValueError, match="n_nodes"):
        PathCodec(2, 0)
    with pytest.raises(ValueError, match="int64"):
        PathCodec(10, 1000)


def _brute_index(path_ids: np.ndarray) -> dict[int, list[int]]:
    index: dict[int, list[int]] = defaultdict(list)
    for v, row in enumerate(path_ids.tolist()):
        for c in row:
            index[c].append(v)
    return index


def test_inverted_index_matches_table() -> None:
    codec = PathCodec(2, 4)
    item_map = ItemPathMap.random(50, codec, paths_per_item=3, rng=1)
    index = _brute_index(item_map.path_ids)
    assert item_map.occupied_paths.tolist() == sorted(index)
    for p, path_id in enumerate(item_map.occupied_paths.tolist()):
        lo, hi = item_map.path_indptr[p], item_map.path_indptr[p + 1]
        assert item_map.path_items[lo:hi].tolist() == index[path_id]  # ascending items
    sizes = item_map.path_sizes()
    assert sizes.sum() == 50 * 3
    assert sizes.tolist() == [len(index[c]) for c in sorted(index)]
    assert item_map.largest_path_size() == max(Counter(item_map.path_ids.ravel()).values())


def test_items_on_and_batch() -> None:
    codec = PathCodec(2, 5)
    item_map = ItemPathMap.random(40, codec, paths_per_item=2, rng=3)
    index = _brute_index(item_map.path_ids)
    rng = np.random.default_rng(0)
    queries = rng.integers(-1, codec.n_paths, size=(7, 6))  # -1 = padding
    queries[0] = -1
    indptr, items = item_map.items_on_batch(queries)
    assert indptr.shape == (8,) and indptr[0] == 0 and indptr[-1] == len(items)
    for row in range(7):
        expected = sorted({v for c in queries[row].tolist() if c >= 0 for v in index.get(c, [])})
        assert item_map.items_on(queries[row]).tolist() == expected
        assert items[indptr[row] : indptr[row + 1]].tolist() == expected
    assert item_map.items_on(np.array([], dtype=np.int64)).tolist() == []
    with pytest.raises(ValueError, match="n_paths=25"):
        item_map.items_on(np.array([25]))


def test_from_paths_and_validation() -> None:
    codec = PathCodec(3, 3)
    paths = np.array([[[0, 1, 2], [2, 2, 2]], [[0, 0, 0], [0, 1, 2]]])
    item_map = ItemPathMap.from_paths(paths, codec)
    np.testing.assert_array_equal(item_map.paths, paths)
    assert item_map.path_ids.tolist() == [[5, 26], [0, 5]]
    assert item_map.items_on(np.array([5])).tolist() == [0, 1]
    with pytest.raises(ValueError):
        item_map.path_ids[0, 0] = 1  # read-only keeps the inverted index consistent
    with pytest.raises(ValueError, match="distinct"):
        ItemPathMap(np.array([[1, 1]]), codec)
    with pytest.raises(ValueError, match="n_paths=27"):
        ItemPathMap(np.array([[1, 27]]), codec)


def test_random_paths_distinct_and_seeded() -> None:
    codec = PathCodec(2, 3)
    a = ItemPathMap.random(200, codec, paths_per_item=4, rng=7)
    b = ItemPathMap.random(200, codec, paths_per_item=4, rng=7)
    np.testing.assert_array_equal(a.path_ids, b.path_ids)
    rows = np.sort(a.path_ids, axis=1)
    assert (rows[:, 1:] != rows[:, :-1]).all()
    assert a.path_ids.min() >= 0 and a.path_ids.max() < codec.n_paths
    full = random_distinct_path_ids(30, 9, 9, rng=0)  # J = K**D: every row is a permutation
    assert (np.sort(full, axis=1) == np.arange(9)).all()
    with pytest.raises(ValueError, match="n_paths=9"):
        random_distinct_path_ids(3, 10, 9)


def test_random_paths_uniform() -> None:
    # 2 distinct of 3 paths: each unordered pair has probability 1/3, each ordered draw 1/6.
    ids = random_distinct_path_ids(30_000, 2, 3, rng=0)
    freq = Counter(map(tuple, ids.tolist()))
    assert len(freq) == 6
    for count in freq.values():
        assert abs(count / 30_000 - 1 / 6) < 0.015


def test_tables_are_32_bit_and_corrupt_ids_cannot_wrap() -> None:
    """The four tables are stored as int32 (half the index memory) while the methods still
    return int64; a stored id beyond int32 is refused before narrowing, not wrapped into range."""
    codec = PathCodec(2, 4)
    m = ItemPathMap.random(30, codec, paths_per_item=2, rng=0)
    for name in ("path_ids", "occupied_paths", "path_indptr", "path_items"):
        assert getattr(m, name).dtype == np.int32, name
    assert m.path_sizes().dtype == np.int64
    assert m.items_on(m.occupied_paths[:2]).dtype == np.int64
    assert m.items_on_batch(m.path_ids)[1].dtype == np.int64
    again = ItemPathMap.from_index(
        m.path_ids.astype(np.int64), codec, m.occupied_paths, m.path_indptr, m.path_items
    )
    np.testing.assert_array_equal(again.path_items, m.path_items)
    assert again.path_ids.dtype == np.int32
    wrapped = m.occupied_paths.astype(np.int64)
    wrapped[-1] += 1 << 32  # narrowed to int32 this would be the same id again
    with pytest.raises(ValueError, match="occupied_paths holds ids outside"):
        ItemPathMap.from_index(m.path_ids, codec, wrapped, m.path_indptr, m.path_items)
    bad_ids = m.path_ids.astype(np.int64)
    bad_ids[0, 0] += 1 << 32
    with pytest.raises(ValueError, match="path_ids holds ids outside"):
        ItemPathMap.from_index(bad_ids, codec, m.occupied_paths, m.path_indptr, m.path_items)


def test_kmeans_finds_separated_clusters() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 8)) * 10
    x = (centres[rng.integers(0, 4, 400)] + rng.normal(size=(400, 8)) * 0.1).astype(np.float32)
    found = kmeans(x, 4, np.random.default_rng(1))
    # every true centre has a found centroid within the noise
    gaps = np.linalg.norm(centres[:, None] - found[None], axis=2).min(axis=1)
    assert gaps.max() < 0.5
    assert kmeans(x[:3], 10, np.random.default_rng(1)).shape == (3, 8)  # k' = min(k, V)


def test_kmeans_paths_group_similar_items() -> None:
    # Two tight groups of items: each group shares its first-layer node, the groups do not,
    # and each item's J paths are distinct and start at distinct first-layer nodes.
    rng = np.random.default_rng(0)
    a = rng.normal(size=8) * 10
    x = np.concatenate([a + rng.normal(size=(50, 8)) * 0.01, -a + rng.normal(size=(50, 8)) * 0.01])
    codec = PathCodec(3, 2)  # K = 2 first-layer nodes for the two groups
    ids = kmeans_path_ids(x, codec, 2, np.random.default_rng(0))
    paths = codec.decode(ids)  # (V, J, D)
    assert ids.shape == (100, 2)
    first = paths[:, 0, 0]
    assert len(set(first[:50])) == 1 and len(set(first[50:])) == 1 and first[0] != first[50]
    assert (paths[:, 0, 0] != paths[:, 1, 0]).all()
    np.testing.assert_array_equal(ids, kmeans_path_ids(x, codec, 2, np.random.default_rng(0)))
    ItemPathMap(ids, codec)  # valid: distinct per row, in range
    with pytest.raises(ValueError, match="needs n_nodes ≥ 3"):
        kmeans_path_ids(x, codec, 3)
