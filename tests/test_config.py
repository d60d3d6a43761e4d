from __future__ import annotations

import dataclasses

import pytest

from deep_retrieval.config import BenchmarkConfig, ConfigError, load_config, valid_keys


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
    with pytest.raises(ConfigError, match="valid keys: .*protocol.min_rating"):
        load_config(BenchmarkConfig, overrides=["protocol.min_ratin=3"])
    f = tmp_path / "c.toml"
    f.write_text("[softmax]\nepoch = 2\n")
    with pytest.raises(ConfigError, match="softmax.epoch"):
        load_config(BenchmarkConfig, f)


def test_wrong_types_and_malformed():
    with pytest.raises(ConfigError, match="integer"):
        load_config(BenchmarkConfig, overrides=["seed=1.5"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(BenchmarkConfig, overrides=["seed"])
    # optional ints accept none
    assert load_config(BenchmarkConfig, overrides=["protocol.n_test_users=none"]).protocol.n_test_users is None


def test_frozen_and_keys():
    cfg = BenchmarkConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3  # type: ignore[misc]
    assert "protocol.history_len" in valid_keys(BenchmarkConfig)
