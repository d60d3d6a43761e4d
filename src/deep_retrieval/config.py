"""Typed configuration: frozen dataclasses with defaults in code, each validated where defined.

Override order: dataclass defaults < a TOML or JSON file < ``key=value`` overrides (dotted keys,
e.g. ``softmax.epochs=3``). Unknown keys and values of the wrong type raise :class:`ConfigError`
with the list of valid keys, so a typo never silently falls back to a default.

Every config dataclass checks its own fields in ``__post_init__`` (so an invalid config cannot
be built, in code or from a file) and raises :class:`ConfigError` with one line per broken rule,
prefixed with the section, e.g. ``train: batch_size must be ≥ 1, got 0``; built through
:func:`load_config` / :func:`from_mapping`, the prefix is the full dotted path
(``dr.train: batch_size must be ≥ 1, got 0``). Rules that tie two sections together live in
the dataclass that holds both (:class:`DRConfig`).

Each setting lives in one dataclass. Where two sections share a recipe (the brute-force softmax
model and DR's reranker), the shared fields are defined once in :class:`EncoderTrainingConfig`.
Settings with similar names that control different things say so in their docstrings
(``history_len``: :class:`ProtocolConfig` vs :class:`EncoderTrainingConfig`; ``seed``:
:class:`ProtocolConfig`, :class:`DRConfig`, :class:`BenchmarkConfig`).
"""

from __future__ import annotations

import ast
import dataclasses
import json
import logging
import math
import numbers
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger("deep_retrieval")

#: History encoders (``"auto"``: GRU for time-ordered rows, mean pooling for unordered sets).
ENCODERS = ("auto", "gru", "mean")
#: Negative samplers of the sampled softmax.
NEGATIVE_SAMPLERS = ("uniform", "popularity")
#: ``AssignmentConfig.init`` values: the paths items start on.
PATH_INITS = ("random", "kmeans")
#: ``AssignmentConfig.penalty_scale`` values (or ``None``), and the interactions per item that
#: ``"interactions"`` divides by: Gowalla's training split (810,128 interactions, 40,981 items).
PENALTY_SCALES = ("interactions",)
#: ``DRConfig.reranker`` values: the dot-product model alone, or with the candidate-aware
#: attention term (:mod:`deep_retrieval.core.modules.attention`).
RERANKERS = ("dot", "attention")
PENALTY_REFERENCE_DENSITY = 810_128 / 40_981
#: ``DRConfig`` overrides for the paper's schedule and beam rule with α as given: the defaults
#: before issue 14, under which earlier results (streaming, speed) were recorded.
PAPER_SETTINGS = ("train.reranker_epochs=0", "train.joint_epochs=2",
                  "retrieval.target_recall=none", "assignment.penalty_scale=none")
#: ``HNSWConfig.metric`` values.
HNSW_METRICS = ("l2-reduction", "inner-product")


class ConfigError(ValueError):
    """A configuration file, override or value that does not fit the typed config.

    ``section`` (dotted, e.g. ``"dr.train"``) and ``problems`` (one line per broken rule) are set
    when a dataclass's own validation failed.
    """

    def __init__(
        self, message: str, *, section: str | None = None, problems: Sequence[str] = ()
    ) -> None:
        super().__init__(message)
        self.section = section
        self.problems = tuple(problems)


# --- validation helpers: each appends one line per broken rule to ``problems`` ----------------


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _int(problems: list[str], name: str, value: Any, low: int, high: int | None = None, *,
         optional: bool = False, high_label: str | None = None) -> None:
    """``value`` an integer in ``low..high`` (``high=None``: no upper end), or None if optional;
    ``high_label`` names the upper end in the message (e.g. ``"epochs (4)"``)."""
    if optional and value is None:
        return
    allowed = f"≥ {low}" if high is None else f"in {low}..{high_label or high}"
    tail = " or none" if optional else ""
    if not _is_int(value):
        problems.append(f"{name} must be an integer {allowed}{tail}, got {value!r}")
    elif value < low or (high is not None and value > high):
        problems.append(f"{name} must be {allowed}{tail}, got {value!r}")


def _real(
    problems: list[str], name: str, value: Any, *, low: float | None = None, low_open: bool = False,
    high: float | None = None, high_open: bool = False, optional: bool = False,
) -> None:
    """``value`` a finite number above ``low`` (``low_open``: strictly) and below ``high``."""
    if optional and value is None:
        return
    if low is not None and high is not None:
        allowed = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        allowed = f"{'>' if low_open else '≥'} {low:g}"
    elif high is not None:
        allowed = f"{'<' if high_open else '≤'} {high:g}"
    else:
        allowed = "a finite number"
    tail = " or none" if optional else ""
    ok = _is_real(value)
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        problems.append(f"{name} must be {allowed}{tail}, got {value!r}")


def _flag(problems: list[str], name: str, value: Any) -> None:
    numpy_bool = type(value).__name__ in ("bool", "bool_")
    if not (isinstance(value, bool) or numpy_bool or (_is_int(value) and value in (0, 1))):
        problems.append(f"{name} must be true or false, got {value!r}")


def _choice(problems: list[str], name: str, value: Any, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        problems.append(f"{name} must be one of {', '.join(choices)}, got {value!r}")


def _device(problems: list[str], name: str, value: Any) -> None:
    ok = isinstance(value, str) and (
        value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit())
    )
    if not ok:
        problems.append(f"{name} must be auto, cpu, cuda or cuda:N, got {value!r}")


def _message(section: str, problems: Sequence[str]) -> str:
    return (f"{section}: " if section else "") + "; ".join(problems)


class _Validated:
    """Mixin of the config dataclasses: ``__post_init__`` runs ``_problems`` and raises them.

    ``_section``: the name the section has in the configs that hold it (the message prefix when
    the dataclass is built directly; :func:`from_mapping` puts the full dotted path instead).
    """

    _section = ""

    def __post_init__(self) -> None:
        problems = self._problems()
        if problems:
            raise ConfigError(
                _message(self._section, problems), section=self._section, problems=problems
            )

    def _problems(self) -> list[str]:
        return []


@dataclass(frozen=True)
class ProtocolConfig(_Validated):
    """Evaluation protocol settings (see README, "Protocols"): how a log becomes a train/test split.

    ``min_rating``: interactions with a lower rating are dropped (logs with ratings).
    ``min_user_interactions``: users with fewer interactions left are dropped; ``None`` is the
    protocol's own rule: 10 under ``paper`` (TDM/JTM's), none under ``all-users`` (every user
    trains, however short their history).
    ``n_valid_users`` / ``n_test_users``: held-out users under the paper protocol; ``None`` picks
    ``min(1000, max(100, round(0.1 · eligible users)))`` each, so ML-20M gets the paper's 1,000
    and small sets proportionally fewer. Fixed splits take their test users from the test file.
    ``filter_seen``: exclude a held-out user's whole history half from its ranking.

    ``history_len`` is part of the *task*, not of a model: a held-out user's query history is the
    newest ``history_len`` items of the first half of its sequence (paper protocol; fixed splits
    do not cut). Every method is evaluated on these same histories. It is a different knob from
    the models' ``history_len`` (:class:`EncoderTrainingConfig`: the window a model trains on and
    reads queries through); a model with a shorter window reads only the newest part of the
    query history the protocol gives it. Both default to the paper's 69.

    ``seed`` draws which users are held out (validation and test); it does not seed any model,
    so changing a model's seed (``BenchmarkConfig.seed``, ``DRConfig.seed``) keeps the same test
    users, and changing this one keeps the models' seeds.
    """

    _section = "protocol"

    min_rating: float = 4.0
    min_user_interactions: int | None = None
    n_valid_users: int | None = None
    n_test_users: int | None = None
    history_len: int = 69
    filter_seen: bool = False
    seed: int = 0

    def _problems(self) -> list[str]:
        p: list[str] = []
        _real(p, "min_rating", self.min_rating)
        _int(p, "min_user_interactions", self.min_user_interactions, 1, optional=True)
        _int(p, "n_valid_users", self.n_valid_users, 0, optional=True)
        _int(p, "n_test_users", self.n_test_users, 1, optional=True)
        _int(p, "history_len", self.history_len, 1)
        _flag(p, "filter_seen", self.filter_seen)
        _int(p, "seed", self.seed, 0)
        return p


@dataclass(frozen=True)
class ItemCFConfig(_Validated):
    """Item–item cosine neighbourhoods through ``implicit.nearest_neighbours.CosineRecommender``.

    ``n_neighbours``: neighbours kept per item (≥ 1)."""

    _section = "item_cf"

    n_neighbours: int = 200

    def _problems(self) -> list[str]:
        p: list[str] = []
        _int(p, "n_neighbours", self.n_neighbours, 1)
        return p


@dataclass(frozen=True)
class ALSConfig(_Validated):
    """``implicit.als.AlternatingLeastSquares``; confidence = 1 + alpha · r.

    ``factors`` ≥ 1, ``iterations`` ≥ 1, ``alpha`` ≥ 0, ``regularization`` ≥ 0."""

    _section = "als"

    factors: int = 256
    alpha: float = 20.0
    regularization: float = 1.0
    iterations: int = 15

    def _problems(self) -> list[str]:
        p: list[str] = []
        _int(p, "factors", self.factors, 1)
        _real(p, "alpha", self.alpha, low=0)
        _real(p, "regularization", self.regularization, low=0)
        _int(p, "iterations", self.iterations, 1)
        return p


@dataclass(frozen=True)
class EncoderTrainingConfig(_Validated):
    """A history encoder + item table trained with a (sampled) softmax: the recipe shared by the
    brute-force softmax model (:class:`SoftmaxConfig`) and DR's reranker (:class:`DRTrainConfig`).

    Each field, its default and its allowed range is written here once; the two subclasses carry
    their own values (they configure two different models, which the benchmark trains side by
    side and DR saves with its bundle), and add their own settings.

    Attributes:
        encoder: ``"mean"`` (default: masked mean pooling), ``"gru"`` (the paper's) or ``"auto"``
            (GRU for time-ordered rows, mean pooling for unordered sets); see README, "Choices".
        embedding_dim: ``E``, width of the user and item embeddings (≥ 1).
        history_len: ``L``, the model's window (≥ 1): a training sample's history is at most the
            ``L`` items before its target, and an ordered query history is cut to its newest
            ``L`` items. Not the protocol's ``history_len`` (:class:`ProtocolConfig`), which cuts
            the held-out users' query histories for every method alike.
        query_history_len: cap on the items an unordered query history is pooled over (≥ 1).
        epochs: passes over the training samples (≥ 1).
        batch_size: samples per gradient step (≥ 1).
        lr: Adam learning rate (≥ 0; 0 keeps the initial weights, a fixed network).
        weight_decay: Adam weight decay (≥ 0).
        n_negatives: ``n_negatives ≥ V`` trains with the exact softmax; otherwise that many shared
            negatives per batch (≥ 1), drawn from ``negative_sampling`` with log-Q correction.
        negative_sampling: ``"uniform"`` | ``"popularity"``.
        history_dropout: each training-history item is dropped with this probability, in [0, 1).
        temperature: softmax temperature (> 0).
        normalize: L2-normalise the user and item vectors before the inner product.
    """

    encoder: str = "mean"
    embedding_dim: int = 128
    history_len: int = 69
    query_history_len: int = 1000
    epochs: int = 8
    batch_size: int = 1024
    lr: float = 5e-3
    weight_decay: float = 0.0
    n_negatives: int = 1024
    negative_sampling: str = "popularity"
    history_dropout: float = 0.3
    temperature: float = 0.1
    normalize: bool = True

    def _problems(self) -> list[str]:
        p: list[str] = []
        _choice(p, "encoder", self.encoder, ENCODERS)
        _int(p, "embedding_dim", self.embedding_dim, 1)
        _int(p, "history_len", self.history_len, 1)
        _int(p, "query_history_len", self.query_history_len, 1)
        _int(p, "epochs", self.epochs, 1)
        _int(p, "batch_size", self.batch_size, 1)
        _real(p, "lr", self.lr, low=0)  # 0 is allowed: a fixed network (the tests use one)
        _real(p, "weight_decay", self.weight_decay, low=0)
        _int(p, "n_negatives", self.n_negatives, 1)
        _choice(p, "negative_sampling", self.negative_sampling, NEGATIVE_SAMPLERS)
        _real(p, "history_dropout", self.history_dropout, low=0, high=1, high_open=True)
        _real(p, "temperature", self.temperature, low=0, low_open=True)
        _flag(p, "normalize", self.normalize)
        return p


@dataclass(frozen=True)
class SoftmaxConfig(EncoderTrainingConfig):
    """The YouTube-DNN-style softmax model (the ``brute-force`` baseline; the ANN baselines search
    its embeddings). Its encoder and training settings (``encoder``, ``embedding_dim``,
    ``history_len``, ``epochs`` = 8, …) are the fields of :class:`EncoderTrainingConfig`; its own:

    Attributes:
        item_bias: a learned per-item bias added to the score.
        project: a linear projection of the user vector before the inner product.
        max_samples_per_user: cap on the samples a training row gives per epoch (≥ 1, or
            ``None``: every position).
    """

    _section = "softmax"

    item_bias: bool = True
    project: bool = False
    max_samples_per_user: int | None = None

    def _problems(self) -> list[str]:
        p = super()._problems()
        _flag(p, "item_bias", self.item_bias)
        _flag(p, "project", self.project)
        _int(p, "max_samples_per_user", self.max_samples_per_user, 1, optional=True)
        return p


@dataclass(frozen=True)
class HNSWConfig(_Validated):
    """faiss ``IndexHNSWFlat`` over the softmax model's item embeddings, maximum inner product.

    ``m`` (≥ 2): graph neighbours per node; ``ef_construction`` / ``ef_search`` (≥ 1): candidate
    list sizes while building / searching.
    ``metric``: ``"l2-reduction"`` (default: an L2 graph over items augmented so that L2 order is
    inner-product order) or ``"inner-product"`` (``METRIC_INNER_PRODUCT`` directly, which the
    biased item vectors' unequal norms defeat; README, "Choices", ANN baselines).
    """

    _section = "ann_hnsw"

    m: int = 32
    ef_construction: int = 200
    ef_search: int = 256
    metric: str = "l2-reduction"

    def _problems(self) -> list[str]:
        p: list[str] = []
        _int(p, "m", self.m, 2)
        _int(p, "ef_construction", self.ef_construction, 1)
        _int(p, "ef_search", self.ef_search, 1)
        _choice(p, "metric", self.metric, HNSW_METRICS)
        return p


@dataclass(frozen=True)
class IVFConfig(_Validated):
    """faiss ``IndexIVFFlat`` over the softmax model's item embeddings (inner product).

    ``n_lists`` (≥ 1): ``None`` → about ``4·√V``; at most ``V`` are used. ``n_probe`` (≥ 1): lists
    scanned per query. Excluding each user's training items means searching ``n`` + (excluded
    count) neighbours, so few probes cannot even fill the list (README, "Choices", ANN baselines).
    """

    _section = "ann_ivf"

    n_lists: int | None = None
    n_probe: int = 128

    def _problems(self) -> list[str]:
        p: list[str] = []
        _int(p, "n_lists", self.n_lists, 1, optional=True)
        _int(p, "n_probe", self.n_probe, 1)
        return p


@dataclass(frozen=True)
class IVFPQConfig(_Validated):
    """faiss IVF-PQ with 4-bit fast-scan codes and an exact refine step (``IVF…,PQ…x4fs,RFlat``).

    ``n_lists`` (≥ 1): ``None`` → about ``4·√V`` (faiss's guideline is 4–16·√V lists), at most
    ``V``. ``dims_per_code`` (≥ 1): vector dimensions per 4-bit sub-quantizer (the vectors are
    zero-padded to a multiple; 2 is the fast-scan setting of faiss's benchmarks). ``n_probe``
    (≥ 1): lists scanned per query. ``refine_factor`` (≥ 1): the PQ search returns
    ``refine_factor · n`` neighbours, re-scored exactly (``IndexRefineFlat.k_factor``).
    """

    _section = "ann_ivfpq"

    n_lists: int | None = None
    dims_per_code: int = 2
    n_probe: int = 32
    refine_factor: int = 4

    def _problems(self) -> list[str]:
        p: list[str] = []
        _int(p, "n_lists", self.n_lists, 1, optional=True)
        _int(p, "dims_per_code", self.dims_per_code, 1)
        _int(p, "n_probe", self.n_probe, 1)
        _int(p, "refine_factor", self.refine_factor, 1)
        return p


@dataclass(frozen=True)
class ScaNNConfig(_Validated):
    """ScaNN (the ``scann`` package, ``pip install 'deep-retrieval[scann]'``): a k-means tree,
    anisotropic (asymmetric-hashing) scoring, exact reordering — the configuration of ScaNN's
    README and its ``docs/algorithms.md``.

    ``n_leaves`` (≥ 1): ``None`` → about ``√V`` (README: "roughly the square root of the
    number of datapoints"), at most ``V``. ``leaves_to_search`` (≥ 1): leaves scanned per query.
    ``reorder_factor`` (≥ 1): ``reorder_factor · n`` quantised hits re-scored exactly.
    ``dims_per_block`` (≥ 1): dimensions per AH block (README: 2).
    ``anisotropic_quantization_threshold`` (README: 0.2). ``training_sample_size`` (≥ 1):
    vectors the tree is trained on (README: 250,000).
    """

    _section = "ann_scann"

    n_leaves: int | None = None
    leaves_to_search: int = 64
    reorder_factor: int = 4
    dims_per_block: int = 2
    anisotropic_quantization_threshold: float = 0.2
    training_sample_size: int = 250_000

    def _problems(self) -> list[str]:
        p: list[str] = []
        _int(p, "n_leaves", self.n_leaves, 1, optional=True)
        _int(p, "leaves_to_search", self.leaves_to_search, 1)
        _int(p, "reorder_factor", self.reorder_factor, 1)
        _int(p, "dims_per_block", self.dims_per_block, 1)
        _real(p, "anisotropic_quantization_threshold", self.anisotropic_quantization_threshold)
        _int(p, "training_sample_size", self.training_sample_size, 1)
        return p


@dataclass(frozen=True)
class StreamConfig(_Validated):
    """Settings of :func:`stream_train` (the network and path settings come from the model's
    :class:`~deep_retrieval.config.DRConfig`; its ``train.epochs`` / ``joint_epochs`` /
    ``reranker_epochs`` / ``assign_every`` do not apply to a stream).

    Defaults are the settings measured on time-ordered MovieLens
    (``benchmarks/results/streaming/results.md``): two passes over each chunk plus as many replayed
    recent samples give the stream about the network steps of a 4-epoch batch fit.

    Attributes:
        chunk_size: interactions per chunk: the unit of one network step and one score merge.
            Chunks given by the caller are cut to this size.
        passes: gradient passes over each chunk's own samples.
        replay: samples drawn (uniformly, without replacement) from the replay buffer and
            trained on with each chunk, per pass; 0 = no replay. Without replay an item's path is
            trained only by the instances that arrive after it was assigned (measured cost:
            README, "Streaming training").
        replay_buffer: how many of the most recent samples the replay buffer holds.
        decay: ``η`` of the decayed merge (paper: 0.999), applied once per occurrence of an item.
        reassign_every: interactions between path assignments.
        held_paths: add each instance's item's current ``J`` paths, with exact probabilities, to
            the instance's list (stored lists then hold ``S + J`` slots); see the module docstring.
        final_assignment: run one more path assignment when the stream ends (as the last batch
            epoch ends with one). Off: the model keeps the paths its network has trained on.
        train_reranker: train the reranker and the shared encoder together with the structure
            network (the paper's joint step). ``False`` trains the structure network only, the
            setting for a model whose reranker is already trained.
        bundle_every: interactions between saved bundles; ``None`` = no bundles during the stream
            (a final bundle is still written when ``bundle_dir`` is set).
        bundle_dir: directory that receives ``bundle-<interactions seen, 12 digits>/`` bundles.
        keep_bundles: how many of the newest bundles to keep (older ones are removed).
        calibration_users: users whose histories calibrate the serving beam
            (:meth:`DeepRetrieval._calibrate_beam`).
    """

    chunk_size: int = 2048
    passes: int = 2
    replay: int = 2048
    replay_buffer: int = 50_000
    decay: float = 0.999
    reassign_every: int = 8192
    held_paths: bool = True
    final_assignment: bool = True
    train_reranker: bool = True
    bundle_every: int | None = None
    bundle_dir: str | None = None
    keep_bundles: int = 3
    calibration_users: int = 500

    _section = "stream"

    def _problems(self) -> list[str]:
        p: list[str] = []
        _int(p, "chunk_size", self.chunk_size, 1)
        _int(p, "passes", self.passes, 1)
        _int(p, "replay", self.replay, 0)
        _int(p, "replay_buffer", self.replay_buffer, 0)
        _real(p, "decay η", self.decay, low=0, low_open=True, high=1)
        _int(p, "reassign_every", self.reassign_every, 1)
        _flag(p, "held_paths", self.held_paths)
        _flag(p, "final_assignment", self.final_assignment)
        _flag(p, "train_reranker", self.train_reranker)
        _int(p, "bundle_every", self.bundle_every, 1, optional=True)
        if self.bundle_every is not None and self.bundle_dir is None:
            p.append("bundle_every needs bundle_dir")
        if self.bundle_dir is not None and not isinstance(self.bundle_dir, str):
            p.append(f"bundle_dir must be a path string or none, got {self.bundle_dir!r}")
        _int(p, "keep_bundles", self.keep_bundles, 1)
        _int(p, "calibration_users", self.calibration_users, 1)
        return p


@dataclass(frozen=True)
class BenchmarkConfig(_Validated):
    """Everything ``deep-retrieval benchmark``, ``ablate`` and ``stream`` read (``train`` reads the
    smaller :class:`TrainConfig`).

    ``share_reranker`` (``ablate`` only): every ablation row starts from the reference's trained
    softmax model (frozen) and learns only its structure network, so rows differ in the index
    alone. Off: each row trains its own reranker, as ``train`` does. The benchmark has both as
    methods: ``dr`` (DR as ``train`` produces it) and ``dr-shared`` (over the brute-force model).

    ``seed``: the seed of every model the benchmark fits (≥ 0). It is handed down: ``dr.seed`` is
    always set to it (so a benchmark has one model seed, and ``seed=1`` reruns DR as well as the
    baselines with seed 1). In a file or a ``--set`` override, ``dr.seed`` is accepted only when it
    equals ``seed`` (as in a saved ``results.json`` config); another value is an error that says
    to set ``seed``. Built in code, the given ``dr.seed`` is replaced by ``seed``. Which users are
    held out is ``protocol.seed``, a separate knob (see :class:`ProtocolConfig`).

    ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` for the torch models.
    ``query_batch_size`` (≥ 1): query rows per ``recommend`` call while evaluating.
    ``tune_baselines`` (default on): tune ALS and Item-CF on validation users (the protocol's,
    else 1,000 carved from the training rows) before fitting them
    (:mod:`deep_retrieval.experiments.tuning`); the chosen settings go into ``results.json``.
    Off: their configured settings, as given.
    ``exhaustive_users`` (≥ 1, or ``None``: all): the ``attention-exhaustive`` method scores every
    item with the attention reranker, ``O(V · L)`` per user, so it is evaluated on this many test
    users (drawn with ``seed``); its results carry brute force's metrics on the same users.
    """

    _section = "benchmark"
    #: dotted key → the key it is handed down from (see ``seed``; checked by :func:`load_config`).
    _handed_down: typing.ClassVar[Mapping[str, str]] = {"dr.seed": "seed"}

    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    item_cf: ItemCFConfig = field(default_factory=ItemCFConfig)
    als: ALSConfig = field(default_factory=ALSConfig)
    softmax: SoftmaxConfig = field(default_factory=SoftmaxConfig)
    ann_hnsw: HNSWConfig = field(default_factory=HNSWConfig)
    ann_ivf: IVFConfig = field(default_factory=IVFConfig)
    ann_ivfpq: IVFPQConfig = field(default_factory=IVFPQConfig)
    ann_scann: ScaNNConfig = field(default_factory=ScaNNConfig)
    dr: DRConfig = field(default_factory=lambda: DRConfig())
    stream: StreamConfig = field(default_factory=StreamConfig)
    share_reranker: bool = True
    tune_baselines: bool = True
    seed: int = 0
    device: str = "auto"
    query_batch_size: int = 256
    exhaustive_users: int | None = 2000

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.dr.seed != self.seed:  # the benchmark's seed is DR's seed too
            object.__setattr__(self, "dr", dataclasses.replace(self.dr, seed=self.seed))

    def _problems(self) -> list[str]:
        p: list[str] = []
        sections = {"protocol": ProtocolConfig, "item_cf": ItemCFConfig, "als": ALSConfig,
                    "softmax": SoftmaxConfig, "ann_hnsw": HNSWConfig, "ann_ivf": IVFConfig,
                    "ann_ivfpq": IVFPQConfig, "ann_scann": ScaNNConfig, "dr": DRConfig,
                    "stream": StreamConfig}
        for name, cls in sections.items():
            if not isinstance(getattr(self, name), cls):
                p.append(f"{name} must be a {cls.__name__}, got {getattr(self, name)!r}")
        _flag(p, "share_reranker", self.share_reranker)
        _flag(p, "tune_baselines", self.tune_baselines)
        _int(p, "seed", self.seed, 0)
        _device(p, "device", self.device)
        _int(p, "query_batch_size", self.query_batch_size, 1)
        _int(p, "exhaustive_users", self.exhaustive_users, 1, optional=True)
        return p


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and lightly convert) ``value`` against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} is not a valid {tp}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table of settings, got {value!r}")
        return from_mapping(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (arg, *_rest) = typing.get_args(tp)
        return tuple(_coerce(v, arg, key) for v in value)
    return value


def valid_keys(cls: type, prefix: str = "") -> list[str]:
    """All dotted keys of a config dataclass, e.g. ``["protocol.min_rating", …, "seed"]``."""
    keys = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            keys += valid_keys(tp, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _unknown_keys_error(cls: type, unknown: Sequence[str], prefix: str = "") -> ConfigError:
    """The error for unknown keys: the valid keys, and why a known-elsewhere key is not one here."""
    hints: Mapping[str, str] = getattr(cls, "_key_hints", {}) if not prefix else {}
    why = [f"{u}: {hints[u.split('.')[0]]}" for u in unknown if u.split(".")[0] in hints]
    return ConfigError(
        f"unknown setting(s) {', '.join(prefix + u for u in unknown)}; "
        + (f"{'; '.join(why)}; " if why else "")
        + f"valid keys: {', '.join(valid_keys(cls, prefix))}"
    )


def _check_mapping(cls: type, data: Mapping[str, Any], prefix: str = "") -> None:
    """Keys and value types of a (partial) mapping, without building the dataclass (so a file
    that sets only one side of a cross-field rule is not judged before the overrides apply)."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise _unknown_keys_error(cls, unknown, prefix)
    for k, v in data.items():
        tp = hints[k]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            if not isinstance(v, Mapping):
                raise ConfigError(f"{prefix}{k}: expected a table of settings, got {v!r}")
            _check_mapping(tp, v, prefix=f"{prefix}{k}.")
        else:
            _coerce(v, tp, prefix + k)


def from_mapping(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    """Build the config dataclass ``cls`` from a (nested) mapping of its settings, e.g. a saved
    model's ``manifest["config"]``; missing keys take their defaults.

    Raises:
        ConfigError: an unknown key (the message lists the valid ones), a value of the wrong type,
            or a value outside its range (prefixed with the dotted section, ``prefix``).
    """
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(typing.cast(Any, cls))}
    unknown = sorted(set(data) - names)
    if unknown:
        raise _unknown_keys_error(cls, unknown, prefix)
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if not (prefix and exc.problems):
            raise
        section = prefix.rstrip(".")
        message = _message(section, exc.problems)
        raise ConfigError(message, section=section, problems=exc.problems) from None


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, JSON-ready dict of a config dataclass."""
    return dataclasses.asdict(config)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _lookup(data: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = data
    for k in dotted.split("."):
        if not isinstance(node, Mapping) or k not in node:
            return False, None
        node = node[k]
    return True, node


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"softmax.epochs=3"`` → ``(["softmax", "epochs"], 3)``; values are Python/TOML-ish
    literals."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value, e.g. softmax.epochs=3")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    lowered = raw.lower()
    if lowered in ("true", "false"):
        value: Any = lowered == "true"
    elif lowered in ("none", "null"):
        value = None
    else:
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw  # a bare word is a string, e.g. encoder=mean
    return key.split("."), value


def load_config(
    cls: type[T],
    file: str | Path | None = None,
    overrides: Iterable[str] = (),
    base: T | None = None,
) -> T:
    """Build a config of type ``cls``: defaults (or ``base``) < ``file`` (TOML/JSON) < overrides.

    Raises:
        ConfigError: unknown key, wrong type, a value out of range, or unreadable file; the
            message lists valid keys, or says which rule the value breaks.
    """
    data: dict[str, Any] = to_dict(base) if base is not None else to_dict(cls())
    given: dict[str, Any] = {}  # handed-down keys the file or an override sets explicitly
    handed_down: Mapping[str, str] = getattr(cls, "_handed_down", {})
    if file is not None:
        path = Path(file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            loaded = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            kind = path.suffix or "TOML"
            raise ConfigError(f"config file {path} is not valid {kind}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(
                f"config file {path} must hold sections ({{\"dr\": {{…}}, …}}), not a"
                f" {type(loaded).__name__}"
            )
        _check_mapping(cls, loaded)  # keys and types, before merging
        for key in handed_down:
            found, value = _lookup(loaded, key)
            if found:
                given[key] = value
        data = _merge(data, loaded)
    keys_of_cls = valid_keys(cls)
    for text in overrides:
        keys, value = parse_override(text)
        dotted = ".".join(keys)
        if dotted not in keys_of_cls:
            hints: Mapping[str, str] = getattr(cls, "_key_hints", {})
            why = f"{dotted}: {hints[keys[0]]}; " if keys[0] in hints else ""
            raise ConfigError(
                f"unknown setting {dotted!r}; {why}valid keys: {', '.join(keys_of_cls)}"
            )
        if dotted in handed_down:
            given[dotted] = value
        update: dict[str, Any] = {keys[-1]: value}
        for k in reversed(keys[:-1]):
            update = {k: update}
        data = _merge(data, update)
    config = from_mapping(cls, data)
    for key, value in given.items():
        source = handed_down[key]
        _, want = _lookup(to_dict(config), source)
        if value != want:
            raise ConfigError(
                f"{key}={value!r} differs from {source}={want!r}: {key} is handed down from"
                f" {source} here; set {source}={value!r} instead"
            )
    return config


# --- Deep Retrieval ------------------------------------------------------------------------------


def _section_problems(config: Any) -> list[str]:
    """One problem per section field (a dataclass-typed field) that holds something else."""
    p: list[str] = []
    for f in dataclasses.fields(config):
        cls = _hints(type(config))[f.name]
        value = getattr(config, f.name)
        if isinstance(cls, type) and dataclasses.is_dataclass(cls) and not isinstance(value, cls):
            p.append(f"{f.name} must be a {cls.__name__}, got {value!r}")
    return p


@dataclass(frozen=True)
class StructureConfig(_Validated):
    """The K×D path grid and its network (paper §1.1–1.2).

    ``n_layers`` = D (≥ 1), ``n_nodes`` = K (≥ 2), ``paths_per_item`` = J (1..K^D). Layer d is
    ``Linear(E + (d−1)·node_dim → hidden_dim) → ReLU → Linear(→ K)``, or a single ``Linear``
    with ``hidden_dim = None``; ``node_dim`` and ``hidden_dim`` are ≥ 1. The hidden layer is a
    measured choice (README, "Choices"; ``deep-retrieval ablate`` compares both).
    """

    _section = "structure"

    n_layers: int = 3
    n_nodes: int = 50
    paths_per_item: int = 3
    node_dim: int = 32
    hidden_dim: int | None = 256

    def _problems(self) -> list[str]:
        p: list[str] = []
        _int(p, "n_layers", self.n_layers, 1)
        _int(p, "n_nodes", self.n_nodes, 2)
        if not p:
            n_paths = self.n_nodes**self.n_layers
            _int(p, "paths_per_item", self.paths_per_item, 1, n_paths,
                 high_label=f"K^D ({n_paths:,})")
        else:
            _int(p, "paths_per_item", self.paths_per_item, 1)
        _int(p, "node_dim", self.node_dim, 1)
        _int(p, "hidden_dim", self.hidden_dim, 1, optional=True)
        return p


@dataclass(frozen=True)
class DRTrainConfig(EncoderTrainingConfig):
    """The network step: multi-path likelihood + sampled-softmax reranker, ``Q = Q_pen + Q_sm``.

    The encoder and reranker settings (``encoder``, ``embedding_dim``, ``history_len``, …) are
    those of :class:`EncoderTrainingConfig`, with the same tuned defaults as the brute-force
    baseline's :class:`SoftmaxConfig` (so DR's own reranker trains with its recipe) except
    ``epochs`` (4). ``encoder="gru"`` is the paper's choice; the default is mean pooling (see
    README, "Choices"). ``lr`` also trains the structure network unless ``structure_lr`` is set.

    The default schedule trains the reranker first, then the structure on it; the paper's
    (§2.5: 2 joint epochs, then 2 of the structure alone) is ``reranker_epochs=0,
    joint_epochs=2`` (README, "Choices": the paper's schedule keeps 0.78–0.90 × brute force's
    recall, this one 0.94–1.1 ×).

    Attributes:
        epochs: network epochs (≥ 1). The first ``joint_epochs`` (≥ 0; more than ``epochs`` is
            clamped to ``epochs``, with a warning) train encoder, structure network and
            reranker together; later epochs freeze the reranker and encoder and train the
            structure network only.
        reranker_epochs: epochs (≥ 0) that train the encoder and reranker alone, on the
            reranker's sampled softmax, before the network epochs (no path assignment follows
            them): the brute-force model's recipe (its 8 epochs), so the reranker a fit trains
            is as good as that model. Skipped when ``fit`` is given a trained reranker.
        assign_every: run path assignment after every that many epochs (and after the last; ≥ 1).
        structure_lr: learning rate of the structure network (> 0), ``None`` = ``lr``.
        causal: (mean encoder only) embed each training row once and train on every position of
            it (a causal pass over prefix sums) instead of encoding an ``L``-item window per
            sample. Off by default: with history dropout it is slower (README, "Choices", the
            training pass; :meth:`~deep_retrieval.data.samples.TrainingSamples.causal_epoch`).
        softmax_weight: weight of the reranker's softmax loss in ``Q`` (≥ 0).
        attention_epochs: with ``reranker="attention"``, epochs (≥ 1) that train the attention
            term alone on the frozen dot-product reranker, after the network epochs (README,
            "Choices", the candidate-aware reranker).
        attention_dim: ``d``, the attention term's projection width (≥ 1).
        attention_negatives: negatives (≥ 1) per batch of the attention term's sampled softmax
            (shared by the batch, drawn like the reranker's, log-Q corrected).
    """

    _section = "train"

    epochs: int = 4
    joint_epochs: int = 0
    reranker_epochs: int = 8
    assign_every: int = 1
    structure_lr: float | None = None
    causal: bool = False
    softmax_weight: float = 1.0
    attention_epochs: int = 4
    attention_dim: int = 32
    attention_negatives: int = 256

    def __post_init__(self) -> None:
        # Fewer epochs than joint ones (``epochs=1`` under the paper's 2 joint epochs): every
        # epoch is joint. Clamped, and said, rather than refused.
        if (_is_int(self.epochs) and _is_int(self.joint_epochs)
                and 1 <= self.epochs < self.joint_epochs):
            log.warning("train.joint_epochs (%d) is more than train.epochs (%d): clamped to %d",
                        self.joint_epochs, self.epochs, self.epochs)
            object.__setattr__(self, "joint_epochs", self.epochs)
        super().__post_init__()

    def _problems(self) -> list[str]:
        p = super()._problems()
        _int(p, "joint_epochs", self.joint_epochs, 0)
        _int(p, "reranker_epochs", self.reranker_epochs, 0)
        _int(p, "assign_every", self.assign_every, 1)
        # > 0, not ≥ 0: the training loops read ``structure_lr or lr``, so 0 would mean ``lr``.
        _real(p, "structure_lr", self.structure_lr, low=0, low_open=True, optional=True)
        _flag(p, "causal", self.causal)
        _real(p, "softmax_weight", self.softmax_weight, low=0)
        _int(p, "attention_epochs", self.attention_epochs, 1)
        _int(p, "attention_dim", self.attention_dim, 1)
        _int(p, "attention_negatives", self.attention_negatives, 1)
        return p


@dataclass(frozen=True)
class AssignmentConfig(_Validated):
    """Path assignment (paper §2.2–2.3): top-``n_candidates`` (S ≥ J) scored paths per item, then
    ``n_sweeps`` (T ≥ 1) greedy coordinate-descent sweeps under ``penalty``·|c|^power/power
    (``penalty`` ≥ 0; ``power`` ≥ 1, so the penalty is convex).

    ``penalty`` 3e-4 is measured on Gowalla (the paper's 3e-5 was for ML-20M).

    ``init``: the paths items start on. ``"random"`` (the paper's §1.1: ``J`` distinct uniformly
    random paths); ``"kmeans"``: residual k-means of the reranker's item vectors, taken when the
    first network epoch starts (after the reranker epochs, or from a given trained reranker;
    :func:`~deep_retrieval.core.paths.kmeans_path_ids`). Needs ``paths_per_item ≤ n_nodes``.
    A stream (``stream``) always starts random.

    ``penalty_scale``: ``"interactions"`` (default) multiplies ``penalty`` by the mean training
    interactions per item over :data:`PENALTY_REFERENCE_DENSITY` (Gowalla's, where 3e-4 was
    measured): the gains the penalty balances are ``N_v``-weighted, so this keeps its effect on
    path sizes the same from sparse to dense data (README, "Choices"; α = 4e-3 on MovieLens-1M,
    about 260 interactions per item). ``None``: ``penalty`` as given, the paper's α."""

    _section = "assignment"

    n_candidates: int = 20
    penalty: float = 3e-4
    power: int = 4
    n_sweeps: int = 3
    init: str = "random"
    penalty_scale: str | None = "interactions"

    def _problems(self) -> list[str]:
        p: list[str] = []
        _int(p, "n_candidates", self.n_candidates, 1)
        _real(p, "penalty", self.penalty, low=0)
        _int(p, "power", self.power, 1)
        _int(p, "n_sweeps", self.n_sweeps, 1)
        _choice(p, "init", self.init, PATH_INITS)
        if self.penalty_scale is not None and self.penalty_scale not in PENALTY_SCALES:
            p.append(f"penalty_scale must be none or one of {', '.join(PENALTY_SCALES)},"
                     f" got {self.penalty_scale!r}")
        return p


@dataclass(frozen=True)
class RetrievalConfig(_Validated):
    """Serving: beam search over the grid, union of the items on the B paths, rerank, top-M.

    ``beam_size = None`` picks a beam per request size M from the calibration. With
    ``target_recall`` (in (0, 1]; default 0.99): the smallest calibrated beam whose top M
    overlaps the reranker's exhaustive top M by that share on the calibration users (training
    users; the way ANN libraries tune to a recall target), among the beams whose mean candidate
    count stays within ``max_fraction_scored`` of the servable items; the largest of those when
    none reaches the target. ``max_fraction_scored`` (in (0, 1]) ``None`` = the project's
    budget: 10 % of the items below 30,000, 2 % from 30,000 (README, "Choices": without a cap a
    0.99 target scored a third of a small catalogue). ``target_recall = None``: the paper's
    rule, the smallest beam whose mean candidate count reaches ``candidate_factor``·M (> 0; the
    paper keeps it at 5–10× M).
    ``max_beam_size`` (≥ 1) is the largest beam that calibration considers (capped at K^D): the
    beam a ``beam_size = None`` request can get. It does not limit an explicit ``beam_size``; the
    HTTP service's cap on a request's beam is ``ServiceLimits.max_request_beam_size``.
    ``rerank``: score the candidates with the reranker (off: rank them by path probability).
    """

    _section = "retrieval"

    beam_size: int | None = None
    candidate_factor: float = 10.0
    target_recall: float | None = 0.99
    max_fraction_scored: float | None = None
    max_beam_size: int = 1024
    rerank: bool = True

    def _problems(self) -> list[str]:
        p: list[str] = []
        _int(p, "beam_size", self.beam_size, 1, optional=True)
        _real(p, "candidate_factor", self.candidate_factor, low=0, low_open=True)
        _real(p, "target_recall", self.target_recall, low=0, high=1, low_open=True,
              optional=True)
        _real(p, "max_fraction_scored", self.max_fraction_scored, low=0, high=1, low_open=True,
              optional=True)
        _int(p, "max_beam_size", self.max_beam_size, 1)
        _flag(p, "rerank", self.rerank)
        return p


@dataclass(frozen=True)
class DRConfig(_Validated):
    """Everything a Deep Retrieval model is built and trained with (saved with the model).

    ``seed`` (≥ 0): the model's own randomness — weight initialisation, the random initial paths,
    sample order and history dropout, assignment tie-breaks and the users that calibrate the
    beam. Saved in the bundle, so it stays a key of this config. In a benchmark it is not a
    separate knob: :class:`BenchmarkConfig` hands its ``seed`` down to it. It does not choose the
    held-out users (``ProtocolConfig.seed``).

    ``reranker``: what scores DR's candidates. ``"dot"`` (default): the dot-product softmax model
    (the brute-force baseline's kind). ``"attention"``: that model's logit plus a target-attention
    term conditioned on the candidate (:mod:`deep_retrieval.core.modules.attention`; trained for
    ``train.attention_epochs``). No inner-product index can serve it; DR scores only its
    candidates with it.

    Cross-section rule: ``assignment.n_candidates`` ≥ ``structure.paths_per_item`` (an item needs
    at least J candidate paths to pick its J from).
    """

    _section = "dr"

    structure: StructureConfig = field(default_factory=StructureConfig)
    train: DRTrainConfig = field(default_factory=DRTrainConfig)
    assignment: AssignmentConfig = field(default_factory=AssignmentConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    reranker: str = "dot"
    seed: int = 0

    def _problems(self) -> list[str]:
        p = _section_problems(self)
        if not p and self.assignment.n_candidates < self.structure.paths_per_item:
            p.append(
                "assignment.n_candidates must be ≥ structure.paths_per_item"
                f" ({self.structure.paths_per_item}), got {self.assignment.n_candidates}"
            )
        if (
            not p
            and self.assignment.init == "kmeans"
            and self.structure.paths_per_item > self.structure.n_nodes
        ):
            p.append(
                "assignment.init='kmeans' starts each item's paths at distinct first-layer nodes:"
                f" structure.paths_per_item ({self.structure.paths_per_item}) must be ≤"
                f" structure.n_nodes ({self.structure.n_nodes}), or use init='random'"
            )
        _choice(p, "reranker", self.reranker, RERANKERS)
        _int(p, "seed", self.seed, 0)
        return p


@dataclass(frozen=True)
class TrainConfig(_Validated):
    """What ``deep-retrieval train`` reads: the split (``protocol``), the model (``dr``, saved
    with it, ``dr.seed`` included) and the torch ``device`` (``auto``, ``cpu``, ``cuda`` or
    ``cuda:N``; the ``--device`` flag wins over it).

    There is no top-level ``seed``: the model's seed is ``dr.seed`` and the held-out users are
    drawn by ``protocol.seed``. The benchmark-only sections (``softmax``, ``item_cf``, …) are not
    keys here; given to ``train``, they are an error that says so.
    """

    _section = "train command"
    #: why a :class:`BenchmarkConfig` key is not a key here (shown with the unknown-key error).
    _key_hints: typing.ClassVar[Mapping[str, str]] = {
        **dict.fromkeys(
            ("item_cf", "als", "softmax", "ann_hnsw", "ann_ivf", "stream", "share_reranker",
             "tune_baselines", "query_batch_size"),
            "a benchmark setting; train reads protocol.*, dr.* and device",
        ),
        "seed": "train has no top-level seed: the model's seed is dr.seed"
        " (protocol.seed draws the held-out users)",
    }

    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    dr: DRConfig = field(default_factory=DRConfig)
    device: str = "auto"

    def _problems(self) -> list[str]:
        p: list[str] = []
        if not isinstance(self.protocol, ProtocolConfig):
            p.append(f"protocol must be a ProtocolConfig, got {self.protocol!r}")
        if not isinstance(self.dr, DRConfig):
            p.append(f"dr must be a DRConfig, got {self.dr!r}")
        _device(p, "device", self.device)
        return p


# --- DRIndex: an index over given vectors --------------------------------------------------------


@dataclass(frozen=True)
class IndexTrainConfig(_Validated):
    """How :class:`~deep_retrieval.DRIndex` learns its paths from a sample of query vectors.

    Attributes:
        epochs: network epochs (≥ 1), each followed by a path assignment.
        batch_size: (query, item) pairs per gradient step of the structure network (≥ 1).
        lr: Adam learning rate of the structure network (> 0).
        distill_k: without ``positives``, each query's exact top ``distill_k`` (≥ 1) under
            ``⟨q, v⟩ + b_v`` are its training items (the structure learns to find what exact
            search returns). 100, the result count such indexes serve: at 100K planted items
            it gave overlap@100 0.977 with exact search where 10 gave 0.734, at twice the fit
            time (README, "Use DR as an index over your own model").
        anchor_queries: query vectors (≥ 1) kept in the index, with each one's ``distill_k``-th
            best exact score, to place items that no training query has among its top
            ``distill_k`` and items added later (:meth:`~deep_retrieval.DRIndex.add`).
        anchors_per_item: the anchor queries (≥ 1) that stand for such an item: those under
            whose threshold it falls the least.
    """

    _section = "train"

    epochs: int = 4
    batch_size: int = 1024
    lr: float = 5e-3
    distill_k: int = 100
    anchor_queries: int = 20_000
    anchors_per_item: int = 4

    def _problems(self) -> list[str]:
        p: list[str] = []
        _int(p, "epochs", self.epochs, 1)
        _int(p, "batch_size", self.batch_size, 1)
        _real(p, "lr", self.lr, low=0, low_open=True)
        _int(p, "distill_k", self.distill_k, 1)
        _int(p, "anchor_queries", self.anchor_queries, 1)
        _int(p, "anchors_per_item", self.anchors_per_item, 1)
        return p


@dataclass(frozen=True)
class IndexConfig(_Validated):
    """Everything a :class:`~deep_retrieval.DRIndex` is built with (saved with it): the grid
    (``structure``), the path assignment, the beam rule (``retrieval``), the training of its
    structure network (``train``) and its ``seed`` (≥ 0). The item vectors and biases given to
    ``fit`` are the exact scorer of the rerank, so there is no reranker to configure.

    ``DRIndex(n_nodes=100, distill_k=20)``: any field of the four sections by its bare name
    (the names are unique across them), or ``seed``.
    """

    _section = "index"

    structure: StructureConfig = field(default_factory=StructureConfig)
    train: IndexTrainConfig = field(default_factory=IndexTrainConfig)
    assignment: AssignmentConfig = field(default_factory=AssignmentConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    seed: int = 0

    def _problems(self) -> list[str]:
        p = _section_problems(self)
        _int(p, "seed", self.seed, 0)
        if not p:  # the cross-section rules are DRConfig's
            try:
                self.dr_config(1)
            except ConfigError as exc:
                p += exc.problems
        return p

    def dr_config(self, dim: int) -> DRConfig:
        """The :class:`DRConfig` of the index's state over ``dim``-wide vectors: these sections,
        and a fixed reranker that is the exact ``⟨q, v⟩ + b_v`` (no normalisation, ``τ = 1``)."""
        train = DRTrainConfig(
            embedding_dim=dim, epochs=self.train.epochs, batch_size=self.train.batch_size,
            lr=self.train.lr, reranker_epochs=0, joint_epochs=0, normalize=False,
            temperature=1.0, history_dropout=0.0, encoder="mean",
        )
        return DRConfig(structure=self.structure, train=train, assignment=self.assignment,
                        retrieval=self.retrieval, seed=self.seed)

    @classmethod
    def from_settings(cls, base: IndexConfig | None = None, **settings: Any) -> IndexConfig:
        """``base`` (default: the defaults) with ``settings`` given by bare field name
        (``n_nodes=100``) or section name (``train=IndexTrainConfig(...)``)."""
        data = to_dict(base if base is not None else cls())
        owner = {f.name: section for section in ("structure", "train", "assignment", "retrieval")
                 for f in dataclasses.fields(_hints(cls)[section])}
        for key, value in settings.items():
            if key in data and key not in owner:
                data[key] = to_dict(value) if dataclasses.is_dataclass(value) else value
            elif key in owner:
                data[owner[key]][key] = value
            else:
                raise ConfigError(
                    f"unknown index setting {key!r}; valid: {', '.join(sorted([*owner, 'seed']))}"
                )
        return from_mapping(cls, data)
