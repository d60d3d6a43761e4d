from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deep_retrieval.cli import main
from deep_retrieval.experiments.benchmark import recompute_metrics

TINY_DR = [
    "dr.structure.n_layers=2",
    "dr.structure.n_nodes=16",
    "dr.train.encoder=mean",
    "dr.train.epochs=2",
    "dr.train.joint_epochs=1",
    "dr.train.reranker_epochs=0",
    "dr.train.embedding_dim=16",
    "dr.assignment.penalty=1e-4",
]


def test_benchmark_writes_every_output_and_metrics_recompute(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main([
        "-q", "benchmark", "--dataset", "movielens-latest-small",
        "--methods", "most-popular,item-cf", "--k", "5,10", "--out", str(out),
    ])
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["dataset"] == "movielens-latest-small" and doc["protocol"] == "paper"
    assert doc["k"] == [5, 10]
    assert set(doc["data"]) == {
        "n_users", "n_items", "n_interactions", "n_train_users", "n_test_users"
    }
    for name in ("most-popular", "item-cf"):
        r = doc["methods"][name]
        assert {"metrics", "fit_seconds", "query_ms_p50", "query_ms_p99"} <= set(r)
        assert set(r["metrics"]) == {
            f"{m}@{k}" for m in ("precision", "recall", "f1", "ndcg", "hit_rate") for k in (5, 10)
        }
        again = recompute_metrics(out, name, [5, 10])
        for key, value in r["metrics"].items():
            assert again[key] == pytest.approx(value, abs=1e-12), key
    # results.md: the data line, then one table row per method with the figures of results.json.
    md = (out / "results.md").read_text().splitlines()
    d = doc["data"]
    assert md[0] == "# movielens-latest-small — paper protocol"
    assert md[2] == (
        f"{d['n_users']:,} users, {d['n_items']:,} items, {d['n_interactions']:,} interactions; "
        f"{d['n_train_users']:,} training users, {d['n_test_users']:,} test users."
    )
    metric_names = ("precision", "recall", "f1", "ndcg", "hit_rate")
    metric_cols = [f"{m}@{k}" for k in (5, 10) for m in metric_names]
    header = ["method", *metric_cols, "fit s", "query ms p50", "query ms p99"]
    table = [
        [c.strip() for c in ln.strip().strip("|").split("|")] for ln in md if ln.startswith("|")
    ]
    assert table[0] == header and table[1] == ["---"] * len(header)
    assert [row[0] for row in table[2:]] == ["most-popular", "item-cf"]
    for row in table[2:]:
        r = doc["methods"][row[0]]
        assert row[1:] == [
            *(f"{r['metrics'][col]:.4f}" for col in metric_cols),
            f"{r['fit_seconds']:.1f}", f"{r['query_ms_p50']:.2f}", f"{r['query_ms_p99']:.2f}",
        ]
    assert "item-cf" in capsys.readouterr().out


def test_bad_input_gives_one_line_errors(tmp_path, capsys):
    assert main(["benchmark", "--dataset", "movielens-latest-small", "--methods", "nope",
                 "--out", str(tmp_path)]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
    assert main(["benchmark", "--dataset", "movielens-latest-small", "--set", "softmax.epoch=1",
                 "--out", str(tmp_path)]) == 2
    assert "valid keys" in capsys.readouterr().err
    assert main(["benchmark", "--dataset", "no-such-set", "--out", str(tmp_path)]) == 2
    assert "movielens-latest-small" in capsys.readouterr().err
    assert main(["benchmark", "--out", str(tmp_path)]) == 2
    assert "exactly one of" in capsys.readouterr().err


def test_datasets_lists_counts(shared_data, capsys):
    assert main(["datasets", "--data-dir", str(shared_data)]) == 0
    text = capsys.readouterr().out
    assert "movielens-100k" in text and "1,682" in text and "gowalla" in text and "40,981" in text


def test_fixed_split_files_and_ratings_file(tmp_path):
    train = tmp_path / "train.txt"
    test = tmp_path / "test.txt"
    rng = np.random.default_rng(0)
    with open(train, "w") as ft, open(test, "w") as fs:
        for u in range(60):
            items = rng.choice(40, 8, replace=False)
            ft.write(f"{u} " + " ".join(map(str, items[:6])) + "\n")
            fs.write(f"{u} " + " ".join(map(str, items[6:])) + "\n")
    out = tmp_path / "fixed"
    assert main(["-q", "benchmark", "--train-file", str(train), "--test-file", str(test),
                 "--methods", "most-popular", "--k", "5", "--out", str(out)]) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["protocol"] == "fixed-split" and doc["data"]["n_test_users"] == 60
    # train items are excluded from rankings under the fixed-split protocol
    recs = pd.read_csv(out / "recommendations" / "most-popular.csv")
    seen = {
        (int(line.split()[0]), int(i))
        for line in train.read_text().splitlines()
        for i in line.split()[1:]
    }
    assert not any((u, i) in seen for u, i in zip(recs.user, recs.item, strict=True))


def test_train_recommend_evaluate_inspect(tmp_path, capsys):
    model_dir = tmp_path / "model"
    sets = ["--set", *TINY_DR]
    assert main(["-q", "train", "--dataset", "movielens-latest-small", "--out", str(model_dir),
                 *sets]) == 0
    assert (model_dir / "manifest.json").exists() and (model_dir / "weights.safetensors").exists()
    capsys.readouterr()
    assert main(["recommend", str(model_dir), "--history", "1,50,260,999999999", "-n", "5"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert lines[0].split("\t") == ["rank", "item", "score"] and len(lines) == 6
    assert "999999999" in captured.err  # unknown id reported, not fatal
    report = tmp_path / "eval.json"
    assert main(["-q", "evaluate", str(model_dir), "--dataset", "movielens-latest-small",
                 "--k", "10", "--json", str(report)]) == 0
    metrics = json.loads(report.read_text())["metrics"]
    assert 0 < metrics["recall@10"] <= 1
    # Another split (another seed draws other test users, who trained the model): refused
    # unless --force, saying what differs.
    capsys.readouterr()
    other = ["-q", "evaluate", str(model_dir), "--dataset", "movielens-latest-small", "--k", "10",
             "--set", "protocol.seed=1"]
    assert main(other) == 2
    assert "not the split the model was trained with: the split's item ids, training rows or" \
        " held-out users differ" in capsys.readouterr().err
    assert main([*other, "--force"]) == 0
    import deep_retrieval

    log = Path(deep_retrieval.__file__).parent / "datasets/movielens-latest-small/ratings.csv.gz"
    assert main(["-q", "evaluate", str(model_dir), "--ratings-file", str(log), "--k", "10"]) == 2
    assert "the data set is 'ratings.csv.gz', the model's 'movielens-latest-small'" \
        in capsys.readouterr().err
    assert main(["inspect", str(model_dir)]) == 0
    assert "largest_path_size" in capsys.readouterr().out
    assert (model_dir / "path_sizes.png").stat().st_size > 1000

    # Catalogue changes on the saved bundle: a warm item (watched by known users), a cold one
    # from features, a cold one from a neighbour list; then removals.
    (tmp_path / "new.csv").write_text(
        "userId,movieId,rating,timestamp\n1,900001,5,2000000000\n2,900001,4,2000000001\n"
    )
    (tmp_path / "features.csv").write_text(
        "item,f1,f2\n1,1.0,0.0\n50,0.9,0.1\n260,0.0,1.0\n900002,0.95,0.05\n"
    )
    (tmp_path / "neighbours.csv").write_text("900003,1,50,260\n")
    capsys.readouterr()
    assert main(["add-items", str(model_dir), "--interactions", str(tmp_path / "new.csv"),
                 "--features", str(tmp_path / "features.csv"),
                 "--neighbours", str(tmp_path / "neighbours.csv")]) == 0
    assert "added 3 item(s) (1 from interactions, 2 cold)" in capsys.readouterr().out
    assert main(["recommend", str(model_dir), "--history", "900001,900002,900003", "-n", "5"]) == 0
    assert "unknown" not in capsys.readouterr().err  # the added items are known ids now
    assert main(["remove-items", str(model_dir), "--items", "900003,1"]) == 0
    assert "removed 2 item(s)" in capsys.readouterr().out
    assert main(["recommend", str(model_dir), "--history", "50,260", "-n", "500"]) == 0
    ranked = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert len(ranked) == 500 and "900003" not in ranked and "1" not in ranked
    assert main(["remove-items", str(model_dir), "--items", "nope"]) == 2
    assert main(["add-items", str(model_dir),
                 "--neighbours", str(tmp_path / "neighbours.csv")]) == 2
    assert "nothing to add" in capsys.readouterr().err


def test_module_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "deep_retrieval", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0 and "deep-retrieval" in done.stdout


def test_ablate_writes_one_row_per_setting(tmp_path, capsys):
    out = tmp_path / "abl"
    sets = ["--set", *TINY_DR, "softmax.epochs=1", "softmax.embedding_dim=16"]
    grid = ["--grid", "paths_per_item=1,3", "n_layers=2", "hidden_dim=256", "penalty=1e-4,1e-2",
            "penalty_scale=interactions", "init=random", "target_recall=none", "reranker=dot",
            "beam_size=1,4"]
    assert main(["-q", "ablate", "--dataset", "movielens-latest-small", "--k", "10",
                 "--out", str(out), *grid, *sets]) == 0
    doc = json.loads((out / "ablations.json").read_text())
    got = [(r["ablation"], r["value"]) for r in doc["rows"]]
    assert got == [("paths_per_item", 1), ("paths_per_item", 3), ("n_layers", 2),
                   ("hidden_dim", 256), ("penalty", 1e-4), ("penalty", 1e-2),
                   ("penalty_scale", "interactions"), ("init", "random"), ("target_recall", None),
                   ("reranker", "dot"), ("beam_size", 1), ("beam_size", 4), ("rerank", True),
                   ("rerank", False)]
    bf = doc["brute_force"]["recall@10"]
    for r in doc["rows"]:
        assert r["recall_ratio"] == pytest.approx(r["recall@10"] / bf, abs=1e-3)
        assert 0 < r["candidates_per_query"] <= doc["data"]["n_items"]
    beams = {r["value"]: r for r in doc["rows"] if r["ablation"] == "beam_size"}
    assert beams[4]["candidates_per_query"] > beams[1]["candidates_per_query"]
    # the configured fit (J=3, D=2, 256 hidden, α=1e-4 with TINY_DR) is reused, not fitted again
    configured = {("paths_per_item", 3), ("n_layers", 2), ("hidden_dim", 256), ("penalty", 1e-4),
                  ("penalty_scale", "interactions"), ("init", "random"), ("reranker", "dot"),
                  ("rerank", True)}
    same = [r["fit_seconds"] for r in doc["rows"] if (r["ablation"], r["value"]) in configured]
    assert len(set(same)) == 1
    assert "## Penalty α" in (out / "ablations.md").read_text()
    assert "## Penalty α" in capsys.readouterr().out
    assert main(["ablate", "--dataset", "movielens-latest-small", "--out", str(out),
                 "--grid", "alpha=1"]) == 2
    assert "paths_per_item" in capsys.readouterr().err
    # a bad value stops the run before anything is fitted
    assert main(["ablate", "--dataset", "movielens-latest-small", "--out", str(tmp_path / "x"),
                 "--grid", "init=grid"]) == 2
    assert "init must be one of random, kmeans" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_stream_writes_bundles_beside_the_final_model(tmp_path, capsys):
    out = tmp_path / "streamed"
    sets = ["--set", "dr.structure.n_layers=2", "dr.structure.n_nodes=16",
            "dr.train.embedding_dim=16"]
    assert main(["-q", "stream", "--dataset", "movielens-latest-small", "--out", str(out),
                 "--bundle-every", "20000", *sets]) == 0
    assert "saved" in capsys.readouterr().out
    bundles = tmp_path / "streamed-bundles"
    latest = (bundles / "LATEST").read_text().strip()
    assert (bundles / latest / "manifest.json").exists()
    assert len(list(bundles.glob("bundle-*"))) <= 3
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["streamed"] is True
    assert main(["recommend", str(out), "--history", "1,50,260", "-n", "5"]) == 0
    # A log without time order cannot be streamed.
    (tmp_path / "train.txt").write_text("0 1 2 3\n1 2 3 4\n")
    (tmp_path / "test.txt").write_text("0 4\n1 1\n")
    assert main(["-q", "stream", "--train-file", str(tmp_path / "train.txt"),
                 "--test-file", str(tmp_path / "test.txt"), "--out", str(tmp_path / "g")]) == 2
    assert "without a time order" in capsys.readouterr().err


def test_index_and_search_over_your_own_vectors(tmp_path, capsys):
    from deep_retrieval import DRIndex

    rng = np.random.default_rng(0)
    items, queries = rng.normal(size=(300, 6)).astype("f4"), rng.normal(size=(400, 6)).astype("f4")
    np.save(tmp_path / "items.npy", items)
    np.save(tmp_path / "queries.npy", queries)
    (tmp_path / "ids.txt").write_text("\n".join(f"sku{i}" for i in range(300)))
    (tmp_path / "pos.txt").write_text("\n".join(f"{i % 300} {(i * 7) % 300}" for i in range(400)))
    tiny = ["structure.n_layers=2", "structure.n_nodes=6", "structure.hidden_dim=16",
            "train.epochs=1", "train.anchor_queries=100", "train.distill_k=10"]
    out = tmp_path / "index"
    code = main(["-q", "index", "--items", str(tmp_path / "items.npy"),
                 "--queries", str(tmp_path / "queries.npy"), "--ids", str(tmp_path / "ids.txt"),
                 "--out", str(out), "--set", *tiny])
    assert code == 0 and "saved" in capsys.readouterr().out
    index = DRIndex.load(out)
    assert index.ids[7] == "sku7" and index.config.structure.n_nodes == 6
    assert main(["-q", "search", str(out), "--queries", str(tmp_path / "queries.npy"), "-k",
                 "4", "--out", str(tmp_path / "res.npz")]) == 0
    res = np.load(tmp_path / "res.npz")
    want_ids, want_scores = index.search(queries, 4)
    np.testing.assert_array_equal(res["ids"], want_ids)
    np.testing.assert_allclose(res["scores"], want_scores)
    capsys.readouterr()
    assert main(["-q", "search", str(out), "--queries", str(tmp_path / "queries.npy"),
                 "-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "query\trank\titem\tscore" and lines[1].split("\t")[2] == want_ids[0, 0]
    # Observed positives, one line of item positions per query.
    assert main(["-q", "index", "--items", str(tmp_path / "items.npy"), "--queries",
                 str(tmp_path / "queries.npy"), "--positives", str(tmp_path / "pos.txt"),
                 "--out", str(tmp_path / "index2"), "--set", *tiny]) == 0
    assert DRIndex.load(tmp_path / "index2").diagnostics()["training"]["positives"] is True
    # Bad input: one line each, exit 2.
    for argv, words in (
        (["index", "--items", str(tmp_path / "ids.txt"), "--queries",
          str(tmp_path / "queries.npy"), "--out", str(tmp_path / "x")], "--items"),
        (["search", str(out), "--queries", str(tmp_path / "items.npy")[:-4] + "-missing.npy"],
         "--queries"),
        (["search", str(tmp_path / "nowhere"), "--queries", str(tmp_path / "queries.npy")],
         "manifest"),
    ):
        assert main(["-q", *argv]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 1


def test_quiet_and_log_level_are_accepted_before_and_after_the_verb(shared_data, capsys):
    import logging

    logger = logging.getLogger("deep_retrieval")
    before = logger.level
    try:
        for argv, level in (
            (["datasets", "-q"], logging.WARNING),
            (["-q", "datasets"], logging.WARNING),
            (["datasets", "--log-level", "error"], logging.ERROR),
            (["-q", "datasets", "--log-level", "debug"], logging.DEBUG),  # explicit level wins
            (["datasets"], logging.INFO),
        ):
            assert main([*argv, "--data-dir", str(shared_data)]) == 0
            assert logger.level == level, argv
    finally:
        logger.setLevel(before)
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["datasets", "--log-level", "loud"])
    assert "invalid choice: 'loud'" in capsys.readouterr().err


def _shop_log(path, n_users=120, seed=0):
    """A customer,sku,event_time export with ISO times, written newest first; a third of the
    users have 3 events. Returns (path, each user's skus in time order)."""
    rng = np.random.default_rng(seed)
    lines, order = [], {}
    for u in range(n_users):
        skus = rng.choice(10, 3 if u % 3 == 0 else 15) + 10 * (u % 4)
        order[f"c{u}"] = [f"SKU-{s:02d}" for s in skus]
        lines += [f"c{u},SKU-{s:02d},2024-03-{1 + t:02d}T10:{u % 60:02d}:00Z,web"
                  for t, s in enumerate(skus)]
    path.write_text("customer,sku,event_time,channel\n" + "\n".join(reversed(lines)) + "\n")
    return path, order


def test_train_on_every_user_of_your_own_columns(tmp_path, capsys):
    log, order = _shop_log(tmp_path / "orders.csv")
    out = tmp_path / "shop"
    code = main([
        "train", "--ratings-file", str(log), "--user-col", "customer", "--item-col", "sku",
        "--time-col", "event_time", "--all-users", "--out", str(out), "-q", "--set", *TINY_DR,
    ])
    assert code == 0, capsys.readouterr().err
    from deep_retrieval import DeepRetrieval

    model = DeepRetrieval.load(out, device="cpu")
    assert len(model.user_ids_) == 120  # the short histories too: nobody held out or dropped
    assert model.training_["protocol"] == "all-users"
    for user in ("c0", "c1"):  # time order from the ISO times, not file order
        assert model.item_ids_[model.user_history(user)].tolist() == order[user]
    # Errors name the flag to use.
    capsys.readouterr()
    assert main(["train", "--ratings-file", str(log), "--all-users", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the user and item columns" in err and "--user-col and --item-col" in err
    assert main(["train", "--ratings-file", str(log), "--user-col", "client", "--item-col",
                 "sku", "--out", str(out)]) == 2
    assert "no column 'client' for user_col (--user-col)" in capsys.readouterr().err
    assert main(["train", "--dataset", "movielens-latest-small", "--user-col", "u",
                 "--out", str(out)]) == 2
    assert "--user-col name columns of --ratings-file" in capsys.readouterr().err
    assert main(["train", "--ratings-file", str(log), "--all-users", "--protocol", "paper",
                 "--out", str(out)]) == 2
    assert "drop --protocol" in capsys.readouterr().err


@pytest.mark.parametrize(("argv", "words"), [
    (["train", "--dataset", "movielens-latest-small", "--out", "x", "--config", "{list}"],
     "must hold sections"),
    (["serve", "m", "--port", "99999"], "argument --port: must be in 1..65535, got 99999"),
    (["load-test", "not a url", "--histories", "{list}", "--duration", "1"],
     "the service URL must look like http://HOST:PORT"),
    (["recommend", "m", "--history", "1", "--beam-size", "0"], "--beam-size: must be ≥ 1, got 0"),
    (["load-test", "http://127.0.0.1:1", "--duration", "0"], "--duration: must be a finite number"),
    (["train", "--dataset", "movielens-latest-small", "--out", "x", "--nope"],
     "unrecognized arguments: --nope"),
    (["train", "--dataset", "x", "--out", "x", "--set", "dr.train.lr=-1"], "lr must be ≥ 0"),
    (["train", "--dataset", "x", "--out", "x", "--set", "dr.retrieval.candidate_factor=-1"],
     "candidate_factor must be > 0"),
])
def test_every_cli_error_is_one_line_and_status_2(tmp_path, capsys, argv, words):
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]\n")
    argv = [str(listed) if a == "{list}" else a for a in argv]
    try:
        code = main(["-q", *argv])
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and words in err, err


def test_an_unexpected_error_is_one_line_unless_debug(monkeypatch, capsys):
    from deep_retrieval import cli

    def broken(args):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(cli, "cmd_inspect", broken)
    assert main(["inspect", "m"]) == 2
    err = capsys.readouterr().err
    assert err == ("deep-retrieval inspect: error: RuntimeError: something unexpected (rerun with"
                   " --debug for the traceback)\n")
    with pytest.raises(RuntimeError):
        main(["inspect", "m", "--debug"])


def test_item_attributes_and_filters_from_the_command_line(tmp_path, capsys):
    log, _ = _shop_log(tmp_path / "orders.csv")
    rows = ["sku,group,colour"] + [f"SKU-{i:02d},{i // 10},{'red' if i % 2 else 'blue'}"
                                   for i in range(40)] + ["SKU-99,9,green"]  # one unknown sku
    (tmp_path / "attributes.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "shop"
    assert main(["train", "--ratings-file", str(log), "--user-col", "customer", "--item-col",
                 "sku", "--all-users", "--item-attributes", str(tmp_path / "attributes.csv"),
                 "--out", str(out), "-q", "--set", *TINY_DR]) == 0
    capsys.readouterr()
    assert main(["recommend", str(out), "--history", "SKU-01,SKU-02", "-n", "5",
                 "--where", "group=3", "--where", "colour=red"]) == 0
    items = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert len(items) == 5 and all(30 <= int(x[4:]) < 40 and int(x[4:]) % 2 for x in items)
    assert main(["recommend", str(out), "--history", "SKU-01", "-n", "3",
                 "--allow", "SKU-05,SKU-33"]) == 0
    items = [line.split("\t")[1] for line in capsys.readouterr().out.splitlines()[1:]]
    assert sorted(items) == ["SKU-05", "SKU-33"]
    assert main(["recommend", str(out), "--history", "SKU-01", "--where", "size=L"]) == 2
    assert "unknown item attribute 'size'" in capsys.readouterr().err
