"""Changing a fitted model's catalogue: :func:`add_items` and :func:`remove_items` over a state.

A new item is placed by the same path-score machinery that training uses, run on *contexts*:
user histories that stand for the people who would pick the item.

* A **warm** item (it occurs in the given interactions) has one context per occurrence: the
  items the user had before it (ordered rows), or the rest of the row (unordered rows).
* A **cold** item (no interactions) has one context: its neighbours, taken from item features
  (the most similar existing items by cosine) or given directly (e.g. co-occurrence lists).

Beam search over each context's user vector gives ``S`` paths with probabilities, summed per item
(:func:`context_path_scores`, as training accumulates path scores); the item's ``J`` paths are then
chosen by the penalised greedy step of path assignment against the current path sizes
(:func:`~deep_retrieval.core.assignment.place_paths`). Its reranker row and bias are fitted by
maximum likelihood under the frozen softmax model (:func:`fit_item_vectors`). Shapes: ``N``
contexts, ``n`` new items, ``V`` existing items, ``F`` features.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..core.assignment import PathScores, place_paths
from ..data.types import Interactions, Sequences
from .ids import item_index, user_history
from .retrieval import beam, user_embeddings
from .state import DRState


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
    out: list[np.ndarray] = []
    for s in range(0, len(new), batch):
        sim = unit[new[s : s + batch]] @ old.T  # (m', V')
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
        out.extend(usable[np.take_along_axis(top, order, axis=1)])
    return Sequences.from_lists(out, ordered=False)


def context_path_scores(
    items: np.ndarray,
    path_ids: np.ndarray,
    probs: np.ndarray,
    n_items: int,
    n_paths: int,
    n_keep: int,
) -> PathScores:
    """Per item, the ``n_keep`` paths with the largest summed probability over its contexts.

    Args:
        items: ``(N,)`` item (``0 .. n_items-1``) of each context.
        path_ids: ``(N, S')`` beam paths of each context, distinct within a row.
        probs: ``(N, S')`` their probabilities.

    Returns:
        :class:`PathScores` with ``n_items`` rows of ``n_keep`` slots (score descending, path id
        ascending on ties, ``-1`` padded) and ``counts`` = contexts per item (the ``N_v`` of the
        assignment objective).
    """
    width = path_ids.shape[1]
    key = np.repeat(items, width) * n_paths + path_ids.ravel()
    order = np.argsort(key, kind="stable")
    key, p = key[order], probs.ravel()[order]
    start = np.r_[True, key[1:] != key[:-1]]
    score = np.add.reduceat(p, np.flatnonzero(start)) if len(key) else p
    item, path = np.divmod(key[start], n_paths)
    best = np.lexsort((path, -score, item))
    item, path, score = item[best], path[best], score[best]
    rank = np.arange(len(item)) - np.searchsorted(item, item, side="left")
    keep = rank < n_keep
    ids = np.full((n_items, n_keep), -1, dtype=np.int64)
    out = np.zeros((n_items, n_keep))
    ids[item[keep], rank[keep]] = path[keep]
    out[item[keep], rank[keep]] = score[keep]
    return PathScores(ids, out, np.bincount(items, minlength=n_items))


def context_path_scores_reference(
    items: np.ndarray, path_ids: np.ndarray, probs: np.ndarray, n_items: int, n_keep: int
) -> tuple[np.ndarray, np.ndarray]:
    """Loop twin of :func:`context_path_scores`: ``(path ids, scores)``, for tests."""
    ids = np.full((n_items, n_keep), -1, dtype=np.int64)
    out = np.zeros((n_items, n_keep))
    for v in range(n_items):
        total: dict[int, float] = {}
        for row in np.flatnonzero(items == v):
            for pid, pr in zip(path_ids[row].tolist(), probs[row].tolist(), strict=True):
                total[pid] = total.get(pid, 0.0) + pr
        ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:n_keep]
        ids[v, : len(ranked)] = [pid for pid, _ in ranked]
        out[v, : len(ranked)] = [sc for _, sc in ranked]
    return ids, out


def fit_item_vectors(
    q_context: torch.Tensor,
    owner: torch.Tensor,
    q_background: torch.Tensor,
    log_z_context: torch.Tensor,
    log_z_background: torch.Tensor,
    keys: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    background_weight: float,
    normalize: bool,
    steps: int = 100,
    lr: float = 0.05,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Reranker vectors of new items by maximum likelihood under the frozen softmax model.

    Minimises, over the new rows ``k`` (``n, E``) and biases ``b`` only,
    ``Σ_contexts [log Z(q) − s_v(q)] + w·Σ_background log(Z(q) / Z_old(q))`` with
    ``s_i(q) = q·k_i + b_i`` and ``Z(q) = Z_old(q) + Σ_new exp s_i(q)``: the full-softmax
    likelihood of the contexts, plus what the new items take from the other users' choices
    (each background query stands for ``w`` training samples, whose targets are existing items).
    Averaging neighbours' vectors instead gave "central" vectors that outscored every existing
    item for most users (MovieLens latest-small: recall@100 fell from 0.31 to 0.12).

    Args:
        q_context: ``(N, E)`` query vectors of the contexts; ``owner`` ``(N,)`` their new item.
        q_background: ``(M, E)`` query vectors of other users.
        log_z_context, log_z_background: ``(N,)``, ``(M,)`` log-sum-exp of the existing items'
            logits for each query.
        keys, bias: ``(n, E)`` / ``(n,)`` starting values (``bias`` ``None``: no bias).
    """
    k = keys.clone().requires_grad_(True)
    b = None if bias is None else bias.clone().requires_grad_(True)
    opt = torch.optim.Adam([k] + ([b] if b is not None else []), lr=lr)
    rows = torch.arange(len(owner))
    with torch.enable_grad():
        for _ in range(steps):
            kk = torch.nn.functional.normalize(k, dim=1) if normalize else k
            s_ctx = q_context @ kk.T  # (N, n)
            s_bg = q_background @ kk.T  # (M, n)
            if b is not None:
                s_ctx, s_bg = s_ctx + b, s_bg + b
            log_z_ctx = torch.logaddexp(log_z_context, torch.logsumexp(s_ctx, dim=1))
            log_z_bg = torch.logaddexp(log_z_background, torch.logsumexp(s_bg, dim=1))
            context_loss = (log_z_ctx - s_ctx[rows, owner]).sum()
            loss = context_loss + background_weight * (log_z_bg - log_z_background).sum()
            opt.zero_grad()
            (loss / (len(owner) + background_weight * len(q_background))).backward()
            opt.step()
    return k.detach(), None if b is None else b.detach()


# --------------------------------------------------------------------------------------------
# Catalogue edits over a fitted state


def remove_items(state: DRState, items: np.ndarray) -> int:
    """Take internal item ids out of the index: they are never retrieved or returned again
    (their rows stay, so ids do not shift). Returns how many were newly removed."""
    items = np.asarray(items, dtype=np.int64)
    if len(items) and (items.min() < 0 or items.max() >= state.n_items):
        raise ValueError(
            f"item ids must lie in [0, {state.n_items}), got {items.min()}..{items.max()}"
        )
    newly = int((~state.removed[items]).sum()) if len(items) else 0
    state.removed = state.removed.copy()
    state.removed[items] = True
    state.set_paths(state.item_paths.path_ids)
    return newly


def _identity(ids: np.ndarray) -> bool:
    return ids.dtype.kind in "iu" and bool((ids == np.arange(len(ids))).all())


def concat_ids(old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """External ids extended: integers stay int64 when both are, otherwise both become strings."""
    if old.dtype.kind in "iu" and new.dtype.kind in "iu":
        return np.concatenate([old, new]).astype(np.int64)
    return np.concatenate([old.astype(str), new.astype(str)])


def _new_item_names(
    state: DRState, item_ids: list | np.ndarray | None, n_new: int | None
) -> tuple[np.ndarray | None, int]:
    """``(external ids of the new items or None, how many)``, refused when they clash."""
    stored = state.item_ids
    if item_ids is None:
        if stored is not None and not _identity(stored):
            raise ValueError("this model stores external item ids: pass item_ids for the new items")
        n = int(n_new or 0)
        # Identity ids (recorded when a model is fit without ids) continue as V .. V + n - 1.
        names = None if stored is None else np.arange(len(stored), len(stored) + n)
        return names, n
    if stored is None:
        raise ValueError("this model has no external item ids: pass n_new instead of item_ids")
    names = np.asarray(item_ids)
    known, _ = item_index(state, names)
    if len(known):
        clashes = ", ".join(str(stored[i]) for i in known[:10])
        raise ValueError(f"item ids already in the model: {clashes}")
    if len({str(x) for x in names.tolist()}) != len(names):
        raise ValueError("item_ids holds duplicates")
    return names, len(names)


def _contexts(
    state: DRState, n: int, names: np.ndarray | None, interactions: Sequences | None,
    features: np.ndarray | None, neighbours: Sequences | None, n_neighbours: int,
) -> tuple[np.ndarray, Sequences, np.ndarray]:
    """Every new item's contexts: ``(item of each context (N,), contexts (N rows), warm (n,))``."""
    n_old = state.n_items
    total = n_old + n
    ctx_items, ctx_rows = np.zeros(0, np.int64), Sequences.from_lists([])
    if interactions is not None:
        items = interactions.items
        if len(items) and (items.min() < 0 or items.max() >= total):
            raise ValueError(f"interactions hold ids outside [0, {total})")
        ctx_items, ctx_rows = occurrence_contexts(interactions, n_old, state.history_length())
    warm = np.zeros(n, dtype=bool)
    warm[ctx_items - n_old] = True
    extra_items: list[int] = []
    extra_rows: list[np.ndarray] = []
    if neighbours is not None:
        if len(neighbours) != n:
            raise ValueError(
                f"neighbours must have one row per new item ({n}), got {len(neighbours)}"
            )
        nb_items = neighbours.items
        if len(nb_items) and (nb_items.min() < 0 or nb_items.max() >= n_old):
            raise ValueError(f"neighbours must be existing item ids in [0, {n_old})")
        for i in np.flatnonzero(~warm & (neighbours.lengths > 0)).tolist():
            extra_items.append(n_old + i)
            extra_rows.append(neighbours.items[neighbours.indptr[i] : neighbours.indptr[i + 1]])
    covered = warm.copy()
    covered[np.array(extra_items, dtype=np.int64) - n_old] = True
    if features is not None and (~covered).any():
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or len(features) != total:
            raise ValueError(
                f"features must have shape (V + n = {total}, F), got {features.shape}"
            )
        todo = n_old + np.flatnonzero(~covered & np.isfinite(features[n_old:]).all(axis=1))
        if len(todo):
            nb = feature_neighbours(features, n_old, todo, n_neighbours)
            extra_items.extend(todo.tolist())
            extra_rows.extend(nb.items[nb.indptr[i] : nb.indptr[i + 1]] for i in range(len(nb)))
            covered[todo - n_old] = True
    if not covered.all():
        missing = np.flatnonzero(~covered)[:10]
        shown = [str(names[i]) if names is not None else str(n_old + i) for i in missing]
        raise ValueError(
            f"{int((~covered).sum())} new item(s) have no interactions with existing items, no"
            f" features and no neighbours, so nothing says where to put them: {', '.join(shown)}"
        )
    if extra_items:
        ctx_items = np.concatenate([ctx_items, np.array(extra_items, dtype=np.int64)])
        ctx_rows = Sequences(
            np.r_[ctx_rows.indptr, ctx_rows.indptr[-1] + np.cumsum([len(r) for r in extra_rows])],
            np.concatenate([ctx_rows.items, *extra_rows]).astype(np.int64),
            ctx_rows.ordered,
        )
    return ctx_items, ctx_rows, warm


@torch.no_grad()
def place_by_contexts(
    state: DRState, u: torch.Tensor, owner: np.ndarray, n: int, weights: np.ndarray | None = None
) -> np.ndarray:
    """``(n, J)`` paths for ``n`` new items from their contexts: the beam-search path scores of
    the context user vectors ``u`` ``(N, E)``, summed per item (``owner`` ``(N,)`` in
    ``0 .. n-1``), then the penalised greedy choice of ``J`` paths against the current path
    sizes (:func:`~deep_retrieval.core.assignment.place_paths`, as path assignment chooses).
    ``weights`` ``(n,)``: each item's ``N_v`` in that choice (default: its context count); the
    scores are rescaled to keep each item's path probabilities."""
    a, J = state.config.assignment, state.item_paths.paths_per_item
    # S ≥ J distinct beam paths per context, so every item has J candidates.
    path_ids, log_probs = beam(state, u, min(max(a.n_candidates, J), state.codec.n_paths))
    scores = context_path_scores(
        owner, path_ids, np.exp(log_probs.astype(np.float64)), n, state.codec.n_paths,
        a.n_candidates,
    )
    if weights is not None:
        w = np.maximum(np.rint(weights), 1).astype(np.int64)
        scale = w / np.maximum(scores.counts, 1)
        scores = PathScores(scores.path_ids, scores.scores * scale[:, None], w)
    index = state.item_paths
    return place_paths(
        scores, (index.occupied_paths, index.path_sizes()), paths_per_item=J,
        penalty=state.penalty(), power=a.power, n_sweeps=a.n_sweeps,
    )


@torch.no_grad()
def anchor_contexts(
    anchors: tuple[np.ndarray, np.ndarray], vectors: np.ndarray, bias: np.ndarray | None,
    m: int, block: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """The anchor queries that stand for each of ``n`` items of an index over given vectors:
    those under whose threshold the item's exact score falls the least, by the margin
    ``⟨q_a, v⟩ + b_v − θ_a`` (``θ_a``: the anchor's ``distill_k``-th best score, so a positive
    margin means the item would enter its top ``distill_k``). The margin, not the raw score, so
    long query vectors do not stand for every item.

    Args:
        anchors: ``(queries (A, E), thresholds (A,))`` (:attr:`DRState.anchors`).
        vectors: ``(n, E)`` the items' vectors; ``bias``: ``(n,)`` or ``None``.

    Returns:
        ``(rows (n, m') into the anchors, best margin first (m' = min(m, A)), entered (n,):
        the anchors whose top distill_k each item would enter)``.
    """
    queries, thresholds = (torch.as_tensor(a) for a in anchors)
    m = min(m, len(queries))
    rows = np.zeros((len(vectors), m), dtype=np.int64)
    entered = np.zeros(len(vectors), dtype=np.int64)
    for lo in range(0, len(vectors), block):
        v = torch.as_tensor(np.asarray(vectors[lo : lo + block], dtype=np.float32))
        margin = v @ queries.T - thresholds  # (b, A)
        if bias is not None:
            margin += torch.as_tensor(bias[lo : lo + block], dtype=torch.float32)[:, None]
        rows[lo : lo + len(v)] = torch.topk(margin, m, dim=1).indices.numpy()
        entered[lo : lo + len(v)] = (margin > 0).sum(dim=1).numpy()
    return rows, entered


@torch.no_grad()
def add_items(
    state: DRState,
    item_ids: list | np.ndarray | None = None,
    *,
    n_new: int | None = None,
    interactions: Sequences | None = None,
    features: np.ndarray | None = None,
    neighbours: Sequences | None = None,
    n_neighbours: int = 20,
) -> np.ndarray:
    """Add items to a fitted state without retraining; returns their internal ids ``V .. V+n-1``.

    Each new item gets ``J`` paths, a reranker vector, a bias and an input embedding from its
    contexts: the histories of the users who picked it in ``interactions`` (warm items) or else
    its neighbours, from ``features`` or given in ``neighbours`` (cold items, flagged ``cold``).
    Its paths come from the contexts' beam-search path scores under the size penalty
    (:func:`~deep_retrieval.core.assignment.place_paths`); its input embedding is the mean over
    the contexts' items; its reranker row and bias are fitted by maximum likelihood against a
    background of users (:func:`fit_item_vectors`). See :meth:`DeepRetrieval.add_items` for the
    arguments.
    """
    names, n = _new_item_names(state, item_ids, n_new)
    if n < 1:
        raise ValueError("add_items needs at least one new item")
    n_old = state.n_items
    ctx_items, ctx_rows, warm = _contexts(
        state, n, names, interactions, features, neighbours, n_neighbours
    )

    u = user_embeddings(state, ctx_rows)
    paths = place_by_contexts(state, u, ctx_items - n_old, n)
    index = state.item_paths

    # Input embedding: the mean over the contexts' items; reranker row and bias: fitted by
    # maximum likelihood, starting from the same means.
    head = state.net.reranker
    ctx_owner = np.repeat(ctx_items - n_old, ctx_rows.lengths)
    per_item = np.maximum(np.bincount(ctx_owner, minlength=n), 1).astype(np.float64)[:, None]

    def context_mean(table: np.ndarray) -> np.ndarray:
        out = np.zeros((n, table.shape[1]))
        np.add.at(out, ctx_owner, table[ctx_rows.items])
        return out / per_item

    inputs = context_mean(head.encoder.item_embedding.weight.detach().cpu().numpy())
    keys, bias = _fit_new_item_vectors(
        state, u, ctx_items - n_old, context_mean(head.item_table.weight.detach().cpu().numpy()),
        ctx_rows, ctx_owner, per_item,
    )
    head.append_items(inputs, keys, bias)

    occurrences = np.zeros(n, np.int64)
    if interactions is not None:
        new_occurrences = interactions.items[interactions.items >= n_old] - n_old
        occurrences = np.bincount(new_occurrences, minlength=n)
    state.item_counts = np.r_[state.item_counts, occurrences]
    state.cold = np.r_[state.cold, ~warm]
    state.removed = np.r_[state.removed, np.zeros(n, bool)]
    state.grow_attributes(n)
    if names is not None and state.item_ids is not None:
        state.item_ids = concat_ids(state.item_ids, names)
    state.set_paths(np.vstack([index.path_ids, paths]))
    return np.arange(n_old, n_old + n, dtype=np.int64)


def _fit_new_item_vectors(
    state: DRState, u: torch.Tensor, owner: np.ndarray, keys0: np.ndarray, ctx_rows: Sequences,
    ctx_owner: np.ndarray, per_item: np.ndarray, n_background: int = 2000,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Reranker rows of new items: :func:`fit_item_vectors` from the contexts' users ``u``
    against a background of stored user histories (else the contexts)."""
    head = state.net.reranker
    rng = np.random.default_rng(state.config.seed)
    pool = state.user_histories if state.user_histories is not None else ctx_rows
    pool = pool.rows(
        np.sort(rng.choice(len(pool), size=min(n_background, len(pool)), replace=False))
    )
    keys_old = head.keys()  # (V, E), normalised when the head normalises
    bias_old = head.item_bias

    # Rows per logit block: a (rows, V) block stays near 64 MiB (1,024 rows of a 10M-item
    # catalogue would be 40 GB).
    step = max(1, 2**24 // max(len(keys_old), 1))

    def query_and_log_z(users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = head.query(users).float()
        bias = bias_old if bias_old is not None else 0
        log_z = torch.cat(
            [
                torch.logsumexp(q[s : s + step] @ keys_old.T + bias, dim=1)
                for s in range(0, len(q), step)
            ]
        )
        return q, log_z

    q_ctx, z_ctx = query_and_log_z(u)
    q_bg, z_bg = query_and_log_z(user_embeddings(state, pool))
    b0 = None
    if bias_old is not None:
        b = bias_old.detach().cpu().numpy()
        sums = np.bincount(ctx_owner, weights=b[ctx_rows.items], minlength=len(per_item))
        b0 = torch.as_tensor(sums / per_item[:, 0], dtype=torch.float32)
    weight = float(state.item_counts.sum()) / max(len(q_bg), 1)
    k, b_new = fit_item_vectors(
        q_ctx.cpu(), torch.as_tensor(owner), q_bg.cpu(), z_ctx.cpu(), z_bg.cpu(),
        torch.as_tensor(keys0, dtype=torch.float32), b0,
        background_weight=weight, normalize=head.normalize,
    )
    return k.numpy(), None if b_new is None else b_new.numpy()


def add_items_by_id(
    state: DRState,
    *,
    interactions: Interactions | None = None,
    features: Mapping[Any, Sequence[float]] | None = None,
    neighbours: Mapping[Any, Sequence[Any]] | None = None,
) -> tuple[np.ndarray, list]:
    """:func:`add_items` with every input in external ids: the items these inputs name that the
    model does not hold yet are added, in order of first mention.

    Args:
        interactions: a log; each user's events (in time order when it has timestamps) follow
            the user's stored history, when the model knows the user.
        features: item id → feature vector (all of one width); new items without one are placed
            from interactions or neighbours.
        neighbours: new item id → existing item ids (unknown ones are ignored).

    Returns:
        ``(internal ids of the new items (n,), neighbour ids that were ignored as unknown)``.
    """
    new_names: dict[str, int] = {}  # external id → position among the new items

    def internal(x: Any) -> int:
        known, _ = item_index(state, [x])
        if len(known):
            return int(known[0])
        return state.n_items + new_names.setdefault(str(x), len(new_names))

    rows = None
    if interactions is not None:
        order = np.lexsort(
            (interactions.timestamps,)
            if interactions.timestamps is not None
            else (np.arange(len(interactions)),)
        )
        by_user: dict[str, list[int]] = {}
        users, items = interactions.users[order].tolist(), interactions.items[order].tolist()
        for u, v in zip(users, items, strict=True):
            # A known user's stored history comes first: it is the context.
            if str(u) not in by_user:
                try:
                    by_user[str(u)] = user_history(state, u).tolist()
                except KeyError:
                    by_user[str(u)] = []
            by_user[str(u)].append(internal(v))
        rows = Sequences.from_lists(
            list(by_user.values()), ordered=interactions.timestamps is not None
        )
    for x in features or {}:
        internal(x)
    ignored: list = []
    neighbour_rows: dict[str, np.ndarray] = {}
    for x, given in (neighbours or {}).items():
        known, unknown = item_index(state, list(given))
        ignored.extend(unknown)
        neighbour_rows[str(x)] = known
        internal(x)
    n = len(new_names)
    if n == 0:
        raise ValueError("the inputs name no item the model does not already hold: nothing to add")
    feature_matrix = None
    if features:
        widths = {len(f) for f in features.values()}
        if len(widths) != 1:
            raise ValueError(f"feature rows have different numbers of features {sorted(widths)}")
        feature_matrix = np.full((state.n_items + n, widths.pop()), np.nan, dtype=np.float32)
        for x, f in features.items():
            feature_matrix[internal(x)] = f
    nb = None
    if neighbour_rows:
        nb = Sequences.from_lists(
            [neighbour_rows.get(x, np.zeros(0, np.int64)) for x in new_names], ordered=False
        )
    names = list(new_names)
    if state.item_ids is None and any(
        not x.isdigit() or int(x) != state.n_items + i for i, x in enumerate(names)
    ):
        raise ValueError(
            "this model has no external item ids: new items must be numbered from n_items up"
        )
    ids = None if state.item_ids is None else np.array(names)
    added = add_items(
        state, ids, n_new=n, interactions=rows, features=feature_matrix, neighbours=nb
    )
    return added, ignored
