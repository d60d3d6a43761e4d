"""The recommend contract (``deep_retrieval.core.contract``), checked for every registered method.

Every method of the benchmark registry (``available_methods()``: the baselines, ``dr``,
``dr-shared``, DR over the fitted brute-force model's reranker, ``dr-attention`` and
``attention-exhaustive``, as the benchmark runs them) is
fitted once per data flavour on a small planted data set and must honour the same promises:

- ``fit(train, n_items)`` returns the model itself;
- ``recommend(histories, n, exclude=None)`` returns ``item_ids`` int64 ``(U, n)`` padded ``-1`` and
  ``scores`` float32 ``(U, n)`` padded ``-inf``; best first (scores non-increasing), padding a
  suffix and exactly where the scores are ``-inf``, real ids distinct within a row and in
  ``[0, V)``; excluded items never returned; ``n`` larger than the catalogue pads; an empty history
  row gets a ranking; a row's result does not depend on the other rows of the batch; refitting
  with the same seed gives the same results;
- bad input (``n < 1``, recommend before fit, ids outside ``[0, V)``, arguments that are not
  ``Sequences``, misaligned ``exclude``, unusable training data) raises ``ValueError`` with a
  message that names the problem.

Methods that score every item (``EXHAUSTIVE``) must fill each row up to ``min(n, V − |excluded|)``;
the approximate ones (ANN indexes, DR's beam) may return fewer, but never nothing.

Known violations are listed in ``KNOWN_VIOLATIONS`` and marked ``xfail(strict=True)``: when one is
fixed its test starts passing, fails as XPASS, and the entry must be removed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from test_model import TINY

from deep_retrieval.baselines import BASELINES, make_baseline
from deep_retrieval.config import (
    ALSConfig,
    BenchmarkConfig,
    DRConfig,
    HNSWConfig,
    ItemCFConfig,
    IVFConfig,
    IVFPQConfig,
    ProtocolConfig,
    ScaNNConfig,
    SoftmaxConfig,
    load_config,
)
from deep_retrieval.data.protocols import paper_split
from deep_retrieval.data.synthetic import make_clustered
from deep_retrieval.data.types import Sequences
from deep_retrieval.estimator import DeepRetrieval
from deep_retrieval.experiments.benchmark import Exhaustive, _DRMethod, available_methods

METHODS = available_methods()
# Ordered rows: the softmax model encodes with its GRU; unordered rows: with mean pooling.
FLAVOURS = ("ordered", "unordered")
# Methods that score every item exactly: their rows are full up to min(n, V - excluded).
EXHAUSTIVE = {"most-popular", "item-cf", "als", "brute-force", "attention-exhaustive"}
ATTENTION = [*TINY, "reranker=attention", "train.attention_epochs=1"]

# Small, fast settings. query_batch_size 16 < the 40 query users, so batched code paths cross
# block boundaries (exclude rows must follow their block).
CONFIG = BenchmarkConfig(
    seed=0,
    query_batch_size=16,
    item_cf=ItemCFConfig(n_neighbours=10),
    als=ALSConfig(factors=8, iterations=5, regularization=0.1, alpha=5.0),
    softmax=SoftmaxConfig(
        encoder="auto",
        embedding_dim=16,
        epochs=3,
        batch_size=128,
        lr=1e-2,
        n_negatives=32,
        history_len=10,
    ),
    # Deliberately approximate: HNSW's beam below V, IVF probing half of its lists.
    ann_hnsw=HNSWConfig(m=8, ef_construction=32, ef_search=16),
    ann_ivf=IVFConfig(n_lists=4, n_probe=2),
    ann_ivfpq=IVFPQConfig(n_lists=4, n_probe=2),
    ann_scann=ScaNNConfig(n_leaves=4, leaves_to_search=2),
)


# ----------------------------------------------------------------------------- known violations
# case -> how DeepRetrieval breaks the contract today; each (dr, case) is xfail(strict=True).
# DeepRetrieval broke ten of these before it used the contract's shared checks (zero query rows,
# n = 2.5, negative history ids in a batch, non-Sequences input, a misaligned or out-of-range
# exclude, training ids outside [0, n_items) or empty training rows); none is known now.
_DR_VIOLATIONS: dict[str, str] = {}
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {
    ("dr", case): f"DeepRetrieval: {why}" for case, why in _DR_VIOLATIONS.items()
}
# ScaNN (checked directly on its searcher): its Python builder takes no seed for the tree's
# k-means, so two builds can partition differently; and a batched search returns other items
# for a row than searching that row alone.
KNOWN_VIOLATIONS.update({
    ("ann-scann", "refit"): "ScaNN: its k-means tree training is not seeded",
    ("ann-scann", "batch"): "ScaNN: a batched search depends on the other rows of the batch",
})


def _xfail(name: str, case: str | None) -> list[Any]:
    reason = KNOWN_VIOLATIONS.get((name, case)) if case is not None else None
    # ScaNN's violations show on some runs only (its threads, its unseeded k-means).
    strict = name != "ann-scann"
    return [pytest.mark.xfail(strict=strict, reason=reason)] if reason else []


def _params(names: tuple[str, ...], case: str | None = None) -> list[Any]:
    """``pytest.param(name)`` per method; xfail(strict=True) on a known (name, case) violation."""
    return [pytest.param(name, marks=_xfail(name, case), id=name) for name in names]


def _pairs(names: tuple[str, ...], cases: tuple[str, ...]) -> list[Any]:
    """``pytest.param(name, case)`` for every pair, xfail(strict=True) on the known violations."""
    return [
        pytest.param(name, case, marks=_xfail(name, case), id=f"{name}-{case}")
        for name in names
        for case in cases
    ]


# ----------------------------------------------------------------------------------- data, models
class Data:
    """One flavour of the planted split: training rows, query histories, catalogue size."""

    def __init__(self, train: Sequences, histories: Sequences, n_items: int) -> None:
        self.train, self.histories, self.n_items = train, histories, n_items


def _as(seqs: Sequences, ordered: bool) -> Sequences:
    return Sequences(seqs.indptr, seqs.items, ordered=ordered)


@pytest.fixture(scope="module")
def datasets() -> dict[str, Data]:
    data = make_clustered(n_users=300, n_items=80, n_clusters=4, interactions_per_user=16, seed=0)
    split = paper_split(
        data.interactions, ProtocolConfig(n_valid_users=0, n_test_users=40, min_rating=0)
    )
    out = {}
    for flavour in FLAVOURS:
        ordered = flavour == "ordered"
        out[flavour] = Data(
            _as(split.train, ordered), _as(split.test_history, ordered), split.n_items
        )
    return out


def unfitted(name: str, softmax: Any = None) -> Any:
    """A fresh, unfitted model of method ``name`` (ANN methods index the given fitted softmax,
    ``dr-shared`` reranks with it)."""
    if name == "dr":
        return DeepRetrieval(load_config(DRConfig, overrides=TINY), device="cpu")
    if name == "dr-shared":
        config = replace(CONFIG, dr=load_config(DRConfig, overrides=TINY))
        return _DRMethod(config, softmax, "cpu")
    if name == "dr-attention":
        config = replace(CONFIG, dr=load_config(DRConfig, overrides=ATTENTION))
        return _DRMethod(config, None, "cpu", name)
    if name == "attention-exhaustive":
        return Exhaustive(DeepRetrieval(load_config(DRConfig, overrides=ATTENTION), device="cpu"))
    return make_baseline(name, CONFIG, softmax=softmax if name.startswith("ann-") else None)


def fit_chain(name: str, data: Data, cache: dict[str, Any] | None = None) -> tuple[Any, Any]:
    """``(model, what fit returned)``; ANN methods and ``dr-shared`` first fit brute force (or
    reuse ``cache``'s)."""
    softmax = None
    if name.startswith("ann-") or name == "dr-shared":
        softmax = cache.get("brute-force") if cache is not None else None
        if softmax is None:
            softmax = unfitted("brute-force").fit(data.train, data.n_items)
    model = unfitted(name, softmax)
    return model, model.fit(data.train, data.n_items)


class Fitted:
    """Each (method, flavour) fitted once for the module; ANN methods share brute force's model."""

    def __init__(self, datasets: dict[str, Data]) -> None:
        self.datasets = datasets
        self.models: dict[str, dict[str, Any]] = {f: {} for f in FLAVOURS}
        self.returned: dict[tuple[str, str], Any] = {}

    def get(self, name: str, flavour: str) -> Any:
        cache = self.models[flavour]
        if name not in cache:
            if name.startswith("ann-"):
                self.get("brute-force", flavour)
            cache[name], self.returned[name, flavour] = fit_chain(
                name, self.datasets[flavour], cache
            )
        return cache[name]


@pytest.fixture(scope="module")
def fitted_models(datasets: dict[str, Data]) -> Fitted:
    return Fitted(datasets)


@pytest.fixture(scope="module", params=FLAVOURS)
def flavour(request: pytest.FixtureRequest) -> str:
    return request.param


# -------------------------------------------------------------------------------------- helpers
def unique_excluded(exclude: Sequences | None, n_rows: int) -> np.ndarray:
    if exclude is None:
        return np.zeros(n_rows, dtype=np.int64)
    return np.array([len(np.unique(exclude[u])) for u in range(n_rows)], dtype=np.int64)


def check_results(
    name: str,
    ids: np.ndarray,
    scores: np.ndarray,
    n_rows: int,
    n: int,
    n_items: int,
    exclude: Sequences | None = None,
) -> None:
    """Every per-call promise of the contract for one ``recommend`` result."""
    assert isinstance(ids, np.ndarray) and isinstance(scores, np.ndarray)
    assert ids.shape == scores.shape == (n_rows, n), (ids.shape, scores.shape)
    assert ids.dtype == np.int64 and scores.dtype == np.float32, (ids.dtype, scores.dtype)
    valid = ids >= 0
    # Padding: id -1 exactly where the score is -inf, and only as a suffix of the row.
    assert ((ids == -1) | valid).all(), "ids other than -1 below 0"
    assert np.array_equal(np.isneginf(scores), ~valid), "padding (-1) and -inf scores disagree"
    assert not np.isnan(scores).any() and not np.isposinf(scores).any()
    assert (np.diff(valid.astype(np.int8), axis=1) <= 0).all(), "padding before a real item"
    assert (ids[valid] < n_items).all(), "item id ≥ n_items"
    # Best first: non-increasing scores along each row (-inf padding at the end included).
    assert (scores[:, :-1] >= scores[:, 1:]).all(), "scores not sorted best first"
    for u, row in enumerate(ids):
        real = row[row >= 0]
        assert len(np.unique(real)) == len(real), f"row {u}: an item returned twice"
        if exclude is not None:
            assert not set(real.tolist()) & set(exclude[u].tolist()), (
                f"row {u}: an excluded item returned"
            )
    # Fill: exhaustive methods rank every allowed item; approximate ones at least one.
    allowed = n_items - unique_excluded(exclude, n_rows)
    expected = np.minimum(n, allowed)
    if name in EXHAUSTIVE:
        np.testing.assert_array_equal(valid.sum(axis=1), expected)
    else:
        has_any = expected > 0
        assert (valid.sum(axis=1)[has_any] >= 1).all(), "a row with allowed items got none"
        assert (valid.sum(axis=1) <= expected).all()


def history_exclude(data: Data) -> Sequences:
    """Each query user's own history (the usual "don't recommend what was seen")."""
    return data.histories


# ------------------------------------------------------------------------------------- the tests
def test_the_suite_covers_every_registered_method() -> None:
    assert set(METHODS) == set(BASELINES) | {
        "dr", "dr-shared", "dr-attention", "attention-exhaustive"
    }
    assert len(METHODS) == len(set(METHODS)) == 12


@pytest.mark.parametrize("name", _params(METHODS))
def test_fit_returns_self_and_names_the_method(
    name: str, flavour: str, fitted_models: Fitted
) -> None:
    model = fitted_models.get(name, flavour)
    assert fitted_models.returned[name, flavour] is model
    assert model.name == name


@pytest.mark.parametrize("n", [1, 7, None], ids=["n=1", "n=7", "n=V+5"])
@pytest.mark.parametrize("with_exclude", [False, True], ids=["no-exclude", "exclude-history"])
@pytest.mark.parametrize("name", _params(METHODS))
def test_shapes_dtypes_order_padding(
    name: str,
    flavour: str,
    n: int | None,
    with_exclude: bool,
    fitted_models: Fitted,
    datasets: dict[str, Data],
) -> None:
    data = datasets[flavour]
    model = fitted_models.get(name, flavour)
    exclude = history_exclude(data) if with_exclude else None
    n = data.n_items + 5 if n is None else n
    ids, scores = model.recommend(data.histories, n, exclude=exclude)
    check_results(name, ids, scores, len(data.histories), n, data.n_items, exclude)
    if n > data.n_items:  # more than the catalogue: the columns past V are padding for everyone
        assert (ids[:, data.n_items :] == -1).all() and np.isneginf(scores[:, data.n_items :]).all()


@pytest.mark.parametrize("name", _params(METHODS))
def test_exclude_is_respected(
    name: str, flavour: str, fitted_models: Fitted, datasets: dict[str, Data]
) -> None:
    """Random per-row exclusions (some rows none), one row excluding the whole catalogue."""
    data = datasets[flavour]
    model = fitted_models.get(name, flavour)
    rng = np.random.default_rng(5)
    U, V = len(data.histories), data.n_items
    rows = [rng.choice(V, size=int(rng.integers(0, 10)), replace=False) for _ in range(U)]
    rows[3] = np.arange(V)  # nothing left to recommend: the row is all padding
    exclude = Sequences.from_lists(rows)
    ids, scores = model.recommend(data.histories, 10, exclude=exclude)
    check_results(name, ids, scores, U, 10, V, exclude)
    assert (ids[3] == -1).all() and np.isneginf(scores[3]).all()
    # An exclude with only empty rows is the same as no exclude.
    none_ids, none_scores = model.recommend(data.histories, 10)
    empty_ids, empty_scores = model.recommend(
        data.histories, 10, exclude=Sequences.from_lists([[]] * U)
    )
    np.testing.assert_array_equal(empty_ids, none_ids)
    np.testing.assert_array_equal(empty_scores, none_scores)


@pytest.mark.parametrize("name", _params(METHODS, "batch"))
def test_batch_equals_single_user(
    name: str, flavour: str, fitted_models: Fitted, datasets: dict[str, Data]
) -> None:
    """A row's result does not depend on the other rows of the batch."""
    data = datasets[flavour]
    model = fitted_models.get(name, flavour)
    exclude = history_exclude(data)
    ids, scores = model.recommend(data.histories, 6, exclude=exclude)
    for u in range(len(data.histories)):
        one = np.array([u])
        ids_u, scores_u = model.recommend(data.histories.rows(one), 6, exclude=exclude.rows(one))
        np.testing.assert_array_equal(ids_u[0], ids[u], err_msg=f"row {u}")
        np.testing.assert_allclose(scores_u[0], scores[u], rtol=1e-5, atol=1e-5, err_msg=f"row {u}")


@pytest.mark.parametrize("name", _params(METHODS))
def test_empty_history_rows_get_a_ranking(
    name: str, flavour: str, fitted_models: Fitted, datasets: dict[str, Data]
) -> None:
    data = datasets[flavour]
    model = fitted_models.get(name, flavour)
    ordered = flavour == "ordered"
    first = data.histories[0]
    mixed = Sequences.from_lists([[], first, []], ordered=ordered)
    ids, scores = model.recommend(mixed, 5)
    check_results(name, ids, scores, 3, 5, data.n_items)
    np.testing.assert_array_equal(ids[0], ids[2])  # the same (empty) history, the same answer
    alone, _ = model.recommend(data.histories.rows(np.array([0])), 5)
    np.testing.assert_array_equal(ids[1], alone[0])  # the empty rows do not disturb the others
    for rows in ([[]], [[], []]):
        ids, scores = model.recommend(Sequences.from_lists(rows, ordered=ordered), 5)
        check_results(name, ids, scores, len(rows), 5, data.n_items)


@pytest.mark.parametrize("name", _params(METHODS, "zero-query-rows"))
def test_zero_query_rows_give_empty_results(name: str, fitted_models: Fitted) -> None:
    model = fitted_models.get(name, "ordered")
    ids, scores = model.recommend(Sequences.from_lists([]), 5)
    assert ids.shape == scores.shape == (0, 5)
    assert ids.dtype == np.int64 and scores.dtype == np.float32


@pytest.mark.parametrize("name", _params(METHODS, "refit"))
def test_refit_with_the_same_seed_repeats(
    name: str, flavour: str, fitted_models: Fitted, datasets: dict[str, Data]
) -> None:
    """A second, independent fit (the whole chain: ANN methods retrain their softmax model too)
    gives exactly the same results; so does asking the same model twice."""
    data = datasets[flavour]
    model = fitted_models.get(name, flavour)
    exclude = history_exclude(data)
    ids, scores = model.recommend(data.histories, 10, exclude=exclude)
    again_ids, again_scores = model.recommend(data.histories, 10, exclude=exclude)
    np.testing.assert_array_equal(again_ids, ids)
    np.testing.assert_array_equal(again_scores, scores)
    refit, _ = fit_chain(name, data)
    refit_ids, refit_scores = refit.recommend(data.histories, 10, exclude=exclude)
    np.testing.assert_array_equal(refit_ids, ids)
    np.testing.assert_array_equal(refit_scores, scores)


# ------------------------------------------------------------------------------------ bad input
def _recommend_cases(V: int, hist: Sequences) -> dict[str, tuple[Callable[[Any], Any], str]]:
    """case -> (call on a fitted model, regex its ValueError message must match)."""
    return {
        "n-zero": (lambda m: m.recommend(hist, 0), r"n must be"),
        "n-negative": (lambda m: m.recommend(hist, -3), r"n must be"),
        "n-not-integer": (lambda m: m.recommend(hist, 2.5), r"n must be"),
        "history-id-too-large": (
            lambda m: m.recommend(Sequences.from_lists([[1, V + 3], [2]]), 5),
            r"n_items",
        ),
        "history-id-too-large-single": (
            lambda m: m.recommend(Sequences.from_lists([[V]]), 5),
            r"n_items",
        ),
        "history-negative-id": (
            lambda m: m.recommend(Sequences.from_lists([[-3, 2], [1]]), 5),
            r"n_items",
        ),
        "history-negative-id-single": (
            lambda m: m.recommend(Sequences.from_lists([[-3]]), 5),
            r"n_items",
        ),
        "histories-not-rows": (lambda m: m.recommend({"a": 1}, 5), r"Sequences, a list"),
        "histories-string-ids": (lambda m: m.recommend([["a", "b"]], 5), r"integer item ids"),
        "exclude-misaligned": (
            lambda m: m.recommend(hist, 5, exclude=hist.rows(np.arange(2))),
            r"exclude.*rows",
        ),
        "exclude-out-of-range": (
            lambda m: m.recommend(
                hist.rows(np.arange(2)), 5, exclude=Sequences.from_lists([[V + 2], []])
            ),
            r"exclude.*n_items",
        ),
    }


def _fit_cases(data: Data) -> dict[str, tuple[Callable[[Any], Any], str]]:
    """case -> (call on an unfitted model, regex its ValueError message must match)."""
    rows = [data.train[u].tolist() for u in range(len(data.train))]
    return {
        "train-not-rows": (lambda m: m.fit("rows", data.n_items), r"Sequences, a list"),
        "train-float-ids": (lambda m: m.fit([[*r, 0.5] for r in rows], data.n_items),
                            r"integer item ids"),
        "train-id-too-large": (lambda m: m.fit(data.train, 3), r"n_items"),
        "train-negative-id": (
            lambda m: m.fit(Sequences.from_lists([[-1, 2], [3, 4]]), data.n_items),
            r"n_items",
        ),
        "n-items-zero": (lambda m: m.fit(data.train, 0), r"n_items"),
        "train-empty": (
            lambda m: m.fit(Sequences.from_lists([[], []]), data.n_items),
            r"empty|at least one",
        ),
    }


RECOMMEND_CASES = tuple(_recommend_cases(1, Sequences.from_lists([[0]])))
FIT_CASES = tuple(_fit_cases(Data(Sequences.from_lists([[0]]), Sequences.from_lists([[0]]), 1)))


@pytest.mark.parametrize(("name", "case"), _pairs(METHODS, RECOMMEND_CASES))
def test_bad_recommend_input_raises_value_error(
    name: str, case: str, fitted_models: Fitted, datasets: dict[str, Data]
) -> None:
    data = datasets["ordered"]
    model = fitted_models.get(name, "ordered")
    call, message = _recommend_cases(data.n_items, data.histories)[case]
    with pytest.raises(ValueError, match=message):
        call(model)


@pytest.mark.parametrize(("name", "case"), _pairs(METHODS, FIT_CASES))
def test_bad_fit_input_raises_value_error(
    name: str, case: str, fitted_models: Fitted, datasets: dict[str, Data]
) -> None:
    data = datasets["ordered"]
    softmax = fitted_models.get("brute-force", "ordered") if name.startswith("ann-") else None
    call, message = _fit_cases(data)[case]
    with pytest.raises(ValueError, match=message):
        call(unfitted(name, softmax))


@pytest.mark.parametrize("name", METHODS)
def test_lists_and_sparse_matrices_are_rows_too(
    name: str, fitted_models: Fitted, datasets: dict[str, Data]
) -> None:
    """Plain inputs: a list of id lists is the same rows (in order); a scipy sparse matrix is
    each row's nonzero columns, unordered."""
    import scipy.sparse as sp

    data = datasets["ordered"]
    model = fitted_models.get(name, "ordered")
    hist = data.histories.rows(np.arange(min(8, len(data.histories))))
    lists = [hist[u].tolist() for u in range(len(hist))]
    for got, want in zip(model.recommend(lists, 5, exclude=lists),
                         model.recommend(hist, 5, exclude=hist), strict=True):
        np.testing.assert_array_equal(got, want)
    rows = [sorted(set(r)) for r in lists]
    csr = sp.csr_matrix((np.ones(sum(map(len, rows))),
                         (np.repeat(np.arange(len(rows)), [len(r) for r in rows]),
                          np.concatenate(rows))), shape=(len(rows), data.n_items))
    unordered = Sequences.from_lists(rows, ordered=False)
    for got, want in zip(model.recommend(csr, 5), model.recommend(unordered, 5), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", METHODS)
def test_recommend_before_fit_raises_value_error(
    name: str, fitted_models: Fitted, datasets: dict[str, Data]
) -> None:
    data = datasets["ordered"]
    softmax = fitted_models.get("brute-force", "ordered") if name.startswith("ann-") else None
    with pytest.raises(ValueError, match=r"fit\("):
        unfitted(name, softmax).recommend(data.histories, 5)
