"""External ids ↔ a state's internal rows: items, known users, the popularity fallback, and
re-expressing a data split in a trained model's item ids."""

from __future__ import annotations

import dataclasses
from typing import Any, overload

import numpy as np

from ..data.types import Sequences, Split
from .state import DRState


def item_index(state: DRState, external: list | np.ndarray) -> tuple[np.ndarray, list]:
    """External item ids → ``(internal ids (m,) of the known ones, unknown ids as given)``.

    Ids compare as strings, so ``"42"`` and ``42`` are the same item. Without stored item ids
    the model's internal ids are the ids (``0 .. V-1``).
    """

    def build() -> dict[str, int]:
        names = range(state.n_items) if state.item_ids is None else state.item_ids.tolist()
        return {str(v): i for i, v in enumerate(names)}

    lookup = state.derived("item_lookup", build)
    known, unknown = [], []
    for x in external:
        i = lookup.get(str(x))
        if i is None:
            unknown.append(x)
        else:
            known.append(i)
    return np.array(known, dtype=np.int64), unknown


def rows_of(state: DRState, external: Any) -> np.ndarray:
    """External item ids → ``(m,)`` int64 internal rows; ``KeyError`` naming unknown ones."""
    known, unknown = item_index(state, np.asarray(external).ravel().tolist())
    if unknown:
        raise KeyError(f"{len(unknown)} unknown item id(s), e.g. {unknown[:3]}")
    return known


def to_external(state: DRState, internal: np.ndarray) -> np.ndarray:
    """Internal ids of any shape (``-1`` = padding) → the external ids, same shape; padding
    becomes ``-1`` for integer ids and ``""`` for string ids."""
    names = state.item_ids
    if names is None:
        raise ValueError(
            "this model records no external item ids (saved by an older version): load it and"
            " save it again with item_ids=…"
        )
    out = names[np.maximum(internal, 0)] if len(names) else np.zeros(internal.shape, np.int64)
    out[internal < 0] = -1 if names.dtype.kind in "iu" else ""
    return out


def user_history(state: DRState, user_id: Any) -> np.ndarray:
    """``(L,)`` internal item ids of a known user; ``KeyError`` for an unknown one."""
    histories, user_ids = state.user_histories, state.user_ids
    if histories is None or user_ids is None:
        raise KeyError(f"unknown user {user_id!r}: this model holds no user histories")
    lookup = state.derived(
        "user_lookup", lambda: {str(v): i for i, v in enumerate(user_ids.tolist())}
    )
    row = lookup.get(str(user_id))
    if row is None:
        raise KeyError(f"unknown user {user_id!r}")
    return histories.items[histories.indptr[row] : histories.indptr[row + 1]]


def popular_items(
    state: DRState, n: int, exclude: np.ndarray | None = None, passing: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` most frequent training items not removed or in ``exclude`` (and, with a
    ``(V,)`` bool ``passing`` mask, that a filter passes): the fallback for an empty history.
    Returns ``(ids (n,), training counts as float32 scores (n,))``, padded."""

    def build() -> np.ndarray:
        active = np.flatnonzero(~state.removed)
        return active[np.lexsort((active, -state.item_counts[active]))]

    order = state.derived("popular", build)
    if passing is not None:
        order = order[passing[order]]
    ranked = order if exclude is None or len(exclude) == 0 else order[~np.isin(order, exclude)]
    ids = np.full(n, -1, dtype=np.int64)
    scores = np.full(n, -np.inf, dtype=np.float32)
    top = ranked[:n]
    ids[: len(top)], scores[: len(top)] = top, state.item_counts[top]
    return ids, scores


def align_split(state: DRState, split: Split) -> Split:
    """Re-express a split built from data with this model's item ids.

    Unknown history/exclude items are dropped; unknown ground-truth items get ids the model
    cannot return (``≥ n_items``), so they still count in ``|G_u|``.
    """
    ids = state.item_ids
    if ids is None:
        raise ValueError(
            "the model records no item ids to match the data's by (saved by an older version):"
            " load it and save it again with item_ids=…"
        )
    lookup = {str(v): i for i, v in enumerate(ids.tolist())}
    mapped = np.array([lookup.get(str(v), -1) for v in split.item_ids.tolist()], dtype=np.int64)
    unknown = np.flatnonzero(mapped < 0)
    truth_map = mapped.copy()
    truth_map[unknown] = state.n_items + np.arange(len(unknown))

    @overload
    def remap(seq: Sequences, table: np.ndarray) -> Sequences: ...
    @overload
    def remap(seq: None, table: np.ndarray) -> None: ...
    @overload
    def remap(seq: Sequences | None, table: np.ndarray) -> Sequences | None: ...

    def remap(seq: Sequences | None, table: np.ndarray) -> Sequences | None:
        if seq is None:
            return None
        new = table[seq.items]
        keep = new >= 0
        lengths = np.bincount(seq.row_ids()[keep], minlength=len(seq))
        indptr = np.zeros(len(seq) + 1, dtype=np.int64)
        np.cumsum(lengths, out=indptr[1:])
        return Sequences(indptr, new[keep], seq.ordered)

    return dataclasses.replace(
        split,
        item_ids=np.concatenate([ids.astype(str), split.item_ids[unknown].astype(str)]),
        train=remap(split.train, mapped),
        test_history=remap(split.test_history, mapped),
        test_truth=remap(split.test_truth, truth_map),
        test_exclude=remap(split.test_exclude, mapped),
        valid_history=remap(split.valid_history, mapped),
        valid_truth=remap(split.valid_truth, truth_map),
        valid_exclude=remap(split.valid_exclude, mapped),
    )
