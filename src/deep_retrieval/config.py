"""Typed configuration: frozen dataclasses with defaults in code.

Override order: dataclass defaults < a TOML or JSON file < ``key=value`` overrides (dotted keys,
e.g. ``softmax.epochs=3``). Unknown keys and values of the wrong type raise :class:`ConfigError`
with the list of valid keys, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or override that does not fit the typed config."""


@dataclass(frozen=True)
class ProtocolConfig:
    """Evaluation protocol settings (see README, "Protocols").

    ``n_valid_users`` / ``n_test_users``: held-out users under the paper protocol; ``None`` picks
    ``min(1000, max(100, round(0.1 · eligible users)))`` each, so ML-20M gets the paper's 1,000
    and small sets proportionally fewer. Fixed splits take their test users from the test file.
    """

    min_rating: float = 4.0
    min_user_interactions: int = 10
    n_valid_users: int | None = None
    n_test_users: int | None = None
    history_len: int = 69
    filter_seen: bool = False
    seed: int = 0


@dataclass(frozen=True)
class ItemCFConfig:
    """Item–item cosine neighbourhoods through ``implicit.nearest_neighbours.CosineRecommender``."""

    n_neighbours: int = 200


@dataclass(frozen=True)
class ALSConfig:
    """``implicit.als.AlternatingLeastSquares``; confidence = 1 + alpha · r."""

    factors: int = 256
    alpha: float = 20.0
    regularization: float = 1.0
    iterations: int = 15


@dataclass(frozen=True)
class SoftmaxConfig:
    """The YouTube-DNN-style softmax model: history encoder + item table, (sampled) softmax.

    ``encoder``: ``"mean"`` (default: masked mean pooling), ``"gru"`` (the paper's) or ``"auto"``
    (GRU for time-ordered rows, mean pooling for unordered sets). ``n_negatives ≥ V`` trains with the exact softmax; otherwise that many
    shared negatives per batch from ``negative_sampling`` (``"uniform"`` | ``"popularity"``) with
    log-Q correction. ``history_dropout`` drops each training-history item with that probability.
    ``query_history_len`` caps the items an unordered query history is pooled over.
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
    item_bias: bool = True
    project: bool = False
    max_samples_per_user: int | None = None


@dataclass(frozen=True)
class HNSWConfig:
    """faiss ``IndexHNSWFlat`` over the softmax model's item embeddings, maximum inner product.

    ``metric``: ``"l2-reduction"`` (default: an L2 graph over items augmented so that L2 order is
    inner-product order; top-20 overlap with exact search on Gowalla 0.97 at ``ef_search`` 128,
    0.98 at 256)
    or ``"inner-product"`` (``METRIC_INNER_PRODUCT`` directly; 0.76 there, the biased item vectors
    have unequal norms).
    """

    m: int = 32
    ef_construction: int = 200
    ef_search: int = 256
    metric: str = "l2-reduction"


@dataclass(frozen=True)
class IVFConfig:
    """faiss ``IndexIVFFlat`` over the softmax model's item embeddings (inner product).

    ``n_lists``: ``None`` → about ``4·√V``. ``n_probe``: lists scanned per query. Excluding each
    user's training items means searching ``n`` + (excluded count) neighbours, hundreds on
    Gowalla, so few probes cannot even fill the list: top-20 overlap with exact search there is
    0.63 at 16 probes, 0.88 at 64 and 0.997 at 128 (of 810 lists).
    """

    n_lists: int | None = None
    n_probe: int = 128


@dataclass(frozen=True)
class StreamConfig:
    """Settings of :func:`stream_train` (the network and path settings come from the model's
    :class:`~deep_retrieval.config.DRConfig`; its ``train.epochs`` / ``joint_epochs`` /
    ``assign_every`` do not apply to a stream).

    Defaults are the settings measured on time-ordered MovieLens
    (``benchmarks/results/streaming/results.md``): two passes over each chunk plus as many replayed
    recent samples give the stream about the network steps of a 4-epoch batch fit.

    Attributes:
        chunk_size: interactions per chunk: the unit of one network step and one score merge.
            Chunks given by the caller are cut to this size.
        passes: gradient passes over each chunk's own samples.
        replay: samples drawn (uniformly, without replacement) from the replay buffer and
            trained on with each chunk, per pass; 0 = no replay. Without replay an item's path is
            trained only by the instances that arrive after it was assigned, and the network
            barely learns the paths of items that occur a few times (measured on latest-small,
            seed 0: test recall@20 0.093 without, 0.117 with; passes=1 gives 0.098).
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

    def __post_init__(self) -> None:
        problems = []
        if self.chunk_size < 1:
            problems.append(f"chunk_size must be ≥ 1, got {self.chunk_size}")
        if self.passes < 1:
            problems.append(f"passes must be ≥ 1, got {self.passes}")
        if self.replay < 0 or self.replay_buffer < 0:
            problems.append(f"replay and replay_buffer must be ≥ 0, got {self.replay}, {self.replay_buffer}")
        if not 0 < self.decay <= 1:
            problems.append(f"decay η must be in (0, 1], got {self.decay}")
        if self.reassign_every < 1:
            problems.append(f"reassign_every must be ≥ 1, got {self.reassign_every}")
        if self.bundle_every is not None and self.bundle_every < 1:
            problems.append(f"bundle_every must be ≥ 1 or None, got {self.bundle_every}")
        if self.bundle_every is not None and self.bundle_dir is None:
            problems.append("bundle_every needs bundle_dir")
        if self.keep_bundles < 1:
            problems.append(f"keep_bundles must be ≥ 1, got {self.keep_bundles}")
        if self.calibration_users < 1:
            problems.append(f"calibration_users must be ≥ 1, got {self.calibration_users}")
        if problems:
            raise ConfigError("stream: " + "; ".join(problems))


@dataclass(frozen=True)
class BenchmarkConfig:
    """Everything ``deep-retrieval benchmark`` and ``train`` read.

    ``share_reranker``: when ``dr`` runs next to ``brute-force``, DR starts from the trained softmax
    model (frozen) and learns only its structure network, so DR, the ANN baselines and brute force
    rank with the very same embeddings and their gap measures the index alone. Off: DR trains its
    own encoder and reranker jointly (the paper's schedule, also what ``train`` does).
    """

    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    item_cf: ItemCFConfig = field(default_factory=ItemCFConfig)
    als: ALSConfig = field(default_factory=ALSConfig)
    softmax: SoftmaxConfig = field(default_factory=SoftmaxConfig)
    ann_hnsw: HNSWConfig = field(default_factory=HNSWConfig)
    ann_ivf: IVFConfig = field(default_factory=IVFConfig)
    dr: DRConfig = field(default_factory=lambda: DRConfig())
    stream: StreamConfig = field(default_factory=StreamConfig)
    share_reranker: bool = True
    seed: int = 0
    device: str = "auto"
    query_batch_size: int = 256


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
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a table of settings, got {value!r}")
        return _from_mapping(tp, value, prefix=f"{key}.")
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
        if dataclasses.is_dataclass(tp):
            keys += valid_keys(tp, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _from_mapping(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(prefix + u for u in unknown)}; "
            f"valid keys: {', '.join(valid_keys(cls, prefix))}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


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


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"softmax.epochs=3"`` → ``(["softmax", "epochs"], 3)``; values are Python/TOML-ish literals."""
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
    """Build a config of type ``cls``: defaults (or ``base``) < ``file`` (TOML/JSON) < ``overrides``.

    Raises:
        ConfigError: unknown key, wrong type, or unreadable file; the message lists valid keys.
    """
    data: dict[str, Any] = to_dict(base) if base is not None else to_dict(cls())
    if file is not None:
        path = Path(file)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            loaded = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid {path.suffix or 'TOML'}: {exc}") from exc
        _from_mapping(cls, loaded)  # validate keys/types before merging
        data = _merge(data, loaded)
    for text in overrides:
        keys, value = parse_override(text)
        if ".".join(keys) not in valid_keys(cls):
            raise ConfigError(
                f"unknown setting {'.'.join(keys)!r}; valid keys: {', '.join(valid_keys(cls))}"
            )
        update: dict[str, Any] = {keys[-1]: value}
        for k in reversed(keys[:-1]):
            update = {k: update}
        data = _merge(data, update)
    return _from_mapping(cls, data)


# --- Deep Retrieval ------------------------------------------------------------------------------


@dataclass(frozen=True)
class StructureConfig:
    """The K×D path grid and its network (paper §1.1–1.2).

    ``n_layers`` = D, ``n_nodes`` = K, ``paths_per_item`` = J. Layer d is
    ``Linear(E + (d−1)·node_dim → hidden_dim) → ReLU → Linear(→ K)``, or a single ``Linear``
    with ``hidden_dim = None``. The hidden layer is a measured choice (README, "Choices";
    ``deep-retrieval ablate`` compares both).
    """

    n_layers: int = 3
    n_nodes: int = 50
    paths_per_item: int = 3
    node_dim: int = 32
    hidden_dim: int | None = 256


@dataclass(frozen=True)
class DRTrainConfig:
    """The network step: multi-path likelihood + sampled-softmax reranker, ``Q = Q_pen + Q_softmax``.

    The first ``joint_epochs`` train encoder, structure network and reranker together; later epochs
    freeze the reranker and encoder and train the structure network only (paper §2.5: 2 joint + 2).
    ``assign_every``: run path assignment after every that many epochs (and after the last).
    ``encoder``/``embedding_dim``/… as in :class:`SoftmaxConfig` (same tuned defaults, so DR's own
    reranker trains with the brute-force baseline's recipe). ``encoder="gru"`` is the paper's
    choice; the default is mean pooling (see README, "Choices"). ``causal`` (mean encoder only):
    embed each training row once and train on every position of it (a causal pass over prefix
    sums) instead of encoding an ``L``-item window per sample. Off by default: with mean pooling
    the encoder is a small part of a step (``embedding_bag``); measured on a 480K-sample
    ML-20M-shaped corpus, the causal pass ran 30.3K samples/s against 28.2K without history
    dropout, but 20.8K against 34.5K with it (its dropout needs several masks; see
    :meth:`~deep_retrieval.data.samples.TrainingSamples.causal_epoch`).
    """

    epochs: int = 4
    joint_epochs: int = 2
    assign_every: int = 1
    batch_size: int = 1024
    lr: float = 5e-3
    structure_lr: float | None = None
    weight_decay: float = 0.0
    encoder: str = "mean"
    causal: bool = False
    embedding_dim: int = 128
    history_len: int = 69
    query_history_len: int = 1000
    n_negatives: int = 1024
    negative_sampling: str = "popularity"
    history_dropout: float = 0.3
    normalize: bool = True
    temperature: float = 0.1
    softmax_weight: float = 1.0


@dataclass(frozen=True)
class AssignmentConfig:
    """Path assignment (paper §2.2–2.3): top-``n_candidates`` (S) scored paths per item, then
    ``n_sweeps`` (T) greedy coordinate-descent sweeps under ``penalty``·|c|^power/power.

    ``penalty`` 3e-4 is measured on Gowalla (the paper's 3e-5 was for ML-20M). The penalty
    balances ``N_v``-weighted log-gains, so data with many more interactions per item needs a
    larger one (README, "Choices"; ``deep-retrieval ablate`` sweeps it)."""

    n_candidates: int = 20
    penalty: float = 3e-4
    power: int = 4
    n_sweeps: int = 3


@dataclass(frozen=True)
class RetrievalConfig:
    """Serving: beam search over the grid, union of the items on the B paths, rerank, top-M.

    ``beam_size = None`` picks, per request size M, the smallest calibrated beam whose mean
    candidate count reaches ``candidate_factor``·M (the paper keeps it at 5–10× M).
    """

    beam_size: int | None = None
    candidate_factor: float = 10.0
    max_beam_size: int = 1024
    rerank: bool = True


@dataclass(frozen=True)
class DRConfig:
    """Everything a Deep Retrieval model is built and trained with (saved with the model)."""

    structure: StructureConfig = field(default_factory=StructureConfig)
    train: DRTrainConfig = field(default_factory=DRTrainConfig)
    assignment: AssignmentConfig = field(default_factory=AssignmentConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    seed: int = 0
