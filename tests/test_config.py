from __future__ import annotations

import dataclasses

import pytest

from deep_retrieval import config as C
from deep_retrieval.config import (
    BenchmarkConfig,
    ConfigError,
    DRConfig,
    DRTrainConfig,
    EncoderTrainingConfig,
    SoftmaxConfig,
    TrainConfig,
    from_mapping,
    load_config,
    valid_keys,
)


def test_defaults_file_and_overrides_precedence(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("seed = 5\n[softmax]\nepochs = 2\n")
    cfg = load_config(BenchmarkConfig, f, ["softmax.epochs=3", "protocol.filter_seen=true"])
    assert cfg.seed == 5 and cfg.softmax.epochs == 3 and cfg.protocol.filter_seen is True
    assert cfg.als == BenchmarkConfig().als


def test_json_file(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"protocol": {"n_test_users": 7}}')
    assert load_config(BenchmarkConfig, f).protocol.n_test_users == 7


def test_unknown_key_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match=r"valid keys: .*protocol\.min_rating"):
        load_config(BenchmarkConfig, overrides=["protocol.min_ratin=3"])
    f = tmp_path / "c.toml"
    f.write_text("[softmax]\nepoch = 2\n")
    with pytest.raises(ConfigError, match=r"softmax\.epoch"):
        load_config(BenchmarkConfig, f)


def test_wrong_types_and_malformed():
    with pytest.raises(ConfigError, match="integer"):
        load_config(BenchmarkConfig, overrides=["seed=1.5"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(BenchmarkConfig, overrides=["seed"])
    # optional ints accept none
    assert (
        load_config(BenchmarkConfig, overrides=["protocol.n_test_users=none"]).protocol.n_test_users
        is None
    )


def test_frozen_and_keys():
    cfg = BenchmarkConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]
    assert "protocol.history_len" in valid_keys(BenchmarkConfig)


# --- validation: each config dataclass checks its own fields ---------------------------------

ALL_CONFIGS = [
    C.ProtocolConfig, C.ItemCFConfig, C.ALSConfig, C.SoftmaxConfig, C.HNSWConfig, C.IVFConfig,
    C.StreamConfig, C.BenchmarkConfig, C.StructureConfig, C.DRTrainConfig, C.AssignmentConfig,
    C.RetrievalConfig, C.DRConfig, C.TrainConfig,
]


@pytest.mark.parametrize("cls", ALL_CONFIGS, ids=lambda c: c.__name__)
def test_defaults_validate(cls):
    cls()  # raises ConfigError if a default broke its own rule
    assert from_mapping(cls, {}) == cls()


# (class, field, bad value, words the one-line message must hold)
SHARED = [  # EncoderTrainingConfig: the fields SoftmaxConfig and DRTrainConfig share
    ("encoder", "lstm", "encoder must be one of auto, gru, mean, got 'lstm'"),
    ("embedding_dim", 0, "embedding_dim must be ≥ 1, got 0"),
    ("history_len", 0, "history_len must be ≥ 1, got 0"),
    ("query_history_len", 0, "query_history_len must be ≥ 1, got 0"),
    ("epochs", 0, "epochs must be ≥ 1, got 0"),
    ("batch_size", 0, "batch_size must be ≥ 1, got 0"),
    ("batch_size", 2.5, "batch_size must be an integer ≥ 1, got 2.5"),
    ("lr", -1e-3, "lr must be ≥ 0, got -0.001"),
    ("lr", float("nan"), "lr must be ≥ 0, got nan"),
    ("weight_decay", -1.0, "weight_decay must be ≥ 0, got -1.0"),
    ("n_negatives", 0, "n_negatives must be ≥ 1, got 0"),
    ("negative_sampling", "hard",
     "negative_sampling must be one of uniform, popularity, got 'hard'"),
    ("history_dropout", 1.0, "history_dropout must be in [0, 1), got 1.0"),
    ("history_dropout", -0.1, "history_dropout must be in [0, 1), got -0.1"),
    ("temperature", 0.0, "temperature must be > 0, got 0.0"),
    ("normalize", "yes", "normalize must be true or false, got 'yes'"),
]
RULES = [
    *[(C.SoftmaxConfig, *rule) for rule in SHARED],
    *[(C.DRTrainConfig, *rule) for rule in SHARED],
    (C.ProtocolConfig, "min_rating", float("nan"), "min_rating must be a finite number, got nan"),
    (C.ProtocolConfig, "min_user_interactions", 0,
     "min_user_interactions must be ≥ 1 or none, got 0"),
    (C.ProtocolConfig, "n_valid_users", -1, "n_valid_users must be ≥ 0 or none, got -1"),
    (C.ProtocolConfig, "n_test_users", 0, "n_test_users must be ≥ 1 or none, got 0"),
    (C.ProtocolConfig, "history_len", 0, "history_len must be ≥ 1, got 0"),
    (C.ProtocolConfig, "filter_seen", "no", "filter_seen must be true or false"),
    (C.ProtocolConfig, "seed", -1, "seed must be ≥ 0, got -1"),
    (C.ItemCFConfig, "n_neighbours", 0, "n_neighbours must be ≥ 1, got 0"),
    (C.ALSConfig, "factors", 0, "factors must be ≥ 1, got 0"),
    (C.ALSConfig, "alpha", -1.0, "alpha must be ≥ 0, got -1.0"),
    (C.ALSConfig, "regularization", -0.5, "regularization must be ≥ 0, got -0.5"),
    (C.ALSConfig, "iterations", 0, "iterations must be ≥ 1, got 0"),
    (C.SoftmaxConfig, "item_bias", 2, "item_bias must be true or false, got 2"),
    (C.SoftmaxConfig, "project", "no", "project must be true or false"),
    (C.SoftmaxConfig, "max_samples_per_user", 0, "max_samples_per_user must be ≥ 1 or none, got 0"),
    (C.HNSWConfig, "m", 1, "m must be ≥ 2, got 1"),
    (C.HNSWConfig, "ef_construction", 0, "ef_construction must be ≥ 1, got 0"),
    (C.HNSWConfig, "ef_search", 0, "ef_search must be ≥ 1, got 0"),
    (C.HNSWConfig, "metric", "cosine",
     "metric must be one of l2-reduction, inner-product, got 'cosine'"),
    (C.IVFConfig, "n_lists", 0, "n_lists must be ≥ 1 or none, got 0"),
    (C.IVFConfig, "n_probe", 0, "n_probe must be ≥ 1, got 0"),
    (C.StreamConfig, "chunk_size", 0, "chunk_size must be ≥ 1, got 0"),
    (C.StreamConfig, "passes", 0, "passes must be ≥ 1, got 0"),
    (C.StreamConfig, "replay", -1, "replay must be ≥ 0, got -1"),
    (C.StreamConfig, "replay_buffer", -1, "replay_buffer must be ≥ 0, got -1"),
    (C.StreamConfig, "decay", 0.0, "decay η must be in (0, 1], got 0.0"),
    (C.StreamConfig, "decay", 1.5, "decay η must be in (0, 1], got 1.5"),
    (C.StreamConfig, "reassign_every", 0, "reassign_every must be ≥ 1, got 0"),
    (C.StreamConfig, "held_paths", "x", "held_paths must be true or false"),
    (C.StreamConfig, "final_assignment", "x", "final_assignment must be true or false"),
    (C.StreamConfig, "train_reranker", "x", "train_reranker must be true or false"),
    (C.StreamConfig, "bundle_every", 0, "bundle_every must be ≥ 1 or none, got 0"),
    (C.StreamConfig, "bundle_every", 10, "bundle_every needs bundle_dir"),
    (C.StreamConfig, "bundle_dir", 3, "bundle_dir must be a path string or none, got 3"),
    (C.StreamConfig, "keep_bundles", 0, "keep_bundles must be ≥ 1, got 0"),
    (C.StreamConfig, "calibration_users", 0, "calibration_users must be ≥ 1, got 0"),
    (C.BenchmarkConfig, "share_reranker", "x", "share_reranker must be true or false"),
    (C.BenchmarkConfig, "seed", -1, "seed must be ≥ 0, got -1"),
    (C.BenchmarkConfig, "device", "gpu", "device must be auto, cpu, cuda or cuda:N, got 'gpu'"),
    (C.BenchmarkConfig, "query_batch_size", 0, "query_batch_size must be ≥ 1, got 0"),
    (C.BenchmarkConfig, "softmax", 3, "softmax must be a SoftmaxConfig, got 3"),
    (C.StructureConfig, "n_layers", 0, "n_layers must be ≥ 1, got 0"),
    (C.StructureConfig, "n_nodes", 1, "n_nodes must be ≥ 2, got 1"),
    (C.StructureConfig, "paths_per_item", 0, "paths_per_item must be in 1..K^D (125,000), got 0"),
    (C.StructureConfig, "node_dim", 0, "node_dim must be ≥ 1, got 0"),
    (C.StructureConfig, "hidden_dim", 0, "hidden_dim must be ≥ 1 or none, got 0"),
    (C.DRTrainConfig, "joint_epochs", -1, "joint_epochs must be ≥ 0, got -1"),
    (C.DRTrainConfig, "assign_every", 0, "assign_every must be ≥ 1, got 0"),
    (C.DRTrainConfig, "structure_lr", 0.0, "structure_lr must be > 0 or none, got 0.0"),
    (C.DRTrainConfig, "causal", "x", "causal must be true or false"),
    (C.DRTrainConfig, "softmax_weight", -1.0, "softmax_weight must be ≥ 0, got -1.0"),
    (C.AssignmentConfig, "n_candidates", 0, "n_candidates must be ≥ 1, got 0"),
    (C.AssignmentConfig, "penalty", -1e-4, "penalty must be ≥ 0, got -0.0001"),
    (C.AssignmentConfig, "power", 0, "power must be ≥ 1, got 0"),
    (C.AssignmentConfig, "n_sweeps", 0, "n_sweeps must be ≥ 1, got 0"),
    (C.RetrievalConfig, "beam_size", 0, "beam_size must be ≥ 1 or none, got 0"),
    (C.RetrievalConfig, "candidate_factor", 0.0, "candidate_factor must be > 0, got 0.0"),
    (C.RetrievalConfig, "max_beam_size", 0, "max_beam_size must be ≥ 1, got 0"),
    (C.RetrievalConfig, "rerank", "x", "rerank must be true or false"),
    (C.DRConfig, "seed", -1, "seed must be ≥ 0, got -1"),
    (C.DRConfig, "train", 3, "train must be a DRTrainConfig, got 3"),
    (C.TrainConfig, "device", "tpu", "device must be auto, cpu, cuda or cuda:N, got 'tpu'"),
    (C.TrainConfig, "dr", 3, "dr must be a DRConfig, got 3"),
]
SECTIONS = {C.ProtocolConfig: "protocol", C.ItemCFConfig: "item_cf", C.ALSConfig: "als",
            C.SoftmaxConfig: "softmax", C.HNSWConfig: "ann_hnsw", C.IVFConfig: "ann_ivf",
            C.StreamConfig: "stream", C.BenchmarkConfig: "benchmark",
            C.StructureConfig: "structure", C.DRTrainConfig: "train",
            C.AssignmentConfig: "assignment", C.RetrievalConfig: "retrieval",
            C.DRConfig: "dr", C.TrainConfig: "train command"}


@pytest.mark.parametrize("cls, name, value, words", RULES,
                         ids=[f"{r[0].__name__}.{r[1]}={r[2]!r}" for r in RULES])
def test_every_rule_has_a_one_line_error(cls, name, value, words):
    with pytest.raises(ConfigError) as err:
        cls(**{name: value})
    message = str(err.value)
    assert message.startswith(f"{SECTIONS[cls]}: ") and words in message and "\n" not in message
    assert err.value.section == SECTIONS[cls] and words in err.value.problems[0]


def test_the_rules_hold_at_their_edges():
    C.SoftmaxConfig(history_dropout=0.0, lr=0.0, weight_decay=0.0, n_negatives=1, encoder="auto")
    C.DRTrainConfig(epochs=3, joint_epochs=0)
    C.DRTrainConfig(epochs=3, joint_epochs=3, softmax_weight=0.0, structure_lr=1e-3)
    C.StructureConfig(n_layers=1, n_nodes=2, paths_per_item=2)
    C.StreamConfig(decay=1.0, replay=0, bundle_every=5, bundle_dir="b")
    C.ProtocolConfig(n_valid_users=0, min_rating=-1.0)
    C.BenchmarkConfig(device="cuda:1")
    with pytest.raises(
        ConfigError, match=r"structure: paths_per_item must be in 1..K\^D \(4\), got 5"
    ):
        C.StructureConfig(n_layers=2, n_nodes=2, paths_per_item=5)


def test_dr_cross_section_rule():
    with pytest.raises(
        ConfigError,
        match=r"^dr: assignment.n_candidates must be ≥ structure.paths_per_item \(3\), got 2$",
    ):
        DRConfig(assignment=C.AssignmentConfig(n_candidates=2))
    DRConfig(
        structure=C.StructureConfig(paths_per_item=2), assignment=C.AssignmentConfig(n_candidates=2)
    )


def test_several_broken_rules_share_one_line():
    with pytest.raises(ConfigError) as err:
        DRTrainConfig(batch_size=0, temperature=-1.0)
    assert (
        str(err.value) == "train: batch_size must be ≥ 1, got 0; temperature must be > 0, got -1.0"
    )


def test_bad_override_raises_a_config_error_with_the_dotted_section(tmp_path):
    with pytest.raises(ConfigError, match=r"^dr\.train: batch_size must be ≥ 1, got 0$"):
        load_config(BenchmarkConfig, overrides=["dr.train.batch_size=0"])
    with pytest.raises(ConfigError, match=r"^train: batch_size must be ≥ 1, got 0$"):
        load_config(DRConfig, overrides=["train.batch_size=0"])
    with pytest.raises(ConfigError, match=r"^ann_hnsw: m must be ≥ 2, got 1$"):
        load_config(BenchmarkConfig, overrides=["ann_hnsw.m=1"])
    with pytest.raises(ConfigError, match=r"^dr: assignment.n_candidates"):
        load_config(TrainConfig, overrides=["dr.assignment.n_candidates=1"])
    f = tmp_path / "c.toml"
    f.write_text("[protocol]\nhistory_len = 0\n")
    with pytest.raises(ConfigError, match=r"^protocol: history_len must be ≥ 1, got 0$"):
        load_config(BenchmarkConfig, f)
    # A file may set one side of a cross-section rule that an override completes.
    f.write_text("[dr.structure]\npaths_per_item = 30\n")
    cfg = load_config(BenchmarkConfig, f, ["dr.assignment.n_candidates=40"])
    assert cfg.dr.structure.paths_per_item == 30 and cfg.dr.assignment.n_candidates == 40


def test_cli_prints_a_bad_override_as_one_line(capsys):
    from deep_retrieval.cli import main

    code = main(
        ["-q", "train", "--dataset", "no-such-data", "--out", "unused", "--set", "dr.train.lr=-1"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err == "deep-retrieval train: error: dr.train: lr must be ≥ 0, got -1.0\n"


def test_from_mapping_is_public_and_the_old_name_is_an_alias():
    # The temporary alias for the old private name (removed once estimator.py imports from_mapping).
    assert getattr(C, "_from_mapping", from_mapping) is from_mapping
    cfg = from_mapping(DRConfig, {"train": {"epochs": 2, "joint_epochs": 1}, "seed": 3})
    assert cfg.train.epochs == 2 and cfg.seed == 3 and cfg.structure == C.StructureConfig()
    with pytest.raises(ConfigError, match=r"^train: joint_epochs must be ≥ 0, got -1$"):
        from_mapping(DRConfig, {"train": {"epochs": 2, "joint_epochs": -1}})


def test_fewer_epochs_than_joint_epochs_clamps_them_and_says_so(caplog):
    with caplog.at_level("WARNING", logger="deep_retrieval"):
        cfg = load_config(DRConfig, overrides=[*C.PAPER_SETTINGS, "train.epochs=1"])
    assert cfg.train.joint_epochs == 1
    assert "joint_epochs (2) is more than train.epochs (1): clamped to 1" in caplog.text


# --- one definition of the shared softmax recipe; asdict unchanged ---------------------------

DR_CONFIG_DICT = {
    "structure": {"n_layers": 3, "n_nodes": 50, "paths_per_item": 3, "node_dim": 32,
                  "hidden_dim": 256},
    "train": {"epochs": 4, "joint_epochs": 0, "reranker_epochs": 8, "assign_every": 1,
              "batch_size": 1024, "lr": 5e-3,
              "structure_lr": None, "weight_decay": 0.0, "encoder": "mean", "causal": False,
              "embedding_dim": 128, "history_len": 69, "query_history_len": 1000,
              "n_negatives": 1024, "negative_sampling": "popularity", "history_dropout": 0.3,
              "normalize": True, "temperature": 0.1, "softmax_weight": 1.0,
              "attention_epochs": 4, "attention_dim": 32, "attention_negatives": 256},
    "assignment": {"n_candidates": 20, "penalty": 3e-4, "power": 4, "n_sweeps": 3,
                   "init": "random", "penalty_scale": "interactions"},
    "retrieval": {"beam_size": None, "candidate_factor": 10.0, "target_recall": 0.99,
                  "max_fraction_scored": None, "max_beam_size": 1024,
                  "rerank": True},
    "reranker": "dot",
    "seed": 0,
}
SOFTMAX_CONFIG_DICT = {
    "encoder": "mean", "embedding_dim": 128, "history_len": 69, "query_history_len": 1000,
    "epochs": 8, "batch_size": 1024, "lr": 5e-3, "weight_decay": 0.0, "n_negatives": 1024,
    "negative_sampling": "popularity", "history_dropout": 0.3, "temperature": 0.1,
    "normalize": True, "item_bias": True, "project": False, "max_samples_per_user": None,
}


def test_saved_config_dicts_are_unchanged():
    assert dataclasses.asdict(DRConfig()) == DR_CONFIG_DICT
    assert dataclasses.asdict(SoftmaxConfig()) == SOFTMAX_CONFIG_DICT
    assert list(dataclasses.asdict(SoftmaxConfig())) == list(SOFTMAX_CONFIG_DICT)  # same order too


def test_softmax_and_dr_train_share_one_definition():
    assert issubclass(SoftmaxConfig, EncoderTrainingConfig)
    assert issubclass(DRTrainConfig, EncoderTrainingConfig)
    shared = {f.name for f in dataclasses.fields(EncoderTrainingConfig)}
    assert shared == {"encoder", "embedding_dim", "history_len", "query_history_len", "epochs",
                      "batch_size", "lr", "weight_decay", "n_negatives", "negative_sampling",
                      "history_dropout", "temperature", "normalize"}
    for name in shared - {"epochs"}:  # same defaults (epochs: 8 for the baseline, 4 for DR)
        assert getattr(SoftmaxConfig(), name) == getattr(DRTrainConfig(), name), name
    assert (SoftmaxConfig().epochs, DRTrainConfig().epochs) == (8, 4)
    # DR's own reranker trains on the brute-force model's recipe first, epochs included.
    assert DRTrainConfig().reranker_epochs == SoftmaxConfig().epochs
    for name in ("structure_lr", "joint_epochs"):
        assert name not in vars(EncoderTrainingConfig)["__dataclass_fields__"]


# --- seeds: the benchmark hands its seed down to DR ------------------------------------------


def test_benchmark_hands_its_seed_down_to_dr():
    assert BenchmarkConfig(seed=3).dr.seed == 3
    assert BenchmarkConfig(seed=3, dr=DRConfig(seed=9)).dr.seed == 3  # documented: seed wins
    assert dataclasses.replace(BenchmarkConfig(seed=3), seed=4).dr.seed == 4
    assert load_config(BenchmarkConfig, overrides=["seed=5"]).dr.seed == 5
    assert load_config(BenchmarkConfig, overrides=["seed=5", "dr.seed=5"]).dr.seed == 5
    with pytest.raises(ConfigError, match=r"dr.seed=7 differs from seed=0: .*set seed=7 instead"):
        load_config(BenchmarkConfig, overrides=["dr.seed=7"])
    assert BenchmarkConfig(seed=2).protocol.seed == 0  # the held-out users are a separate knob


def test_benchmark_file_with_a_different_dr_seed_is_an_error(tmp_path):
    f = tmp_path / "c.json"  # a saved results.json config (dr.seed equal to seed) loads back
    f.write_text('{"seed": 2, "dr": {"seed": 2}}')
    assert load_config(BenchmarkConfig, f).dr.seed == 2
    f.write_text('{"seed": 2, "dr": {"seed": 1}}')
    with pytest.raises(ConfigError, match=r"dr\.seed=1 differs from seed=2"):
        load_config(BenchmarkConfig, f)


# --- train reads a TrainConfig ---------------------------------------------------------------


def test_train_config_keys():
    keys = valid_keys(TrainConfig)
    wanted = {"protocol.history_len", "protocol.seed", "dr.seed", "dr.train.epochs", "device"}
    assert wanted <= set(keys)
    assert not {k for k in keys if k.startswith(("softmax.", "item_cf.", "stream."))}
    cfg = load_config(TrainConfig, overrides=["dr.seed=7", "protocol.seed=1", "device=cpu"])
    assert (cfg.dr.seed, cfg.protocol.seed, cfg.device) == (7, 1, "cpu")
    with pytest.raises(
        ConfigError, match=r"train has no top-level seed: the model.s seed is dr\.seed"
    ):
        load_config(TrainConfig, overrides=["seed=3"])
    with pytest.raises(
        ConfigError, match=r"softmax\.epochs: a benchmark setting; train reads protocol"
    ):
        load_config(TrainConfig, overrides=["softmax.epochs=3"])
