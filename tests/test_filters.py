"""Query-time filters: allow-lists, attribute conditions, the beam widening that keeps n results
when n items pass, and the exact fallback."""

from __future__ import annotations

import numpy as np
import pytest
from test_model import TINY

from deep_retrieval import DeepRetrieval, DRConfig, ProtocolConfig, load_config, paper_split
from deep_retrieval.data.synthetic import make_clustered
from deep_retrieval.data.types import Sequences


@pytest.fixture(scope="module")
def fitted():
    data = make_clustered(n_users=400, n_items=200, n_clusters=8, interactions_per_user=20, seed=2)
    split = paper_split(data.interactions,
                        ProtocolConfig(n_valid_users=0, n_test_users=40, min_rating=0))
    model = DeepRetrieval(load_config(DRConfig, overrides=TINY), device="cpu").fit(split)
    cluster = data.item_cluster[split.item_ids.astype(int)]
    model.set_item_attributes({"cluster": cluster,
                               "colour": np.where(np.arange(split.n_items) % 2, "red", "blue")})
    return model, split, cluster


def _exact_top(model, history, n, mask):
    """The brute-force answer among the passing items: every one scored by the reranker."""
    ids, _ = model.recommend(history, model.n_items_, exhaustive=True)
    keep = [i for i in ids[0] if i >= 0 and mask[i]]
    return keep[:n]


def test_results_pass_the_filter_and_are_the_best_passing_candidates(fitted):
    model, split, cluster = fitted
    history = split.test_history.rows(np.arange(10))
    ids, _, complete = model.recommend_filtered(history, 10, where={"cluster": [3]})
    assert complete.all() and (ids >= 0).all()
    assert (cluster[ids] == 3).all()
    # The same as excluding by hand every candidate outside cluster 3.
    plain, _ = model.recommend(history, 200, beam_size=model.beam_size_for(10))
    for r in range(10):
        if (cluster[plain[r][plain[r] >= 0]] == 3).sum() >= 10:
            assert ids[r].tolist() == [i for i in plain[r] if i >= 0 and cluster[i] == 3][:10]
    # Two conditions must both hold; the colour is text.
    ids, _, _ = model.recommend_filtered(history, 5, where={"cluster": [1, 2], "colour": ["red"]})
    assert np.isin(cluster[ids], [1, 2]).all() and (ids % 2 == 1).all()


def test_a_small_allow_list_comes_back_whole_beyond_the_beam(fitted):
    model, split, cluster = fitted
    history = split.test_history.rows(np.arange(5))
    # Items of another cluster than the users': few of them are on the beam's paths.
    allow = [np.flatnonzero(cluster == (cluster[h[0]] + 4) % 8)[:12] for h in
             (history.rows(np.array([r])).items for r in range(5))]
    ids, _, complete = model.recommend_filtered(history, 12, allow=allow)
    assert complete.all()
    for r in range(5):
        assert sorted(ids[r].tolist()) == sorted(allow[r].tolist())  # all 12, best first
        mask = np.zeros(model.n_items_, bool)
        mask[allow[r]] = True
        assert ids[r].tolist() == _exact_top(model, history.rows(np.array([r])), 12, mask)


def test_fewer_passing_items_than_n_is_complete_and_padded(fitted):
    model, split, _ = fitted
    history = split.test_history.rows(np.arange(2))
    ids, scores, complete = model.recommend_filtered(history, 10, allow=[[1, 2, 3], [4]],
                                                     exclude=[[2], []])
    assert complete.all()
    assert sorted(ids[0][ids[0] >= 0].tolist()) == [1, 3] and (ids[0][2:] == -1).all()
    assert ids[1].tolist()[:2] == [4, -1] and np.isneginf(scores[1, 1:]).all()


def test_filters_by_external_id_and_errors(fitted, tmp_path):
    model, split, cluster = fitted
    names = split.item_ids
    history = [names[split.test_history.rows(np.array([0])).items].tolist()]
    allow = names[:30].tolist()
    got, _ = model.recommend_by_id(history, 5, allow=[allow])
    assert np.isin(got, allow).all()
    with pytest.raises(ValueError, match="unknown item attribute 'size'; this model has: cluster"):
        model.recommend(split.test_history.rows(np.array([0])), 5, where={"size": ["L"]})
    with pytest.raises(ValueError, match="attribute names are letters"):
        model.set_item_attributes({"../x": np.zeros(model.n_items_)})
    with pytest.raises(ValueError, match="one value per item"):
        model.set_item_attributes({"x": np.zeros(3)})
    # Saved with the bundle, and grown (missing) for added items.
    model.save(tmp_path / "m")
    loaded = DeepRetrieval.load(tmp_path / "m", device="cpu")
    np.testing.assert_array_equal(loaded.state.item_attributes["cluster"], cluster)
    assert loaded.state.item_attributes["colour"][1] == "red"
    loaded.add_items(["brand-new"], neighbours=Sequences.from_lists([[0, 1]]))
    assert loaded.state.item_attributes["cluster"][-1] == -1
    assert loaded.state.item_attributes["colour"][-1] == ""
    # The popularity fallback obeys the filter too.
    popular, _ = model.popular_items(5, where={"cluster": [0]})
    assert (cluster[popular] == 0).all()
