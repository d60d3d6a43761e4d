"""Changing a fitted model's catalogue: the pieces behind ``DeepRetrieval.add_items``.

A new item is placed by the same path-score machinery that training uses, run on *contexts*:
user histories that stand for the people who would pick the item.

* A **warm** item (it occurs in the given interactions) has one context per occurrence: the
  items the user had before it (ordered rows), or the rest of the row (unordered rows).
* A **cold** item (no interactions) has one context: its neighbours, taken from item features
  (the most similar existing items by cosine) or given directly (e.g. co-occurrence lists).

Beam search over each context's user vector gives ``S`` paths with probabilities; an item's paths
are the ``J`` with the largest summed probability, as the path-score accumulation of training
would rank them. Shapes: ``N`` contexts, ``n`` new items, ``V`` existing items, ``F`` features.
"""

from __future__ import annotations

import numpy as np

from .data.types import Sequences


def occurrence_contexts(
    interactions: Sequences, n_old: int, history_len: int
) -> tuple[np.ndarray, Sequences]:
    """One context per occurrence of a new item (id ``≥ n_old``) in ``interactions``.

    Context of an occurrence: the newest ``history_len`` existing items before it in an ordered
    row, or, when there are none before it or the row is unordered, the row's other existing
    items. Occurrences whose row holds no existing item get no context.

    Returns:
        ``(items (N,) int64, contexts (N rows))``: the new item of each context, and its items.
    """
    items: list[int] = []
    rows: list[np.ndarray] = []
    for r in np.unique(interactions.row_ids()[interactions.items >= n_old]):
        row = interactions.items[interactions.indptr[r] : interactions.indptr[r + 1]]
        old = row < n_old
        if not old.any():
            continue
        for pos in np.flatnonzero(~old):
            before = row[:pos][old[:pos]]
            if interactions.ordered and len(before):
                ctx = before[-history_len:]
            else:
                ctx = row[old][-history_len:]
            items.append(int(row[pos]))
            rows.append(ctx)
    return np.array(items, dtype=np.int64), Sequences.from_lists(rows, ordered=interactions.ordered)


def feature_neighbours(
    features: np.ndarray, n_old: int, new: np.ndarray, n_neighbours: int, batch: int = 1024
) -> Sequences:
    """The ``n_neighbours`` existing items most similar (cosine of ``features``) to each new item.

    Args:
        features: ``(V + n, F)`` float features of every item, existing and new; an existing
            item whose row is not finite (e.g. ``nan``: no features known) is never a neighbour.
        n_old: ``V``; rows ``0 .. V-1`` are the existing items.
        new: ``(m,)`` ids (``≥ V``) of the items to find neighbours for (finite rows).

    Returns:
        ``m`` rows of existing item ids, most similar first.
    """
    feats = np.asarray(features, dtype=np.float32)
    usable = np.flatnonzero(np.isfinite(feats[:n_old]).all(axis=1))
    if len(usable) == 0:
        raise ValueError("no existing item has finite features: nothing to compare new items with")
    unit = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    old = unit[usable]
    k = min(n_neighbours, len(usable))
    out = []
    for s in range(0, len(new), batch):
        sim = unit[new[s : s + batch]] @ old.T  # (m', V')
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        out.extend(usable[np.take_along_axis(top, order, axis=1)])
    return Sequences.from_lists(out, ordered=False)


def top_paths(
    items: np.ndarray, path_ids: np.ndarray, probs: np.ndarray, n_items: int, n_paths: int, paths_per_item: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per item, the ``J`` paths with the largest summed probability over its contexts.

    Args:
        items: ``(N,)`` item (``0 .. n_items-1``) of each context.
        path_ids: ``(N, S)`` beam paths of each context, distinct within a row.
        probs: ``(N, S)`` their probabilities.

    Returns:
        ``(paths (n_items, J) int64, found (n_items,) int64)``: ``found`` counts the distinct
        paths seen per item; rows with ``found < J`` are padded with ``-1``.
    """
    j = paths_per_item
    width = path_ids.shape[1]
    key = np.repeat(items, width) * n_paths + path_ids.ravel()
    order = np.argsort(key, kind="stable")
    key, p = key[order], probs.ravel()[order]
    start = np.r_[True, key[1:] != key[:-1]]
    uniq = key[start]
    score = np.add.reduceat(p, np.flatnonzero(start)) if len(key) else p
    item, path = np.divmod(uniq, n_paths)
    best = np.lexsort((path, -score, item))  # per item: score descending, path id on ties
    item, path = item[best], path[best]
    rank = np.arange(len(item)) - np.searchsorted(item, item, side="left")
    keep = rank < j
    out = np.full((n_items, j), -1, dtype=np.int64)
    out[item[keep], rank[keep]] = path[keep]
    return out, np.bincount(item, minlength=n_items)


def top_paths_reference(
    items: np.ndarray, path_ids: np.ndarray, probs: np.ndarray, n_items: int, paths_per_item: int
) -> np.ndarray:
    """Loop twin of :func:`top_paths` (paths only), for tests."""
    out = np.full((n_items, paths_per_item), -1, dtype=np.int64)
    for v in range(n_items):
        total: dict[int, float] = {}
        for row in np.flatnonzero(items == v):
            for pid, pr in zip(path_ids[row].tolist(), probs[row].tolist()):
                total[pid] = total.get(pid, 0.0) + pr
        ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:paths_per_item]
        out[v, : len(ranked)] = [pid for pid, _ in ranked]
    return out
