"""Ids cannot go wrong: every model records its external item ids, external ids go in and come
back through the *_by_id methods, and nothing reads ids sent to it as internal rows."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from test_model import TINY

from deep_retrieval import DeepRetrieval, DRConfig, ProtocolConfig, load_config, paper_split
from deep_retrieval.data.synthetic import make_clustered
from deep_retrieval.data.types import Interactions, Sequences
from deep_retrieval.serving.service import ServiceState


@pytest.fixture(scope="module")
def split():
    data = make_clustered(n_users=300, n_items=80, n_clusters=4, interactions_per_user=16, seed=0)
    log = data.interactions
    # String ids unlike the rows, so that a mix-up cannot pass by chance.
    named = Interactions(log.users, np.array([f"sku-{i:03d}" for i in log.items], dtype=object),
                         log.ratings, log.timestamps)
    return paper_split(named, ProtocolConfig(n_valid_users=0, n_test_users=50, min_rating=0))


@pytest.fixture(scope="module")
def model(split):
    return DeepRetrieval(load_config(DRConfig, overrides=TINY), device="cpu").fit(split)


def test_fit_without_ids_records_the_identity(split, tmp_path):
    model = DeepRetrieval(load_config(DRConfig, overrides=TINY), device="cpu")
    model.fit(split.train, split.n_items)
    np.testing.assert_array_equal(model.item_ids_, np.arange(split.n_items))
    model.save(tmp_path / "m")
    loaded = DeepRetrieval.load(tmp_path / "m", device="cpu")
    np.testing.assert_array_equal(loaded.item_ids_, np.arange(split.n_items))
    # The identity continues when items are added without ids.
    added = loaded.add_items(n_new=2, neighbours=Sequences.from_lists([[0, 1], [2, 3]]))
    np.testing.assert_array_equal(loaded.item_ids_[added], [split.n_items, split.n_items + 1])


def test_fit_on_a_split_records_its_ids_and_users(model, split):
    np.testing.assert_array_equal(model.item_ids_, split.item_ids)
    assert model.n_items_ == split.n_items
    user = split.train_user_ids[3]
    np.testing.assert_array_equal(model.user_history(user), split.train.rows([3]).items)
    with pytest.raises(ValueError, match="n_items = 5, but the split has 80 items"):
        DeepRetrieval(load_config(DRConfig, overrides=TINY)).fit(split, 5)
    with pytest.raises(ValueError, match="fit needs n_items"):
        DeepRetrieval(load_config(DRConfig, overrides=TINY)).fit([[0, 1]])


def test_recommend_by_id_is_recommend_in_external_ids(model, split):
    history = split.test_history.rows(np.arange(10))
    ids, scores = model.recommend(history, 7)
    lists = [split.item_ids[history.rows([u]).items].tolist() for u in range(10)]
    names, named_scores = model.recommend_by_id(lists, 7)
    np.testing.assert_array_equal(names, split.item_ids[ids])
    np.testing.assert_array_equal(named_scores, scores)
    # Excluding by external id.
    names2, _ = model.recommend_by_id(lists[:1], 7, exclude=[names[0, :2].tolist()])
    assert not np.isin(names[0, :2], names2[0]).any()
    # Unknown ids are an error unless skipped.
    with pytest.raises(KeyError, match=r"1 unknown item id\(s\), e\.g\. \['nope'\]"):
        model.recommend_by_id([[*lists[0], "nope"]], 7)
    skipped, _ = model.recommend_by_id([[*lists[0], "nope"]], 7, skip_unknown=True)
    np.testing.assert_array_equal(skipped[0], names[0])
    # Internal rows passed as ids are not silently taken as rows.
    with pytest.raises(KeyError, match="unknown item id"):
        model.recommend_by_id([[0, 1, 2]], 7)


def test_padding_follows_the_id_kind(model):
    names, scores = model.recommend_by_id([[]], 100)  # more than the catalogue: padded
    assert names.dtype.kind in "UO" and (names[0, 80:] == "").all()
    assert np.isneginf(scores[0, 80:]).all()


def test_nothing_serves_a_bundle_without_ids(model, tmp_path):
    # Only bundles of older versions lack ids; the service must not read ids as rows.
    legacy = copy.deepcopy(model)
    legacy.state.item_ids = None
    legacy.save(tmp_path / "legacy")
    with pytest.raises(ValueError, match="records no item ids"):
        ServiceState(tmp_path / "legacy")
    with pytest.raises(ValueError, match="records no external item ids"):
        legacy.recommend_by_id([["sku-001"]], 5)
