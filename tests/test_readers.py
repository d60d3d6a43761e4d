"""Readers: every format on tiny synthetic files (plain, gzip, zip, directory), malformed input,
and spot checks against the real files in the shared data folder."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

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

# Three ratings used in every MovieLens format below.
USERS = [196, 186, 22]
ITEMS = [242, 302, 377]
RATINGS = [3.0, 3.5, 1.0]
TIMES = [881250949, 891717742, 878887116]


def _rows(sep: str, *, header: str | None = None) -> str:
    lines = [header] if header else []
    for u, i, r, t in zip(USERS, ITEMS, RATINGS, TIMES, strict=True):
        lines.append(sep.join([str(u), str(i), f"{r:g}", str(t)]))
    return "\n".join(lines) + "\n"


UDATA = _rows("\t")
DAT = _rows("::")
CSV = _rows(",", header="userId,movieId,rating,timestamp")


def _write(path: Path, text: str | bytes) -> Path:
    data = text.encode() if isinstance(text, str) else text
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _zip(path: Path, members: dict[str, str]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return path


def _check_ml(x: Interactions) -> None:
    assert x.users.dtype == np.int64 and x.items.dtype == np.int64
    assert x.ratings is not None and x.ratings.dtype == np.float32
    assert x.timestamps is not None and x.timestamps.dtype == np.int64
    np.testing.assert_array_equal(x.users, USERS)
    np.testing.assert_array_equal(x.items, ITEMS)
    np.testing.assert_array_equal(x.ratings, np.asarray(RATINGS, dtype=np.float32))
    np.testing.assert_array_equal(x.timestamps, TIMES)


# ---------------------------------------------------------------------------------------------
# MovieLens: every official format, plain / gz / zip / directory
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [("u.data", UDATA), ("ratings.dat", DAT), ("ratings.csv", CSV)],
)
@pytest.mark.parametrize("gz", [False, True])
def test_movielens_plain_and_gz(tmp_path: Path, name: str, text: str, gz: bool) -> None:
    path = _write(tmp_path / (name + (".gz" if gz else "")), text)
    _check_ml(read_movielens(path))
    _check_ml(read_movielens(str(path)))


@pytest.mark.parametrize(
    ("zip_name", "member", "text"),
    [
        ("ml-100k.zip", "ml-100k/u.data", UDATA),
        ("ml-1m.zip", "ml-1m/ratings.dat", DAT),
        ("ml-10m.zip", "ml-10M100K/ratings.dat", DAT),
        ("ml-20m.zip", "ml-20m/ratings.csv", CSV),
        ("ml-25m.zip", "ml-25m/ratings.csv", CSV),
        ("ml-latest-small.zip", "ml-latest-small/ratings.csv", CSV),
    ],
)
def test_movielens_official_zips(tmp_path: Path, zip_name: str, member: str, text: str) -> None:
    top = member.split("/")[0]
    # Decoys as in the real archives: folds of ml-100k, other csv files of ml-20m.
    members = {
        f"{top}/": "",
        f"{top}/u1.base": "1\t1\t1\t1\n",
        f"{top}/movies.csv": "movieId,title\n",
    }
    members[member] = text
    _check_ml(read_movielens(_zip(tmp_path / zip_name, members)))


@pytest.mark.parametrize(
    ("name", "text"), [("u.data.gz", UDATA), ("ratings.dat", DAT), ("ratings.csv.gz", CSV)]
)
def test_movielens_directory(tmp_path: Path, name: str, text: str) -> None:
    _write(tmp_path / "ml" / name, text)
    _write(tmp_path / "ml" / "movies.csv", "movieId,title\n")
    _check_ml(read_movielens(tmp_path / "ml"))


def test_movielens_directory_with_zip(tmp_path: Path) -> None:
    _zip(tmp_path / "ml-20m.zip", {"ml-20m/ratings.csv": CSV})
    _check_ml(read_movielens(tmp_path))


@pytest.mark.parametrize("text", [UDATA, DAT, CSV, _rows(",")])
def test_movielens_format_from_first_line(tmp_path: Path, text: str) -> None:
    # An unofficial name: the format comes from the content (csv with or without header).
    _check_ml(read_movielens(_write(tmp_path / "my_ratings.txt", text)))


def test_movielens_crlf_and_blank_lines(tmp_path: Path) -> None:
    text = CSV.replace("\n", "\r\n") + "\r\n\r\n"
    _check_ml(read_movielens(_write(tmp_path / "ratings.csv", text)))


def test_movielens_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        read_movielens(tmp_path / "nope.csv")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_dir"):
        read_movielens(tmp_path / "empty_dir")
    with pytest.raises(DataFormatError, match="without a MovieLens ratings file"):
        read_movielens(_zip(tmp_path / "other.zip", {"x/movies.csv": "movieId,title\n"}))


def _lines_with(text: str, line: int, replacement: str) -> str:
    lines = text.splitlines()
    lines[line - 1] = replacement
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("name", "text", "line", "bad", "message"),
    [
        ("u.data", UDATA, 2, "186\t302\t3.5", "expected 4 fields"),
        (
            "u.data",
            UDATA,
            3,
            "22\t377\t1\t878887116\t9",
            "expected 4 fields separated by '\\\\t', found 5",
        ),
        ("u.data", UDATA, 1, "196\t242\t3\t881250949\textra", "found 5"),  # extra field on line 1
        ("u.data", UDATA, 2, "186\t302\tgood\t891717742", "rating 'good' is not a number"),
        ("u.data", UDATA, 3, "22\t377\t1\t2001-01-01", "timestamp '2001-01-01' is not an integer"),
        ("u.data", UDATA, 2, "186\t302\t\t891717742", "rating '' is not a number"),
        ("ratings.dat", DAT, 2, "186::302::3.5", "expected 4 fields separated by '::', found 3"),
        ("ratings.dat", DAT, 3, "22:377::1::878887116", "found 3"),
        ("ratings.dat", DAT, 1, "a196::242::3::881250949", "user id 'a196' is not an integer"),
        ("ratings.csv", CSV, 3, "186,302,3.5,891717742,1", "found 5"),  # line 3: header is line 1
        ("ratings.csv", CSV, 4, "22,3x7,1.0,878887116", "item id '3x7' is not an integer"),
        (
            "ratings.csv",
            CSV,
            2,
            "196,242,3.0,881250949.5",
            "timestamp '881250949.5' is not an integer",
        ),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_movielens_malformed(
    tmp_path: Path, name: str, text: str, line: int, bad: str, message: str, gz: bool
) -> None:
    path = _write(tmp_path / (name + (".gz" if gz else "")), _lines_with(text, line, bad))
    with pytest.raises(DataFormatError, match=message) as err:
        read_movielens(path)
    assert err.value.line == line
    assert str(path) in str(err.value) and f"line {line}" in str(err.value)


def test_movielens_malformed_line_counts_blank_lines(tmp_path: Path) -> None:
    text = "1\t2\t3\t4\n\n\n5\t6\tx\t8\n"
    with pytest.raises(DataFormatError, match=r"line 4: rating 'x'"):
        read_movielens(_write(tmp_path / "u.data", text))


def test_movielens_malformed_in_zip_names_member(tmp_path: Path) -> None:
    path = _zip(tmp_path / "ml-20m.zip", {"ml-20m/ratings.csv": _lines_with(CSV, 3, "1,2,x,4")})
    with pytest.raises(DataFormatError) as err:
        read_movielens(path)
    assert str(err.value).startswith(f"{path}!ml-20m/ratings.csv, line 3: rating 'x'")


def test_movielens_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"empty\.csv"):
        read_movielens(_write(tmp_path / "empty.csv", ""))


def test_data_format_error_is_value_error() -> None:
    err = DataFormatError("f.csv", 7, "bad")
    assert isinstance(err, ValueError) and str(err) == "f.csv, line 7: bad"


# ---------------------------------------------------------------------------------------------
# Amazon ratings-only CSV
# ---------------------------------------------------------------------------------------------

AMAZON = "A1B2C3,0001234567,5.0,1234567890\nA9,B00XYZ,3.0,1400000000\n12,000000001,1.0,0\n"


@pytest.mark.parametrize("name", ["ratings_Books.csv", "ratings_Books.csv.gz"])
def test_amazon(tmp_path: Path, name: str) -> None:
    x = read_amazon_ratings(_write(tmp_path / name, AMAZON))
    assert x.users.dtype == object and x.items.dtype == object
    assert x.users.tolist() == ["A1B2C3", "A9", "12"]
    assert x.items.tolist() == ["0001234567", "B00XYZ", "000000001"]  # leading zeros kept
    np.testing.assert_array_equal(x.ratings, np.array([5, 3, 1], dtype=np.float32))
    np.testing.assert_array_equal(x.timestamps, [1234567890, 1400000000, 0])
    assert x.timestamps.dtype == np.int64


def test_amazon_2018_item_user_order(tmp_path: Path) -> None:
    # The 2018 dumps put the item (ASIN) first; "auto" recognises ASINs (ISBN-10 or B + 9 chars).
    text = "000100039X,A1RSDE90N6RSZF,5.0,1\nB00005N7P0,A2SUAM1J3GNN3B,4.0,2\n"
    path = _write(tmp_path / "Books.csv", text)
    x = read_amazon_ratings(path)
    assert x.users.tolist() == ["A1RSDE90N6RSZF", "A2SUAM1J3GNN3B"]
    assert x.items.tolist() == ["000100039X", "B00005N7P0"]
    y = read_amazon_ratings(path, order="user,item")
    assert y.users.tolist() == ["000100039X", "B00005N7P0"]
    z = read_amazon_ratings(_write(tmp_path / "r.csv", "A1RSDE90N6RSZF,000100039X,5.0,1\n"))
    assert z.users.tolist() == ["A1RSDE90N6RSZF"] and z.items.tolist() == ["000100039X"]
    with pytest.raises(ValueError, match="order must be"):
        read_amazon_ratings(path, order="items-first")


@pytest.mark.parametrize(
    ("line", "bad", "message"),
    [
        (2, "A9,B00XYZ,3.0", "expected 4 fields separated by ',', found 3"),
        (3, "12,000000001,five,0", "rating 'five' is not a number"),
        (1, ",0001234567,5.0,1234567890", "first id '' is empty"),
    ],
)
def test_amazon_malformed(tmp_path: Path, line: int, bad: str, message: str) -> None:
    path = _write(tmp_path / "ratings_Books.csv.gz", _lines_with(AMAZON, line, bad))
    with pytest.raises(DataFormatError, match=message) as err:
        read_amazon_ratings(path)
    assert err.value.line == line and err.value.path == str(path)


def test_amazon_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ratings_Books\.csv"):
        read_amazon_ratings(tmp_path / "ratings_Books.csv")


# ---------------------------------------------------------------------------------------------
# "user item item …" lines
# ---------------------------------------------------------------------------------------------

USER_ITEMS = "0 10 11 12\n1 13\n2 \n3 10 14\n"  # user 2: empty list with a trailing space


@pytest.mark.parametrize("name", ["train.txt", "test.txt.gz"])
def test_user_items_lines(tmp_path: Path, name: str) -> None:
    x = read_user_items_lines(_write(tmp_path / name, USER_ITEMS))
    np.testing.assert_array_equal(x.users, [0, 0, 0, 1, 3, 3])
    np.testing.assert_array_equal(x.items, [10, 11, 12, 13, 10, 14])
    assert x.users.dtype == np.int64 and x.items.dtype == np.int64
    assert x.ratings is None and x.timestamps is None


def test_user_items_lines_whitespace_variants(tmp_path: Path) -> None:
    text = "0\t10  11\r\n\r\n1 13\r\n2\r\n  3 10 14   \n\n"
    x = read_user_items_lines(_write(tmp_path / "t.txt", text))
    np.testing.assert_array_equal(x.users, [0, 0, 1, 3, 3])
    np.testing.assert_array_equal(x.items, [10, 11, 13, 10, 14])


def test_user_items_lines_empty(tmp_path: Path) -> None:
    for text in ["", "\n\n", "5\n6 \n"]:
        x = read_user_items_lines(_write(tmp_path / "t.txt", text))
        assert len(x) == 0 and x.users.dtype == np.int64


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("0 1 2\n1 3\n2 4 x5\n", 3, "'x5' is not a non-negative integer id"),
        ("0 1 2\n\n\n1 3.5\n", 4, "'3.5'"),
        ("u0 1 2\n", 1, "'u0'"),
        ("0 1 -2\n", 1, "'-2'"),
        ("0 1\n1 123456789012345678901234\n", 2, "too large"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_user_items_lines_malformed(
    tmp_path: Path, text: str, line: int, message: str, gz: bool
) -> None:
    path = _write(tmp_path / ("train.txt.gz" if gz else "train.txt"), text)
    with pytest.raises(DataFormatError, match=message) as err:
        read_user_items_lines(path)
    assert err.value.line == line and str(path) in str(err.value)


# ---------------------------------------------------------------------------------------------
# JSON list of lists
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["train_data.json", "train_data.json.gz"])
def test_json_lists(tmp_path: Path, name: str) -> None:
    x = read_json_lists(_write(tmp_path / name, json.dumps([[5, 3], [], [7], [3, 8, 9]])))
    np.testing.assert_array_equal(x.users, [0, 0, 2, 3, 3, 3])
    np.testing.assert_array_equal(x.items, [5, 3, 7, 3, 8, 9])
    assert x.users.dtype == np.int64 and x.items.dtype == np.int64
    assert x.ratings is None and x.timestamps is None


def test_json_lists_empty(tmp_path: Path) -> None:
    x = read_json_lists(_write(tmp_path / "e.json", "[]"))
    assert len(x) == 0


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("[[1, 2],\n [3, 4,]]", 2, "invalid JSON"),
        ('{"a": [1]}', 1, "expected a JSON list of lists, got a dict"),
        ("[[1, 2], 3]", 1, "element 1 \\(user 1\\) is a int"),
        ("[[1, 2], [3, 4.5]]", 1, "user 1, position 1: 4.5 is not an integer item id"),
        ('[[1, "2"]]', 1, "user 0, position 1: '2'"),
        ("[[1, true]]", 1, "True is not an integer"),
    ],
)
def test_json_lists_malformed(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = _write(tmp_path / "test_data.json.gz", text)
    with pytest.raises(DataFormatError, match=message) as err:
        read_json_lists(path)
    assert err.value.line == line and str(path) in str(err.value)


# ---------------------------------------------------------------------------------------------
# Generic table
# ---------------------------------------------------------------------------------------------

TABLE = "ts,who,what,stars,comment\n100,u1,i1,4.5,nice\n200,u2,i1,2,meh\n300,u1,i2,5,\n"


@pytest.mark.parametrize("name", ["log.csv", "log.csv.gz"])
def test_table_csv_by_name(tmp_path: Path, name: str) -> None:
    x = read_interactions_table(
        _write(tmp_path / name, TABLE),
        user_col="who",
        item_col="what",
        rating_col="stars",
        timestamp_col="ts",
    )
    assert x.users.tolist() == ["u1", "u2", "u1"] and x.users.dtype == object
    assert x.items.tolist() == ["i1", "i1", "i2"]
    np.testing.assert_array_equal(x.ratings, np.array([4.5, 2, 5], dtype=np.float32))
    np.testing.assert_array_equal(x.timestamps, [100, 200, 300])
    assert x.ratings.dtype == np.float32 and x.timestamps.dtype == np.int64


def test_table_positions_tsv_integer_ids(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.tsv", "7\t70\tx\n8\t80\ty\n-1\t0\tz\n")
    x = read_interactions_table(path, user_col=0, item_col=1, sep="\t", header=False)
    assert x.users.dtype == np.int64 and x.users.tolist() == [7, 8, -1]
    assert x.items.dtype == np.int64 and x.items.tolist() == [70, 80, 0]
    assert x.ratings is None and x.timestamps is None


def test_table_leading_zero_ids_stay_strings(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.csv", "u,i\n1,007\n2,7\n")
    x = read_interactions_table(path, user_col="u", item_col="i")
    assert x.users.dtype == np.int64
    assert x.items.dtype == object and x.items.tolist() == ["007", "7"]


def test_table_missing_column_lists_columns(tmp_path: Path) -> None:
    path = _write(tmp_path / "log.csv", TABLE)
    with pytest.raises(
        DataFormatError, match=r"no column 'user'.*\['ts', 'who', 'what', 'stars', 'comment'\]"
    ):
        read_interactions_table(path, user_col="user", item_col="what")
    with pytest.raises(DataFormatError, match=r"no column 9 .*positions 0\.\.4"):
        read_interactions_table(path, user_col=0, item_col=9, header=False)


@pytest.mark.parametrize(
    ("line", "bad", "message"),
    [
        (3, "200,u2,i1", "expected 5 fields separated by ',', found 3"),
        (3, "200,u2,i1,2,meh,extra", "expected 5 fields separated by ',', found 6"),
        (4, "300,u1,i2,five,", "rating \\('stars'\\) 'five' is not a number"),
        (2, "yesterday,u1,i1,4.5,nice",
         "timestamp \\('ts'\\) 'yesterday' is neither a unix time nor an ISO-8601 date"),
        (2, "100,,i1,4.5,nice", "user \\('who'\\) '' is empty"),
    ],
)
def test_table_malformed(tmp_path: Path, line: int, bad: str, message: str) -> None:
    path = _write(tmp_path / "log.csv.gz", _lines_with(TABLE, line, bad))
    with pytest.raises(DataFormatError, match=message) as err:
        read_interactions_table(
            path, user_col="who", item_col="what", rating_col="stars", timestamp_col="ts"
        )
    assert err.value.line == line and str(path) in str(err.value)


def test_table_short_row_missing_only_unmapped_fields(tmp_path: Path) -> None:
    # CSV writers often drop trailing empty fields; only mapped columns must be present.
    path = _write(tmp_path / "log.csv", "u,i,note,extra\n1,2,a,b\n3,4\n")
    x = read_interactions_table(path, user_col="u", item_col="i")
    assert x.users.tolist() == [1, 3] and x.items.tolist() == [2, 4]


def test_table_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")  # a declared dev dependency; importorskip only for clarity
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "user": pa.array([3, 1, 3], pa.int32()),
            "item": ["a", "b", "c"],
            "r": pa.array([1.5, 2.0, 3.0], pa.float64()),
            "when": pa.array([0, 1_000_000, 2_000_000], pa.timestamp("ms")),
        }
    )
    path = tmp_path / "log.parquet"
    pq.write_table(table, path)
    x = read_interactions_table(
        path, user_col="user", item_col="item", rating_col="r", timestamp_col="when"
    )
    assert x.users.dtype == np.int64 and x.users.tolist() == [3, 1, 3]
    assert x.items.dtype == object and x.items.tolist() == ["a", "b", "c"]
    assert x.ratings.dtype == np.float32 and x.ratings.tolist() == [1.5, 2.0, 3.0]
    assert x.timestamps.dtype == np.int64 and x.timestamps.tolist() == [0, 1000, 2000]
    y = read_interactions_table(path, user_col=0, item_col=1)
    assert y.users.tolist() == [3, 1, 3] and y.ratings is None
    with pytest.raises(DataFormatError, match=r"no column 'u'.*\['user', 'item', 'r', 'when'\]"):
        read_interactions_table(path, user_col="u", item_col="item")


def test_table_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.parquet"):
        read_interactions_table(tmp_path / "absent.parquet", user_col="u", item_col="i")


# ---------------------------------------------------------------------------------------------
# Spot checks against the real files (counts: see the READMEs in the shared data folder)
# ---------------------------------------------------------------------------------------------


def test_real_movielens_100k(shared_data: Path) -> None:
    x = read_movielens(shared_data / "movielens-100k" / "u.data.gz")
    assert (len(x), x.n_users, x.n_items) == (100_000, 943, 1_682)
    assert (x.users[0], x.items[0], x.ratings[0], x.timestamps[0]) == (196, 242, 3.0, 881250949)
    values, counts = np.unique(x.ratings, return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist(), strict=True)) == {
        1.0: 6_110,
        2.0: 11_370,
        3.0: 27_145,
        4.0: 34_174,
        5.0: 21_201,
    }
    assert (x.timestamps.min(), x.timestamps.max()) == (874724710, 893286638)


def test_real_amazon_book_empty_test_lists(shared_data: Path) -> None:
    x = read_user_items_lines(shared_data / "amazon-book-kgat" / "test.txt.gz")
    # 70,679 lines of which 88 hold a user with an empty test list.
    assert len(x) == 193_920 and x.n_users == 70_679 - 88


def test_real_gowalla_train_lines_sorted(shared_data: Path) -> None:
    x = read_user_items_lines(shared_data / "gowalla-lightgcn" / "train.txt.gz")
    assert len(x) == 810_128 and x.n_users == 29_858
    # Rebuilt train file: items ascending within each user's line, users in order 0..29857.
    same_user = x.users[1:] == x.users[:-1]
    assert np.all(x.items[1:][same_user] > x.items[:-1][same_user])
    assert np.all(np.diff(x.users) >= 0)


def test_diagnosis_line_table_is_block_independent() -> None:
    # The diagnosis scans the raw bytes in blocks cut at line ends; the result must not depend on
    # where the blocks fall (tiny blocks, lines longer than a block, CRLF, blank lines, no final
    # \n).
    from deep_retrieval.data.readers import _data_lines

    data = b"h,e,a,d\r\n1,2,3,4\r\n\r\n5,6,7\n\n8,9,10,11,12,13,14,15\n16,17,18,19"
    want_lines, want_counts = _data_lines(data, ",", header=True)
    assert want_lines.tolist() == [2, 4, 6, 7] and want_counts.tolist() == [3, 2, 7, 3]
    for block in (1, 3, 7, 16, 1000):
        lines, counts = _data_lines(data, ",", header=True, block=block)
        assert lines.tolist() == want_lines.tolist() and counts.tolist() == want_counts.tolist()


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
@pytest.mark.parametrize(
    ("value_line", "count_line", "want"), [(54, 81, 54), (90, 41, 41), (None, 77, 77)]
)
def test_diagnosis_across_chunks(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    chunk_rows: int,
    value_line: int | None,
    count_line: int,
    want: int,
) -> None:
    # The diagnosis re-parses in chunks; the first bad line must be found wherever chunks fall.
    import functools

    from deep_retrieval.data import readers

    monkeypatch.setattr(
        readers,
        "_diagnose_delimited",
        functools.partial(readers._diagnose_delimited, chunk_rows=chunk_rows),
    )
    lines = ["userId,movieId,rating,timestamp"] + [
        f"{k},{k + 1},4.0,{1000 + k}" for k in range(1, 100)
    ]
    if value_line:
        lines[value_line - 1] = "5,6,?,7"
    lines[count_line - 1] = "5,6,7"
    with pytest.raises(DataFormatError) as err:
        read_movielens(_write(tmp_path / "ratings.csv.gz", "\n".join(lines) + "\n"))
    assert err.value.line == want
    assert ("found 3" if want == count_line else "rating '?'") in str(err.value)


def test_table_quoted_fields(tmp_path: Path) -> None:
    text = 'u,i,r,note\n1,2,3.0,"a, quoted"\n2,3,4.0,plain\n3,4,oops,"b, c"\n'
    path = _write(tmp_path / "log.csv", text)
    with pytest.raises(
        DataFormatError, match="line 4: rating \\('r'\\) 'oops' is not a number"
    ) as err:
        read_interactions_table(path, user_col="u", item_col="i", rating_col="r")
    assert err.value.line == 4
    x = read_interactions_table(
        _write(tmp_path / "ok.csv", text.replace("oops", "5")), user_col="u", item_col="i"
    )
    assert x.users.tolist() == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# Format detection (read_ratings_file, used by `--ratings-file`)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("u.data", UDATA),
        ("ratings.dat.gz", DAT),
        ("ratings.csv", CSV),
        ("noheader.csv", _rows(",")),
    ],
)
def test_ratings_file_movielens(tmp_path: Path, name: str, text: str) -> None:
    _check_ml(read_ratings_file(_write(tmp_path / name, text)))


def test_ratings_file_movielens_zip_and_dir(tmp_path: Path) -> None:
    _check_ml(read_ratings_file(_zip(tmp_path / "ml-1m.zip", {"ml-1m/ratings.dat": DAT})))
    _write(tmp_path / "d" / "ratings.csv", CSV)
    _check_ml(read_ratings_file(tmp_path / "d"))


def test_ratings_file_amazon_and_generic(tmp_path: Path) -> None:
    x = read_ratings_file(_write(tmp_path / "ratings_Books.csv.gz", AMAZON))
    assert x.users.tolist() == ["A1B2C3", "A9", "12"] and x.timestamps is not None
    y = read_ratings_file(_write(tmp_path / "a.csv", "user_id,ITEM_ID,score\nu1,7,1.5\nu2,8,2\n"))
    assert (
        y.users.tolist() == ["u1", "u2"]
        and y.items.tolist() == [7, 8]
        and y.ratings.tolist() == [1.5, 2.0]
    )
    assert y.timestamps is None
    z = read_ratings_file(_write(tmp_path / "b.tsv", "1\t2\t3.5\n4\t5\t1\n"))
    assert z.users.tolist() == [1, 4] and z.ratings.tolist() == [3.5, 1.0] and z.timestamps is None


def test_ratings_file_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "log.parquet"
    pq.write_table(
        pa.table({"userId": [1, 2], "movieId": [3, 4], "rating": [5.0, 4.0], "other": ["a", "b"]}),
        path,
    )
    x = read_ratings_file(path)
    assert (
        x.users.tolist() == [1, 2]
        and x.items.tolist() == [3, 4]
        and x.ratings.tolist() == [5.0, 4.0]
    )
    pq.write_table(pa.table({"a": [1], "b": [2]}), path)
    with pytest.raises(
        DataFormatError,
        match=r"columns among \['a', 'b'\]; name them with --user-col and --item-col"
        r" \(user_col=, item_col= in Python\)$",
    ):
        read_ratings_file(path)


def test_ratings_file_undetectable(tmp_path: Path) -> None:
    with pytest.raises(
        DataFormatError,
        match=r"line 1: cannot tell the user and item columns.*--user-col and --item-col",
    ):
        read_ratings_file(_write(tmp_path / "a.csv", "who,what\nx,y\n"))
    with pytest.raises(DataFormatError, match="empty"):
        read_ratings_file(_write(tmp_path / "e.csv", ""))
    with pytest.raises(DataFormatError, match="6 fields"):
        read_ratings_file(_write(tmp_path / "w.csv", "1,2,3,4,5,6\n"))
    with pytest.raises(FileNotFoundError, match=r"absent\.csv"):
        read_ratings_file(tmp_path / "absent.csv")


def test_table_quoted_fields_wrong_count(tmp_path: Path) -> None:
    # With quotes in the file the byte-level field count is skipped; pandas' parse decides.
    text = 'u,i,note\n1,2,"a, b"\n\n3,4,"c"\n5,6,"d",extra\n'
    with pytest.raises(DataFormatError) as err:
        read_interactions_table(_write(tmp_path / "q.csv", text), user_col="u", item_col="i")
    assert err.value.line == 5 and "found 4" in str(err.value)


def test_integral_floats_in_integer_columns_are_accepted(tmp_path: Path) -> None:
    # pandas' typed parse accepts "881250949.0" for an int64 column; so does the diagnosis,
    # which then points at the real problem further down.
    text = "1,2,3.0,881250949.0\n1,3,4.0,1e3\n2,2,x,5\n"
    with pytest.raises(DataFormatError, match="line 3: rating 'x'"):
        read_movielens(_write(tmp_path / "ratings.csv", text))
    ok = read_movielens(_write(tmp_path / "ok.csv", text.replace("x", "1")))
    assert ok.timestamps.tolist() == [881250949, 1000, 5]


def test_ratings_file_named_columns_and_iso_times(tmp_path: Path) -> None:
    # A customer,sku,event_time export: the columns are named, the times are ISO-8601 (with and
    # without an offset; no offset means UTC) and a date alone.
    text = (
        "customer,sku,event_time,qty\n"
        "c1,A-1,2023-11-16 21:00:27,1\n"
        "c2,A-2,2023-11-16T21:00:27+01:00,2\n"
        "c1,A-2,2023-11-17,1\n"
    )
    path = _write(tmp_path / "orders.csv", text)
    x = read_ratings_file(path, user_col="customer", item_col="sku", timestamp_col="event_time")
    assert x.users.tolist() == ["c1", "c2", "c1"] and x.items.tolist() == ["A-1", "A-2", "A-2"]
    assert x.ratings is None
    assert x.timestamps.tolist() == [1700168427, 1700168427 - 3600, 1700179200]
    # Roles not given are still detected from the header: "user" and "time" here.
    y = read_ratings_file(_write(tmp_path / "b.csv", "user,sku,time\n1,7,1700000000.9\n"),
                          item_col="sku")
    assert y.users.tolist() == [1] and y.items.tolist() == [7]
    assert y.timestamps.tolist() == [1700000000]  # decimals of unix seconds are floored
    # A headerless file takes 0-based positions; the flags' digits count.
    z = read_ratings_file(_write(tmp_path / "c.tsv", "9\tq\t1\n"), user_col="1", item_col=0)
    assert z.users.tolist() == ["q"] and z.items.tolist() == [9]


@pytest.mark.parametrize(
    ("text", "kwargs", "message"),
    [
        ("customer,sku\nc1,A\n", {"user_col": "client", "item_col": "sku"},
         r"no column 'client' for user_col \(--user-col\); the file has columns"),
        ("customer,sku\nc1,A\n", {"user_col": "customer"},
         r"line 1: cannot tell the item column among \['customer', 'sku'\]; name it with"
         r" --item-col \(item_col= in Python\)"),
        ("user,item,t\n1,2,2023-01-01\n3,4,1700000000\n", {"timestamp_col": "t"},
         r"timestamps mix unix times \('1700000000'\) and other values \('2023-01-01'\)"),
        ("user,item,t\n1,2,2023-01-01\n3,4,soon\n", {"timestamp_col": "t"},
         r"line 3: timestamp \('t'\) 'soon' is neither a unix time nor an ISO-8601 date"),
        ("1,2\n", {"user_col": "user"},
         r"no header, so --user-col takes a 0-based position \(0..1\), not 'user'"),
    ],
)
def test_ratings_file_named_columns_errors(
    tmp_path: Path, text: str, kwargs: dict[str, str], message: str
) -> None:
    with pytest.raises(DataFormatError, match=message):
        read_ratings_file(_write(tmp_path / "log.csv", text), **kwargs)


def test_parquet_iso_times(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"customer": ["a", "b"], "sku": [1, 2],
                             "at": ["2023-11-16 21:00:27", "2023-11-16"]}), path)
    x = read_ratings_file(path, user_col="customer", item_col="sku", timestamp_col="at")
    assert x.timestamps.tolist() == [1700168427, 1700092800]
