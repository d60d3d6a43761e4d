"""Property-based tests (hypothesis) over the readers and the path-assignment functions.

Readers: well-formed files of every format (random ids, ratings, timestamps, delimiters, headers,
gzip or not, CRLF, trailing newline or not, blank lines) read back exactly what was written, with
the documented dtypes; malformed files (one corrupted line, truncated or corrupt compression,
binary garbage, non-UTF-8 bytes, NaN/inf/out-of-range numbers, empty files) raise
:class:`DataFormatError` naming the file (and the corrupted line where there is one), never any
other exception type.

Assignment: the numba greedy equals its plain-Python twin, for ``assign_paths`` and for
``place_paths``; the documented invariants of ``assign_paths``, ``place_paths``,
``streaming_update``, ``PathScoreAccumulator`` and ``with_held_paths``; bad inputs raise
``ValueError`` before any kernel runs. Paths: ``PathCodec`` round trips and ordering,
``ItemPathMap``'s inverted index.

Numbers are drawn from small dyadic sets where a property needs exact float equality (sums of
multiples of 1/8 are exact in float32 and float64 alike).
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import os
import re
import string
import tempfile
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from deep_retrieval.core import assignment
from deep_retrieval.core.assignment import (
    PathScoreAccumulator,
    PathScores,
    accumulate_path_scores,
    assign_paths,
    assign_paths_reference,
    assignment_objective,
    place_paths,
    place_paths_reference,
    streaming_update,
    with_held_paths,
)
from deep_retrieval.core.paths import ItemPathMap, PathCodec, random_distinct_path_ids
from deep_retrieval.data.readers import (
    DataFormatError,
    read_amazon_ratings,
    read_interactions_table,
    read_json_lists,
    read_movielens,
    read_ratings_file,
    read_user_items_lines,
)
from deep_retrieval.data.types import Interactions

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Each test's own budget; together the file runs in well under 40 s on two cores.
# DEEP_RETRIEVAL_PROPERTY_SCALE=10 multiplies the examples for a longer bug hunt.
_SCALE = int(os.environ.get("DEEP_RETRIEVAL_PROPERTY_SCALE", "1"))
FAST = settings(
    max_examples=40 * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
SLOW = settings(
    max_examples=25 * _SCALE, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# =============================================================================================
# Helpers
# =============================================================================================


@contextmanager
def _tmpdir() -> Iterator[Path]:
    """A fresh directory per hypothesis example (pytest's tmp_path is per test, not per example)."""
    with tempfile.TemporaryDirectory(prefix="dr_props_") as d:
        yield Path(d)


def _write(path: Path, data: bytes, gz: bool = False) -> Path:
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def _join(lines: list[bytes], newline: bytes, trailing: bool) -> bytes:
    return newline.join(lines) + (newline if trailing else b"")


def _check_contract(x: Interactions) -> None:
    """The reader contract of the module docstring: equal lengths and the documented dtypes."""
    n = len(x.users)
    assert len(x.items) == n
    for ids in (x.users, x.items):
        assert ids.dtype == np.int64 or (
            ids.dtype == object and all(isinstance(v, str) for v in ids)
        )
    if x.ratings is not None:
        assert x.ratings.dtype == np.float32 and len(x.ratings) == n
        assert np.isfinite(x.ratings).all()
    if x.timestamps is not None:
        assert x.timestamps.dtype == np.int64 and len(x.timestamps) == n


@contextmanager
def _raises_format_error(path: Path, line: int | None = None) -> Iterator[None]:
    """Expect DataFormatError naming ``path`` (and ``line``, when given); any other exception
    type fails the test with its traceback."""
    with pytest.raises(DataFormatError) as err:
        yield
    message = str(err.value)
    assert str(path) in message, message
    assert err.value.problem, message
    if line is not None:
        assert err.value.line == line, message
        assert f"line {line}" in message, message


def _with_blanks(rows: list[bytes], blanks: list[list[bytes]]) -> tuple[list[bytes], list[int]]:
    """Insert the blank lines ``blanks[k]`` before row ``k``; returns the lines and each row's
    1-based line number."""
    lines: list[bytes] = []
    where: list[int] = []
    for row, run in zip(rows, blanks, strict=True):
        lines.extend(run)
        lines.append(row)
        where.append(len(lines))
    return lines, where


# --------------------------------------------------------------------------------------------
# Strategies
# --------------------------------------------------------------------------------------------

int64s = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    st.integers(-1000, 100_000),
    st.sampled_from([0, 1, INT64_MIN, INT64_MAX, 2**62, -(2**62)]),
)
nonneg_ids = st.one_of(st.integers(0, 10**6), st.integers(0, INT64_MAX))
# Finite float32 values; the sampled ones are the usual star ratings.
float32s = st.one_of(
    st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0, 3.5, 4.0, 4.5, 5.0]),
    st.floats(width=32, allow_nan=False, allow_infinity=False),
)


def blank_runs(sep: str) -> st.SearchStrategy[list[bytes]]:
    """Up to two blank lines: empty, or spaces (and tabs, unless tabs separate the fields), which
    the delimited readers skip."""
    blank = [b"", b" ", b"   "] + ([] if sep == "\t" else [b"\t", b" \t "])
    return st.lists(st.sampled_from(blank), max_size=2)


newlines = st.sampled_from([b"\n", b"\r\n"])

# Field values that are never a number (pandas and float() both refuse them): letters, minus
# the spellings of NaN and infinity, which are malformed too but tested on their own.
WORDS = st.text(string.ascii_letters, min_size=1, max_size=6)
NON_FINITE = st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e39", "-3.5e38", "1e400"])
OUT_OF_INT64 = st.sampled_from(
    ["9223372036854775808", "-9223372036854775809", "99999999999999999999", "1e19", "1e300"]
)
NOT_UTF8 = st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\x80abc", b"1\xe9"])


def _fmt_float(x: float) -> str:
    return repr(float(x))


# =============================================================================================
# Readers: well-formed files read back exactly
# =============================================================================================

ML_FORMATS = {
    # name → (separator, header or None)
    "u.data": ("\t", None),
    "ratings.dat": ("::", None),
    "ratings.csv": (",", "userId,movieId,rating,timestamp"),
    "headerless.csv": (",", None),
}


@st.composite
def ml_files(draw: st.DrawFn, ids: st.SearchStrategy[int] = int64s) -> dict:
    """A MovieLens ratings file in one of the official layouts, with what it holds."""
    fmt = draw(st.sampled_from(sorted(ML_FORMATS)))
    n = draw(st.integers(1, 8))
    users = draw(st.lists(ids, min_size=n, max_size=n))
    items = draw(st.lists(ids, min_size=n, max_size=n))
    ratings = draw(st.lists(float32s, min_size=n, max_size=n))
    times = draw(st.lists(int64s, min_size=n, max_size=n))
    sep, header = ML_FORMATS[fmt]
    rows = [
        sep.join([str(u), str(i), _fmt_float(r), str(t)]).encode()
        for u, i, r, t in zip(users, items, ratings, times, strict=True)
    ]
    if header:
        rows = [header.encode(), *rows]
    blanks = draw(st.lists(blank_runs(sep), min_size=len(rows), max_size=len(rows)))
    lines, where = _with_blanks(rows, blanks)
    newline = draw(newlines)
    return {
        "name": fmt,
        "lines": lines,
        "where": where[1:] if header else where,  # line numbers of the data rows
        "newline": newline,
        "trailing": draw(st.booleans()),
        "gz": draw(st.booleans()),
        "sep": sep,
        "users": users,
        "items": items,
        "ratings": ratings,
        "times": times,
    }


def _ml_path(d: Path, f: dict, lines: list[bytes] | None = None) -> Path:
    name = f["name"] + (".gz" if f["gz"] else "")
    data = _join(f["lines"] if lines is None else lines, f["newline"], f["trailing"])
    return _write(d / name, data, f["gz"])


def _check_ml(x: Interactions, f: dict) -> None:
    _check_contract(x)
    assert x.users.dtype == np.int64 and x.users.tolist() == f["users"]
    assert x.items.dtype == np.int64 and x.items.tolist() == f["items"]
    np.testing.assert_array_equal(x.ratings, np.asarray(f["ratings"], dtype=np.float32))
    assert x.timestamps.tolist() == f["times"]


@FAST
@given(f=ml_files(), in_zip=st.booleans())
def test_movielens_round_trip(f: dict, in_zip: bool) -> None:
    """Any MovieLens file (u.data, ratings.dat, ratings.csv with or without header; int64 ids and
    timestamps over their whole range, any finite float32 rating; LF or CRLF; blank and
    whitespace-only lines, also before the header; final newline or not; gzip or not; alone or in
    a GroupLens-style zip) reads back exactly what was written, in file order, as int64 / float32
    / int64."""
    with _tmpdir() as d:
        if in_zip and f["name"] != "headerless.csv":
            path = d / "ml-test.zip"
            with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.writestr(f"ml-test/{f['name']}", _join(f["lines"], f["newline"], f["trailing"]))
                zf.writestr("ml-test/movies.csv", "movieId,title\n")
        else:
            path = _ml_path(d, f)
        _check_ml(read_movielens(path), f)


@FAST
@given(f=ml_files(ids=nonneg_ids))
def test_ratings_file_detects_movielens(f: dict) -> None:
    """read_ratings_file recognises every MovieLens layout from the content alone (non-negative
    ids, as GroupLens writes them) and returns what read_movielens returns."""
    with _tmpdir() as d:
        path = _ml_path(d, {**f, "name": "ratings_file"})
        _check_ml(read_ratings_file(path), f)


amazon_ids = st.one_of(
    st.text(string.ascii_uppercase + string.digits, min_size=1, max_size=14),
    st.sampled_from(["0001234567", "B00XYZ1234", "A1RSDE90N6RSZF", "NA", "null", "nan", "007"]),
)


@FAST
@given(
    users=st.lists(amazon_ids, min_size=1, max_size=8),
    data=st.data(),
    newline=newlines,
    trailing=st.booleans(),
    gz=st.booleans(),
)
def test_amazon_round_trip(
    users: list[str], data: st.DataObject, newline: bytes, trailing: bool, gz: bool
) -> None:
    """Amazon ratings-only CSVs read back exactly: ids stay strings as written (leading zeros,
    "NA", "null" and "nan" included), ratings float32, timestamps int64; with ``order="auto"`` the
    two id columns come back as given or swapped, never mixed."""
    n = len(users)
    items = data.draw(st.lists(amazon_ids, min_size=n, max_size=n))
    ratings = data.draw(st.lists(float32s, min_size=n, max_size=n))
    times = data.draw(st.lists(int64s, min_size=n, max_size=n))
    blanks = data.draw(st.lists(blank_runs(","), min_size=n, max_size=n))
    rows = [
        f"{u},{i},{_fmt_float(r)},{t}".encode()
        for u, i, r, t in zip(users, items, ratings, times, strict=True)
    ]
    with _tmpdir() as d:
        path = _write(
            d / "ratings.csv", _join(_with_blanks(rows, blanks)[0], newline, trailing), gz
        )
        x = read_amazon_ratings(path, order="user,item")
        _check_contract(x)
        assert x.users.dtype == object and x.users.tolist() == users
        assert x.items.dtype == object and x.items.tolist() == items
        np.testing.assert_array_equal(x.ratings, np.asarray(ratings, dtype=np.float32))
        assert x.timestamps.tolist() == times
        y = read_amazon_ratings(path)
        assert (y.users.tolist(), y.items.tolist()) in [(users, items), (items, users)]


whitespace_runs = st.text(" \t\x0b\x0c", min_size=1, max_size=3)


@FAST
@given(
    lines=st.lists(
        st.tuples(nonneg_ids, st.lists(nonneg_ids, max_size=5), whitespace_runs, st.booleans()),
        max_size=8,
    ),
    blanks=st.lists(st.sampled_from(["", " ", "\t", "\r"]), max_size=3),
    newline=newlines,
    trailing=st.booleans(),
    gz=st.booleans(),
)
def test_user_items_lines_round_trip(
    lines: list, blanks: list[str], newline: bytes, trailing: bool, gz: bool
) -> None:
    """``user item item …`` files read back as one row per listed item, in file order, int64,
    whatever ASCII whitespace separates the ids, with blank or whitespace-only lines, lines holding
    only a user (no rows), CRLF, and any id in [0, 2**63)."""
    text: list[bytes] = []
    users: list[int] = []
    items: list[int] = []
    for k, (user, listed, ws, pad) in enumerate(lines):
        row = ws.join(str(v) for v in [user, *listed])
        text.append(((ws if pad else "") + row + (ws if pad else "")).encode())
        if k < len(blanks):
            text.append(blanks[k].encode())
        users += [user] * len(listed)
        items += listed
    with _tmpdir() as d:
        x = read_user_items_lines(_write(d / "train.txt", _join(text, newline, trailing), gz))
    _check_contract(x)
    assert x.users.dtype == np.int64 and x.items.dtype == np.int64
    assert x.users.tolist() == users and x.items.tolist() == items
    assert x.ratings is None and x.timestamps is None


@FAST
@given(
    rows=st.lists(st.lists(st.integers(INT64_MIN, INT64_MAX), max_size=5), max_size=8),
    indent=st.sampled_from([None, 0, 2]),
    gz=st.booleans(),
)
def test_json_lists_round_trip(rows: list[list[int]], indent: int | None, gz: bool) -> None:
    """A JSON list of lists reads back as (list index, item) rows in order, int64, for one-line
    and indented (multi-line) files alike; empty lists contribute no rows."""
    with _tmpdir() as d:
        path = _write(d / "train.json", json.dumps(rows, indent=indent).encode(), gz)
        x = read_json_lists(path)
    _check_contract(x)
    assert x.users.tolist() == [u for u, r in enumerate(rows) for _ in r]
    assert x.items.tolist() == [v for r in rows for v in r]
    assert x.users.dtype == np.int64 and x.items.dtype == np.int64


_PLAIN_INT = re.compile(r"-?(?:0|[1-9]\d{0,17})")
str_ids = st.one_of(
    st.text(string.ascii_letters + string.digits + "_-.", min_size=1, max_size=8),
    st.sampled_from(["007", "NA", "null", "u1", "-0", "1e3"]),
)
table_ids = st.one_of(st.integers(-(10**18) + 1, 10**18 - 1).map(str), str_ids)
column_names = st.text(string.ascii_lowercase, min_size=1, max_size=5)


@st.composite
def tables(draw: st.DrawFn) -> dict:
    """A delimited interactions table: random columns, roles, separator, header or not."""
    n_cols = draw(st.integers(2, 5))
    names = draw(st.lists(column_names, min_size=n_cols, max_size=n_cols, unique=True))
    roles = [
        "user",
        "item",
        *draw(st.sampled_from([[], ["rating"], ["timestamp"], ["rating", "timestamp"]])),
    ]
    roles = roles[:n_cols]
    positions = dict(zip(roles, draw(st.permutations(range(n_cols)))[: len(roles)], strict=True))
    n = draw(st.integers(1, 7))
    sep = draw(st.sampled_from([",", "\t", ";", "|"]))
    all_int = draw(st.booleans())
    ids = st.integers(-(10**18) + 1, 10**18 - 1).map(str) if all_int else table_ids
    cols: list[list[str]] = [
        draw(st.lists(st.text(string.ascii_letters + " ", max_size=4), min_size=n, max_size=n))
        for _ in range(n_cols)
    ]
    values: dict[str, list] = {}
    for role, j in positions.items():
        if role in ("user", "item"):
            values[role] = draw(st.lists(ids, min_size=n, max_size=n))
            cols[j] = values[role]
        elif role == "rating":
            values[role] = draw(st.lists(float32s, min_size=n, max_size=n))
            cols[j] = [_fmt_float(r) for r in values[role]]
        else:
            values[role] = draw(st.lists(int64s, min_size=n, max_size=n))
            cols[j] = [str(t) for t in values[role]]
    return {
        "names": names,
        "positions": positions,
        "cols": cols,
        "values": values,
        "n": n,
        "sep": sep,
        "header": draw(st.booleans()),
        "newline": draw(newlines),
        "trailing": draw(st.booleans()),
        "gz": draw(st.booleans()),
        "blanks": draw(st.lists(blank_runs(sep), min_size=n + 1, max_size=n + 1)),
    }


def _table_rows(t: dict) -> list[bytes]:
    rows = [t["sep"].join(t["names"]).encode()] if t["header"] else []
    rows += [t["sep"].join(col[k] for col in t["cols"]).encode() for k in range(t["n"])]
    return rows


def _table_kwargs(t: dict) -> dict:
    key = (lambda j: t["names"][j]) if t["header"] else (lambda j: j)
    kwargs = {f"{role}_col": key(j) for role, j in t["positions"].items()}
    return dict(kwargs, sep=t["sep"], header=t["header"])


def _table_path(d: Path, t: dict, rows: list[bytes]) -> tuple[Path, list[int]]:
    lines, where = _with_blanks(rows, t["blanks"][: len(rows)])
    path = _write(d / "log.csv", _join(lines, t["newline"], t["trailing"]), t["gz"])
    return path, where


@SLOW
@given(t=tables())
def test_interactions_table_round_trip(t: dict) -> None:
    """Generic tables read back exactly: ids are int64 when every value is a plain integer
    (no leading zeros, as documented), otherwise the strings as written ("NA", "null", "007" and
    "-0" included); ratings float32; timestamps int64; unmapped columns dropped; header or 0-based
    positions; any of four separators; blank and whitespace-only lines; gzip or not."""
    with _tmpdir() as d:
        path, _ = _table_path(d, t, _table_rows(t))
        x = read_interactions_table(path, **_table_kwargs(t))
    _check_contract(x)
    for role, got in (("user", x.users), ("item", x.items)):
        want = t["values"][role]
        if all(_PLAIN_INT.fullmatch(v) for v in want):
            assert got.dtype == np.int64 and got.tolist() == [int(v) for v in want]
        else:
            assert got.dtype == object and got.tolist() == want
    if "rating" in t["values"]:
        np.testing.assert_array_equal(x.ratings, np.asarray(t["values"]["rating"], np.float32))
    else:
        assert x.ratings is None
    if "timestamp" in t["values"]:
        assert x.timestamps.tolist() == t["values"]["timestamp"]
    else:
        assert x.timestamps is None


# =============================================================================================
# Readers: malformed files raise DataFormatError naming the file and the line
# =============================================================================================


def _ml_corruptions(sep: str) -> st.SearchStrategy[tuple[int, bytes]]:
    """(field to corrupt or -1 for the whole line, replacement bytes) for a MovieLens row."""
    return st.one_of(
        st.tuples(st.sampled_from([0, 1, 3]), WORDS.map(str.encode)),  # non-numeric id / time
        st.tuples(st.just(2), WORDS.map(str.encode)),  # non-numeric rating
        st.tuples(st.just(2), NON_FINITE.map(str.encode)),  # NaN / inf / beyond float32
        st.tuples(st.sampled_from([0, 1, 3]), OUT_OF_INT64.map(str.encode)),
        st.tuples(st.sampled_from([0, 1, 3]), st.sampled_from([b"1.5", b"-0.25", b"1e-3"])),
        st.tuples(st.sampled_from([0, 1, 2, 3]), st.just(b"")),  # empty field
        st.tuples(st.sampled_from([0, 1, 2, 3]), NOT_UTF8),
        st.tuples(st.just(-1), st.sampled_from(["drop", "extra", "cut"]).map(str.encode)),
    )


def _corrupt_row(row: bytes, sep: bytes, field: int, new: bytes, rng_cut: int) -> bytes:
    parts = row.split(sep)
    if field >= 0:
        parts[field] = new
        return sep.join(parts)
    if new == b"drop":  # a field less
        return sep.join(parts[:-1])
    if new == b"extra":  # a field more
        return sep.join([*parts, b"7"])
    # cut: truncated somewhere inside the separators (a torn last line)
    cut_at = [m.start() for m in re.finditer(re.escape(sep), row)]
    return row[: cut_at[rng_cut % len(cut_at)]]


@FAST
@given(f=ml_files(), data=st.data())
def test_movielens_malformed_line(f: dict, data: st.DataObject) -> None:
    """One corrupted data line in an otherwise good MovieLens file (non-numeric id, rating or
    timestamp; NaN/inf/float32-overflowing rating; id or timestamp beyond int64 or fractional;
    an empty field; non-UTF-8 bytes; a field too few or too many; a torn line) raises
    DataFormatError naming the file and exactly that line (blank lines and the header counted).
    (Not the first line of a headerless comma file: read_movielens documents that a first line
    not starting with a number is taken for the ratings.csv header.)"""
    first = 1 if f["name"] == "headerless.csv" else 0
    assume(len(f["where"]) > first)
    k = data.draw(st.integers(first, len(f["where"]) - 1))
    field, new = data.draw(_ml_corruptions(f["sep"]))
    if f["sep"] == "::" and new == b"":
        field, new = -1, b"drop"  # "1::::3::4" is a field too few, still one bad line
    lines = list(f["lines"])
    line = f["where"][k]
    lines[line - 1] = _corrupt_row(
        lines[line - 1], f["sep"].encode(), field, new, data.draw(st.integers(0, 2))
    )
    with _tmpdir() as d:
        path = _ml_path(d, f, lines)
        with _raises_format_error(path, line):
            read_movielens(path)


@FAST
@given(
    n=st.integers(1, 6),
    k=st.integers(0, 5),
    corruption=st.one_of(
        st.tuples(st.sampled_from([0, 1]), st.sampled_from([b"", b" ", b"\t"])),
        st.tuples(st.sampled_from([0, 1]), NOT_UTF8),
        st.tuples(st.just(2), WORDS.map(str.encode) | NON_FINITE.map(str.encode)),
        st.tuples(st.just(3), WORDS.map(str.encode) | OUT_OF_INT64.map(str.encode)),
        st.tuples(st.just(-1), st.sampled_from([b"drop", b"extra", b"cut"])),
    ),
    gz=st.booleans(),
)
def test_amazon_malformed_line(n: int, k: int, corruption: tuple, gz: bool) -> None:
    """One corrupted line of an Amazon ratings CSV (empty or blank id, non-UTF-8 id, bad or
    non-finite rating, bad or out-of-range timestamp, wrong field count) raises DataFormatError
    naming the file and that line."""
    k = k % n
    rows = [f"A{u},B{u:09d},4.0,{1_400_000_000 + u}".encode() for u in range(n)]
    rows[k] = _corrupt_row(rows[k], b",", *corruption, rng_cut=k)
    with _tmpdir() as d:
        path = _write(d / "ratings_Books.csv", b"\n".join(rows) + b"\n", gz)
        with _raises_format_error(path, k + 1):
            read_amazon_ratings(path)


@SLOW
@given(
    t=tables(),
    k=st.integers(0, 6),
    data=st.data(),
)
def test_interactions_table_malformed_line(t: dict, k: int, data: st.DataObject) -> None:
    """One corrupted row of a generic table (an empty mapped id; non-numeric, NaN/inf or
    float32-overflowing rating; a timestamp that is no number or date, or beyond int64; non-UTF-8
    bytes in any column; a field too many; a row cut short before a mapped column) raises
    DataFormatError naming the file and that line. (Not a field count change on the first row of
    a headerless table: that row defines the columns, and rows may lack trailing unmapped fields,
    as documented.)"""
    k = k % t["n"]
    sep = t["sep"]
    role = data.draw(st.sampled_from([*sorted(t["positions"]), "any", "extra", "short"]))
    assume(not (role in ("extra", "short") and k == 0 and not t["header"]))
    cols = [list(c) for c in t["cols"]]
    if role in ("user", "item"):
        cols[t["positions"][role]][k] = data.draw(st.sampled_from(["", " "]))
    elif role == "rating":
        cols[t["positions"][role]][k] = data.draw(WORDS | NON_FINITE)
    elif role == "timestamp":
        # (Decimals such as "2.5" are unix seconds, floored, since issue 15.)
        cols[t["positions"][role]][k] = data.draw(WORDS | OUT_OF_INT64)
    rows = _table_rows({**t, "cols": cols})
    r = k + (1 if t["header"] else 0)
    if role == "any":  # non-UTF-8 bytes anywhere in the row
        parts = rows[r].split(sep.encode())
        j = data.draw(st.integers(0, len(parts) - 1))
        parts[j] = parts[j] + data.draw(NOT_UTF8)
        rows[r] = sep.encode().join(parts)
    elif role == "extra":
        rows[r] = rows[r] + sep.encode() + b"x"
    elif role == "short":  # cut before the last mapped column: a mapped field is missing
        last = max(t["positions"].values())
        rows[r] = sep.encode().join(rows[r].split(sep.encode())[:last])
    with _tmpdir() as d:
        path, where = _table_path(d, t, rows)
        with _raises_format_error(path, where[r]):
            read_interactions_table(path, **_table_kwargs(t))


@FAST
@given(
    lines=st.lists(st.lists(st.integers(0, 10**6), min_size=1, max_size=4), min_size=1, max_size=6),
    k=st.integers(0, 5),
    bad=st.one_of(
        WORDS.map(str.encode),
        st.sampled_from([b"-3", b"+3", b"3.5", b"1e3", b"0x10", b"\xd9\xa3", b"1\x002", b"7\x00"]),
        NOT_UTF8,
        st.sampled_from([b"9223372036854775808", b"99999999999999999999", b"1" * 25]),
    ),
    where=st.integers(0, 4),
    gz=st.booleans(),
)
def test_user_items_lines_malformed_token(
    lines: list[list[int]], k: int, bad: bytes, where: int, gz: bool
) -> None:
    """One bad token (letters, a sign, a fraction, Arabic-Indic digits, NUL bytes, non-UTF-8 bytes,
    an id beyond int64) in a ``user item …`` file raises DataFormatError naming the file and its
    line, even when a valid 19-digit id comes earlier."""
    k = k % len(lines)
    text = [b" ".join(str(v).encode() for v in row) for row in lines]
    text[0] += b" 9223372036854775807"  # the largest valid id, before the bad one
    tokens = text[k].split(b" ")
    tokens[where % len(tokens)] = bad
    text[k] = b" ".join(tokens)
    with _tmpdir() as d:
        path = _write(d / "train.txt", b"\n".join(text) + b"\n", gz)
        with _raises_format_error(path, k + 1):
            read_user_items_lines(path)


@FAST
@given(
    rows=st.lists(st.lists(st.integers(0, 1000), max_size=4), min_size=1, max_size=5),
    bad=st.one_of(
        st.sampled_from([1.5, "7", None, True, [1], {"a": 1}, 2**64, -(2**63) - 1]),
        st.floats(allow_nan=True, allow_infinity=True),  # 1.0 too: a float, not an int id
    ),
    pos=st.integers(0, 10),
    indent=st.sampled_from([None, 1]),
)
def test_json_lists_malformed_element(
    rows: list, bad: object, pos: int, indent: int | None
) -> None:
    """A list of lists holding one element that is not an int64 item id (float, NaN, string,
    null, bool, nested list or object, an integer beyond int64) raises DataFormatError naming the
    file."""
    u = pos % len(rows)
    rows = [list(r) for r in rows]
    rows[u].insert(pos % (len(rows[u]) + 1), bad)
    with _tmpdir() as d:
        path = _write(d / "test.json", json.dumps(rows, indent=indent).encode())
        with _raises_format_error(path):
            read_json_lists(path)


@FAST
@given(
    rows=st.lists(st.lists(st.integers(0, 1000), max_size=4), max_size=5),
    cut=st.integers(0, 200),
    junk=st.sampled_from([b"", b"]", b",", b"\xff", b"[", b"\x00"]),
)
def test_json_lists_truncated(rows: list, cut: int, junk: bytes) -> None:
    """A JSON list cut short anywhere (plus a stray byte) is either still a valid list of lists
    or raises DataFormatError naming the file, with a line number within the file."""
    full = json.dumps(rows).encode()
    data = full[: cut % (len(full) + 1)] + junk
    with _tmpdir() as d:
        path = _write(d / "test.json", data)
        try:
            x = read_json_lists(path)
        except DataFormatError as err:
            assert str(path) in str(err)
            assert err.line is None or 1 <= err.line <= data.count(b"\n") + 1
        else:
            _check_contract(x)


# --------------------------------------------------------------------------------------------
# Garbage and broken containers: every reader answers DataFormatError or a valid result
# --------------------------------------------------------------------------------------------

READERS: dict[str, Callable[[Path], Interactions]] = {
    "read_movielens": read_movielens,
    "read_ratings_file": read_ratings_file,
    "read_amazon_ratings": read_amazon_ratings,
    "read_user_items_lines": read_user_items_lines,
    "read_json_lists": read_json_lists,
    "table_header": lambda p: read_interactions_table(
        p, user_col="u", item_col="i", rating_col="r"
    ),
    "table_positions": lambda p: read_interactions_table(
        p, user_col=0, item_col=1, timestamp_col=2, sep="\t", header=False
    ),
}

GOOD_TEXT = {
    "read_movielens": b"1\t2\t3.5\t4\n5\t6\t1\t8\n",
    "read_ratings_file": b"userId,movieId,rating,timestamp\n1,2,3.5,4\n5,6,1,8\n",
    "read_amazon_ratings": b"A1,0001234567,5.0,1\nA2,B000000001,4.0,2\n",
    "read_user_items_lines": b"0 1 2\n1 3\n",
    "read_json_lists": b"[[1, 2], [3]]",
    "table_header": b"u,i,r\n1,2,3.5\n4,5,1\n",
    "table_positions": b"1\t2\t3\n4\t5\t6\n",
}

garbage = st.one_of(
    st.binary(max_size=200),
    st.lists(
        st.sampled_from(
            [
                b"1",
                b"2",
                b",",
                b"\t",
                b":",
                b"::",
                b" ",
                b"\n",
                b"\r\n",
                b'"',
                b"-",
                b".",
                b"e",
                b"nan",
                b"\xff",
                b"\x00",
                b"[",
                b"]",
                b"u",
                b"i",
            ]
        ),
        max_size=40,
    ).map(b"".join),
)


def _expect_error_or_valid(read: Callable[[Path], Interactions], path: Path) -> None:
    try:
        x = read(path)
    except DataFormatError as err:
        assert str(path) in str(err), str(err)
    else:
        _check_contract(x)


@SLOW
@given(reader=st.sampled_from(sorted(READERS)), data=garbage, gz=st.booleans())
def test_garbage_raises_data_format_error(reader: str, data: bytes, gz: bool) -> None:
    """Random bytes and random jumbles of separators, digits, quotes, NUL and non-UTF-8 bytes
    (plain or gzip-compressed) make every reader either return a result that keeps the reader
    contract or raise DataFormatError naming the file: never IndexError, KeyError,
    UnicodeDecodeError, OverflowError or a pandas error."""
    with _tmpdir() as d:
        _expect_error_or_valid(READERS[reader], _write(d / "data.txt", data, gz))


@FAST
@given(
    reader=st.sampled_from(sorted(READERS)), cut=st.integers(1, 10_000), flip=st.integers(0, 10_000)
)
def test_broken_compression_raises_data_format_error(reader: str, cut: int, flip: int) -> None:
    """A gzip file cut short, a file that starts like gzip or zip but is not one, and (for the
    readers that take Parquet) one that starts like Parquet: DataFormatError naming the file, not
    EOFError, zlib.error, BadGzipFile, BadZipFile or an Arrow error. A gzip file with a flipped
    byte (which may only hit the header's time stamp) and a "PAR1…" text for the text readers:
    DataFormatError or a valid result."""
    good = GOOD_TEXT[reader] * 50
    packed = gzip.compress(good)
    flipped = bytearray(packed)
    flipped[flip % len(flipped)] ^= 0xFF
    must_fail = {
        "truncated.gz": packed[: 1 + cut % (len(packed) - 1)],
        "fake.gz": b"\x1f\x8b" + good,
        "fake.zip": b"PK\x03\x04" + good,
    }
    may_pass = {"flipped.gz": bytes(flipped)}
    parquet = {"fake.parquet": b"PAR1" + good}
    if reader in ("table_header", "table_positions", "read_ratings_file"):
        must_fail.update(parquet)
    else:
        may_pass.update(parquet)
    with _tmpdir() as d:
        for name, data in must_fail.items():
            path = _write(d / name, data)
            with _raises_format_error(path):
                READERS[reader](path)
        for name, data in may_pass.items():
            _expect_error_or_valid(READERS[reader], _write(d / name, data))


def test_empty_files() -> None:
    """Empty and blank-only files: DataFormatError naming the file for every reader except
    read_user_items_lines, whose documented answer for no lines is an empty result."""
    with _tmpdir() as d:
        for text in (b"", b"\n\n", b"\r\n"):
            for gz in (False, True):
                path = _write(d / "empty.txt", text, gz)
                for name, read in READERS.items():
                    if name == "read_user_items_lines":
                        x = read(path)
                        assert len(x) == 0 and x.users.dtype == np.int64
                    else:
                        with _raises_format_error(path):
                            read(path)


def test_json_nested_too_deep() -> None:
    """JSON nested beyond Python's recursion limit is a DataFormatError, not a RecursionError."""
    with _tmpdir() as d:
        path = _write(d / "deep.json", b"[" * 100_000 + b"]" * 100_000)
        with _raises_format_error(path):
            read_json_lists(path)


def test_parquet_non_finite_ratings_and_shared_columns() -> None:
    """Parquet ratings that are NaN/inf (or beyond float32) raise DataFormatError like CSV ones;
    one column mapped to two roles (which returned int64 "ratings") is a ValueError for CSV and
    Parquet alike."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    with _tmpdir() as d:
        for bad in (math.nan, math.inf, -math.inf, 1e300):
            path = d / "log.parquet"
            pq.write_table(pa.table({"u": [1, 2], "i": [3, 4], "r": [1.0, bad]}), path)
            with _raises_format_error(path):
                read_interactions_table(path, user_col="u", item_col="i", rating_col="r")
        csv_path = _write(d / "log.csv", b"u,i,r\n1,2,3\n")
        for path in (csv_path, d / "log.parquet"):
            with pytest.raises(ValueError, match="rating_col and timestamp_col both name"):
                read_interactions_table(
                    path, user_col="u", item_col="i", rating_col="r", timestamp_col="r"
                )
            with pytest.raises(ValueError, match="user_col and item_col both name"):
                read_interactions_table(path, user_col="u", item_col="u")


# =============================================================================================
# Path assignment
# =============================================================================================

DYADIC = st.sampled_from([0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0])


@st.composite
def path_scores(
    draw: st.DrawFn,
    *,
    max_items: int = 10,
    max_keep: int = 6,
    paths_per_item: int | None = None,
    dyadic: bool = False,
) -> tuple[PathScores, int]:
    """Random PathScores (empty slots anywhere, zero scores, zero counts, repeated popular paths)
    with ``n_paths`` either small or far beyond the direct size table (sparse large ids)."""
    n_items = draw(st.integers(0, max_items))
    n_keep = draw(st.integers(0, max_keep))
    j = paths_per_item or 1
    n_pool = draw(st.integers(max(j, 1), 12))
    big = draw(st.booleans())
    stride = 7_654_321_001 if big else 1
    n_paths = n_pool * stride if big else draw(st.integers(n_pool, n_pool + 20))
    scores_st = DYADIC if dyadic else st.one_of(DYADIC, st.floats(0, 100))
    ids = np.full((n_items, n_keep), -1, dtype=np.int64)
    vals = np.zeros((n_items, n_keep))
    for v in range(n_items):
        k = draw(st.integers(0, min(n_keep, n_pool)))
        chosen = draw(st.lists(st.integers(0, n_pool - 1), min_size=k, max_size=k, unique=True))
        slots = draw(st.permutations(range(n_keep)))[:k]
        for slot, c in zip(slots, chosen, strict=True):
            ids[v, slot] = c * stride
            vals[v, slot] = draw(scores_st)
    counts = np.asarray(
        draw(st.lists(st.integers(0, 4), min_size=n_items, max_size=n_items)), dtype=np.int64
    )
    return PathScores(ids, vals, counts), n_paths


@st.composite
def assign_cases(draw: st.DrawFn, dyadic: bool = False) -> dict:
    j = draw(st.integers(1, 4))
    scores, n_paths = draw(path_scores(paths_per_item=j, dyadic=dyadic))
    previous = None
    if draw(st.booleans()):
        rng = np.random.default_rng(draw(st.integers(0, 2**32)))
        pool = np.unique(
            np.concatenate(
                [
                    scores.path_ids[scores.path_ids >= 0],
                    random_distinct_path_ids(1, j, n_paths, rng)[0],
                    rng.integers(0, n_paths, size=j),
                ]
            )
        )
        previous = (
            np.stack([rng.choice(pool, size=j, replace=False) for _ in range(scores.n_items)])
            if scores.n_items
            else np.zeros((0, j), dtype=np.int64)
        )
    return {
        "scores": scores,
        "kwargs": {
            "paths_per_item": j,
            "penalty": draw(
                st.one_of(st.just(0.0), st.floats(0, 10), st.sampled_from([1e-3, 1e6]))
            ),
            "n_paths": n_paths,
            "n_sweeps": draw(st.integers(1, 4)),
            "previous": previous,
            "rng": draw(st.integers(0, 2**32)),
            "power": draw(st.one_of(st.sampled_from([1.0, 2.0, 4.0]), st.floats(1, 6))),
        },
    }


def _same_objective(a: list[float], b: list[float]) -> bool:
    return all(
        x == y or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x, y in zip(a, b, strict=True)
    )


@SLOW
@given(case=assign_cases())
def test_assign_paths_equals_reference(case: dict) -> None:
    """The numba greedy and its plain-Python twin return identical paths and identical stats
    (objective to rounding) for any V, S, J, penalty ≥ 0, power ≥ 1, n_paths (small, or beyond the
    direct table so that ids are remapped), empty slots, zero scores, zero counts,
    previous or not."""
    fast = assign_paths(case["scores"], **case["kwargs"])
    ref = assign_paths_reference(case["scores"], **case["kwargs"])
    np.testing.assert_array_equal(fast[0], ref[0])
    assert fast[0].dtype == np.int64
    for key in ("n_changed", "largest_path_size", "n_active_items"):
        assert fast[1][key] == ref[1][key], key
    assert _same_objective(fast[1]["objective"], ref[1]["objective"])


@SLOW
@given(case=assign_cases())
def test_assign_paths_invariants(case: dict) -> None:
    """For any input: J distinct valid path ids per item; fixed items (N_v = 0 or no candidates)
    keep ``previous``; an active item's first min(J, #candidates) paths are its candidates and the
    rest are its ``previous`` paths in order, skipping chosen ones (both documented); the stats are
    consistent with the result (``objective`` = assignment_objective, ``largest_path_size``);
    deterministic for a seed."""
    scores, kw = case["scores"], case["kwargs"]
    out, stats = assign_paths(scores, **kw)
    j, n_paths = kw["paths_per_item"], kw["n_paths"]
    assert out.shape == (scores.n_items, j) and out.dtype == np.int64
    assert ((out >= 0) & (out < n_paths)).all()
    assert all(len(set(row)) == j for row in out.tolist())
    assert len(stats["objective"]) == len(stats["n_changed"]) == kw["n_sweeps"]
    assert (
        math.isclose(
            stats["objective"][-1],
            assignment_objective(scores, out, kw["penalty"], kw["power"]),
            rel_tol=1e-12,
            abs_tol=1e-12,
        )
        or stats["objective"][-1] == -math.inf
    )
    sizes = np.unique(out, return_counts=True)[1]
    assert stats["largest_path_size"] == (int(sizes.max()) if sizes.size else 0)
    cands = [[int(c) for c in row if c >= 0] for row in scores.path_ids]
    active = [scores.counts[v] > 0 and len(cands[v]) > 0 for v in range(scores.n_items)]
    assert stats["n_active_items"] == sum(active)
    previous = kw["previous"]
    for v, row in enumerate(out.tolist()):
        if not active[v]:
            if previous is not None:
                assert row == previous[v].tolist()
            continue
        n_cand = min(j, len(cands[v]))
        assert set(row[:n_cand]) <= set(cands[v])
        if previous is not None:
            assert (
                row[n_cand:]
                == [c for c in previous[v].tolist() if c not in row[:n_cand]][: j - n_cand]
            )
    again, _ = assign_paths(scores, **kw)
    np.testing.assert_array_equal(out, again)


@SLOW
@given(case=assign_cases(dyadic=True))
def test_assign_paths_objective_never_decreases_for_one_path(case: dict) -> None:
    """With J = 1 every step from sweep 2 on is the exact coordinate step (the docstring: an item's
    paths are released, then it picks the best candidate with all other items fixed, and its
    current path is one of its candidates), so the objective after each sweep is never below the
    objective after sweep 1. (For J > 1 the greedy fills the J slots one at a time, which is not an
    exact maximisation, and nothing is claimed.) With penalty 0 the chosen paths are the top-J
    candidates by score, ties to the earlier slot."""
    previous = case["kwargs"]["previous"]
    kw = dict(
        case["kwargs"], paths_per_item=1, previous=None if previous is None else previous[:, :1]
    )
    scores = case["scores"]
    _, stats = assign_paths(scores, **kw)
    obj = stats["objective"]
    for before, after in itertools.pairwise(obj):
        assert after >= before - 1e-9 * max(1.0, abs(before)) or before == -math.inf
    j = case["kwargs"]["paths_per_item"]
    out, _ = assign_paths(scores, **dict(case["kwargs"], penalty=0.0))
    for v in range(scores.n_items):
        if scores.counts[v] == 0:
            continue
        slots = [k for k in range(scores.n_keep) if scores.path_ids[v, k] >= 0]
        ranked = sorted(slots, key=lambda k: -scores.scores[v, k])  # stable: earlier slot first
        top = [int(scores.path_ids[v, k]) for k in ranked[:j]]
        assert out[v, : len(top)].tolist() == top


@st.composite
def place_cases(draw: st.DrawFn) -> dict:
    """New items with at least J scored candidates (plus empty and zero-score slots, zero counts,
    equal scores), fixed sizes on the same paths (repeated ids, zero sizes), small or sparse large
    path ids, any penalty ≥ 0 and power ≥ 1 (integral powers as Python ints and as floats)."""
    j = draw(st.integers(1, 4))
    n_items = draw(st.integers(0, 10))
    n_keep = draw(st.integers(j, 8))
    n_pool = draw(st.integers(n_keep, 14))
    stride = draw(st.sampled_from([1, 7_654_321_001]))
    positive = st.one_of(st.sampled_from([0.125, 0.25, 0.5, 1.0, 3.0]), st.floats(1e-3, 100))
    ids = np.full((n_items, n_keep), -1, dtype=np.int64)
    vals = np.zeros((n_items, n_keep))
    for v in range(n_items):
        k = draw(st.integers(j, n_keep))
        chosen = draw(st.lists(st.integers(0, n_pool - 1), min_size=k, max_size=k, unique=True))
        slots = draw(st.permutations(range(n_keep)))[:k]
        n_zero = draw(st.integers(0, k - j))  # listed with score 0: no candidate
        for i, (slot, c) in enumerate(zip(slots, chosen, strict=True)):
            ids[v, slot] = c * stride
            vals[v, slot] = 0.0 if i < n_zero else draw(positive)
    def ints(lo: int, hi: int, n: int) -> np.ndarray:
        return np.asarray(draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)), np.int64)

    counts = ints(0, 4, n_items)
    n_fixed = draw(st.integers(0, 12))
    fixed = (ints(0, n_pool + 2, n_fixed) * stride, ints(0, 60, n_fixed))
    return {
        "scores": PathScores(ids, vals, counts),
        "fixed": fixed,
        "kwargs": {
            "paths_per_item": j,
            "penalty": draw(
                st.one_of(st.just(0.0), st.floats(0, 10), st.sampled_from([1e-3, 1e6]))
            ),
            "n_sweeps": draw(st.integers(1, 4)),
            "power": draw(st.one_of(st.sampled_from([1, 2, 4, 1.0, 4.0]), st.floats(1, 6))),
        },
    }


@SLOW
@given(case=place_cases())
def test_place_paths_equals_reference(case: dict) -> None:
    """The compiled placement and its plain-Python twin return identical paths; each row holds J
    distinct scored candidates of its item; the result is deterministic."""
    scores, fixed, kw = case["scores"], case["fixed"], case["kwargs"]
    fast = place_paths(scores, fixed, **kw)
    np.testing.assert_array_equal(fast, place_paths_reference(scores, fixed, **kw))
    assert fast.dtype == np.int64 and fast.shape == (scores.n_items, kw["paths_per_item"])
    for row, ids, vals in zip(fast.tolist(), scores.path_ids, scores.scores, strict=True):
        assert len(set(row)) == len(row) and set(row) <= set(ids[vals > 0].tolist())
    np.testing.assert_array_equal(place_paths(scores, fixed, **kw), fast)


BAD_PLACE = {
    "too few scored candidates": ("vals", np.array([[0.5, 0.0, 0.0], [1.0, 0.5, 0.0]])),
    "fixed shapes differ": ("fixed", (np.array([1, 2]), np.array([3]))),
    "fixed 2-D": ("fixed", (np.array([[1, 2]]), np.array([[3, 1]]))),
    "fixed negative id": ("fixed", (np.array([-1]), np.array([3]))),
    "fixed negative size": ("fixed", (np.array([1]), np.array([-3]))),
    "fixed float sizes": ("fixed", (np.array([1]), np.array([3.0]))),
    "penalty nan": ("penalty", math.nan),
    "penalty negative": ("penalty", -1.0),
    "J zero": ("j", 0),
    "J fractional": ("j", 1.5),
    "n_sweeps zero": ("n_sweeps", 0),
    "power below 1": ("power", 0.5),
}


@FAST
@given(bad=st.sampled_from(sorted(BAD_PLACE)), reference=st.booleans())
def test_place_paths_rejects_bad_input(bad: str, reference: bool) -> None:
    """Items short of J scored candidates, malformed fixed sizes, bad penalty, J, n_sweeps or
    power: ValueError with a message from both implementations."""
    case = {"vals": np.array([[0.5, 0.25, 0.0], [1.0, 0.5, 0.25]]),
            "fixed": (np.array([1]), np.array([3])),
            "penalty": 0.1, "j": 2, "n_sweeps": 2, "power": 4}
    field, value = BAD_PLACE[bad]
    case[field] = value
    fn = place_paths_reference if reference else place_paths
    scores = PathScores(np.array([[0, 1, 2], [2, 3, 4]]), case["vals"], np.array([1, 2]))
    with pytest.raises(ValueError, match=r"\w"):
        fn(scores, case["fixed"], paths_per_item=case["j"], penalty=case["penalty"],
           n_sweeps=case["n_sweeps"], power=case["power"])


# --------------------------------------------------------------------------------------------
# Streaming updates, accumulation, held paths
# --------------------------------------------------------------------------------------------


@st.composite
def batches(draw: st.DrawFn, n_items: int, n_paths: int = 12, dyadic: bool = True) -> tuple:
    """``(items (N,), path_ids (N, S'), probs (N, S'))`` with padding and repeated paths."""
    n = draw(st.integers(0, 12)) if n_items else 0
    width = draw(st.integers(1, 4))
    items = np.asarray(
        draw(st.lists(st.integers(0, max(n_items - 1, 0)), min_size=n, max_size=n)), dtype=np.int64
    )
    ids = np.asarray(
        draw(st.lists(st.integers(-1, n_paths - 1), min_size=n * width, max_size=n * width)),
        dtype=np.int64,
    ).reshape(n, width)
    value = DYADIC if dyadic else st.floats(0, 10)
    probs = np.asarray(
        draw(st.lists(value, min_size=n * width, max_size=n * width)), dtype=np.float64
    ).reshape(n, width)
    return items, ids, probs


def _assert_rows_sorted(ps: PathScores, rows: list[int] | range) -> None:
    for v in rows:
        ids, vals = ps.path_ids[v], ps.scores[v]
        filled = int((ids >= 0).sum())
        assert (ids[:filled] >= 0).all() and (ids[filled:] == -1).all()  # empty slots last
        assert (vals[filled:] == 0).all() and (vals >= 0).all() and np.isfinite(vals).all()
        keys = list(zip(-vals[:filled], ids[:filled], strict=True))
        assert keys == sorted(keys) and len(set(ids[:filled].tolist())) == filled


def _stream_model(state: PathScores, items, path_ids, probs, decay: float) -> dict[int, dict]:
    """The rules of streaming_update's docstring, one instance at a time, in plain Python."""
    rows = {
        v: {
            int(c): float(s)
            for c, s in zip(state.path_ids[v], state.scores[v], strict=True)
            if c >= 0
        }
        for v in range(state.n_items)
    }
    s_keep = state.n_keep
    for v, ids, ps in zip(items.tolist(), path_ids.tolist(), probs.tolist(), strict=True):
        old = rows[v]
        min_score = min(old.values()) if len(old) == s_keep and old else 0.0
        new = {c: decay * s for c, s in old.items()}  # only in the stored list: η·s
        for c, p in zip(ids, ps, strict=True):
            if c < 0:
                continue
            if c in new:  # in both lists (or repeated in the new one): summed
                new[c] += p
            else:  # only in the new list: η·min_score + s'
                new[c] = decay * min_score + p
        rows[v] = dict(sorted(new.items(), key=lambda cs: (-cs[1], cs[0]))[:s_keep])
    return rows


@SLOW
@given(data=st.data(), decay=st.one_of(st.just(1.0), st.floats(0.01, 1.0)))
def test_streaming_update_follows_its_rules(data: st.DataObject, decay: float) -> None:
    """streaming_update equals a plain-Python model of its documented rules (η·s + s', η·min_score
    + s' with min_score 0 while a list is not full, η·s, repeated new paths summed, top S by score
    then path id); rows of the updated items stay top-S sorted with distinct ids; other rows and
    the input state are untouched; counts add the plain occurrences."""
    state, _ = data.draw(path_scores(max_items=6, dyadic=True))
    items, ids, probs = data.draw(batches(state.n_items))
    before = (state.path_ids.copy(), state.scores.copy(), state.counts.copy())
    out = streaming_update(state, items, ids, probs, decay=decay)
    np.testing.assert_array_equal(state.path_ids, before[0])
    np.testing.assert_array_equal(state.scores, before[1])
    np.testing.assert_array_equal(
        out.counts, before[2] + np.bincount(items, minlength=state.n_items)
    )
    model = _stream_model(state, items, ids, probs, decay)
    touched = sorted(set(items.tolist()))
    _assert_rows_sorted(out, touched)
    for v in range(state.n_items):
        if v not in touched:
            np.testing.assert_array_equal(out.path_ids[v], state.path_ids[v])
            continue
        got = {
            int(c): float(s) for c, s in zip(out.path_ids[v], out.scores[v], strict=True) if c >= 0
        }
        assert list(got) == list(model[v])
        for c, score in got.items():
            assert math.isclose(score, model[v][c], rel_tol=1e-12, abs_tol=1e-300)


@SLOW
@given(data=st.data())
def test_streaming_without_decay_or_overflow_equals_accumulation(data: st.DataObject) -> None:
    """With η = 1 and S at least the number of distinct paths an item ever gets (lists never
    overflow), streaming from an empty state equals the summed batch accumulation exactly, whatever
    the order or the split into calls."""
    n_items = data.draw(st.integers(1, 6))
    items, ids, probs = data.draw(batches(n_items))
    s_keep = max(
        [len(set(ids[items == v][ids[items == v] >= 0].tolist())) for v in range(n_items)] + [1]
    )
    s_keep += data.draw(st.integers(0, 2))
    want = accumulate_path_scores(items, ids, probs, n_items, s_keep)
    state = PathScores.empty(n_items, s_keep)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(items)), max_size=3)))
    for lo, hi in itertools.pairwise([0, *cuts, len(items)]):
        state = streaming_update(state, items[lo:hi], ids[lo:hi], probs[lo:hi], decay=1.0)
    np.testing.assert_array_equal(state.path_ids, want.path_ids)
    np.testing.assert_array_equal(state.scores, want.scores)
    np.testing.assert_array_equal(state.counts, want.counts)


@SLOW
@given(data=st.data(), n_keep=st.integers(1, 5), compact=st.booleans())
def test_accumulator_chunking_invariance(data: st.DataObject, n_keep: int, compact: bool) -> None:
    """PathScoreAccumulator gives the same result for any split of the same triples into chunks,
    any number of buckets and with or without early compaction, and it equals one
    accumulate_path_scores call (exactly, for dyadic probabilities); result rows are sorted."""
    n_items = data.draw(st.integers(0, 8))
    items, ids, probs = data.draw(batches(n_items, n_paths=data.draw(st.sampled_from([5, 2**40]))))
    want = accumulate_path_scores(items, ids, probs, n_items, n_keep)
    _assert_rows_sorted(want, range(n_items))
    for _ in range(2):
        cuts = sorted(data.draw(st.lists(st.integers(0, len(items)), max_size=4)))
        n_buckets = data.draw(st.sampled_from([None, 1, 2, 3, 5]))
        with mock.patch.object(
            assignment, "_COMPACT_TRIPLES", 3 if compact else assignment._COMPACT_TRIPLES
        ):
            acc = PathScoreAccumulator(n_items, n_keep, n_buckets=n_buckets)
            for lo, hi in itertools.pairwise([0, *cuts, len(items)]):
                acc.add(items[lo:hi], ids[lo:hi], probs[lo:hi])
            got = acc.result()
        np.testing.assert_array_equal(got.path_ids, want.path_ids)
        np.testing.assert_array_equal(got.scores, want.scores)
        np.testing.assert_array_equal(got.counts, want.counts)


@SLOW
@given(data=st.data())
def test_with_held_paths(data: st.DataObject) -> None:
    """with_held_paths keeps every candidate and every held path once, in S + J slots: held paths
    carry their exact held score (replacing the beam's score), the other candidates keep theirs;
    rows are sorted (score desc, path id asc, empty last); counts unchanged."""
    scores, _n_paths = data.draw(path_scores(max_items=8))
    j = data.draw(st.integers(1, 3))
    pool = sorted(set(scores.path_ids[scores.path_ids >= 0].tolist()) | set(range(j + 3)))
    held = np.asarray(
        [
            data.draw(st.lists(st.sampled_from(pool), min_size=j, max_size=j, unique=True))
            for _ in range(scores.n_items)
        ],
        dtype=np.int64,
    ).reshape(scores.n_items, j)
    held_scores = np.asarray(
        data.draw(st.lists(DYADIC | st.floats(0, 50), min_size=held.size, max_size=held.size))
    ).reshape(held.shape)
    out = with_held_paths(scores, held, held_scores)
    assert out.path_ids.shape == (scores.n_items, scores.n_keep + j)
    np.testing.assert_array_equal(out.counts, scores.counts)
    _assert_rows_sorted(out, range(scores.n_items))
    for v in range(scores.n_items):
        want = {
            int(c): float(s)
            for c, s in zip(scores.path_ids[v], scores.scores[v], strict=True)
            if c >= 0
        }
        want.update({int(c): float(s) for c, s in zip(held[v], held_scores[v], strict=True)})
        got = {
            int(c): float(s) for c, s in zip(out.path_ids[v], out.scores[v], strict=True) if c >= 0
        }
        assert got == want


# --------------------------------------------------------------------------------------------
# Invalid inputs: ValueError before any kernel runs
# --------------------------------------------------------------------------------------------


def _valid_inputs() -> dict:
    ids = np.array([[0, 3, -1], [2, -1, -1], [1, 2, 4]])
    vals = np.array([[0.5, 0.25, 0.0], [1.0, 0.0, 0.0], [0.1, 0.2, 0.3]])
    return {
        "ids": ids,
        "vals": vals,
        "counts": np.array([2, 1, 3]),
        "j": 2,
        "penalty": 0.1,
        "n_paths": 5,
        "n_sweeps": 2,
        "previous": None,
        "power": 4.0,
    }


BAD_ASSIGN = {
    # name → (field, bad value) on top of _valid_inputs()
    "nan score": ("vals", np.array([[np.nan, 0.25, 0], [1, 0, 0], [0.1, 0.2, 0.3]])),
    "inf score": ("vals", np.array([[np.inf, 0.25, 0], [1, 0, 0], [0.1, 0.2, 0.3]])),
    "negative score": ("vals", np.array([[-0.5, 0.25, 0], [1, 0, 0], [0.1, 0.2, 0.3]])),
    "scores shape": ("vals", np.zeros((3, 2))),
    "ids 1-D": ("ids", np.array([0, 1, 2])),
    "ids float": ("ids", np.array([[0.0, 3.0, -1.0], [2, -1, -1], [1, 2, 4]])),
    "ids below -1": ("ids", np.array([[0, -2, -1], [2, -1, -1], [1, 2, 4]])),
    "ids repeated": ("ids", np.array([[0, 0, -1], [2, -1, -1], [1, 2, 4]])),
    "ids uint64 overflow": (
        "ids",
        np.array([[2**63, 3, 1], [2, 1, 0], [1, 2, 4]], dtype=np.uint64),
    ),
    "id >= n_paths": ("n_paths", 4),
    "counts shape": ("counts", np.array([1, 2])),
    "counts negative": ("counts", np.array([1, -2, 3])),
    "counts float": ("counts", np.array([1.0, 2.0, 3.0])),
    "penalty negative": ("penalty", -1e-9),
    "penalty nan": ("penalty", math.nan),
    "penalty inf": ("penalty", math.inf),
    "J zero": ("j", 0),
    "J fractional": ("j", 1.5),
    "J above n_paths": ("j", 6),
    "n_sweeps zero": ("n_sweeps", 0),
    "power below 1": ("power", 0.5),
    "power nan": ("power", math.nan),
    "previous shape": ("previous", np.zeros((3, 1), dtype=np.int64)),
    "previous float": ("previous", np.zeros((3, 2))),
    "previous repeated": ("previous", np.array([[0, 1], [2, 2], [3, 4]])),
    "previous out of range": ("previous", np.array([[0, 1], [2, 5], [3, 4]])),
    "previous negative": ("previous", np.array([[0, 1], [2, -1], [3, 4]])),
}


@FAST
@given(bad=st.sampled_from(sorted(BAD_ASSIGN)), reference=st.booleans())
def test_assign_paths_rejects_bad_input(bad: str, reference: bool) -> None:
    """NaN / inf / negative scores, wrong shapes or dtypes, repeated or out-of-range path ids
    (also uint64 ids beyond int64), negative counts, penalty < 0 or not finite, bad J, n_sweeps,
    power or previous: ValueError with a message, from both implementations, never a numba crash
    or a silent result."""
    case = _valid_inputs()
    field, value = BAD_ASSIGN[bad]
    case[field] = value
    fn = assign_paths_reference if reference else assign_paths
    with pytest.raises(ValueError, match=r"\w"):
        scores = PathScores(case["ids"], case["vals"], case["counts"])
        fn(
            scores,
            paths_per_item=case["j"],
            penalty=case["penalty"],
            n_paths=case["n_paths"],
            n_sweeps=case["n_sweeps"],
            previous=case["previous"],
            rng=0,
            power=case["power"],
        )


@FAST
@given(j=st.sampled_from([1.0, 2.0, np.int32(2), np.int64(1)]))
def test_assign_paths_integral_non_int_j(j: object) -> None:
    """``paths_per_item`` given as an integral float or a numpy integer (accepted by the check "an
    integer >= 1") works in both implementations instead of failing with a TypeError."""
    ps = PathScores(
        np.array([[0, 1], [2, -1]]), np.array([[0.5, 0.25], [1.0, 0.0]]), np.array([1, 2])
    )
    fast = assign_paths(ps, paths_per_item=j, penalty=0.1, n_paths=5, rng=0)
    ref = assign_paths_reference(ps, paths_per_item=j, penalty=0.1, n_paths=5, rng=0)
    np.testing.assert_array_equal(fast[0], ref[0])
    assert fast[0].shape == (2, int(j))


BAD_BATCH = {
    "nan prob": lambda i, p, q: (i, p, np.where(q > 0, np.nan, q)),
    "inf prob": lambda i, p, q: (i, p, np.full_like(q, np.inf)),
    "negative prob": lambda i, p, q: (i, p, -q - 1),
    "item out of range": lambda i, p, q: (i + 100, p, q),
    "negative item": lambda i, p, q: (i - 100, p, q),
    "float items": lambda i, p, q: (i.astype(float), p, q),
    "ids below -1": lambda i, p, q: (i, p - 5, q),
    "ids 1-D": lambda i, p, q: (i, p[:, 0], q[:, 0]),
    "probs shape": lambda i, p, q: (i, p, q[:, :1]),
    "rows mismatch": lambda i, p, q: (i[:1], p, q),
}


@FAST
@given(
    bad=st.sampled_from(sorted(BAD_BATCH)),
    target=st.sampled_from(["stream", "accumulate", "accumulator"]),
)
def test_batch_functions_reject_bad_input(bad: str, target: str) -> None:
    """streaming_update, accumulate_path_scores and PathScoreAccumulator.add reject NaN / inf /
    negative probabilities, items outside [0, V), non-integer items, ids below -1 and mismatched
    shapes with ValueError."""
    items = np.array([0, 1, 2])
    ids = np.array([[0, 1], [2, -1], [3, 4]])
    probs = np.array([[0.5, 0.25], [1.0, 0.0], [0.1, 0.2]])
    items, ids, probs = BAD_BATCH[bad](items, ids, probs)
    with pytest.raises(ValueError, match=r"\w"):
        if target == "stream":
            streaming_update(PathScores.empty(3, 2), items, ids, probs)
        elif target == "accumulate":
            accumulate_path_scores(items, ids, probs, 3, 2)
        else:
            PathScoreAccumulator(3, 2).add(items, ids, probs)


def test_other_bad_arguments() -> None:
    """decay outside (0, 1], n_keep < 1, held paths of the wrong shape, negative / NaN held
    scores or repeated held paths: ValueError."""
    ps = PathScores(
        np.array([[0, 1], [2, -1]]), np.array([[0.5, 0.25], [1.0, 0.0]]), np.array([1, 2])
    )
    one = (np.array([0]), np.array([[1]]), np.array([[1.0]]))
    for decay in (0.0, -0.5, 1.5, math.nan, math.inf):
        with pytest.raises(ValueError, match="decay"):
            streaming_update(ps, *one, decay=decay)
    with pytest.raises(ValueError, match="n_keep"):
        accumulate_path_scores(*one, n_items=2, n_keep=0)
    with pytest.raises(ValueError):
        PathScoreAccumulator(2, 0)
    for held, held_scores in [
        (np.array([[3], [4], [5]]), np.zeros((3, 1))),
        (np.array([[3], [4]]), np.zeros((2, 2))),
        (np.array([[3], [4]]), -np.ones((2, 1))),
        (np.array([[3], [4]]), np.full((2, 1), np.nan)),
        (np.array([[3, 3], [4, 5]]), np.ones((2, 2))),
        (np.array([[3.0], [4.0]]), np.ones((2, 1))),
    ]:
        with pytest.raises(ValueError, match=r"\w"):
            with_held_paths(ps, held, held_scores)


# =============================================================================================
# PathCodec and ItemPathMap
# =============================================================================================


@st.composite
def codecs(draw: st.DrawFn) -> PathCodec:
    """Any (D, K) whose K**D fits in int64, including K = 1, D = 1 and the extremes."""
    d = draw(st.integers(1, 63))
    k_max = round(INT64_MAX ** (1 / d))  # the integer d-th root of the int64 maximum
    while k_max**d > INT64_MAX:
        k_max -= 1
    while (k_max + 1) ** d <= INT64_MAX:
        k_max += 1
    return PathCodec(n_layers=d, n_nodes=draw(st.integers(1, k_max)))


@FAST
@given(codec=codecs(), data=st.data())
def test_codec_round_trip_and_order(codec: PathCodec, data: st.DataObject) -> None:
    """decode(encode(p)) == p and encode(decode(i)) == i for any batch shape; ids lie in
    [0, K**D); ids sort like the paths lexicographically; the paths below a prefix of length d
    form the id range [prefix_id·K**(D-d), (prefix_id + 1)·K**(D-d))."""
    d, k = codec.n_layers, codec.n_nodes
    shape = tuple(data.draw(st.lists(st.integers(0, 3), max_size=2)))
    n = int(np.prod(shape))
    paths = np.asarray(
        data.draw(st.lists(st.integers(0, k - 1), min_size=n * d, max_size=n * d)), dtype=np.int64
    ).reshape(*shape, d)
    ids = codec.encode(paths)
    assert ids.shape == shape and ids.dtype == np.int64
    assert ((ids >= 0) & (ids < codec.n_paths)).all()
    np.testing.assert_array_equal(codec.decode(ids), paths)
    flat_paths, flat_ids = paths.reshape(-1, d).tolist(), ids.ravel().tolist()
    assert sorted(range(n), key=lambda r: flat_paths[r]) == sorted(
        range(n), key=lambda r: flat_ids[r]
    )
    for p, i in zip(flat_paths, flat_ids, strict=True):
        cut = data.draw(st.integers(0, d))
        prefix = 0
        for node in p[:cut]:
            prefix = prefix * k + node
        assert prefix * k ** (d - cut) <= i < (prefix + 1) * k ** (d - cut)
    some = np.asarray(
        data.draw(st.lists(st.integers(0, codec.n_paths - 1), max_size=5)), dtype=np.int64
    )
    np.testing.assert_array_equal(codec.encode(codec.decode(some)), some)


@FAST
@given(codec=codecs(), data=st.data())
def test_codec_rejects_bad_input(codec: PathCodec, data: st.DataObject) -> None:
    """Nodes outside [0, K), ids outside [0, K**D), a wrong last axis, float arrays: ValueError."""
    d, k = codec.n_layers, codec.n_nodes
    node = data.draw(st.one_of(st.integers(k, k + 5), st.integers(-5, -1)))
    bad = np.zeros(d, dtype=np.int64)
    bad[data.draw(st.integers(0, d - 1))] = node
    with pytest.raises(ValueError, match="nodes"):
        codec.encode(bad)
    with pytest.raises(ValueError, match="n_layers"):
        codec.encode(np.zeros(d + 1, dtype=np.int64))
    with pytest.raises(ValueError):
        codec.encode(np.zeros(d, dtype=float) + 0.5)
    for i in (-1, codec.n_paths):  # n_paths = K**D <= the int64 maximum, one past the last id
        with pytest.raises(ValueError, match="path ids"):
            codec.decode(np.asarray([0, i], dtype=np.int64))
    with pytest.raises(ValueError):
        codec.decode(np.asarray([2**64 - 1], dtype=np.uint64))


@st.composite
def item_maps(draw: st.DrawFn) -> tuple[np.ndarray, PathCodec, np.ndarray | None]:
    codec = PathCodec(n_layers=draw(st.integers(1, 3)), n_nodes=draw(st.integers(1, 4)))
    j = draw(st.integers(1, min(3, codec.n_paths)))
    n_items = draw(st.integers(0, 20))
    rows = [
        draw(st.lists(st.integers(0, codec.n_paths - 1), min_size=j, max_size=j, unique=True))
        for _ in range(n_items)
    ]
    ids = np.asarray(rows, dtype=np.int64).reshape(n_items, j)
    excluded = None
    if draw(st.booleans()):
        excluded = np.asarray(
            draw(st.lists(st.booleans(), min_size=n_items, max_size=n_items)), dtype=bool
        )
    return ids, codec, excluded


@FAST
@given(case=item_maps(), data=st.data())
def test_item_path_map_inverted_index(case: tuple, data: st.DataObject) -> None:
    """The inverted index lists every indexed item on each of its J paths exactly once, items
    ascending within a path; ``excluded`` items are on no path; occupied_paths are exactly the
    paths of indexed items, strictly increasing; path sizes add up to (indexed items)·J;
    items_on / items_on_batch are the union over the queried paths (-1 and unoccupied paths add
    nothing); from_index on the stored arrays rebuilds the same map."""
    ids, codec, excluded = case
    m = ItemPathMap(ids, codec, excluded=excluded)
    n_items, j = ids.shape
    excl = np.zeros(n_items, bool) if excluded is None else excluded
    table: dict[int, list[int]] = defaultdict(list)
    for v in range(n_items):
        if not excl[v]:
            for c in ids[v].tolist():
                table[c].append(v)
    assert m.occupied_paths.tolist() == sorted(table)
    assert m.path_indptr[0] == 0 and (np.diff(m.path_indptr) > 0).all()
    assert m.path_indptr[-1] == len(m.path_items) == int((~excl).sum()) * j
    for p, c in enumerate(m.occupied_paths.tolist()):
        on = m.path_items[m.path_indptr[p] : m.path_indptr[p + 1]].tolist()
        assert on == table[c]  # each item once, ascending, excluded ones absent
    assert m.path_sizes().sum() == int((~excl).sum()) * j
    assert m.largest_path_size() == max((len(v) for v in table.values()), default=0)
    queries = np.asarray(
        data.draw(
            st.lists(
                st.lists(st.integers(-1, codec.n_paths - 1), min_size=3, max_size=3), max_size=4
            )
        ),
        dtype=np.int64,
    ).reshape(-1, 3)
    indptr, items = m.items_on_batch(queries)
    for r, row in enumerate(queries.tolist()):
        want = sorted({v for c in row for v in table.get(c, [])})
        assert m.items_on(np.asarray(row)).tolist() == want
        assert items[indptr[r] : indptr[r + 1]].tolist() == want
    again = ItemPathMap.from_index(
        ids, codec, m.occupied_paths, m.path_indptr, m.path_items, excluded
    )
    for name in ("occupied_paths", "path_indptr", "path_items", "excluded"):
        np.testing.assert_array_equal(getattr(again, name), getattr(m, name))


@FAST
@given(
    case=item_maps(),
    which=st.sampled_from(["repeat", "too big", "negative", "excluded shape", "float"]),
)
def test_item_path_map_rejects_bad_input(case: tuple, which: str) -> None:
    """A path repeated within an item, ids outside [0, K**D), an ``excluded`` of the wrong
    length, float ids: ValueError."""
    ids, codec, excluded = case
    ids = ids.copy()
    assume(ids.size)
    if which == "repeat":
        assume(ids.shape[1] > 1)
        ids[0, 1] = ids[0, 0]
    elif which == "too big":
        ids[-1, -1] = codec.n_paths
    elif which == "negative":
        ids[0, 0] = -1
    elif which == "excluded shape":
        excluded = np.zeros(len(ids) + 1, dtype=bool)
    else:
        ids = ids.astype(float)
    with pytest.raises(ValueError, match=r"\w"):
        ItemPathMap(ids, codec, excluded=excluded)
