"""Deep Retrieval: a learnable path index for large-scale candidate retrieval (Gao et al.,
CIKM 2021).

Public API (arrays in, ``(item_ids, scores)`` out, batch first)::

    from deep_retrieval import DeepRetrieval, DRConfig, load_dataset, make_split, ProtocolConfig
    from deep_retrieval import DRIndex  # an index over your own vectors, faiss-style
"""

from __future__ import annotations

from .baselines import (
    ALS,
    FaissHNSW,
    FaissIVF,
    FaissIVFPQ,
    ItemCF,
    MostPopular,
    ScaNN,
    SoftmaxRecommender,
)
from .config import (
    ALSConfig,
    AssignmentConfig,
    BenchmarkConfig,
    ConfigError,
    DRConfig,
    DRTrainConfig,
    HNSWConfig,
    IndexConfig,
    IndexTrainConfig,
    ItemCFConfig,
    IVFConfig,
    IVFPQConfig,
    ProtocolConfig,
    RetrievalConfig,
    ScaNNConfig,
    SoftmaxConfig,
    StreamConfig,
    StructureConfig,
    TrainConfig,
    load_config,
)
from .core.assignment import PathScores, accumulate_path_scores, assign_paths, streaming_update
from .core.beam import beam_search, enumerate_paths
from .core.paths import ItemPathMap, PathCodec
from .data.protocols import all_users_split, fixed_split, make_split, paper_split
from .data.registry import DATASETS, load_dataset
from .data.synthetic import make_clustered
from .data.types import FixedSplit, Interactions, Sequences, Split
from .dr_index import DRIndex
from .estimator import DeepRetrieval, stream_train
from .evaluation.evaluate import evaluate
from .evaluation.metrics import evaluate_recommendations
from .experiments.benchmark import run_benchmark
from .training.stream import time_ordered_chunks
from .utils import __version__, show_progress

__all__ = [
    "ALS",
    "DATASETS",
    "ALSConfig",
    "AssignmentConfig",
    "BenchmarkConfig",
    "ConfigError",
    "DRConfig",
    "DRIndex",
    "DRTrainConfig",
    "DeepRetrieval",
    "FaissHNSW",
    "FaissIVF",
    "FaissIVFPQ",
    "FixedSplit",
    "HNSWConfig",
    "IVFConfig",
    "IVFPQConfig",
    "IndexConfig",
    "IndexTrainConfig",
    "Interactions",
    "ItemCF",
    "ItemCFConfig",
    "ItemPathMap",
    "MostPopular",
    "PathCodec",
    "PathScores",
    "ProtocolConfig",
    "RetrievalConfig",
    "ScaNN",
    "ScaNNConfig",
    "Sequences",
    "SoftmaxConfig",
    "SoftmaxRecommender",
    "Split",
    "StreamConfig",
    "StructureConfig",
    "TrainConfig",
    "__version__",
    "accumulate_path_scores",
    "all_users_split",
    "assign_paths",
    "beam_search",
    "enumerate_paths",
    "evaluate",
    "evaluate_recommendations",
    "fixed_split",
    "load_config",
    "load_dataset",
    "make_clustered",
    "make_split",
    "paper_split",
    "run_benchmark",
    "show_progress",
    "stream_train",
    "streaming_update",
    "time_ordered_chunks",
]
