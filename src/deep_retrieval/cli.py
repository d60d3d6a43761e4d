"""Command-line shell over the public API: ``deep-retrieval VERB …`` (also
``python -m deep_retrieval``).

Each verb translates flags into library calls and prints the result; all logic lives in the
library.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

import numpy as np

from .config import to_dict
from .utils import __version__

log = logging.getLogger("deep_retrieval")
#: ``--log-level`` values.
LOG_LEVELS = ("debug", "info", "warning", "error")


class CLIError(Exception):
    """A user error: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, exit status 2, as every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int(low: int, high: int | None = None):
    """An argparse type: an integer in ``[low, high]``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            allowed = f"≥ {low}" if high is None else f"in {low}..{high}"
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    return parse


def _positive(text: str) -> float:
    """An argparse type: a finite number > 0 (seconds, a scale)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _nonnegative(text: str) -> float:
    """An argparse type: a finite number ≥ 0 (a window that may be off)."""
    if text.strip() in ("0", "0.0"):
        return 0.0
    return _positive(text)


_COUNT = _int(1)  # counts, sizes and limits: ≥ 1


def summary_line(state) -> str:
    from .index.diagnostics import summary_line

    return summary_line(state)


def _overrides(args: argparse.Namespace) -> list[str]:
    return [kv for group in (args.set or []) for kv in group]


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (one of --dataset, --train-file/--test-file, --ratings-file)")
    g.add_argument("--dataset", help="registered data set name (see `deep-retrieval datasets`)")
    g.add_argument(
        "--train-file", type=Path, help="'user item item …' lines (fixed-split protocol)"
    )
    g.add_argument("--test-file", type=Path, help="'user item item …' lines (fixed-split protocol)")
    g.add_argument(
        "--ratings-file",
        type=Path,
        help="an interaction log: CSV/TSV (plain or gzip) or Parquet with your columns (see"
        " --user-col …; common names like user_id, item_id, rating, timestamp are found"
        " alone), MovieLens u.data/ratings.dat/ratings.csv/zip, or a headerless Amazon ratings"
        " CSV; paper protocol",
    )
    _add_column_args(g)
    g.add_argument(
        "--protocol", choices=["paper", "fixed-split"], help="override the data set's protocol"
    )
    g.add_argument(
        "--data-dir",
        type=Path,
        help="where data sets live (default: $DEEP_RETRIEVAL_DATA, else ~/.cache/deep-retrieval)",
    )


def _add_column_args(g: argparse._ActionsContainer) -> None:
    for role, flag, what in (
        ("user", "--user-col", "the user id"),
        ("item", "--item-col", "the item id"),
        ("timestamp", "--time-col", "the time: unix seconds or ISO-8601 dates (optional)"),
        ("rating", "--rating-col", "the rating (optional)"),
    ):
        g.add_argument(
            flag,
            dest=f"{role}_col",
            metavar="COLUMN",
            help=f"the log's column holding {what}: a header name, or a 0-based position in a"
            " headerless file",
        )


_COLUMN_FLAGS = {"user_col": "--user-col", "item_col": "--item-col",
                 "timestamp_col": "--time-col", "rating_col": "--rating-col"}


def _columns(args: argparse.Namespace) -> dict[str, str | None]:
    """The column flags as keyword arguments of ``read_ratings_file``."""
    return {key: getattr(args, key, None) for key in _COLUMN_FLAGS}


def _read_log(args: argparse.Namespace, path: Path):
    from .data.readers import read_ratings_file

    return read_ratings_file(path, **_columns(args))


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML or JSON file overriding the defaults")
    p.add_argument(
        "--set",
        nargs="+",
        action="append",
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set softmax.epochs=3 protocol.seed=1",
    )


def _data_dir(args: argparse.Namespace) -> Path:
    from .data.registry import resolve_data_dir

    return resolve_data_dir(args.data_dir, os.environ.get("DEEP_RETRIEVAL_DATA"))


def _load_data(args: argparse.Namespace):
    """Read the data the flags point at → (name, Interactions | FixedSplit)."""
    from .data import readers
    from .data.registry import load_dataset
    from .data.types import FixedSplit

    given = [args.dataset is not None, args.train_file is not None or args.test_file is not None,
             args.ratings_file is not None]
    if sum(given) != 1:
        raise CLIError(
            "give exactly one of --dataset NAME, --train-file F --test-file G, or --ratings-file F"
        )
    if args.ratings_file is not None:
        return args.ratings_file.name, _read_log(args, args.ratings_file)
    flags = [_COLUMN_FLAGS[key] for key, col in _columns(args).items() if col is not None]
    if flags:
        raise CLIError(f"{', '.join(flags)} name columns of --ratings-file; give that file")
    if args.dataset is not None:
        return args.dataset, load_dataset(args.dataset, _data_dir(args))
    if args.train_file is None or args.test_file is None:
        raise CLIError("--train-file and --test-file go together")
    train = readers.read_user_items_lines(args.train_file)
    test = readers.read_user_items_lines(args.test_file)
    return args.train_file.parent.name or "custom", FixedSplit(train, test)


def _parse_list(text: str, kind=str) -> list:
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise CLIError(f"cannot parse {text!r}: {exc}") from exc


def cmd_benchmark(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .config import BenchmarkConfig, load_config
    from .data.protocols import make_split
    from .experiments.benchmark import check_methods, run_benchmark

    config = load_config(BenchmarkConfig, args.config, _overrides(args))
    methods = check_methods(_parse_list(args.methods))
    ks = _parse_list(args.k, int)
    name, data = _load_data(args)
    split = make_split(data, args.protocol, config.protocol)
    log.info("split: %s", json.dumps(split.summary()))
    # An ANN method without brute-force in the list adds a step: fitting the softmax model.
    ann_only = any(m.startswith("ann-") for m in methods) and "brute-force" not in methods
    steps = 2 * len(methods) + (1 if ann_only else 0)
    with tqdm(total=steps, desc="benchmark", unit="step", disable=args.quiet) as bar:

        started = [0]

        def progress(msg: str) -> None:
            if msg.startswith(("fitting", "evaluating")):
                if started[0]:
                    bar.update(1)  # the previous step is done
                started[0] += 1
                bar.set_description(msg)
            elif not args.quiet:
                bar.write(msg)

        doc = run_benchmark(
            split, methods, ks, config, out_dir=args.out, dataset=name, progress=progress
        )
        bar.update(bar.total - bar.n)
    from .experiments.benchmark import results_markdown

    print(results_markdown(doc))
    print(f"wrote {args.out}/results.json, results.md, truth.csv, recommendations/")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from .config import BenchmarkConfig, load_config
    from .data.protocols import make_split
    from .experiments.ablations import parse_grid, run_ablations

    config = load_config(BenchmarkConfig, args.config, _overrides(args))
    grid = parse_grid(args.grid or [])
    name, data = _load_data(args)
    split = make_split(data, args.protocol, config.protocol)
    log.info("split: %s", json.dumps(split.summary()))
    say = (
        (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    )
    run_ablations(split, args.k, config, grid, out_dir=args.out, dataset=name, progress=say)
    print((args.out / "ablations.md").read_text())
    print(f"wrote {args.out}/ablations.json, ablations.md")
    return 0


def cmd_bench_speed(args: argparse.Namespace) -> int:
    import dataclasses

    from .config import load_config
    from .experiments.speed import (
        SpeedConfig,
        plot_frontier,
        plot_speed,
        run_speed,
        speed_markdown,
    )
    from .utils import atomic_write_text

    sizes = _parse_list(args.n_items, int)
    base = load_config(SpeedConfig, args.config, _overrides(args))
    say = (
        (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    )
    docs = []
    for n in sizes:
        out = args.out if len(sizes) == 1 else args.out / str(n)
        out.mkdir(parents=True, exist_ok=True)
        doc = run_speed(dataclasses.replace(base, n_items=n), progress=say)
        atomic_write_text(out / "speed.json", json.dumps(doc, indent=2) + "\n")
        atomic_write_text(out / "speed.md", speed_markdown([doc]))
        plot_frontier(doc, out / "frontier.png")
        docs.append(doc)
        print(speed_markdown([doc]))
        print(f"wrote {out}/speed.json, speed.md, frontier.png")
    if len(docs) > 1:
        atomic_write_text(args.out / "speed.md", speed_markdown(docs))
    plot_speed(docs, args.out / "speed.png")
    print(f"wrote {args.out}/speed.png")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from .data.corpus import make_corpus, make_corpus_shape

    if args.shape:
        corpus = make_corpus_shape(args.shape, scale=args.scale, seed=args.seed, dim=args.dim)
    elif args.n_users and args.n_items and args.n_interactions:
        corpus = make_corpus(
            args.n_users, args.n_items, args.n_interactions, seed=args.seed, dim=args.dim
        )
    else:
        raise CLIError("give --shape NAME, or all of --n-users, --n-items and --n-interactions")
    for path in corpus.save(args.out):
        print(f"wrote {path}")
    seqs = corpus.sequences
    print(
        f"{len(seqs):,} users, {corpus.n_items:,} items, {seqs.n_interactions:,} interactions"
        f" (read it with --ratings-file {args.out / 'ratings.csv'})"
    )
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data.registry import dataset_table

    rows = dataset_table(_data_dir(args))
    print(f"{'name':<30} {'kind':<12} {'users':>9} {'items':>10} {'interactions':>13}  where")
    for r in rows:
        if r["available"]:
            print(
                f"{r['name']:<30} {r['kind']:<12} {r['n_users']:>9,} {r['n_items']:>10,}"
                f" {r['n_interactions']:>13,}  {r['path']}"
            )
        else:
            print(
                f"{r['name']:<30} {r['kind']:<12} {'-':>9} {'-':>10} {'-':>13}"
                f"  not found ({r.get('hint', '')})"
            )
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .data.download import download_dataset

    dest = _data_dir(args)
    with tqdm(unit="B", unit_scale=True, desc=args.name, disable=args.quiet) as bar:

        def progress(done: int, total: int | None) -> None:
            if total and bar.total != total:
                bar.total = total
            bar.update(done - bar.n)

        path = download_dataset(args.name, dest, progress=progress)
    print(path)
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .config import TrainConfig, load_config
    from .data.protocols import make_split
    from .estimator import DeepRetrieval
    from .training import distributed
    from .utils import resolve_device

    config = load_config(TrainConfig, args.config, _overrides(args))  # protocol.*, dr.*, device
    device = resolve_device(args.device or config.device)
    # Under torchrun (WORLD_SIZE > 1): join the process group; rank 0 logs and saves.
    ctx = distributed.init_from_environment(device)
    quiet = args.quiet or ctx.rank > 0
    if ctx.rank > 0:
        log.setLevel(logging.WARNING)
    if args.all_users and args.protocol:
        raise CLIError("--all-users is a protocol of its own: drop --protocol")
    # Read before training, so that a bad file costs no training run.
    attributes = _read_attributes(args.item_attributes) if args.item_attributes else None
    name, data = _load_data(args)
    split = make_split(data, "all-users" if args.all_users else args.protocol, config.protocol)
    log.info("split: %s", json.dumps(split.summary()))
    if ctx.active:
        log.info("data parallel over %d processes", ctx.world)
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    model = DeepRetrieval(config.dr, device=device)
    # Under torchrun every process reads them on --resume: OUT must be on a shared filesystem.
    checkpoints = None if args.no_checkpoints else args.out / "checkpoints"
    t = config.dr.train
    # The library logs each epoch's figures at INFO; the bar counts them.
    with tqdm(total=t.reranker_epochs + t.epochs, desc="train", unit="epoch", disable=quiet) as bar:

        def on_event(entry: dict) -> None:
            bar.update(1)

        # A split brings its item ids, and its training users become the bundle's known users
        # (the service's `user_id` requests).
        model.fit(
            split,
            on_event=None if quiet else on_event,
            checkpoint_dir=checkpoints,
            resume=args.resume,
        )
    if ctx.rank > 0:
        return 0
    _set_attributes(model, attributes)
    model.save(
        args.out,
        training={
            "dataset": name,
            "protocol": split.protocol,
            "protocol_config": to_dict(config.protocol),
            "data": split.summary(),
            "split_fingerprint": split.fingerprint(),
        },
    )
    print(f"saved {args.out}: {summary_line(model.state)}")
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    from .data.types import Sequences
    from .estimator import DeepRetrieval

    model = DeepRetrieval.load(args.model, device=args.device or "auto")
    history = [x.strip() for x in args.history.split(",") if x.strip()]
    known: list[int] | np.ndarray
    unknown: list = []
    if args.internal_ids:
        known = [int(x) for x in history]
    elif model.item_ids_ is None:
        raise CLIError(
            "this model was saved without item ids; pass internal ids with --internal-ids"
        )
    else:
        known, unknown = model.item_index(history)
    if unknown:
        print(
            f"ignored {len(unknown)} unknown item id(s): {', '.join(unknown[:10])}",
            file=sys.stderr,
        )
    if not len(known):
        raise CLIError("none of the --history items is known to the model")
    where = {}
    for clause in args.where or []:
        name, sep, values = clause.partition("=")
        if not sep or not name.strip():
            raise CLIError(f"--where takes NAME=V1,V2…, got {clause!r}")
        column = model.state.item_attributes.get(name.strip())
        kind = int if column is not None and column.dtype.kind == "i" else str
        where[name.strip()] = _parse_list(values, kind)
    allow = None
    if args.allow:
        allow_ids = [x.strip() for x in args.allow.split(",") if x.strip()]
        allow = [[int(x) for x in allow_ids]] if args.internal_ids else [
            model.item_index(allow_ids)[0]]
    filtered = allow is not None or bool(where)
    if filtered and args.exhaustive:
        raise CLIError("--allow / --where filter the index search: drop --exhaustive")
    ids, scores = model.recommend(
        Sequences.from_lists([known]), args.n, beam_size=args.beam_size, exhaustive=args.exhaustive,
        allow=allow, where=where or None,
    )
    names = model.item_ids_ if (model.item_ids_ is not None and not args.internal_ids) else None
    print("rank\titem\tscore")
    for rank, (i, s) in enumerate(zip(ids[0], scores[0], strict=True), start=1):
        if i < 0:
            break
        print(f"{rank}\t{names[i] if names is not None else i}\t{s:.4f}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .config import BenchmarkConfig, ProtocolConfig, from_mapping, load_config
    from .data.protocols import make_split
    from .estimator import DeepRetrieval
    from .evaluation.evaluate import evaluate
    from .experiments.benchmark import CountedRecommender

    model = DeepRetrieval.load(args.model, device=args.device or "auto")
    training = model.training_ or {}
    base = BenchmarkConfig()
    if "protocol_config" in training:
        base = BenchmarkConfig(protocol=from_mapping(ProtocolConfig, training["protocol_config"]))
    config = load_config(BenchmarkConfig, args.config, _overrides(args), base=base)
    name, data = _load_data(args)
    split = make_split(data, args.protocol, config.protocol)
    _check_same_split(training, name, split, force=args.force)
    split = model.align_split(split)
    ks = _parse_list(args.k, int)
    counted = CountedRecommender(model)
    ev = evaluate(counted, split.test_history, split.test_truth, ks, exclude=split.test_exclude)
    doc = {"dataset": name, "protocol": split.protocol, "k": ks, "metrics": ev.metrics,
           "query_ms_p50": ev.query_ms_p50, "query_ms_p99": ev.query_ms_p99, **counted.figures()}
    text = json.dumps(doc, indent=2)
    if args.json:
        from .utils import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    print(text)
    return 0


def _check_same_split(training: dict, name: str, split, *, force: bool) -> None:
    """Refuse (unless ``force``) to evaluate on a split other than the model's training split:
    its test users may have been training users, or the data another version."""
    differs = []
    if training.get("dataset") not in (None, name):
        differs.append(f"the data set is {name!r}, the model's {training['dataset']!r}")
    if training.get("protocol") not in (None, split.protocol):
        differs.append(f"the protocol is {split.protocol!r}, the model's {training['protocol']!r}")
    recorded = training.get("split_fingerprint")
    if recorded is None:
        log.warning("the model records no split fingerprint (saved by an older version, or not"
                    " by train): cannot check that this is its training split")
    elif not differs and recorded != split.fingerprint():
        differs.append("the split's item ids, training rows or held-out users differ (another"
                       " version of the file, a filter or protocol.seed)")
    if not differs:
        return
    if not force:
        raise CLIError(f"not the split the model was trained with: {'; '.join(differs)}; pass"
                       " --force to evaluate on it anyway")
    log.warning("evaluating on another split (--force): %s", "; ".join(differs))


def cmd_inspect(args: argparse.Namespace) -> int:
    from .estimator import DeepRetrieval

    model = DeepRetrieval.load(args.model, device="cpu")
    d = model.diagnostics()
    epochs = d.pop("epochs")
    for k, v in d.items():
        print(f"{k:<24} {v}")
    print("epochs:")
    for e in epochs:
        print("  " + json.dumps(e))
    from .utils import MissingExtra

    png = args.png or Path(args.model) / "path_sizes.png"
    try:
        model.plot_path_sizes(png)
    except MissingExtra as exc:  # the numbers above stand without the histogram
        if args.png:
            raise
        log.warning("no path-size histogram: %s", exc)
        return 0
    print(f"wrote {png}")
    return 0


def _read_attributes(path: Path) -> dict[str, dict[str, int | str]]:
    """``item,attr1,attr2…`` CSV (a header row, then one row per item) → attribute →
    {item id: value}; a column whose values are all integers holds integers."""
    import csv

    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CLIError(f"cannot read --item-attributes {path}: {exc}") from None
    if len(rows) < 2 or len(rows[0]) < 2:
        raise CLIError(f"--item-attributes {path}: expected a header 'item,NAME,…' and rows")
    header, body = rows[0], rows[1:]
    out: dict[str, dict[str, int | str]] = {}
    for j, name in enumerate(header[1:], start=1):
        values = [row[j].strip() if j < len(row) else "" for row in body]
        numeric = all(v.lstrip("-").isdigit() for v in values)
        out[name.strip()] = {row[0].strip(): int(v) if numeric else v
                             for row, v in zip(body, values, strict=True)}
    return out


def _set_attributes(model, table: dict[str, dict[str, int | str]] | None) -> None:
    """Give ``model`` the attributes read from ``--item-attributes`` (ids it lacks are skipped,
    and said)."""
    if table is None:
        return
    ids = sorted({k for values in table.values() for k in values})
    unknown = set(model.item_index(ids)[1])
    if unknown:
        log.warning("--item-attributes: %d id(s) the model lacks, skipped (e.g. %s)",
                    len(unknown), sorted(unknown)[:3])
        table = {name: {k: v for k, v in values.items() if k not in unknown}
                 for name, values in table.items()}
    try:
        model.set_item_attributes(table)
    except ValueError as exc:
        raise CLIError(f"--item-attributes: {exc}") from None


def _read_id_table(path: Path) -> list[list[str]]:
    """Rows of a small CSV/TSV/whitespace file as lists of strings (blank lines and # comments
    skipped)."""
    rows = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append([x for x in line.replace(",", " ").replace("\t", " ").split(" ") if x])
    return rows


def cmd_add_items(args: argparse.Namespace) -> int:
    from .estimator import DeepRetrieval

    if not (args.interactions or args.features or args.neighbours):
        raise CLIError("give at least one of --interactions, --features, --neighbours")
    attributes = _read_attributes(args.item_attributes) if args.item_attributes else None
    model = DeepRetrieval.load(args.model, device="cpu")
    interactions = _read_log(args, args.interactions) if args.interactions else None
    features: dict[str, list[float]] = {}
    for row in _read_id_table(args.features) if args.features else ():
        try:
            features[row[0]] = [float(x) for x in row[1:]]
        except ValueError:
            if features:
                raise CLIError(
                    f"{args.features}: non-numeric feature in the row of item {row[0]}"
                ) from None
            continue  # a header line
    neighbours = (
        {row[0]: row[1:] for row in _read_id_table(args.neighbours)} if args.neighbours else None
    )
    try:
        new, ignored = model.add_items_by_id(
            interactions=interactions, features=features or None, neighbours=neighbours
        )
    except ValueError as exc:
        raise CLIError(f"add-items: {exc}") from None
    if ignored:
        print(f"ignored {len(ignored)} unknown neighbour id(s)", file=sys.stderr)
    _set_attributes(model, attributes)
    n = len(new)
    out = model.save(args.out or args.model)
    cold = int(model.cold_[new].sum())
    print(
        f"added {n} item(s) ({n - cold} from interactions, {cold} cold);"
        f" {model.n_items_:,} items; saved {out}"
    )
    return 0


def cmd_remove_items(args: argparse.Namespace) -> int:
    from .estimator import DeepRetrieval

    model = DeepRetrieval.load(args.model, device="cpu")
    wanted = [x.strip() for x in args.items.split(",") if x.strip()]
    known, unknown = model.item_index(wanted)
    if unknown:
        raise CLIError(
            f"unknown item id(s), nothing removed: {', '.join(map(str, unknown[:10]))}"
        )
    newly = model.remove_items(known)
    out = model.save(args.out or args.model)
    print(f"removed {newly} item(s) ({len(known) - newly} were already removed); saved {out}")
    return 0


def _read_array(path: Path, what: str) -> np.ndarray:
    """A ``.npy`` array (no pickle), or a one-line error that names the flag's file."""
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise CLIError(
            f"cannot read {what} {path} (a .npy array written by numpy.save): {exc}"
        ) from None


def _read_ids(path: Path) -> list:
    """One id per line; integers when every line is one."""
    lines = [x.strip() for x in path.read_text().splitlines() if x.strip()]
    try:
        return [int(x) for x in lines]
    except ValueError:
        return lines


def _read_positives(path: Path) -> object:
    """A scipy sparse ``.npz`` (queries × items), or one line of item positions per query."""
    if path.suffix == ".npz":
        import scipy.sparse

        return scipy.sparse.load_npz(path)
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        try:
            rows.append([int(x) for x in line.replace(",", " ").split()])
        except ValueError:
            raise CLIError(
                f"{path}:{number}: positives lines hold item positions (integers)"
            ) from None
    return rows


def cmd_index(args: argparse.Namespace) -> int:
    from .config import IndexConfig, load_config
    from .dr_index import DRIndex

    config = load_config(IndexConfig, args.config, _overrides(args))
    index = DRIndex(config, device=args.device or "cpu").fit(
        _read_array(args.items, "--items"),
        queries=_read_array(args.queries, "--queries"),
        positives=_read_positives(args.positives) if args.positives else None,
        ids=_read_ids(args.ids) if args.ids else None,
        item_bias=_read_array(args.bias, "--bias") if args.bias else None,
    )
    index.save(args.out)
    d = index.diagnostics()
    cal = d["beam_for_n"].get(100) or d["beam_for_n"][max(d["beam_for_n"])]
    print(
        f"saved {args.out}: {summary_line(index.state)}; k=100: beam {cal['beam']},"
        f" {100 * cal.get('fraction_scored', 0):.2f} % of the items scored"
    )
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .dr_index import DRIndex

    index = DRIndex.load(args.index, device=args.device or "cpu")
    queries = _read_array(args.queries, "--queries")
    ids, scores = index.search(queries, args.k, beam_size=args.beam_size)
    if ids.ndim == 1:
        ids, scores = ids[None], scores[None]
    if args.out:
        tmp = args.out.with_name(args.out.name + ".tmp.npz")  # then renamed: never half-written
        np.savez(tmp, ids=ids, scores=scores)
        os.replace(tmp, args.out)
        print(f"wrote {args.out}: ids and scores, {ids.shape[0]} × {ids.shape[1]}")
        return 0
    print("query\trank\titem\tscore")
    for q, (row, row_scores) in enumerate(zip(ids, scores, strict=True)):
        for rank, (i, sc) in enumerate(zip(row.tolist(), row_scores, strict=True), start=1):
            if not np.isfinite(sc):
                break
            print(f"{q}\t{rank}\t{i}\t{sc:.4f}")
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    import dataclasses

    from .config import BenchmarkConfig, load_config
    from .data.types import Interactions
    from .estimator import DeepRetrieval, stream_train
    from .training.stream import stream_vocabulary, time_ordered_chunks

    config = load_config(BenchmarkConfig, args.config, _overrides(args))
    name, data = _load_data(args)
    if not isinstance(data, Interactions):
        raise CLIError(
            f"{name} is a fixed train/test split without a time order; stream a time-stamped log"
            " (--ratings-file, or a data set such as movielens-latest-small)"
        )
    stream = config.stream
    if args.bundle_every:
        # Beside OUT, not inside it: the final save replaces OUT as a whole.
        bundles = args.out.with_name(args.out.name + "-bundles")
        stream = dataclasses.replace(
            stream, bundle_every=args.bundle_every, bundle_dir=str(bundles)
        )
    min_rating = config.protocol.min_rating
    vocab = stream_vocabulary(data, min_rating=min_rating)
    events = time_ordered_chunks(data, stream.chunk_size, item_ids=vocab, min_rating=min_rating)

    model = DeepRetrieval(config.dr, device=args.device or config.device)
    model = stream_train(model, events, len(vocab), stream, item_ids=vocab)  # logs each step
    model.save(
        args.out,
        training={
            "dataset": name,
            "streamed": True,
            "stream_config": to_dict(stream),
            "min_rating": min_rating,
        },
    )
    print(f"saved {args.out}: {summary_line(model.state)}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    # fastapi / uvicorn are the `serve` extra: serve() says so in one line when they are absent.
    from .serving.service import ServiceLimits, serve

    limits = ServiceLimits(
        max_n=args.max_n,
        max_history=args.max_history,
        max_batch=args.max_batch,
        max_request_beam_size=args.max_request_beam_size,
        max_body_bytes=args.max_body_bytes,
        body_timeout_s=args.body_timeout,
    )
    serve(
        args.model,
        host=args.host,
        port=args.port,
        device=args.device,
        limits=limits,
        log_level="warning" if args.quiet else "info",
        admin_token=_admin_token(args),
        bundle_root=args.bundle_root,
        reload_timeout_s=args.reload_timeout,
        access_log=args.access_log,
        batch_window_s=args.batch_window_ms / 1e3,
    )
    return 0


def _add_attributes_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--item-attributes", type=Path, metavar="FILE",
        help="CSV 'item,NAME,…' (a header, then one row per item): attributes the service's and"
        " recommend's where filter can select on, saved with the model",
    )


def _add_admin_token_arg(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--admin-token-file", type=Path, metavar="FILE",
                   help=f"a file holding the admin token: {help}")


def _admin_token(args: argparse.Namespace) -> str | None:
    """The token of ``--admin-token-file`` (its one line), else ``$DEEP_RETRIEVAL_ADMIN_TOKEN``,
    else ``None``."""
    if args.admin_token_file is None:
        return os.environ.get("DEEP_RETRIEVAL_ADMIN_TOKEN") or None
    try:
        token = args.admin_token_file.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"cannot read --admin-token-file {args.admin_token_file}: {exc}") from None
    if not token:
        raise CLIError(f"--admin-token-file {args.admin_token_file} is empty")
    return token


def cmd_load_test(args: argparse.Namespace) -> int:
    from .config import BenchmarkConfig, load_config
    from .data.protocols import make_split
    from .serving.loadtest import run_load_test
    from .utils import atomic_write_text

    if args.histories:
        histories = list(_read_id_table(args.histories))
    else:
        config = load_config(BenchmarkConfig, None, [])
        _, data = _load_data(args)
        split = make_split(data, args.protocol, config.protocol)
        h = split.test_history
        names = split.item_ids.tolist()
        histories = [
            [names[i] for i in h.items[h.indptr[u] : h.indptr[u + 1]]] for u in range(len(h))
        ]
    histories = [row for row in histories if row]
    result = run_load_test(
        args.url,
        histories,
        n=args.n,
        clients=args.clients,
        duration_s=args.duration,
        max_requests=args.max_requests,
        reload_every_s=args.reload_every,
        reload_paths=args.reload_paths.split(",") if args.reload_paths else None,
        admin_token=_admin_token(args),
    )
    text = json.dumps(result, indent=2)
    if args.out:
        atomic_write_text(args.out, text + "\n")
    print(text)
    if result["requests"] == 0:
        raise CLIError(f"no request reached {args.url}: {result['error_examples'][:1]}")
    return 1 if result["errors"] or result["reload_failures"] else 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="deep-retrieval",
        description="Deep Retrieval: learnable path index for candidate retrieval, with baselines"
        " and benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # -q and --log-level before the verb or after it (a verb's copy does not reset the other).
    common = _Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars or logs (warnings and errors only)")
    common.add_argument("--log-level", choices=LOG_LEVELS, default=argparse.SUPPRESS,
                        help="the library's log level (default info; -q means warning)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="on an error, the full traceback instead of one line")
    for action in common._actions:
        parser._add_action(action)
    sub = parser.add_subparsers(dest="command", required=True)

    def add_verb(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    p = add_verb("benchmark", help="fit methods on one split and compare them side by side")
    _add_data_args(p)
    p.add_argument(
        "--methods",
        default="most-popular,item-cf,als,brute-force,ann-hnsw,ann-ivf,dr,dr-shared",
        help="comma-separated method names (default: all but ann-ivfpq and ann-scann); dr is DR"
        " as train produces it, dr-shared DR over the brute-force model's reranker",
    )
    p.add_argument("--k", default="10,20", help="comma-separated cut-offs (default: 10,20)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    _add_config_args(p)
    p.set_defaults(func=cmd_benchmark)

    p = add_verb(
        "ablate", help="DR ablations (J, D, penalty, beam, reranking) against brute force"
    )
    _add_data_args(p)
    p.add_argument("--k", type=_COUNT, default=10, help="cut-off (default 10)")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument(
        "--grid",
        nargs="+",
        metavar="NAME=V1,V2",
        help="values to try, e.g. --grid penalty=0,3e-5 beam_size=1,4 (names: paths_per_item,"
        " n_layers, hidden_dim, penalty, penalty_scale, init, target_recall, reranker,"
        " attention_dim, attention_negatives, beam_size; default: J 1,3; D 2,3; hidden_dim"
        " none,256; α 0,3e-6,3e-5,3e-4,3e-3; penalty_scale none,interactions; init"
        " random,kmeans; target_recall none,0.99; reranker dot,attention; attention_dim and"
        " attention_negatives not tried; B 1,2,4,…,64)",
    )
    _add_config_args(p)
    p.set_defaults(func=cmd_ablate)

    p = add_verb(
        "bench-speed",
        help="DR against exact search (torch, faiss) and HNSW, IVF, IVF-PQ, ScaNN on a synthetic"
        " corpus: recall-latency frontiers, index size, build, add/delete and training cost",
    )
    p.add_argument(
        "--n-items", required=True, help="catalogue size(s), comma-separated, e.g. 100000,1000000"
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output directory (one sub-folder per size when several)",
    )
    _add_config_args(p)
    p.set_defaults(func=cmd_bench_speed)

    p = add_verb(
        "synth", help="write a synthetic corpus (MovieLens-style ratings.csv + the planted model)"
    )
    from .data.corpus import SHAPES

    shapes = "; ".join(
        f"{k} = {u:,} users, {v:,} items, {n:,} interactions" for k, (u, v, n) in SHAPES.items()
    )
    p.add_argument("--shape", choices=sorted(SHAPES), help="a named shape: " + shapes)
    p.add_argument(
        "--scale", type=_positive, default=1.0, help="multiply the shape's counts (default 1)"
    )
    p.add_argument("--n-users", type=_COUNT)
    p.add_argument("--n-items", type=_COUNT)
    p.add_argument("--n-interactions", type=_COUNT)
    p.add_argument("--dim", type=_COUNT, default=32, help="planted embedding width (default 32)")
    p.add_argument("--seed", type=_int(0), default=0)
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.set_defaults(func=cmd_synth)

    p = add_verb("train", help="train a Deep Retrieval model and save it")
    _add_data_args(p)
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="model directory to write (checkpoints go to OUT/checkpoints)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest checkpoint in OUT/checkpoints (same data and settings)",
    )
    p.add_argument("--no-checkpoints", action="store_true", help="write no training checkpoints")
    p.add_argument(
        "--all-users",
        action="store_true",
        help="train on every user, holding no one out (for production: the all-users protocol);"
        " short histories are kept unless --set protocol.min_user_interactions=N says otherwise",
    )
    _add_attributes_arg(p)
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="default: the config's device (auto)"
    )
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = add_verb(
        "stream",
        help="train a DR model in one pass over a time-ordered log, writing bundles as it goes",
    )
    _add_data_args(p)
    p.add_argument("--out", type=Path, required=True, help="model directory to write at the end")
    p.add_argument(
        "--bundle-every",
        type=_COUNT,
        help="also write OUT-bundles/bundle-N every N interactions (the newest 3 kept; LATEST"
        " names the newest)",
    )
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="default: the config's device (auto)"
    )
    _add_config_args(p)
    p.set_defaults(func=cmd_stream)

    p = add_verb("recommend", help="recommend items for one history with a saved model")
    p.add_argument("model", type=Path, help="model directory written by `train`")
    p.add_argument(
        "--history", required=True, help="comma-separated item ids the user interacted with"
    )
    p.add_argument("-n", type=_COUNT, default=10, help="how many items (default 10)")
    p.add_argument("--beam-size", type=_COUNT, help="override the beam size")
    p.add_argument(
        "--exhaustive", action="store_true",
        help="score every item with the reranker instead of searching the index",
    )
    p.add_argument(
        "--internal-ids", action="store_true", help="--history holds internal item indices"
    )
    p.add_argument("--allow", help="comma-separated item ids: recommend only among these")
    p.add_argument(
        "--where", action="append", metavar="NAME=V1,V2",
        help="only items whose attribute NAME is one of the values (repeat for more attributes)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_recommend)

    p = add_verb(
        "index", help="build a DR index over your own item and query vectors (faiss-style)"
    )
    p.add_argument("--items", type=Path, required=True, help="(V, E) item vectors, .npy")
    p.add_argument(
        "--queries", type=Path, required=True,
        help="(Q, E) a sample of query vectors (e.g. your user tower's outputs), .npy",
    )
    p.add_argument("--ids", type=Path, help="item ids, one per line (default 0 .. V-1)")
    p.add_argument("--bias", type=Path, help="(V,) per-item bias of the score, .npy")
    p.add_argument(
        "--positives", type=Path,
        help="observed query → items pairs: one line of item positions (rows of --items) per"
        " query, or a scipy sparse (Q, V) .npz; default: each query's exact top distill_k",
    )
    p.add_argument("--out", type=Path, required=True, help="index directory to write")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--config", type=Path, help="TOML or JSON file of IndexConfig settings")
    p.add_argument(
        "--set", nargs="+", action="append", metavar="KEY=VALUE",
        help="override one setting, e.g. --set structure.n_nodes=100 train.distill_k=20",
    )
    p.set_defaults(func=cmd_index)

    p = add_verb("search", help="search a DR index (from `index`) with query vectors")
    p.add_argument("index", type=Path, help="index directory written by `index`")
    p.add_argument("--queries", type=Path, required=True, help="(N, E) query vectors, .npy")
    p.add_argument("-k", type=_COUNT, default=10, help="results per query (default 10)")
    p.add_argument("--beam-size", type=_COUNT, help="override the calibrated beam")
    p.add_argument(
        "--out", type=Path, help="write ids and scores (N, k) to this .npz instead of printing"
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.set_defaults(func=cmd_search)

    p = add_verb("evaluate", help="evaluate a saved model on a data set's test users")
    p.add_argument("model", type=Path, help="model directory written by `train`")
    _add_data_args(p)
    p.add_argument("--k", default="20", help="comma-separated cut-offs (default 20)")
    p.add_argument("--json", type=Path, help="also write the metrics to this JSON file")
    p.add_argument(
        "--force", action="store_true",
        help="evaluate even on a split other than the model's training split (its test users"
        " may have trained the model)",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    _add_config_args(p)
    p.set_defaults(func=cmd_evaluate)

    p = add_verb("inspect", help="path-size distribution and training log of a saved model")
    p.add_argument("model", type=Path, help="model directory written by `train`")
    p.add_argument("--png", type=Path, help="histogram file (default MODEL/path_sizes.png)")
    p.set_defaults(func=cmd_inspect)

    p = add_verb(
        "add-items", help="add items to a saved model without retraining (warm or cold)"
    )
    p.add_argument("model", type=Path, help="model directory written by `train`")
    p.add_argument(
        "--interactions",
        type=Path,
        help="user,item[,rating,timestamp] log; items the model lacks are added, placed by the"
        " histories of the users who picked them (a known user's stored history comes first)",
    )
    p.add_argument(
        "--features",
        type=Path,
        help="CSV 'item,f1,f2,…' for existing and new items: new items without interactions go"
        " where their most similar existing items are (cold)",
    )
    p.add_argument(
        "--neighbours",
        type=Path,
        help="lines 'new_item,neighbour,neighbour,…' (e.g. co-occurrence lists) for cold items",
    )
    _add_column_args(p.add_argument_group("columns of --interactions (default: detected)"))
    _add_attributes_arg(p)
    p.add_argument("--out", type=Path, help="write here instead of replacing MODEL (atomically)")
    p.set_defaults(func=cmd_add_items)

    p = add_verb("remove-items", help="take items out of a saved model's index and results")
    p.add_argument("model", type=Path, help="model directory written by `train`")
    p.add_argument("--items", required=True, help="comma-separated item ids")
    p.add_argument("--out", type=Path, help="write here instead of replacing MODEL (atomically)")
    p.set_defaults(func=cmd_remove_items)

    p = add_verb(
        "serve", help="HTTP retrieval service over a saved model (FastAPI + uvicorn)"
    )
    p.add_argument("model", type=Path, help="model directory written by `train`")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=_int(1, 65535), default=8000, help="port (default 8000)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"], help="default cpu")
    p.add_argument(
        "--max-n", type=_COUNT, default=1000, help="largest n a request may ask for (default 1000)"
    )
    p.add_argument(
        "--max-history", type=_COUNT, default=1000, help="longest history (default 1000)"
    )
    p.add_argument(
        "--max-batch", type=_COUNT, default=256,
        help="most requests in one batch call (default 256)",
    )
    p.add_argument(
        "--max-request-beam-size",
        type=_COUNT,
        default=1024,
        help="largest beam_size a request may ask for (default 1024; the beam of a request"
        " without one is calibrated, up to the model's retrieval.max_beam_size)",
    )
    p.add_argument(
        "--batch-window-ms", type=_nonnegative, default=1.0,
        help="how long a request waits for concurrent ones to share its model call (default 1;"
        " 0: only those already queued, the lowest latency for a lone client)",
    )
    p.add_argument(
        "--access-log", action="store_true",
        help="one JSON line per request on stderr: ts, method, path, status, ms, client",
    )
    p.add_argument(
        "--max-body-bytes", type=_COUNT, default=1 << 20,
        help="largest request body; larger ones get 413 unparsed (default 1 MiB)",
    )
    p.add_argument(
        "--body-timeout", type=_COUNT, default=10,
        help="seconds a client may pause while sending its body before a 408 (default 10)",
    )
    _add_admin_token_arg(p, "turns the admin endpoints (/v1/reload) on; requests send"
                         " 'Authorization: Bearer TOKEN' (default: $DEEP_RETRIEVAL_ADMIN_TOKEN;"
                         " without either, admin endpoints are off)")
    p.add_argument(
        "--bundle-root",
        type=Path,
        help="reload paths must resolve inside this directory (default: MODEL's parent)",
    )
    p.add_argument(
        "--reload-timeout",
        type=_positive,
        default=120.0,
        help="seconds a reload may take before it is abandoned, the old bundle serving on"
        " (default 120)",
    )
    p.set_defaults(func=cmd_serve)

    p = add_verb(
        "load-test",
        help="drive a running service with concurrent clients; latency, throughput, errors",
    )
    p.add_argument("url", help="service base URL, e.g. http://127.0.0.1:8000")
    _add_data_args(p)
    p.add_argument(
        "--histories",
        type=Path,
        help="file of request histories, one per line (default: the data set's test users)",
    )
    p.add_argument("--clients", type=_COUNT, default=8, help="concurrent connections (default 8)")
    p.add_argument("--duration", type=_positive, default=30.0, help="seconds (default 30)")
    p.add_argument("--max-requests", type=_COUNT, help="stop after this many requests")
    p.add_argument("-n", type=_COUNT, default=100, help="items per request (default 100)")
    p.add_argument(
        "--reload-every", type=_positive, help="POST /v1/reload every S seconds during the test"
    )
    p.add_argument("--reload-paths", help="comma-separated bundles to cycle through when reloading")
    _add_admin_token_arg(p, "the service's admin token, sent with each reload (default:"
                         " $DEEP_RETRIEVAL_ADMIN_TOKEN)")
    p.add_argument("--out", type=Path, help="also write the result JSON here")
    p.set_defaults(func=cmd_load_test)

    p = add_verb("datasets", help="list registered data sets with their counts")
    p.add_argument("--data-dir", type=Path, help="where data sets live")
    p.set_defaults(func=cmd_datasets)

    p = add_verb("download", help="download a public data set (needs internet)")
    p.add_argument("name", help="movielens-20m, movielens-25m or movielens-latest-small")
    p.add_argument("--data-dir", type=Path, help="where to put it")
    p.set_defaults(func=cmd_download)
    return parser


def _progress_bars(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """Bars for the long steps inside the library (network-step batches, path scoring, path
    assignment sweeps), on a terminal only, with log lines written above them."""
    if args.quiet or args.command in ("serve", "load-test"):
        return contextlib.nullcontext()
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from .utils import show_progress

    stack = contextlib.ExitStack()
    stack.enter_context(logging_redirect_tqdm())
    # disable=None: no bars when stderr is not a terminal (CI logs, pipes).
    stack.enter_context(show_progress(lambda **kw: tqdm(leave=False, disable=None, **kw)))
    return stack


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.quiet = getattr(args, "quiet", False)
    args.debug = getattr(args, "debug", False)
    level = getattr(args, "log_level", None) or ("warning" if args.quiet else "info")
    # Our own log at INFO; other libraries' (faiss announces which build it loaded) at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    log.setLevel(level.upper())
    from .config import ConfigError
    from .data.download import DownloadError
    from .utils import MissingExtra

    try:
        with _progress_bars(args):
            return args.func(args)
    except KeyboardInterrupt:
        print(f"deep-retrieval {args.command}: interrupted", file=sys.stderr)
        return 130
    except (
        CLIError, ConfigError, DownloadError, MissingExtra, ValueError, OSError, FloatingPointError
    ) as exc:
        if args.debug:
            raise
        print(f"deep-retrieval {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug or an unforeseen case: still one line, the trace on demand
        if args.debug:
            raise
        print(f"deep-retrieval {args.command}: error: {type(exc).__name__}: {_one_line(exc)}"
              " (rerun with --debug for the traceback)", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
