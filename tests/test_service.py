"""The HTTP service, run as a real server process on a free loopback port."""

from __future__ import annotations

import copy
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_model import TINY

from deep_retrieval.config import ConfigError, DRConfig, ProtocolConfig, load_config
from deep_retrieval.data.protocols import paper_split
from deep_retrieval.data.synthetic import make_clustered
from deep_retrieval.data.types import Sequences
from deep_retrieval.estimator import DeepRetrieval
from deep_retrieval.serving import service
from deep_retrieval.serving.client import RetrievalClient, ServiceError
from deep_retrieval.serving.loadtest import run_load_test
from deep_retrieval.serving.service import ReloadRefused, ServiceLimits, ServiceState


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """Two bundles of one planted model: as trained, and with 20 popular items removed."""
    data = make_clustered(n_users=400, n_items=160, n_clusters=8, interactions_per_user=20, seed=1)
    split = paper_split(
        data.interactions, ProtocolConfig(n_valid_users=0, n_test_users=50, min_rating=0)
    )
    model = DeepRetrieval(load_config(DRConfig, overrides=TINY), device="cpu")
    model.fit(split.train, split.n_items, item_ids=np.array([f"i{x}" for x in split.item_ids]))
    model.set_known_users(np.array([f"u{x}" for x in split.train_user_ids]), split.train)
    model.set_item_attributes({"cluster": data.item_cluster[split.item_ids.astype(int)]})
    root = tmp_path_factory.mktemp("bundles")
    first = model.save(root / "first")
    second = copy.deepcopy(model)
    removed = second.popular_items(20)[0]
    second.remove_items(removed)
    second.save(root / "second")
    return model, split, first, root / "second", model.item_ids_[removed].tolist()


TOKEN = "test-admin-token-0123456789"


@pytest.fixture(scope="module")
def server(bundles, tmp_path_factory):
    port = _free_port()
    token_file = tmp_path_factory.mktemp("secrets") / "admin-token"
    token_file.write_text(TOKEN + "\n")
    # Bundles of other tests live in their own tmp_path: the root over all of them.
    root = tmp_path_factory.getbasetemp()
    proc = subprocess.Popen(
        [sys.executable, "-m", "deep_retrieval", "-q", "serve", str(bundles[2]),
         "--port", str(port), "--max-n", "50", "--max-history", "100", "--max-batch", "8",
         "--max-request-beam-size", "64", "--admin-token-file", str(token_file),
         "--bundle-root", str(root), "--reload-timeout", "5", "--max-body-bytes", "100000",
         "--body-timeout", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        RetrievalClient(url, timeout=2).wait_until_up(alive=lambda: proc.poll() is None)
    except (TimeoutError, RuntimeError):
        proc.kill()
        pytest.fail(f"server did not start: {proc.stdout.read().decode(errors='replace')[-2000:]}")
    yield url, proc
    proc.terminate()
    proc.wait(10)


@pytest.fixture()
def client(bundles, server):
    with RetrievalClient(server[0], admin_token=TOKEN) as c:
        c.reload(str(bundles[2]))  # every test starts on the first bundle
        yield c


def _raw(
    url: str, method: str, path: str, body: bytes | None, headers: dict | None = None
) -> tuple[int, dict]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body=body,
                 headers={"Content-Type": "application/json", **(headers or {})})
    resp = conn.getresponse()
    raw = resp.read()
    conn.close()
    try:
        return resp.status, json.loads(raw)
    except ValueError:
        return resp.status, {"raw": raw.decode(errors="replace")}


def test_recommend_matches_the_library(bundles, client):
    model, split = bundles[:2]
    names = model.item_ids_
    history = split.test_history.items[split.test_history.indptr[3] : split.test_history.indptr[4]]
    got = client.recommend([names[i] for i in history] + ["no-such-item"], n=20)
    ids, scores = model.recommend(Sequences.from_lists([history]), 20)
    assert got["items"] == names[ids[0]].tolist()
    np.testing.assert_allclose(got["scores"], scores[0], rtol=1e-5)
    assert got["unknown_items"] == ["no-such-item"] and got["fallback"] is None
    assert got["beam_size"] == model.beam_size_for(20)
    # exclude and an explicit beam
    banned = got["items"][:5]
    again = client.recommend([names[i] for i in history], n=20, exclude=banned, beam_size=4)
    assert not set(banned) & set(again["items"]) and again["beam_size"] == 4


def test_an_attention_reranker_bundle_is_served_like_any_other(bundles, client, tmp_path):
    _, split = bundles[:2]
    config = load_config(DRConfig, overrides=[*TINY, "reranker=attention",
                                              "train.attention_epochs=1"])
    model = DeepRetrieval(config, device="cpu")
    model.fit(split.train, split.n_items, item_ids=np.array([f"i{x}" for x in split.item_ids]))
    client.reload(str(model.save(tmp_path / "attention")))
    history = split.test_history.items[split.test_history.indptr[3] : split.test_history.indptr[4]]
    got = client.recommend([model.item_ids_[i] for i in history], n=20)
    ids, scores = model.recommend(Sequences.from_lists([history]), 20)
    assert got["items"] == model.item_ids_[ids[0]].tolist()
    np.testing.assert_allclose(got["scores"], scores[0], rtol=1e-5)


def test_an_index_bundle_answers_query_vectors(client, server, tmp_path):
    from deep_retrieval import DRIndex

    rng = np.random.default_rng(0)
    items, queries = rng.normal(size=(300, 6)), rng.normal(size=(400, 6))
    index = DRIndex(n_layers=2, n_nodes=6, hidden_dim=16, node_dim=4, epochs=1,
                    anchor_queries=100, distill_k=10).fit(items, queries=queries,
                                            ids=[f"sku{i}" for i in range(300)])
    client.reload(str(index.save(tmp_path / "index")))
    got = client.recommend(vector=queries[0], n=10, exclude=["sku1", "nope"])
    ids, scores = index.search(queries[0], 10, exclude=["sku1"])
    assert got["items"] == ids.tolist() and got["unknown_items"] == ["nope"]
    np.testing.assert_allclose(got["scores"], scores, rtol=1e-5)
    batch = client.recommend_batch([{"vector": q.tolist(), "n": 5} for q in queries[:3]])
    assert [r["items"] for r in batch] == index.search(queries[:3], 5)[0].tolist()
    with pytest.raises(ServiceError, match="takes 6"):
        client.recommend(vector=[1.0] * 5, n=10)
    with pytest.raises(ServiceError, match="give one of"):
        client.recommend(["sku1"], vector=[1.0] * 6, n=10)
    code, doc = _raw(server[0], "POST", "/v1/recommend", b'{"vector": [NaN, 1, 1, 1, 1, 1]}')
    assert code == 422 and "NaN" in doc["detail"]
    # History queries work too: the mean of the history's item vectors is the query.
    assert client.recommend(["sku3", "sku4"], n=5)["items"]


def test_known_users_and_fallbacks(bundles, client):
    model = bundles[0]
    user = model.user_ids_[5]
    by_id = client.recommend(user_id=user, n=10)
    by_history = client.recommend([model.item_ids_[i] for i in model.user_history(user)], n=10)
    assert by_id["items"] == by_history["items"]
    with pytest.raises(ServiceError) as err:
        client.recommend(user_id="nobody", n=10)
    assert err.value.status == 404 and "unknown user_id" in err.value.detail
    empty = client.recommend([], n=10)
    assert empty["fallback"] == "popularity"
    assert empty["items"] == model.item_ids_[model.popular_items(10)[0]].tolist()
    unknown = client.recommend(["x1", "x2"], n=10)
    assert unknown["fallback"] == "popularity" and unknown["unknown_items"] == ["x1", "x2"]


def test_batch_equals_single_calls(bundles, client):
    model, split = bundles[:2]
    h = split.test_history
    reqs = [
        {
            "history": [model.item_ids_[i] for i in h.items[h.indptr[u] : h.indptr[u + 1]]],
            "n": 5 + u % 3,
        }
        for u in range(6)
    ]
    reqs.append({"history": [], "n": 3})
    results = client.recommend_batch(reqs)
    assert [r["items"] for r in results] == [client.recommend(**q)["items"] for q in reqs]


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"history": ["i1"], "n": 0}, 422, "n"),
        ({"history": ["i1"], "n": 51}, 422, "less than or equal to 50"),
        ({"history": ["i1"] * 101}, 422, "history"),
        ({"history": "i1"}, 422, "history"),
        ({"history": ["i1"], "user_id": "u1"}, 422, "give one of"),
        ({"vector": [0.5, 1.0]}, 422, "history model"),
        ({"n": 5}, 422, "give history"),
        ({"history": ["i1"], "colour": "red"}, 422, "colour"),
        ({"history": ["i1"], "beam_size": -1}, 422, "beam_size"),
        (
            {"history": ["i1"], "beam_size": 65},
            422,
            "beam_size: Input should be less than or equal to 64",
        ),
        ({"history": [["nested"]]}, 422, "history"),
    ],
)
def test_bad_requests_get_a_clear_4xx(server, body, status, words):
    code, doc = _raw(server[0], "POST", "/v1/recommend", json.dumps(body).encode())
    assert code == status and words in json.dumps(doc)


def test_malformed_json_and_batch_limits(server):
    code, doc = _raw(server[0], "POST", "/v1/recommend", b"{not json")
    assert code == 422 and "JSON" in doc["detail"]
    code, doc = _raw(
        server[0],
        "POST",
        "/v1/recommend/batch",
        json.dumps({"requests": [{"history": []}] * 9}).encode(),
    )
    assert code == 422 and "requests" in doc["detail"]
    code, _ = _raw(server[0], "POST", "/v1/recommend/batch", json.dumps({"requests": []}).encode())
    assert code == 422


def test_info_and_openapi(bundles, client, server):
    info = client.info()
    assert info["n_items"] == bundles[0].n_items_
    assert info["known_users"] == len(bundles[0].user_ids_)
    assert info["limits"]["max_n"] == 50
    assert info["limits"]["max_request_beam_size"] == 64 and "max_beam_size" not in info["limits"]
    # The model's own max_beam_size (the calibration's largest beam) is a different setting.
    assert info["config"]["retrieval"]["max_beam_size"] == bundles[0].config.retrieval.max_beam_size
    code, schema = _raw(server[0], "GET", "/openapi.json", None)
    assert code == 200
    paths = {"/v1/recommend", "/v1/recommend/batch", "/healthz", "/v1/info", "/v1/reload"}
    assert paths <= set(schema["paths"])


def test_service_limits_are_checked():
    assert ServiceLimits().max_request_beam_size == 1024
    with pytest.raises(
        ConfigError, match="service limits: max_request_beam_size must be ≥ 1, got 0"
    ):
        ServiceLimits(max_request_beam_size=0)
    with pytest.raises(TypeError):
        ServiceLimits(max_beam_size=8)  # the old name, renamed: it never meant the model's setting


def test_reload_swaps_bundles_and_survives_a_bad_one(bundles, client, server):
    gen = client.health()["model_generation"]
    client.reload(str(bundles[3]))
    assert client.health()["model_generation"] == gen + 1
    assert not set(bundles[4]) & set(client.recommend([], n=50)["items"])
    with pytest.raises(ServiceError) as err:
        client.reload(str(bundles[3].parent / "no-such-bundle"))
    assert err.value.status == 422 and "still serving" in err.value.detail
    assert client.health()["model_generation"] == gen + 1
    server[1].send_signal(signal.SIGHUP)  # reload the current bundle
    deadline = time.time() + 30
    while client.health()["model_generation"] != gen + 2 and time.time() < deadline:
        time.sleep(0.1)
    assert client.health()["model_generation"] == gen + 2


def test_bodies_are_bounded_before_they_are_parsed(server):
    url = server[0]
    host, port = url.removeprefix("http://").split(":")
    big = json.dumps({"history": ["x" * 1000] * 200}).encode()  # 200 KB: over the 100 KB limit
    code, doc = _raw(url, "POST", "/v1/recommend", big)
    assert code == 413 and "over 100,000 bytes" in doc["detail"]

    def raw_socket(head: bytes, chunks: list[bytes], pause: float = 0.0) -> bytes:
        with socket.create_connection((host, int(port)), timeout=20) as sock:
            sock.sendall(head)
            for chunk in chunks:
                sock.sendall(chunk)
                time.sleep(pause)
            return sock.recv(65536)

    # Streamed without a Content-Length: refused once the bytes pass the limit.
    chunk = b"%x\r\n%s\r\n" % (60000, b" " * 60000)
    reply = raw_socket(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                       b"\r\nTransfer-Encoding: chunked\r\n\r\n", [chunk, chunk])
    assert reply.startswith(b"HTTP/1.1 413")
    # A client that stalls mid-body gets 408 after --body-timeout (2 s), and the server serves on.
    t0 = time.perf_counter()
    reply = raw_socket(b"POST /v1/recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                       b"\r\nContent-Length: 100\r\n\r\n", [b'{"history": '])
    assert reply.startswith(b"HTTP/1.1 408") and 1.5 < time.perf_counter() - t0 < 10
    assert RetrievalClient(url).health()["status"] == "ok"


@pytest.mark.parametrize("body", [
    b'{"history": [true]}', b'{"history": ["a"], "n": "5"}', b'{"history": ["a"], "n": 5.5}',
    b'{"history": ["a"], "exclude_seen": 0}',
    b'{"history": ["\\ud800"]}', b'{"user_id": false}', b'{"vector": [true]}',
    b'{"history": ["a"], "exclude": [false]}',
])
def test_types_are_strict_and_text_is_valid(server, body):
    code, doc = _raw(server[0], "POST", "/v1/recommend", body)
    assert code == 422, (body, doc)


def test_an_integral_number_is_an_integer_as_the_schema_says(server):
    code, doc = _raw(server[0], "POST", "/v1/recommend", b'{"history": [], "n": 5.0}')
    assert code == 200 and len(doc["items"]) == 5


def test_unknown_ids_are_echoed_bounded(client):
    got = client.recommend([f"nope-{i}" for i in range(50)], n=5)
    assert got["unknown_items"] == [f"nope-{i}" for i in range(20)] and got["unknown_count"] == 50


def test_filters_allow_where_and_exclude_seen(bundles, client):
    model, split = bundles[:2]
    names = model.item_ids_
    cluster = model.state.item_attributes["cluster"]
    history = split.test_history.rows(np.array([0])).items
    ids = [names[i] for i in history]
    got = client.recommend(ids, n=10, where={"cluster": [int(cluster[history[0]])]})
    assert got["complete"] and got["source"] == "model" and len(got["items"]) == 10
    assert {int(cluster[model.item_index([x])[0][0]]) for x in got["items"]} == {
        int(cluster[history[0]])}
    allow = [names[i] for i in np.flatnonzero(cluster == (cluster[history[0]] + 3) % 8)[:7]]
    got = client.recommend(ids, n=10, allow=allow)
    assert sorted(got["items"]) == sorted(allow) and got["complete"]  # all 7, beyond the beam
    # A known user's own history comes back unless exclude_seen.
    user = f"u{split.train_user_ids[0]}"
    seen = set(names[model.user_history(user)].tolist())
    assert not seen & set(client.recommend(user_id=user, n=30, exclude_seen=True)["items"])
    # Filters are checked per request.
    with pytest.raises(ServiceError) as err:
        client.recommend(ids, n=5, where={"size": ["L"]})
    assert err.value.status == 422 and "unknown item attribute 'size'" in err.value.detail
    with pytest.raises(ServiceError) as err:
        client.recommend(ids, n=5, where={"cluster": ["three"]})
    assert err.value.status == 422 and "holds integers" in err.value.detail


def test_batches_fail_per_request_and_popularity_says_so(bundles, client):
    model, split = bundles[:2]
    names = model.item_ids_
    history = [names[i] for i in split.test_history.rows(np.array([1])).items]
    results = client.recommend_batch([
        {"history": history, "n": 5}, {"user_id": "nobody", "n": 5},
        {"history": ["no-such-item"], "n": 5}, {"history": history, "n": 5, "where": {"x": [1]}},
    ])
    assert results[0]["source"] == "model" and len(results[0]["items"]) == 5
    assert results[1] == {"error": {"status": 404, "detail": results[1]["error"]["detail"]}}
    assert "unknown user_id 'nobody'" in results[1]["error"]["detail"]
    popular = results[2]
    assert popular["source"] == "popularity" and popular["fallback"] == "popularity"
    counts = model.item_counts_[model.item_index(popular["items"])[0]]
    assert popular["scores"] == counts.astype(float).tolist()  # training counts, said so
    assert results[3]["error"]["status"] == 422


def test_concurrent_requests_share_model_calls_and_get_their_own_answers(bundles, server):
    # Micro-batching answers concurrent requests together: each must still get exactly what
    # the library gives its history alone (with its own n and filters).
    model, split = bundles[:2]
    names = model.item_ids_
    rows = [split.test_history.rows(np.array([u])).items for u in range(24)]
    results: dict[int, dict] = {}

    def ask(u: int) -> None:
        with RetrievalClient(server[0], timeout=30) as c:
            results[u] = c.recommend([names[i] for i in rows[u]], n=5 + u % 3)

    threads = [threading.Thread(target=ask, args=(u,)) for u in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for u in range(24):
        ids, _ = model.recommend(Sequences.from_lists([rows[u]]), 5 + u % 3)
        assert results[u]["items"] == names[ids[0]].tolist(), u


def test_reload_is_an_admin_endpoint(bundles, client, server):
    url, gen = server[0], client.health()["model_generation"]
    body = json.dumps({"path": str(bundles[3])}).encode()
    code, doc = _raw(url, "POST", "/v1/reload", body)
    assert code == 401 and "Authorization: Bearer" in doc["detail"]
    code, doc = _raw(url, "POST", "/v1/reload", body, {"Authorization": "Bearer wrong"})
    assert code == 403 and doc["detail"] == "wrong admin token"
    # Unauthorised requests are refused before their body is looked at.
    code, _ = _raw(url, "POST", "/v1/reload", b"{not json", {"Authorization": "Basic x"})
    assert code == 401
    assert client.health()["model_generation"] == gen  # nothing swapped
    # Paths must resolve inside the bundle root, symlinks first.
    for path in ("../../../../../etc", "/tmp", ""):
        with pytest.raises(ServiceError) as err:
            client.reload(path)
        assert err.value.status == (422 if path == "" else 403), err.value.detail
    link = bundles[3].parent / "escape"
    if not link.exists():
        link.symlink_to("/", target_is_directory=True)
    with pytest.raises(ServiceError) as err:
        client.reload(str(link / "srv"))
    assert err.value.status == 403 and "outside the bundle root" in err.value.detail
    assert client.health()["model_generation"] == gen


def test_a_hanging_reload_is_abandoned_and_blocks_nothing(bundles, monkeypatch):
    # A load that hangs (a stalled mount, say): another reload meanwhile gets 409 at once, the
    # hanging one 504 after the timeout, and the lock is free again; nothing swapped meanwhile.
    state = ServiceState(bundles[2], reload_timeout_s=1.0)
    release = threading.Event()
    real_load = service._load

    def stalled(path, device, generation):
        release.wait(60)
        return real_load(path, device, generation)

    monkeypatch.setattr(service, "_load", stalled)
    outcome: dict = {}

    def first() -> None:
        try:
            state.reload(bundles[3])
        except ReloadRefused as exc:
            outcome["status"], outcome["detail"] = exc.status, str(exc)

    t = threading.Thread(target=first)
    t.start()
    time.sleep(0.3)
    t0 = time.perf_counter()
    with pytest.raises(ReloadRefused) as err:
        state.reload(bundles[3])
    assert err.value.status == 409 and time.perf_counter() - t0 < 0.1
    assert state.live.model.recommend([[0]], 5)[0].shape == (1, 5)  # the live model serves on
    t.join(10)
    assert outcome["status"] == 504 and "abandoned; still serving generation 1" in outcome["detail"]
    release.set()
    monkeypatch.setattr(service, "_load", real_load)
    assert state.reload(bundles[3]).generation == 2 and state.live.path == bundles[3]


def test_admin_off_without_a_token_and_the_access_log(bundles, tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "DEEP_RETRIEVAL_ADMIN_TOKEN"}
    log_file = tmp_path / "server.log"
    with open(log_file, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deep_retrieval", "-q", "serve", str(bundles[2]), "--port",
             str(port), "--access-log"], stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        RetrievalClient(url, timeout=2).wait_until_up(alive=lambda: proc.poll() is None)
        code, doc = _raw(url, "POST", "/v1/reload", b"{}", {"Authorization": f"Bearer {TOKEN}"})
        assert code == 403 and "admin endpoints are off" in doc["detail"]
        assert _raw(url, "POST", "/v1/recommend", b'{"history": [], "n": 3}')[0] == 200
    finally:
        proc.terminate()
        proc.wait(10)
    lines = [json.loads(x) for x in log_file.read_text().splitlines() if x.startswith("{")]
    calls = [(x["method"], x["path"], x["status"]) for x in lines]
    assert ("POST", "/v1/reload", 403) in calls and ("POST", "/v1/recommend", 200) in calls
    assert all(set(x) == {"ts", "method", "path", "status", "ms", "client"} for x in lines)


def test_metrics_count_requests_errors_reloads_and_candidates(bundles, client, server):
    url = server[0]
    model, split = bundles[:2]
    history = [model.item_ids_[i] for i in split.test_history.rows(np.array([2])).items]
    client.recommend(history, n=5)
    _raw(url, "POST", "/v1/recommend", b'{"n": "5"}')  # a 422
    client.reload(str(bundles[2]))
    code, doc = _raw(url, "GET", "/metrics", None)
    text = doc["raw"]
    assert code == 200
    assert 'dr_requests_total{code="200",endpoint="/v1/recommend"}' in text
    assert 'dr_request_errors_total{code="422",endpoint="/v1/recommend"}' in text
    assert 'dr_request_seconds_bucket{endpoint="/v1/recommend",le="0.5"}' in text
    assert "dr_candidates_per_query_count" in text and "dr_model_generation" in text
    assert 'dr_reloads{outcome="ok"}' in text
    # Swagger UI needs a CDN: off; the schema itself is served.
    assert _raw(url, "GET", "/docs", None)[0] == 404
    assert _raw(url, "GET", "/openapi.json", None)[0] == 200


def test_no_failed_request_while_reloading_under_load(bundles, client, server):
    model, split = bundles[:2]
    h = split.test_history
    histories = [
        [model.item_ids_[i] for i in h.items[h.indptr[u] : h.indptr[u + 1]]] for u in range(len(h))
    ]
    result = run_load_test(
        server[0], histories, n=20, clients=4, duration_s=4, reload_every_s=0.4,
        reload_paths=[str(bundles[3]), str(bundles[2])], admin_token=TOKEN,
    )
    assert result["errors"] == 0, result["error_examples"]
    assert result["reload_failures"] == [] and result["reloads"] >= 3
    assert len(result["generations_seen"]) >= 2 and result["requests"] > 50


_ids = st.one_of(st.text(max_size=6), st.integers(-5, 10**12))
_values = st.one_of(st.none(), st.booleans(), st.integers(-10, 2000), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(_ids, max_size=120))
_body = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={"history": st.one_of(st.lists(_ids, max_size=120), _values), "user_id": _values,
                  "vector": st.one_of(st.lists(st.floats(), max_size=20), _values),
                  "n": _values, "beam_size": _values,
                  "exclude": st.one_of(st.lists(_ids, max_size=20), _values)},
    ),
    st.dictionaries(st.text(max_size=5), _values, max_size=3),
    _values,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_body, batch=st.booleans())
def test_no_request_gets_a_5xx(server, body, batch):
    """Hypothesis-driven bodies against both recommend endpoints: 200 or a 4xx, never a 5xx."""
    path, payload = (
        ("/v1/recommend/batch", {"requests": [body, body]}) if batch else ("/v1/recommend", body)
    )
    code, doc = _raw(server[0], "POST", path, json.dumps(payload).encode())
    assert code < 500, doc
    if code >= 400:
        assert doc.get("detail")


def test_wait_until_up_says_timeout_or_exit():
    client = RetrievalClient(f"http://127.0.0.1:{_free_port()}", timeout=1)  # nobody listens
    with pytest.raises(TimeoutError, match="no answer"):
        client.wait_until_up(0.3)
    with pytest.raises(RuntimeError, match="exited"):
        client.wait_until_up(30, alive=lambda: False)
