"""Baselines answering the same ``fit`` / ``recommend`` contract as Deep Retrieval (see ``base``).

=================  ==========================  ==============================================
benchmark name     class                       what it is
=================  ==========================  ==============================================
``most-popular``   :class:`MostPopular`        training interaction counts
``item-cf``        :class:`ItemCF`             item–item cosine (implicit), summed over history
``als``            :class:`ALS`                implicit-feedback MF (implicit), users folded in
``brute-force``    :class:`SoftmaxRecommender` softmax model, exact inner product over all items
``ann-hnsw``       :class:`FaissHNSW`          the same embeddings, faiss HNSW
``ann-ivf``        :class:`FaissIVF`           the same embeddings, faiss IVF-Flat
``ann-ivfpq``      :class:`FaissIVFPQ`         the same embeddings, faiss IVF-PQ fast-scan + refine
``ann-scann``      :class:`ScaNN`              the same embeddings, ScaNN (optional ``scann``)
=================  ==========================  ==============================================

Example::

    softmax = make_baseline("brute-force", config).fit(split.train, split.n_items)
    hnsw = make_baseline("ann-hnsw", config, softmax=softmax).fit(split.train, split.n_items)
    ids, scores = hnsw.recommend(split.test_history, 20, exclude=split.test_exclude)
"""

from __future__ import annotations

from typing import TypedDict

from ..config import BenchmarkConfig
from ..core.contract import Recommender, pad_results, topk_from_scores
from .als import ALS
from .ann import FaissHNSW, FaissIVF, FaissIVFPQ, ScaNN
from .item_cf import ItemCF
from .popular import MostPopular
from .softmax import SoftmaxRecommender

BASELINES: dict[str, type] = {
    cls.name: cls
    for cls in (
        MostPopular, ItemCF, ALS, SoftmaxRecommender, FaissHNSW, FaissIVF, FaissIVFPQ, ScaNN
    )
}


class _Common(TypedDict):
    """The keyword arguments every baseline's constructor takes."""

    seed: int
    device: str
    query_batch_size: int


def make_baseline(
    name: str,
    config: BenchmarkConfig | None = None,
    *,
    softmax: SoftmaxRecommender | None = None,
    device: str = "cpu",
) -> Recommender:
    """An unfitted baseline by benchmark name, configured from ``config``.

    Args:
        name: one of :data:`BASELINES`.
        config: the benchmark configuration (defaults when ``None``); each baseline reads its
            own section plus ``seed`` and ``query_batch_size``.
        softmax: ``ann-*`` only: the fitted :class:`SoftmaxRecommender` whose embeddings they
            index (train it once and share it).
        device: torch device for the softmax model (the others run on the CPU).

    Raises:
        ValueError: unknown name, or an ``ann-*`` method without a fitted softmax model.
    """
    config = config if config is not None else BenchmarkConfig()
    common: _Common = {
        "seed": config.seed,
        "device": device,
        "query_batch_size": config.query_batch_size,
    }
    if name == MostPopular.name:
        return MostPopular(None, **common)
    if name == ItemCF.name:
        return ItemCF(config.item_cf, **common)
    if name == ALS.name:
        return ALS(config.als, **common)
    if name == SoftmaxRecommender.name:
        return SoftmaxRecommender(config.softmax, **common)
    if name in (FaissHNSW.name, FaissIVF.name, FaissIVFPQ.name, ScaNN.name):
        if softmax is None or softmax.model_ is None:
            raise ValueError(
                f"{name} indexes a trained softmax model: fit make_baseline('brute-force', config)"
                " first and pass it as softmax="
            )
        if name == FaissHNSW.name:
            return FaissHNSW(config.ann_hnsw, softmax, **common)
        if name == FaissIVF.name:
            return FaissIVF(config.ann_ivf, softmax, **common)
        if name == FaissIVFPQ.name:
            return FaissIVFPQ(config.ann_ivfpq, softmax, **common)
        return ScaNN(config.ann_scann, softmax, **common)
    raise ValueError(f"unknown baseline {name!r}; choose one of {', '.join(BASELINES)}")


__all__ = [
    "ALS",
    "BASELINES",
    "FaissHNSW",
    "FaissIVF",
    "FaissIVFPQ",
    "ItemCF",
    "MostPopular",
    "Recommender",
    "ScaNN",
    "SoftmaxRecommender",
    "make_baseline",
    "pad_results",
    "topk_from_scores",
]
