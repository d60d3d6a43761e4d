"""Retrieval over a :class:`~deep_retrieval.index.state.DRState`: encode the query users, beam
search over the grid, the union of the items on the ``B`` best paths, rerank, top ``M``.

Shapes: ``U`` query users, ``V`` items, ``B`` beam, ``J`` paths per item, ``C`` candidates,
``M`` recommendations, ``E`` embedding width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.beam import CompiledStructure, beam_search
from ..core.contract import pad_results
from ..data.protocols import split_rows
from ..data.types import Sequences
from . import kernels
from .state import DRState


@dataclass
class Candidates:
    """Un-reranked retrieval output, ragged per query user.

    Attributes:
        indptr: ``(U + 1,)`` row offsets.
        items: ``(C_total,)`` candidate item ids, distinct within a row, best path first.
        path_log_probs: ``(C_total,)`` log-probability of the best beam path holding the item.
        beam_size: the beam used.
    """

    indptr: np.ndarray
    items: np.ndarray
    path_log_probs: np.ndarray
    beam_size: int

    @property
    def counts(self) -> np.ndarray:
        """``(U,)`` candidates per query."""
        return np.diff(self.indptr)


@dataclass
class QueryStats:
    """A caller-owned tally of candidates per query (pass it to ``recommend(..., stats=)``)."""

    queries: int = 0
    candidates: int = 0

    def add(self, counts: np.ndarray) -> None:
        self.queries += int(len(counts))
        self.candidates += int(counts.sum())

    @property
    def candidates_per_query(self) -> float:
        return self.candidates / max(self.queries, 1)


def history_matrix(state: DRState, histories: Sequences) -> np.ndarray:
    """``(U, L)`` the newest ``L ≤ history_length`` items of each row, ``-1`` padded."""
    length = max(1, min(state.history_length(), int(histories.lengths.max(initial=1))))
    mat = histories.padded(length)
    if mat.size and (mat.max() >= state.n_items):
        raise ValueError(f"history holds item id {int(mat.max())} ≥ n_items = {state.n_items}")
    return mat


@torch.no_grad()
def user_embeddings(state: DRState, histories: Sequences, batch_size: int = 1024) -> torch.Tensor:
    """``(U, E)`` user vectors on the model's device."""
    net = state.net
    if net.training:  # Module.eval() walks every submodule: ~1 µs each, per query
        net.eval()
    if len(histories) == 1:
        # One query: the encoder's numpy shortcut on the same items as history_matrix (the
        # newest `length` of the row), where it has one.
        ids = histories.items[histories.indptr[0] : histories.indptr[1]][-state.history_length() :]
        if len(ids) and (ids.min() < 0 or ids.max() >= state.n_items):
            raise ValueError(
                f"history holds item id {int(ids.max())} outside [0, n_items = {state.n_items})"
            )
        vec = net.reranker.encoder.encode_row(ids)
        if vec is not None:
            return vec
    mat = history_matrix(state, histories)
    out = [
        net.user_embedding(torch.as_tensor(mat[s : s + batch_size], device=state.device))
        for s in range(0, len(mat), batch_size)
    ]
    return (
        torch.cat(out)
        if out
        else torch.zeros((0, state.config.train.embedding_dim), device=state.device)
    )


#: What retrieval takes as queries: histories (``U`` rows of internal item ids), encoded by the
#: model's user encoder, or ``(U, E)`` user vectors given directly (an index over given vectors,
#: :class:`~deep_retrieval.DRIndex`).
Queries = Sequences | np.ndarray


def query_vectors(state: DRState, queries: Queries) -> torch.Tensor:
    """``(U, E)`` user vectors of ``queries`` on the model's device: the encoder's output for
    histories, the vectors themselves (float32, checked) for an array."""
    if isinstance(queries, Sequences):
        return user_embeddings(state, queries)
    arr = np.asarray(queries)
    dim = state.config.train.embedding_dim
    if arr.ndim != 2 or arr.shape[1] != dim or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"query vectors must be a numeric (N, {dim}) array, got shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("query vectors hold NaN or infinite values")
    return torch.from_numpy(arr).to(state.device)


def _query_history(state: DRState, queries: Queries) -> np.ndarray:
    """The ``(U, L)`` history matrix the attention term reads; vector queries have none."""
    if not isinstance(queries, Sequences):
        raise ValueError(
            "the attention reranker scores histories: query with histories, not vectors"
        )
    return history_matrix(state, queries)


#: ``retrieval.max_fraction_scored = None``: score at most this share of the servable items,
#: by catalogue size (the project's budget: ≥ 10× fewer than exhaustive, ≥ 50× from 30K items).
AUTO_FRACTION_SCORED = ((30_000, 0.02), (0, 0.10))


def scoring_budget(state: DRState) -> float:
    """The most candidates per query a calibrated beam may score (``retrieval.max_fraction_scored``
    of the servable items; :data:`AUTO_FRACTION_SCORED` when unset)."""
    n = int((~state.removed).sum())
    frac = state.config.retrieval.max_fraction_scored
    if frac is None:
        frac = next(f for size, f in AUTO_FRACTION_SCORED if n >= size)
    return frac * n


def _within_budget(state: DRState, means: np.ndarray) -> np.ndarray:
    """``(b,)`` bool: the calibrated beams within :func:`scoring_budget` (the first always)."""
    within = means <= scoring_budget(state)
    within[:1] = True
    return within


def beam_size_for(state: DRState, n: int) -> int:
    """The beam used for ``n`` results: the configured one; else, with ``target_recall``, the
    smallest calibrated beam within :func:`scoring_budget` whose recall@n against the
    reranker's exhaustive top ``n`` reaches it (measured at the smallest calibrated
    ``n' ≥ n``), or the largest within the budget when none does; else the smallest calibrated
    beam whose mean candidate count reaches ``candidate_factor · n`` (the largest when none
    does)."""
    r = state.config.retrieval
    if r.beam_size is not None:
        return r.beam_size
    if state.beam_calibration is None:
        raise ValueError("this model has no beam calibration: set retrieval.beam_size")
    beams, means = state.beam_calibration
    if r.target_recall is not None and state.recall_calibration is not None:
        ns, recall = state.recall_calibration
        row = recall[min(int(np.searchsorted(ns, n)), len(ns) - 1)]  # (b,), nan = not measured
        within = _within_budget(state, means)
        ok = np.flatnonzero(within & (row >= r.target_recall))
        return int(beams[ok[0]] if len(ok) else beams[np.flatnonzero(within)[-1]])
    ok = np.flatnonzero(means >= r.candidate_factor * n)
    return int(beams[ok[0]] if len(ok) else beams[-1])


@torch.no_grad()
def beam(
    state: DRState, u: torch.Tensor, beam_size: int, *, ordered: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """``(U, B')`` path ids and log-probs of the beam (``B' = min(B, K^D)``); ``ordered=False``
    skips sorting the beam (same paths), for callers that only need the set."""
    if not ordered and u.device.type == "cpu":
        # Serving on CPU: the numpy twin of beam_search (same paths, less per-call overhead).
        compiled = state.derived(
            "compiled_structure", lambda: CompiledStructure(state.net.structure)
        )
        paths, log_probs = compiled.beam_search(u.float().numpy(), beam_size)
        return state.codec.encode(paths), log_probs
    paths_t, log_probs_t = beam_search(state.net.structure, u, beam_size, ordered=ordered)
    return state.codec.encode(paths_t.cpu().numpy()), log_probs_t.float().cpu().numpy()


def candidates(state: DRState, path_ids: np.ndarray, path_lp: np.ndarray | None) -> Candidates:
    """The union of the items on each row's paths; with ``path_lp``, each item's best path
    log-prob too (``None``: skipped, the reranker does not need it; filled with ``nan``)."""
    n_rows, width = path_ids.shape
    index = state.item_paths
    if n_rows == 1:  # one query: the 1-D lookup skips the per-row bookkeeping
        items = index.items_on(path_ids[0])
        indptr = np.array([0, len(items)])
    else:
        indptr, items = index.items_on_batch(path_ids)
    if path_lp is None:
        return Candidates(indptr, items, np.full(len(items), np.nan, np.float32), width)
    rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    # Best beam log-prob among each candidate's J paths: look (row, path) up in the sorted beam.
    n_paths = state.codec.n_paths
    beam_keys = (np.arange(n_rows)[:, None] * n_paths + path_ids).ravel()
    order = np.argsort(beam_keys)
    beam_keys, beam_lp = beam_keys[order], path_lp.ravel()[order]
    item_keys = rows[:, None] * n_paths + index.path_ids[items]  # (C, J)
    pos = np.clip(np.searchsorted(beam_keys, item_keys), 0, len(beam_keys) - 1)
    lp = np.where(beam_keys[pos] == item_keys, beam_lp[pos], -np.inf).max(axis=1)
    return Candidates(indptr, items, lp.astype(np.float32), width)


def retrieve(
    state: DRState, queries: Queries, *, beam_size: int | None = None, n: int = 10
) -> Candidates:
    """Beam search and the union of items on the beam's paths, before reranking."""
    b = beam_size or beam_size_for(state, n)
    if b < 1:
        raise ValueError(f"beam_size must be ≥ 1, got {b}")
    path_ids, lp = beam(state, query_vectors(state, queries), b)
    return candidates(state, path_ids, lp)


def rerank_table(state: DRState) -> tuple[np.ndarray, np.ndarray]:
    """``(keys (V, E), bias (V,))`` of the frozen reranker as float32 numpy, computed once.

    Scoring a few hundred candidates is a gather and a dot product; doing it in numpy on a
    cached table avoids re-normalising item vectors and small-tensor overhead per query.
    """

    def build() -> tuple[np.ndarray, np.ndarray]:
        head = state.net.reranker
        with torch.no_grad():
            keys = head.keys().float().cpu().numpy()
            bias = (
                head.item_bias.float().cpu().numpy()
                if head.item_bias is not None
                else np.zeros(len(keys), np.float32)
            )
        return np.ascontiguousarray(keys), bias

    return state.derived("rerank_table", build)


def path_slots(state: DRState) -> np.ndarray:
    """The fused kernel's dense path → inverted-index slot table (:func:`kernels.path_slots`),
    computed once per inverted index."""
    return state.derived("path_slots", lambda: kernels.path_slots(state.item_paths))


@torch.no_grad()
def recommend(
    state: DRState,
    queries: Queries,
    n: int,
    *,
    exclude: Sequences | None = None,
    beam_size: int | None = None,
    rerank: bool | None = None,
    stats: QueryStats | None = None,
    fused: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``n`` items per query: beam search → candidates → rerank (``rerank=False``: best path
    log-prob, ties by popularity). ``queries``: ``U`` histories or user vectors (:data:`Queries`);
    ``exclude``: ``U`` rows of internal item ids; ``stats`` receives the candidate counts. The
    public form, with every argument explained, is
    ``DeepRetrieval.recommend``.

    Reranked on CPU, the candidates, scores and top ``n`` come from one numba pass
    (:mod:`.kernels`); ``fused=False`` forces the numpy path, its reference (same counts, same
    ids but where two scores lie within float32 rounding of each other, scores equal to
    rounding).

    Returns:
        ``(item_ids (U, n) int64, scores (U, n) float32)``, padded ``-1`` / ``-inf``.
    """
    if n < 1:
        raise ValueError(f"n must be ≥ 1, got {n}")
    rerank = state.config.retrieval.rerank if rerank is None else rerank
    b = beam_size or beam_size_for(state, n)
    u = query_vectors(state, queries)
    n_rows = len(u)
    # Reranking needs only the set of beam paths: no beam sort, no per-item path log-probs.
    path_ids, lp = beam(state, u, b, ordered=not rerank)
    attention = state.net.attention is not None
    if rerank and fused and not attention and u.device.type == "cpu" and (
        exclude is None or len(exclude) == n_rows
    ):
        keys, bias = rerank_table(state)
        q = state.net.reranker.query(u).float().numpy()  # (U, E)
        ids, scores, counts = kernels.serve(
            state.item_paths, path_slots(state), path_ids, q, keys, bias, n,
            None if exclude is None else (exclude.indptr, exclude.items),
        )
        if stats is not None:
            stats.add(counts)
        return ids, scores
    cand = candidates(state, path_ids, None if rerank else lp)
    rows = np.repeat(np.arange(n_rows), cand.counts)
    items = cand.items
    if stats is not None:
        stats.add(cand.counts)
    if exclude is not None:
        n_items = state.n_items
        banned = np.unique(exclude.row_ids() * n_items + exclude.items)
        keep = ~np.isin(rows * n_items + items, banned)
        rows, items, path_lp = rows[keep], items[keep], cand.path_log_probs[keep]
    else:
        path_lp = cand.path_log_probs
    if rerank:
        keys, bias = rerank_table(state)
        q = state.net.reranker.query(u).float().cpu().numpy()  # (U, E)
        if len(q) == 1:  # one query: a matrix-vector product, no per-candidate copy of q
            scores = keys[items] @ q[0] + bias[items]
        else:
            scores = np.einsum("ce,ce->c", q[rows], keys[items]) + bias[items]  # (C_total,)
        if attention:
            scores = scores + attention_terms(state, _query_history(state, queries), rows, items)
        return segment_topk(rows, items, scores, n_rows, n)
    # Items on one path are indistinguishable to DR; break ties by popularity.
    return segment_topk(rows, items, path_lp, n_rows, n, tiebreak=-state.item_counts[items])


def segment_topk(
    rows: np.ndarray, items: np.ndarray, scores: np.ndarray, n_rows: int, n: int,
    tiebreak: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``n`` (item, score) per row from flat triples → ``(ids (U, n), scores (U, n))``, padded.

    ``rows`` must be ascending (grouped). Order: score descending, then ``tiebreak`` (default:
    item id) ascending.
    """
    if n_rows == 1 and len(scores) > n:
        # One query, the latency-critical case: the same pre-filter without the dense matrix.
        nth = -np.partition(-scores, n - 1)[n - 1]
        pick = np.flatnonzero(scores >= nth)
        keys = (items[pick],) if tiebreak is None else (tiebreak[pick],)
        order = pick[np.lexsort((*keys, -scores[pick]))][:n]
        ids = np.full((1, n), -1, dtype=np.int64)
        out = np.full((1, n), -np.inf, dtype=np.float32)
        ids[0, : len(order)], out[0, : len(order)] = items[order], scores[order]
        return pad_results(ids, out, n)
    counts = np.bincount(rows, minlength=n_rows)
    if counts.max(initial=0) > n:
        # Keep per row what can reach its top n: every score ≥ the row's n-th best (ties
        # included, so the result equals a full sort), from a dense (U, widest row) partition.
        # Sorting only the survivors is what makes a batch of 256 queries fast.
        starts = np.cumsum(counts) - counts
        dense = np.full((n_rows, int(counts.max())), -np.inf)
        dense[rows, np.arange(len(rows)) - starts[rows]] = scores
        nth = -np.partition(-dense, n - 1, axis=1)[:, n - 1]
        pick = np.flatnonzero(scores >= nth[rows])
        rows, items, scores = rows[pick], items[pick], scores[pick]
        tiebreak = None if tiebreak is None else tiebreak[pick]
    keys = (items,) if tiebreak is None else (tiebreak,)
    order = np.lexsort((*keys, -scores, rows))
    rows, items, scores = rows[order], items[order], scores[order]
    first = np.searchsorted(rows, rows, side="left")
    rank = np.arange(len(rows)) - first
    keep = rank < n
    ids = np.full((n_rows, n), -1, dtype=np.int64)
    out = np.full((n_rows, n), -np.inf, dtype=np.float32)
    ids[rows[keep], rank[keep]] = items[keep]
    out[rows[keep], rank[keep]] = scores[keep]
    return pad_results(ids, out, n)


#: Result counts ``n`` at which recall-targeted calibration measures each beam.
RECALL_NS = (1, 5, 10, 20, 50, 100, 200, 500, 1000)


def calibrate(state: DRState, train: Sequences, n_users: int = 500) -> None:
    """Calibrate the beam on up to ``n_users`` rows of ``train`` (drawn with ``config.seed``):
    set ``state.beam_calibration`` and, with ``retrieval.target_recall``, also
    ``state.recall_calibration`` (:func:`calibrate_recall`)."""
    rng = np.random.default_rng(state.config.seed)
    rows = rng.choice(len(train), size=min(n_users, len(train)), replace=False)
    histories = train.rows(np.sort(rows))
    if state.ordered:
        # A held-out user's history is the first half of a sequence: use first halves too.
        histories, _ = split_rows(histories, np.maximum(histories.lengths // 2, 1))
    calibrate_on(state, histories)


def calibrate_on(state: DRState, queries: Queries) -> None:
    """Calibrate the beam on the given sample of ``queries``: set ``state.beam_calibration`` and,
    with ``retrieval.target_recall``, also ``state.recall_calibration``."""
    state.beam_calibration = beams, means = calibrate_beam(state, queries)
    state.recall_calibration = (
        calibrate_recall(state, queries, beams, _within_budget(state, means))
        if state.config.retrieval.target_recall is not None
        else None
    )


def calibrate_recall(
    state: DRState, queries: Queries, beams: np.ndarray, measure: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Recall of DR's top ``n`` against the reranker's exhaustive top ``n`` (what scoring every
    item with the same reranker returns), per beam and ``n``, on the users ``queries``:
    ``recall[i, j] = mean over users of |DR_n(u) ∩ exact_n(u)| / |exact_n(u)|`` with
    ``n = ns[i]`` and beam ``beams[j]``; ``nan`` for the beams that ``measure`` ``(b,)`` bool
    leaves out (those beyond the scoring budget: never served, so not worth searching with).

    Training users stand in for future queries: the network has seen them, so the recall they
    give can be optimistic; their histories are whole rows (first halves for ordered rows),
    like a query's.

    Returns:
        ``(ns (m,) int64, recall (m, b) float64)``, ``ns`` = :data:`RECALL_NS` up to the
        number of servable items.
    """
    n_servable = int((~state.removed).sum())
    ns = np.array([n for n in RECALL_NS if n <= n_servable] or [max(n_servable, 1)])
    top = int(ns[-1])
    exact, _ = exhaustive_top(state, queries, top)  # (U, top)
    recall = np.full((len(ns), len(beams)), np.nan)
    for j, b in enumerate(beams):
        if measure is not None and not measure[j]:
            continue
        ids, _ = recommend(state, queries, top, beam_size=int(b))
        for i, n in enumerate(ns):
            recall[i, j] = _overlap(ids[:, :n], exact[:, :n])
    return ns, recall


def _overlap(got: np.ndarray, want: np.ndarray) -> float:
    """Mean over rows of ``|got ∩ want| / |want|`` for ``(U, n)`` id arrays padded with ``-1``."""
    n_rows = len(want)
    width = max(int(want.max(initial=0)), int(got.max(initial=0))) + 1
    offset = np.arange(n_rows)[:, None] * width  # (row, id) → one key, so one isin does all rows
    hits = np.isin(np.where(got >= 0, got + offset, -1), np.where(want >= 0, want + offset, -2))
    sizes = np.maximum((want >= 0).sum(axis=1), 1)
    return float((hits.sum(axis=1) / sizes).mean()) if n_rows else 1.0


#: Elements of the ``(users, candidates, history)`` attention weights computed at once (64 MiB).
ATTENTION_BLOCK = 1 << 24


@torch.no_grad()
def attention_terms(
    state: DRState, hist: np.ndarray, rows: np.ndarray, items: np.ndarray
) -> np.ndarray:
    """The attention term ``t(u, v)`` of flat ``(row, item)`` candidate pairs → ``(C_total,)``
    float32 (:meth:`DRNet.attention_terms`).

    Args:
        hist: ``(U, L)`` the query users' histories (:func:`history_matrix`).
        rows: ``(C_total,)`` ascending row of each candidate; ``items``: its item.
    """
    out = np.zeros(len(items), dtype=np.float32)
    counts = np.bincount(rows, minlength=len(hist))
    if not len(items):
        return out
    starts = np.cumsum(counts) - counts
    col = np.arange(len(items)) - starts[rows]  # position within its row
    width = int(counts.max())
    step = max(1, ATTENTION_BLOCK // (width * hist.shape[1]))
    for lo in range(0, len(hist), step):
        hi = min(lo + step, len(hist))
        sel = slice(int(starts[lo]), int(starts[hi - 1] + counts[hi - 1]))
        r, c = rows[sel] - lo, col[sel]
        mat = np.zeros((hi - lo, width), dtype=np.int64)  # padding scores item 0, never read
        mat[r, c] = items[sel]
        terms = state.net.attention_terms(
            torch.as_tensor(hist[lo:hi], device=state.device),
            torch.as_tensor(mat, device=state.device),
        )
        out[sel] = terms.float().cpu().numpy()[r, c]
    return out


@torch.no_grad()
def exhaustive_top(
    state: DRState, queries: Queries, n: int, *, exclude: Sequences | None = None,
    item_block: int = 1 << 16,
) -> tuple[np.ndarray, np.ndarray]:
    """The reranker's exact top ``n`` over the whole catalogue (removed items, and each row's
    ``exclude`` items, left out): the brute-force answer DR approximates, and with
    ``reranker="attention"`` the attention-exhaustive method. Items are scored in blocks of
    ``item_block`` and each block's top ``n`` merged into the running top ``n``, so memory stays
    ``O(U · (n + item_block))``; the attention term is computed for a few users at a time, users
    of similar history length together.

    Returns:
        ``(item_ids (U, n) int64, scores (U, n) float32)``, best first, padded ``-1`` / ``-inf``.
    """
    keys_np, bias_np = rerank_table(state)
    keys, bias = torch.from_numpy(keys_np), torch.from_numpy(bias_np)
    removed = torch.from_numpy(state.removed)
    q = state.net.reranker.query(query_vectors(state, queries)).float().cpu()  # (U, E)
    n_users = len(q)
    attention = state.net.attention is not None
    # (U, L) histories, for the attention term only
    hist = _query_history(state, queries) if attention else np.zeros((n_users, 0), np.int64)
    lengths = (hist >= 0).sum(axis=1)
    order = np.argsort(lengths, kind="stable") if attention else np.arange(n_users)
    ids = np.full((n_users, n), -1, dtype=np.int64)
    out = np.full((n_users, n), -np.inf, dtype=np.float32)
    pos = 0
    while pos < n_users:
        if attention:  # users of one chunk share a history width: the longest in it
            width = max(int(lengths[order[min(pos + 63, n_users - 1)]]), 1)
            block = max(1, min(item_block, ATTENTION_BLOCK // width))
            size = max(1, min(64, ATTENTION_BLOCK // (block * width)))
        else:
            # (users, block) float32 scores of at most 256 MiB at a time
            width, block, size = 0, item_block, max(1, (1 << 26) // item_block)
        users = order[pos : pos + size]
        pos += len(users)
        h = torch.as_tensor(hist[users][:, hist.shape[1] - width :], device=state.device)
        banned = exclude.rows(users) if exclude is not None else None
        best_s = torch.full((len(users), 0), -torch.inf)
        best_i = torch.zeros((len(users), 0), dtype=torch.int64)
        for lo in range(0, state.n_items, block):
            hi = min(lo + block, state.n_items)
            scores = q[users] @ keys[lo:hi].T + bias[lo:hi]  # (u, h)
            if attention:
                items = torch.arange(lo, hi, device=state.device)
                scores = scores + state.net.attention_terms(h, items).float().cpu()
            scores[:, removed[lo:hi]] = -torch.inf
            if banned is not None:
                r, c = banned.row_ids(), banned.items
                m = (c >= lo) & (c < hi)
                scores[torch.from_numpy(r[m]), torch.from_numpy(c[m] - lo)] = -torch.inf
            block_s, block_i = torch.topk(scores, min(n, hi - lo), dim=1)
            cat_s = torch.cat([best_s, block_s], dim=1)  # (u, ≤ 2n)
            cat_i = torch.cat([best_i, block_i + lo], dim=1)
            best_s, take = torch.topk(cat_s, min(n, cat_s.shape[1]), dim=1)
            best_i = torch.gather(cat_i, 1, take)
        found = np.isfinite(best_s.numpy())
        ids[users, : best_i.shape[1]] = np.where(found, best_i.numpy(), -1)
        out[users, : best_s.shape[1]] = np.where(found, best_s.numpy(), -np.inf)
    return ids, out


@torch.no_grad()
def calibrate_beam(state: DRState, queries: Queries) -> tuple[np.ndarray, np.ndarray]:
    """Mean candidate count for a grid of beams on the users ``queries``. Returns
    ``(beams (b,), mean candidates (b,))``."""
    u = query_vectors(state, queries)
    top = min(state.config.retrieval.max_beam_size, state.codec.n_paths)
    path_ids, _ = beam(state, u, top)
    # Every beam up to 16, then steps of √2: with powers of 2 the chosen beam could overshoot
    # the target by up to 2×, and even √2 steps were too coarse at the 10 % line of
    # MovieLens-1M (beam 6 → 7.9 % of the items, beam 8 → 10.3 %).
    grid = np.round(np.sqrt(2) ** np.arange(2 * np.log2(top) + 1)).astype(np.int64)
    beams = np.unique(np.concatenate([np.arange(1, 17), grid, [top]]))
    beams = beams[beams <= top]
    means = np.array(
        [np.diff(state.item_paths.items_on_batch(path_ids[:, :b])[0]).mean() for b in beams]
    )
    return beams, means
