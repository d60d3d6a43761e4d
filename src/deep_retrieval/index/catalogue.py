"""Changing a fitted model's catalogue: the pieces behind ``DeepRetrieval.add_items``.

A new item is placed by the same path-score machinery that training uses, run on *contexts*:
user histories that stand for the people who would pick the item.

* A **warm** item (it occurs in the given interactions) has one context per occurrence: the
  items the user had before it (ordered rows), or the rest of the row (unordered rows).
* A **cold** item (no interactions) has one context: its neighbours, taken from item features
  (the most similar existing items by cosine) or given directly (e.g. co-occurrence lists).

Beam search over each context's user vector gives ``S`` paths with probabilities, summed per item
(:func:`context_path_scores`, as training accumulates path scores); the item's ``J`` paths are then
chosen by the penalised greedy step of path assignment against the current path sizes
(:func:`place_items`). Its reranker row and bias are fitted by maximum likelihood under the frozen
softmax model (:func:`fit_item_vectors`). Shapes: ``N`` contexts, ``n`` new items, ``V`` existing
items, ``F`` features.
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.assignment import PathScores
from ..data.types import Sequences


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


def context_path_scores(
    items: np.ndarray, path_ids: np.ndarray, probs: np.ndarray, n_items: int, n_paths: int, n_keep: int
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
            for pid, pr in zip(path_ids[row].tolist(), probs[row].tolist()):
                total[pid] = total.get(pid, 0.0) + pr
        ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))[:n_keep]
        ids[v, : len(ranked)] = [pid for pid, _ in ranked]
        out[v, : len(ranked)] = [sc for _, sc in ranked]
    return ids, out


def place_items(
    scores: PathScores,
    path_sizes: dict[int, int],
    *,
    paths_per_item: int,
    penalty: float,
    power: float = 4,
    n_sweeps: int = 3,
) -> np.ndarray:
    """Penalised greedy choice of ``J`` paths for new items, the existing items fixed.

    The coordinate step of :func:`~deep_retrieval.core.assignment.assign_paths` restricted to the new
    items: each chooses, one path at a time, the candidate with the largest
    ``N_v·(log(acc + s[v,c]) − log acc) − α·(f(|c|+1) − f(|c|))`` (``acc`` = scores already
    chosen; ``N_v·log s`` for the first), where ``|c|`` counts the existing items and the new
    items placed so far. Items are visited in order; from sweep 2 on each item releases its paths
    and chooses again. Without the penalty new items would crowd onto the paths every user's beam
    reaches, and be retrieved (and crowd results) for everyone.

    Args:
        scores: ``n`` rows; every row needs ≥ ``J`` candidates.
        path_sizes: items per path among the existing items; updated in place.

    Returns:
        ``(n, J)`` path ids.
    """
    j_max = paths_per_item
    n = scores.n_items
    out = np.full((n, j_max), -1, dtype=np.int64)

    def f(size: int) -> float:
        return size**power / power

    for sweep in range(n_sweeps):
        for v in range(n):
            if sweep:
                for c in out[v]:
                    path_sizes[int(c)] -= 1
            cand = [(int(c), float(sc)) for c, sc in zip(scores.path_ids[v], scores.scores[v]) if c >= 0 and sc > 0]
            if len(cand) < j_max:
                raise ValueError(f"item {v} has {len(cand)} scored candidate paths, needs {j_max}")
            n_v = float(scores.counts[v])
            acc, chosen = 0.0, []
            for j in range(j_max):
                best, best_gain = -1, -np.inf
                for slot, (c, sc) in enumerate(cand):
                    if c in chosen:
                        continue
                    like = np.log(sc) if acc == 0 else np.log(acc + sc) - np.log(acc)
                    size = path_sizes.get(c, 0)
                    gain = n_v * like - penalty * (f(size + 1) - f(size))
                    if gain > best_gain:
                        best, best_gain = slot, gain
                c, sc = cand[best]
                chosen.append(c)
                acc += sc
                path_sizes[c] = path_sizes.get(c, 0) + 1
            out[v] = chosen
    return out


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
            loss = (log_z_ctx - s_ctx[rows, owner]).sum() + background_weight * (log_z_bg - log_z_background).sum()
            opt.zero_grad()
            (loss / (len(owner) + background_weight * len(q_background))).backward()
            opt.step()
    return k.detach(), None if b is None else b.detach()
