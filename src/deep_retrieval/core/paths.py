"""Paths of the Deep Retrieval structure and the item ↔ path index.

Glossary and shape alphabet (used in shape comments across the package):

- ``D`` = ``n_layers``: layers of the structure; a path has one node per layer.
- ``K`` = ``n_nodes``: nodes per layer; there are ``K**D`` possible paths.
- ``J`` = ``paths_per_item``: distinct paths each item is mapped to (the mapping π).
- ``B`` = ``beam_size``: paths kept per layer (and returned) by beam search.
- ``V`` = ``n_items``: items (internal ids ``0 .. V-1``).
- ``N``: a batch of users or of training interactions.
- ``S``: candidate paths kept per item for path assignment (top-``S`` scores).
- ``E``: user-embedding width; ``P``: occupied paths.

Conventions:

- A path is an int array of shape ``(D,)`` with values in ``[0, K)``; ``c_1`` comes first.
- A path id is an ``int64`` in ``[0, K**D)``: mixed radix with the *first* layer most significant,
  ``id = ((c_1·K + c_2)·K + …)·K + c_D``, so ids sort like paths lexicographically and all paths
  below one prefix form one contiguous id range.
- Path id ``-1`` means "no path" (padding) wherever ids are accepted as input.

Example::

    >>> codec = PathCodec(n_layers=3, n_nodes=100)
    >>> int(codec.encode(np.array([36, 27, 20])))
    362720
    >>> codec.decode(np.int64(362720)).tolist()
    [36, 27, 20]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_INT64_MAX = np.iinfo(np.int64).max


def as_int_array(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` (any shape) as an int64 array, without a copy when it already is one.

    Floats or other kinds are rejected rather than truncated; ``name`` labels the error.
    """
    arr = np.asarray(values)
    if arr.dtype.kind not in "iu":
        if arr.size == 0:
            return arr.astype(np.int64)
        raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > _INT64_MAX:
        # astype(int64) would wrap these to negative numbers (and to misleading messages)
        raise ValueError(f"{name} holds values above the int64 range, up to {arr.max()}")
    return arr.astype(np.int64, copy=False)


def compact_ints(values: np.ndarray, largest: int) -> np.ndarray:
    """``values`` as int32 when ``largest`` (the largest value they may hold) fits, else int64.

    The index's tables are ``J + 2·P/V`` ids per item; 32-bit ids halve them (1M items, J = 3:
    64.8 → 33 B per item beyond the item vectors) and every catalogue a 2-core machine can
    hold fits."""
    dtype = np.int32 if largest <= np.iinfo(np.int32).max else np.int64
    return np.asarray(values).astype(dtype, copy=False)


def check_rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    """``rng`` itself when it is a generator (so the caller's stream advances), else a new one
    seeded with it (``None``: fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """``np.unique`` for a 1-D int array: sort, keep first of each run. (NumPy 2's ``np.unique``
    hashes first; measured 50× slower here for 400K int64 keys, 10× for 1,500.)"""
    out = np.sort(values)
    if out.size:
        out = out[np.concatenate([[True], out[1:] != out[:-1]])]
    return out


@dataclass(frozen=True)
class PathCodec:
    """Converts paths ``(..., D)`` to int64 path ids ``(...,)`` and back.

    Args:
        n_layers: ``D`` ≥ 1.
        n_nodes: ``K`` ≥ 1; ``K**D`` must fit in int64.
    """

    n_layers: int
    n_nodes: int

    def __post_init__(self) -> None:
        if int(self.n_layers) != self.n_layers or self.n_layers < 1:
            raise ValueError(f"n_layers must be an integer >= 1, got {self.n_layers!r}")
        if int(self.n_nodes) != self.n_nodes or self.n_nodes < 1:
            raise ValueError(f"n_nodes must be an integer >= 1, got {self.n_nodes!r}")
        if int(self.n_nodes) ** int(self.n_layers) > _INT64_MAX:
            raise ValueError(
                f"n_nodes**n_layers = {self.n_nodes}**{self.n_layers} does not fit in int64; "
                "use fewer layers or nodes"
            )

    @property
    def n_paths(self) -> int:
        """``K**D``, the number of possible paths."""
        return int(self.n_nodes) ** int(self.n_layers)

    def encode(self, paths: np.ndarray) -> np.ndarray:
        """Path ids of ``paths``.

        Args:
            paths: ``(..., D)`` integers in ``[0, K)``.

        Returns:
            ``(...,)`` int64 path ids.
        """
        arr = as_int_array(paths, "paths")
        if arr.ndim == 0 or arr.shape[-1] != self.n_layers:
            raise ValueError(
                f"paths must have a last axis of length n_layers={self.n_layers}, "
                f"got shape {arr.shape}"
            )
        if arr.size and (arr.min() < 0 or arr.max() >= self.n_nodes):
            raise ValueError(
                f"path nodes must lie in [0, n_nodes={self.n_nodes}), "
                f"got values in [{arr.min()}, {arr.max()}]"
            )
        ids = np.zeros(arr.shape[:-1], dtype=np.int64)
        for d in range(self.n_layers):  # Horner: the first layer ends up most significant
            ids = ids * self.n_nodes + arr[..., d]
        return ids

    def decode(self, path_ids: np.ndarray) -> np.ndarray:
        """Paths of ``path_ids``.

        Args:
            path_ids: ``(...,)`` integers in ``[0, K**D)``.

        Returns:
            ``(..., D)`` int64 paths.
        """
        rest = as_int_array(path_ids, "path_ids").copy()
        if rest.size and (rest.min() < 0 or rest.max() >= self.n_paths):
            raise ValueError(
                f"path ids must lie in [0, n_paths={self.n_paths}), "
                f"got values in [{rest.min()}, {rest.max()}]"
            )
        out = np.empty((*rest.shape, self.n_layers), dtype=np.int64)
        for d in reversed(range(self.n_layers)):
            out[..., d] = rest % self.n_nodes
            rest //= self.n_nodes
        return out


def random_distinct_path_ids(
    n_items: int, paths_per_item: int, n_paths: int, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """``(V, J)`` int64 path ids, ``J`` distinct uniformly random paths per item.

    Exact sampling without replacement, vectorised over items: the ``j``-th draw picks the
    ``r``-th path (``r`` uniform in ``[0, n_paths - j)``) among those not drawn yet, by shifting
    ``r`` past each earlier draw in increasing order. No rejection loop, so it also works when
    ``J`` is close to ``n_paths``.
    """
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    if paths_per_item < 1:
        raise ValueError(f"paths_per_item must be >= 1, got {paths_per_item}")
    if paths_per_item > n_paths:
        raise ValueError(
            f"paths_per_item={paths_per_item} distinct paths need at least as many paths, "
            f"but there are only n_paths={n_paths}"
        )
    rng = check_rng(rng)
    out = np.empty((n_items, paths_per_item), dtype=np.int64)
    for j in range(paths_per_item):
        r = rng.integers(0, n_paths - j, size=n_items, dtype=np.int64)  # (V,)
        taken = np.sort(out[:, :j], axis=1)  # (V, j)
        for k in range(j):
            r += r >= taken[:, k]
        out[:, j] = r
    return out


def kmeans(
    x: np.ndarray, k: int, rng: np.random.Generator, *, iters: int = 20, per_centroid: int = 256
) -> np.ndarray:
    """``(k', E)`` Lloyd's k-means centroids of the rows of ``x (V, E)``, ``k' = min(k, V)``.

    Fitted on a sample of at most ``per_centroid · k`` rows (faiss's rule: more points per
    centroid barely move them), seeded by k-means++ (each next seed drawn with probability ∝
    its squared distance to the seeds so far; random seeds put two in one cluster often enough
    to matter); an emptied cluster is re-seeded with the row farthest from its centroid.
    """
    k = min(k, len(x))
    if len(x) > per_centroid * k:
        x = x[rng.choice(len(x), per_centroid * k, replace=False)]
    x = x.astype(np.float64)
    sq = (x**2).sum(1)
    c = np.empty((k, x.shape[1]))
    c[0] = x[rng.integers(len(x))]
    near = np.maximum(sq - 2 * x @ c[0] + (c[0] ** 2).sum(), 0)  # (n,)
    for i in range(1, k):
        total = near.sum()
        pick = rng.choice(len(x), p=near / total) if total > 0 else rng.integers(len(x))
        c[i] = x[pick]
        near = np.minimum(near, np.maximum(sq - 2 * x @ c[i] + (c[i] ** 2).sum(), 0))
    for _ in range(iters):
        d = sq[:, None] - 2 * x @ c.T + (c**2).sum(1)[None]  # (n, k) squared distances
        label = d.argmin(1)
        counts = np.bincount(label, minlength=k)
        sums = np.zeros_like(c)
        np.add.at(sums, label, x)
        empty = counts == 0
        c[~empty] = sums[~empty] / counts[~empty, None]
        if empty.any():  # the farthest rows from their centroids found the empty clusters
            far = np.argsort(-d[np.arange(len(x)), label])[: int(empty.sum())]
            c[empty] = x[far]
    return c


def kmeans_path_ids(
    vectors: np.ndarray,
    codec: PathCodec,
    paths_per_item: int,
    rng: np.random.Generator | int | None = None,
) -> np.ndarray:
    """``(V, J)`` int64 path ids from item vectors ``(V, E)`` by residual k-means.

    Layer 1 clusters the vectors into ``K`` nodes; layer ``d > 1`` clusters what the nodes above
    leave unexplained (the residual), as residual-quantisation semantic ids do. Item ``v``'s
    ``j``-th path starts at its ``j``-th nearest layer-1 node and follows the nearest residual
    centroid below it, so the ``J`` paths are distinct and items with similar vectors share
    paths: the beam, which follows the user's query vector, finds them together. Memory is
    ``O(V·J·E)`` (the residuals): meant for catalogues that fit in memory a few times over.
    """
    k = codec.n_nodes
    if paths_per_item > k:
        raise ValueError(
            f"k-means paths start at distinct first-layer nodes: paths_per_item="
            f"{paths_per_item} needs n_nodes ≥ {paths_per_item}, got {k}"
        )
    rng = check_rng(rng)
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"item vectors must be a finite (V, E) matrix, got shape {x.shape}")
    n = len(x)
    codes = np.zeros((n, paths_per_item, codec.n_layers), dtype=np.int64)
    first = kmeans(x, k, rng).astype(np.float32)
    d1 = (x**2).sum(1)[:, None] - 2 * x @ first.T + (first**2).sum(1)[None]  # (V, k')
    codes[:, :, 0] = np.argsort(d1, axis=1)[:, :paths_per_item]
    residual = x[:, None, :] - first[codes[:, :, 0]]  # (V, J, E)
    for d in range(1, codec.n_layers):
        # One codebook per layer, fitted on the nearest path's residuals.
        c = kmeans(residual[:, 0], k, rng).astype(np.float32)
        r = residual.reshape(-1, x.shape[1])
        label = ((r**2).sum(1)[:, None] - 2 * r @ c.T + (c**2).sum(1)[None]).argmin(1)
        codes[:, :, d] = label.reshape(n, paths_per_item)
        residual = residual - c[codes[:, :, d]]
    return codec.encode(codes)


class ItemPathMap:
    """The mapping π from items to ``J`` distinct paths each, with its inverted index.

    Args:
        path_ids: ``(V, J)`` int path ids, distinct within each row.
        codec: the :class:`PathCodec` the ids belong to.
        excluded: optional ``(V,)`` bool; items left out of the inverted index (removed from
            serving) while keeping their row of ``path_ids``.

    Attributes:
        path_ids: ``(V, J)`` path ids, read-only.
        codec: the codec.
        excluded: ``(V,)`` bool, read-only.
        occupied_paths: ``(P,)`` sorted ids of the paths holding at least one item.
        path_indptr: ``(P + 1,)``; items on ``occupied_paths[p]`` are
            ``path_items[path_indptr[p]:path_indptr[p + 1]]`` (ascending).
        path_items: ``(V·J,)`` item indices grouped by path (CSR layout).

    The four tables are int32 wherever their values fit (:func:`compact_ints`), else int64;
    its methods return int64.

    Example::

        >>> codec = PathCodec(n_layers=2, n_nodes=4)
        >>> m = ItemPathMap.random(10, codec, paths_per_item=2, rng=0)
        >>> m.path_sizes().sum() == 10 * 2
        True
    """

    def __init__(
        self, path_ids: np.ndarray, codec: PathCodec, *, excluded: np.ndarray | None = None
    ) -> None:
        ids = as_int_array(path_ids, "path_ids")
        if ids.ndim != 2 or ids.shape[1] < 1:
            raise ValueError(f"path_ids must have shape (n_items, paths_per_item), got {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= codec.n_paths):
            raise ValueError(
                f"path ids must lie in [0, n_paths={codec.n_paths}), "
                f"got values in [{ids.min()}, {ids.max()}]"
            )
        if ids.shape[1] > 1:
            rows = np.sort(ids, axis=1)
            dup = (rows[:, 1:] == rows[:, :-1]).any(axis=1)
            if dup.any():
                item = int(np.flatnonzero(dup)[0])
                raise ValueError(
                    f"each item needs {ids.shape[1]} distinct paths; item {item} has "
                    f"path ids {ids[item].tolist()}"
                )
        self.codec = codec
        self.path_ids = compact_ints(ids, codec.n_paths - 1).copy()
        self.path_ids.flags.writeable = False  # the inverted index below must stay consistent

        self.excluded = self._check_excluded(excluded, len(ids))

        flat = self.path_ids.ravel()  # (V·J,)
        # Stable sort: within one path the items stay in increasing order.
        if self.excluded.any():
            slots = np.flatnonzero(~np.repeat(self.excluded, ids.shape[1]))
            order = slots[np.argsort(flat[slots], kind="stable")]
        else:
            order = np.argsort(flat, kind="stable")
        sorted_ids = flat[order]
        is_start = np.ones(len(order), dtype=bool)
        is_start[1:] = sorted_ids[1:] != sorted_ids[:-1]
        starts = np.flatnonzero(is_start)
        self._install(
            sorted_ids[starts],  # (P,)
            np.r_[starts, len(order)],  # (P + 1,)
            order // self.path_ids.shape[1],  # (indexed V·J,)
        )
        for arr in (self.occupied_paths, self.path_indptr, self.path_items):
            arr.flags.writeable = False

    def _install(self, occupied: np.ndarray, indptr: np.ndarray, items: np.ndarray) -> None:
        self.occupied_paths = compact_ints(occupied, self.codec.n_paths - 1)
        self.path_indptr = compact_ints(indptr, len(items))
        self.path_items = compact_ints(items, len(self.path_ids) - 1)
        for arr in (self.occupied_paths, self.path_indptr, self.path_items):
            arr.flags.writeable = False

    @staticmethod
    def _check_excluded(excluded: np.ndarray | None, n_items: int) -> np.ndarray:
        out = (
            np.zeros(n_items, dtype=bool)
            if excluded is None
            else np.asarray(excluded, dtype=bool).copy()
        )
        if out.shape != (n_items,):
            raise ValueError(f"excluded must have shape ({n_items},), got {out.shape}")
        out.flags.writeable = False
        return out

    @classmethod
    def from_index(
        cls,
        path_ids: np.ndarray,
        codec: PathCodec,
        occupied_paths: np.ndarray,
        path_indptr: np.ndarray,
        path_items: np.ndarray,
        excluded: np.ndarray | None = None,
    ) -> ItemPathMap:
        """Rebuild from stored arrays without re-sorting (a saved model's inverted index).

        Checks the invariants that cost one pass (shapes, ranges, sorted ``occupied_paths``,
        monotone ``path_indptr``, entry count); content corruption is the bundle checksums' job.
        """
        ids = as_int_array(path_ids, "path_ids")
        occupied = as_int_array(occupied_paths, "occupied_paths")
        indptr = as_int_array(path_indptr, "path_indptr")
        items = as_int_array(path_items, "path_items")
        excluded = cls._check_excluded(excluded, len(ids))
        n_indexed = int((~excluded).sum()) * (ids.shape[1] if ids.ndim == 2 else 0)
        problems = []
        if ids.ndim != 2:
            problems.append(f"path_ids has shape {ids.shape}")
        elif ids.size and (ids.min() < 0 or ids.max() >= codec.n_paths):
            problems.append(f"path_ids holds ids outside [0, {codec.n_paths})")
        if len(indptr) != len(occupied) + 1 or indptr[0] != 0:
            problems.append("path_indptr does not match occupied_paths")
        elif np.any(np.diff(indptr) <= 0) or indptr[-1] != len(items):
            problems.append("path_indptr is not strictly increasing up to len(path_items)")
        if len(items) != n_indexed:
            problems.append(f"path_items has {len(items)} entries, expected {n_indexed}")
        if np.any(np.diff(occupied) <= 0):
            problems.append("occupied_paths is not strictly increasing")
        elif occupied.size and (occupied[0] < 0 or occupied[-1] >= codec.n_paths):
            problems.append(f"occupied_paths holds ids outside [0, {codec.n_paths})")
        if len(items) and (items.min() < 0 or items.max() >= len(ids)):
            problems.append("path_items holds ids outside the item range")
        if problems:
            raise ValueError("inconsistent path index: " + "; ".join(problems))
        # Checked at full width first: narrowing a corrupt value could wrap it into range.
        self = cls.__new__(cls)
        self.codec = codec
        self.path_ids = compact_ints(ids, codec.n_paths - 1)
        self.excluded = excluded
        self._install(occupied, indptr, items)
        for arr in (self.path_ids, self.occupied_paths, self.path_indptr, self.path_items):
            arr.flags.writeable = False
        return self

    @classmethod
    def from_paths(cls, paths: np.ndarray, codec: PathCodec) -> ItemPathMap:
        """Build from ``(V, J, D)`` paths."""
        arr = as_int_array(paths, "paths")
        if arr.ndim != 3:
            raise ValueError(
                f"paths must have shape (n_items, paths_per_item, n_layers), got {arr.shape}"
            )
        return cls(codec.encode(arr), codec)

    @classmethod
    def random(
        cls,
        n_items: int,
        codec: PathCodec,
        paths_per_item: int,
        rng: np.random.Generator | int | None = None,
    ) -> ItemPathMap:
        """``J`` distinct uniformly random paths per item (the paper's initial π)."""
        return cls(random_distinct_path_ids(n_items, paths_per_item, codec.n_paths, rng), codec)

    @property
    def n_items(self) -> int:
        return self.path_ids.shape[0]

    @property
    def paths_per_item(self) -> int:
        return self.path_ids.shape[1]

    @property
    def paths(self) -> np.ndarray:
        """``(V, J, D)`` int64 paths (decoded on each call)."""
        return self.codec.decode(self.path_ids)

    def _check_query(self, path_ids: np.ndarray, ndim: int) -> np.ndarray:
        ids = as_int_array(path_ids, "path_ids")
        if ids.ndim != ndim:
            raise ValueError(f"path_ids must be {ndim}-D, got shape {ids.shape}")
        if ids.size and (ids.min() < -1 or ids.max() >= self.codec.n_paths):
            raise ValueError(
                f"path ids must lie in [0, n_paths={self.codec.n_paths}) or be -1 (padding), "
                f"got values in [{ids.min()}, {ids.max()}]"
            )
        return ids

    def _gather(self, flat_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Items on each of ``flat_ids (M,)`` as ``(query position (T,), item (T,))``."""
        if len(self.occupied_paths) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        # In the table's own width (ids are checked < K**D): with mixed widths numpy would
        # copy the whole (P,) table to int64 on every call (0.4 ms per query at 1M items).
        flat_ids = flat_ids.astype(self.occupied_paths.dtype, copy=False)
        pos = np.searchsorted(self.occupied_paths, flat_ids)  # (M,)
        pos = np.minimum(pos, len(self.occupied_paths) - 1)
        hit = (self.occupied_paths[pos] == flat_ids) & (flat_ids >= 0)
        starts = np.where(hit, self.path_indptr[pos], 0)
        lens = np.where(hit, self.path_indptr[pos + 1] - self.path_indptr[pos], 0)
        total = int(lens.sum())
        # Ragged gather without a loop: position k of range q is starts[q] + k.
        query = np.repeat(np.arange(len(flat_ids), dtype=np.int64), lens)  # (T,)
        offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(lens) - lens, lens)
        return query, self.path_items[np.repeat(starts, lens) + offsets]

    def items_on(self, path_ids: np.ndarray) -> np.ndarray:
        """Unique items on any of ``path_ids``.

        Args:
            path_ids: ``(B,)`` path ids; ``-1`` entries are ignored, unoccupied paths add nothing.

        Returns:
            ``(C,)`` int64 sorted unique item indices.
        """
        ids = self._check_query(path_ids, 1)
        return _sorted_unique(self._gather(ids)[1]).astype(np.int64, copy=False)

    def items_on_batch(self, path_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row, the unique items on any of its paths (ragged, CSR layout).

        Vectorised over rows: one ragged gather, then one sort of the combined key
        ``row · V + item`` dedupes within rows.

        Args:
            path_ids: ``(N, B)`` path ids; ``-1`` entries are ignored.

        Returns:
            ``(indptr (N + 1,), items (T,))`` int64; row ``i`` holds
            ``items[indptr[i]:indptr[i + 1]]``, sorted ascending.
        """
        ids = self._check_query(path_ids, 2)
        n_rows, width = ids.shape
        query, items = self._gather(ids.ravel())
        rows = query // max(width, 1)
        key = _sorted_unique(rows * max(self.n_items, 1) + items.astype(np.int64))
        rows, items = np.divmod(key, max(self.n_items, 1))
        indptr = np.zeros(n_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
        return indptr, items.astype(np.int64)

    def path_sizes(self) -> np.ndarray:
        """``(P,)`` int64 number of items on each occupied path, aligned with ``occupied_paths``."""
        return np.diff(self.path_indptr).astype(np.int64, copy=False)

    def largest_path_size(self) -> int:
        """Items on the fullest path (0 when there are no items)."""
        sizes = self.path_sizes()
        return int(sizes.max()) if sizes.size else 0

    def __repr__(self) -> str:
        return (
            f"ItemPathMap(n_items={self.n_items}, paths_per_item={self.paths_per_item}, "
            f"n_layers={self.codec.n_layers}, n_nodes={self.codec.n_nodes}, "
            f"occupied_paths={len(self.occupied_paths)})"
        )
