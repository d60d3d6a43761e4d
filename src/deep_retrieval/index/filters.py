"""Query-time filters: which items a request may get back.

A filter is an allow-list of items, a condition on item attributes (columns such as a category,
given at train or add time, :meth:`DRState.item_attributes`), or both; ``exclude`` (the
deny-list) stays the recommend argument it always was. Filtered retrieval keeps DR's serving
path: the beam's candidates that fail the filter are excluded, so the answer is the top ``n`` of
the passing candidates, exactly what the unfiltered kernel ranks. When fewer than ``n`` pass, the
beam doubles for those rows (up to a limit) and, for a small passing set, the passing items are
finally scored exactly; a row that still has fewer than ``n`` while more passing items exist is
reported as incomplete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.types import Sequences
from . import retrieval
from .state import DRState

#: A passing set this small is scored exactly when widening the beam did not find n items.
EXACT_LIMIT = 50_000
#: How far the beam widens: this many times the request's beam, and never past every path.
WIDEN_FACTOR = 16


@dataclass(frozen=True)
class ItemFilter:
    """What one request may get back.

    Attributes:
        allow: ``(m,)`` internal item ids the results must come from (``None``: every item).
        where: attribute name → the values it may take; every listed attribute must match.
    """

    allow: np.ndarray | None = None
    where: Mapping[str, Sequence[Any]] | None = None


def passing(state: DRState, f: ItemFilter) -> np.ndarray:
    """``(V,)`` bool: the active items ``f`` lets through. ``ValueError`` for an unknown
    attribute or an allow id out of range."""
    mask = ~state.removed
    if f.allow is not None:
        allow = np.asarray(f.allow, dtype=np.int64).ravel()
        if len(allow) and (allow.min() < 0 or allow.max() >= state.n_items):
            raise ValueError(f"allow holds item ids outside [0, {state.n_items})")
        allowed = np.zeros(state.n_items, dtype=bool)
        allowed[allow] = True
        mask = mask & allowed
    for name, values in (f.where or {}).items():
        column = state.item_attributes.get(name)
        if column is None:
            known = ", ".join(sorted(state.item_attributes)) or "none"
            raise ValueError(f"unknown item attribute {name!r}; this model has: {known}")
        wanted = np.asarray(list(values), dtype=column.dtype if column.dtype.kind in "iu" else str)
        mask = mask & np.isin(column, wanted)
    return mask


def recommend_filtered(
    state: DRState,
    queries: Any,
    n: int,
    filters: Sequence[ItemFilter | None],
    *,
    exclude: Sequences | None = None,
    beam_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top ``n`` per query among the items its filter passes (see the module docstring).

    Args:
        queries: ``U`` histories or ``(U, E)`` user vectors (:data:`.retrieval.Queries`).
        filters: one per query (``None``: unfiltered).
        exclude: ``U`` rows of internal ids never to return.

    Returns:
        ``(ids (U, n), scores (U, n), complete (U,) bool)``: padded ``-1`` / ``-inf``;
        ``complete`` is false where fewer than ``n`` came back though more passing items exist.
    """
    n_rows = len(queries)

    def subset(rows: np.ndarray) -> Any:
        return queries.rows(rows) if isinstance(queries, Sequences) else np.asarray(queries)[rows]

    if len(filters) != n_rows:
        raise ValueError(f"{len(filters)} filters for {n_rows} queries")
    if exclude is not None and len(exclude) != n_rows:
        raise ValueError(f"exclude has {len(exclude)} rows for {n_rows} queries")
    active = ~state.removed
    masks = [active if f is None else passing(state, f) for f in filters]
    banned = [np.zeros(0, np.int64) if exclude is None
              else np.unique(exclude.rows(np.array([r])).items) for r in range(n_rows)]
    # How many items each row can get at most: what passes, less what it excludes.
    available = np.array([int(m.sum()) - int(m[b].sum()) for m, b in zip(masks, banned,
                                                                         strict=True)])
    want = np.minimum(available, n)
    ids = np.full((n_rows, n), -1, dtype=np.int64)
    scores = np.full((n_rows, n), -np.inf, dtype=np.float32)
    b = beam_size or retrieval.beam_size_for(state, n)
    limit = min(int(state.codec.n_paths), b * WIDEN_FACTOR)
    rows = np.arange(n_rows)
    while len(rows):
        cand = retrieval.retrieve(state, subset(rows), beam_size=b)
        merged = []
        for j, r in enumerate(rows):
            items = cand.items[cand.indptr[j] : cand.indptr[j + 1]]
            merged.append(np.concatenate([banned[r], items[~masks[r][items]]]))
        got_ids, got_scores = retrieval.recommend(
            state, subset(rows), n, exclude=Sequences.from_lists(merged), beam_size=b
        )
        ids[rows], scores[rows] = got_ids, got_scores
        short = rows[(got_ids >= 0).sum(axis=1) < want[rows]]
        if not len(short) or b >= limit:
            rows = short
            break
        rows, b = short, min(2 * b, limit)
    for r in rows:  # still short at the widest beam: score a small passing set exactly
        if available[r] > EXACT_LIMIT or state.net.attention is not None:
            continue
        pool = np.setdiff1d(np.flatnonzero(masks[r]), banned[r])
        keys, bias = retrieval.rerank_table(state)
        u = retrieval.query_vectors(state, subset(np.array([r])))
        q = state.net.reranker.query(u).float().detach().cpu().numpy()[0]
        s = keys[pool] @ q + bias[pool]
        top = np.argsort(-s, kind="stable")[:n]
        ids[r], scores[r] = -1, -np.inf
        ids[r, : len(top)], scores[r, : len(top)] = pool[top], s[top]
    complete = (ids >= 0).sum(axis=1) >= want
    return ids, scores, complete
