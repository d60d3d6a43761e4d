"""Readers for interaction logs on disk, each returning an :class:`.types.Interactions`.

Every reader keeps the rows in file order and the external ids as they are written in the file:
``int64`` arrays when the format (or, for generic tables, every value) uses integer ids, otherwise
``object`` arrays of ``str``. Ratings are ``float32`` and timestamps ``int64`` unix seconds, or
``None`` when the format has no such field. ``N`` is the number of rows; for the user-items and JSON
list formats it is the total number of listed items (a user with an empty list contributes no rows).

Compression is detected from the file's first bytes, not its name: gzip (``.gz``) files and the
official GroupLens zip archives are read directly, without extracting them to disk.

Parsing is vectorised (pandas' C parser, numpy on raw bytes, ``json`` + ``np.fromiter``). When the
fast parse fails, or produces values that cannot be right (missing fields), a second, slower pass
over the text finds the first bad line and raises :class:`DataFormatError` naming the file, the
1-based line and the problem. That second pass only runs on broken files, so well-formed files pay
nothing for the precise messages.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import gzip
import io
import itertools
import json
import math
import os
import re
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

from deep_retrieval.data.types import Interactions
from deep_retrieval.utils import LazyModule, require

if TYPE_CHECKING:
    import pandas as pd
else:
    # Text files are parsed by pandas (the ``pandas`` extra); Parquet by pyarrow (``parquet``).
    pd = LazyModule("pandas", "reading rating files")

__all__ = [
    "DataFormatError",
    "read_amazon_ratings",
    "read_interactions_table",
    "read_json_lists",
    "read_movielens",
    "read_ratings_file",
    "read_user_items_lines",
]


class DataFormatError(ValueError):
    """A file whose content does not match the expected format.

    Attributes:
        path: the file (for zip members ``archive.zip!member``).
        line: 1-based line number of the first bad line, or ``None`` when the problem is not tied
            to one line (a zip without a ratings file, a missing column, a bad JSON structure).
        problem: what was wrong, in words.
    """

    def __init__(self, path: str | Path, line: int | None, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        where = f"{self.path}, line {line}" if line is not None else self.path
        super().__init__(f"{where}: {problem}")


# --------------------------------------------------------------------------------------------
# Opening files: plain, gzip, zip member.
# --------------------------------------------------------------------------------------------

_GZIP_MAGIC = b"\x1f\x8b"
_ZIP_MAGIC = b"PK\x03\x04"

# What a truncated or corrupt gzip / zip stream raises while it is read.
_CORRUPT_STREAM_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error, zipfile.BadZipFile)

# Rating files inside the official GroupLens archives, in order of preference. ml-100k.zip also
# holds the u1..u5/ua/ub folds (u1.base, …); only u.data is the complete log.
_MOVIELENS_NAMES = ("ratings.csv", "ratings.dat", "u.data")


@dataclass(frozen=True)
class _Source:
    """A file to read: a path on disk, or one member of a zip archive at that path."""

    path: Path
    member: str | None = None

    @property
    def label(self) -> str:
        """How the file is named in messages: ``path`` or ``archive.zip!member``."""
        return f"{self.path}!{self.member}" if self.member else str(self.path)

    @property
    def name(self) -> str:
        """The file's base name without a ``.gz`` suffix (``ratings.csv`` for
        ``ratings.csv.gz``)."""
        base = self.member.rsplit("/", 1)[-1] if self.member else self.path.name
        return base.removesuffix(".gz")

    @contextlib.contextmanager
    def open(self) -> Iterator[IO[bytes]]:
        """Binary stream of the (decompressed) content.

        A truncated or corrupt gzip/zip stream raises :class:`DataFormatError` (not ``EOFError``,
        ``zlib.error`` or ``BadGzipFile``), whether the reader or the parser hits it.
        """
        try:
            with self._open() as fh:
                yield fh
        except _CORRUPT_STREAM_ERRORS as exc:
            raise DataFormatError(
                self.label,
                None,
                f"corrupt or truncated compressed data ({type(exc).__name__}: {exc}); "
                "download or copy the file again",
            ) from None

    @contextlib.contextmanager
    def _open(self) -> Iterator[IO[bytes]]:
        if self.member is not None:
            with zipfile.ZipFile(self.path) as zf, zf.open(self.member) as fh:
                if self.member.endswith(".gz"):
                    with gzip.open(fh, "rb") as gz:
                        yield cast(IO[bytes], gz)  # a GzipFile is a binary stream
                else:
                    yield fh
            return
        with open(self.path, "rb") as raw:
            magic = raw.read(2)
            raw.seek(0)
            if magic == _GZIP_MAGIC:
                with gzip.open(raw, "rb") as gz:
                    yield cast(IO[bytes], gz)  # a GzipFile is a binary stream
            else:
                yield raw

    def read_bytes(self) -> bytes:
        with self.open() as fh:
            return fh.read()

    def first_line(self) -> str:
        """The first non-blank line, decoded, without the line ending ("" for an empty file).

        Lines of only spaces and tabs count as blank, as pandas' parser skips them.
        """
        with self.open() as fh:
            for raw in fh:
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.strip(" \t"):
                    return line
        return ""


def _require_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(4) == _ZIP_MAGIC


def _zip_files(path: Path) -> list[str]:
    """The member files of a zip archive; :class:`DataFormatError` when it is not a valid zip."""
    try:
        with zipfile.ZipFile(path) as zf:
            return [m for m in zf.namelist() if not m.endswith("/")]
    except zipfile.BadZipFile as exc:
        raise DataFormatError(
            path,
            None,
            f"starts like a zip archive but is not a valid one ({exc}); a truncated copy?",
        ) from None


def _plain_source(path: str | Path) -> _Source:
    """A single-file source: plain or gzip (zip archives are accepted when they hold one file)."""
    path = Path(path)
    _require_file(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "Expected a file, got a directory", str(path))
    if _is_zip(path):
        files = _zip_files(path)
        if len(files) != 1:
            raise DataFormatError(
                path,
                None,
                f"zip archive with {len(files)} files; extract the one to read and pass its path",
            )
        return _Source(path, files[0])
    return _Source(path)


# --------------------------------------------------------------------------------------------
# Delimited text: fast pandas parse, precise diagnosis on failure.
# --------------------------------------------------------------------------------------------

# Kinds of a field: "int" → int64, "float" → float32, "id" → int64 if every value is a plain
# integer else str, "str" → str, "time" → int64 unix seconds from unix times or ISO-8601 dates,
# "any" → read as str and discarded (unmapped columns).
_Field = tuple[str, str]  # (kind, name used in messages)

# Integer ids without leading zeros ("007" must not become 7 and collide with "7") and short
# enough for int64.
_PLAIN_INT_ID_RE = r"-?(?:0|[1-9]\d{0,17})"


class _Malformed(Exception):
    """Internal: the fast parse found values that cannot be right; diagnose the text."""


# OverflowError: an integer field beyond int64 / uint64 ("Overflow" from the C parser).
def _parse_errors() -> tuple[type[BaseException], ...]:
    return (
        ValueError,
        TypeError,
        OverflowError,
        pd.errors.ParserError,
        pd.errors.ParserWarning,
        _Malformed,
    )


@contextlib.contextmanager
def _parser_warnings_as_errors() -> Iterator[None]:
    # A first line with extra fields is silently folded into an index, or dropped with a
    # ParserWarning; make it an error so that the diagnosis runs.
    # Casting a value beyond float32 (or "inf") warns inside pandas; the value is rejected anyway.
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        warnings.simplefilter("error", pd.errors.ParserWarning)
        yield


def _csv_frame(
    fh: IO[bytes],
    sep: str,
    fields: Sequence[_Field],
    *,
    header: bool,
    as_text: bool,
    nrows: int | None = None,
    chunksize: int | None = None,
) -> pd.DataFrame:
    """Run pandas' C parser; columns ``f0, f1, …`` (and ``_gap1, …`` for ``"::"``).

    ``as_text``: every column as str (for the diagnosis) instead of the fields' dtypes. ``"::"``
    (MovieLens 1M/10M) is split on ``":"``, because the C parser only splits on single characters;
    the empty ``_gap`` columns between the two colons must then be empty (NaN). With
    ``chunksize`` an iterator of frames is returned (call it inside ``_parser_warnings_as_errors``).
    """
    double_colon = sep == "::"
    names: list[str] = []
    dtypes: dict[str, object] = {}
    for j, (kind, _) in enumerate(fields):
        if double_colon and j:
            names.append(f"_gap{j}")
            dtypes[f"_gap{j}"] = str
        names.append(f"f{j}")
        dtypes[f"f{j}"] = str if as_text else {"int": np.int64, "float": np.float32}.get(kind, str)
    with _parser_warnings_as_errors():
        return pd.read_csv(
            fh,
            sep=":" if double_colon else sep,
            # header=0 is the first non-blank line (skiprows=1 would skip a leading blank line
            # and read the header as data); ``names`` replace the header's names.
            header=0 if header else None,
            names=names,
            dtype=dtypes,
            engine="c",
            index_col=False,
            nrows=nrows,
            chunksize=chunksize,
            # Only empty fields are missing: "NA" or "null" may be real string ids.
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=True,
            encoding="utf-8",
            encoding_errors="replace" if as_text else "strict",
        )


def _read_delimited(
    src: _Source, sep: str, fields: Sequence[_Field], *, header: bool
) -> list[np.ndarray | None]:
    """Parse a delimited text file into one array per field (``None`` for kind ``"any"``).

    Blank lines are skipped; with ``header`` the first line is. On any failure the text is
    diagnosed and :class:`DataFormatError` raised with the first bad line.
    """
    try:
        with src.open() as fh:
            df = _csv_frame(fh, sep, fields, header=header, as_text=False)
        arrays = _frame_arrays(df, sep, fields)
    except _parse_errors() as exc:
        # ValueError covers UnicodeDecodeError and pandas' EmptyDataError.
        _diagnose_delimited(src, sep, fields, header=header)
        # The diagnosis found nothing it understands (e.g. quoting trouble): pass pandas' words on.
        detail = str(exc) or "missing values"
        raise DataFormatError(src.label, None, f"could not be parsed ({detail})") from exc
    if any(
        arr is not None
        and kind in ("int", "float")
        and len(arr)
        and arr.min() >= 0
        and arr.max() <= 1
        and ((arr == 0) | (arr == 1)).all()
        for arr, (kind, _) in zip(arrays, fields, strict=True)
    ):
        # pandas' C parser reads a column (of a parser chunk) made only of TRUE/True/true/FALSE/
        # False/false as 1/0 even when asked for numbers, and no option turns that off; only such
        # a column holds nothing but 0 and 1, so only then is the text checked for those words.
        _diagnose_delimited(src, sep, fields, header=header, boolean_words=True)
    return arrays


def _frame_arrays(df: pd.DataFrame, sep: str, fields: Sequence[_Field]) -> list[np.ndarray | None]:
    """The typed arrays of a frame from ``_csv_frame(as_text=False)``; ``_Malformed`` when a
    field is missing (too few fields) or a ``"::"`` gap is not empty."""
    out: list[np.ndarray | None] = []
    for j, (kind, _) in enumerate(fields):
        col = df[f"f{j}"]
        if sep == "::" and j and df[f"_gap{j}"].notna().any():
            raise _Malformed
        if kind == "float":
            arr = col.to_numpy(dtype=np.float32)
            if not np.isfinite(arr).all():  # NaN (missing), "inf", or beyond float32's range
                raise _Malformed
            out.append(arr)
        elif kind == "int":
            out.append(col.to_numpy(dtype=np.int64))
        elif kind == "any":
            out.append(None)  # unmapped column: only its presence matters
        elif kind == "time":
            if col.isna().any() or col.str.isspace().any():
                raise _Malformed
            out.append(_times_to_seconds(col))
        else:
            # Empty (NaN) or whitespace-only ids are malformed, as the diagnosis reports them.
            if col.isna().any() or col.str.isspace().any():
                raise _Malformed
            out.append(_ids_to_array(col) if kind == "id" else col.to_numpy(dtype=object))
    return out


def _ids_to_array(col: pd.Series) -> np.ndarray:
    """``int64`` when every id is a plain integer, else an ``object`` array of ``str``."""
    if not len(col):
        return np.zeros(0, dtype=np.int64)
    if col.str.fullmatch(_PLAIN_INT_ID_RE).all():
        return col.astype(np.int64).to_numpy()
    return col.to_numpy(dtype=object)


def _times_to_seconds(col: pd.Series) -> np.ndarray:
    """``(R,)`` int64 unix seconds from text: every value a unix time in seconds (integers, or
    decimals, floored), or every value an ISO-8601 date or date-time (``2023-11-16``,
    ``2023-11-16 21:00:27``, ``2023-11-16T21:00:27+01:00``; no offset means UTC).

    Raises:
        ValueError: a value that is neither, or a column mixing the two.
    """
    numbers = pd.to_numeric(col, errors="coerce")
    if not numbers.isna().any():
        values = numbers.to_numpy()
        if values.dtype.kind == "i":
            return values.astype(np.int64, copy=False)
        if values.dtype.kind == "u" and values.max(initial=0) < 2**63:
            return values.astype(np.int64)
        if values.dtype.kind == "u" or _bad_times(col).any():
            raise ValueError("timestamps beyond the int64 range")
        return np.floor(values).astype(np.int64)
    if numbers.notna().any():
        first = col[numbers.isna()].iloc[0]
        raise ValueError(
            f"timestamps mix unix times ({col[numbers.notna()].iloc[0]!r}) and other values"
            f" ({first!r}); use one kind"
        )
    dates = _iso_dates(col)
    if dates.isna().any():
        raise ValueError(f"timestamp {col[dates.isna()].iloc[0]!r} is not an ISO-8601 date")
    return ((dates - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(np.int64)


def _iso_dates(col: pd.Series) -> pd.Series:
    """ISO-8601 text → UTC datetimes; NaT where a value is not one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns about offsets it converts
        return pd.to_datetime(col, format="ISO8601", utc=True, errors="coerce")


def _bad_times(text: pd.Series) -> np.ndarray:
    """``(R,)`` bool: values that are neither a unix time in int64 nor an ISO-8601 date."""
    numbers = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers) & _iso_dates(text).isna().to_numpy(dtype=bool)
    for r in np.flatnonzero(np.isfinite(numbers) & (np.abs(numbers) >= 2.0**62)):
        bad[r] = not _fits_int64(str(text.iloc[r]), numbers[r])  # exactly, near the limit
    return bad


def _parse_number(value: str) -> float:
    """``float(value)`` as the C parser reads numbers (no ``_`` digit groups); NaN if not one."""
    if "_" in value:
        return math.nan
    try:
        return float(value)
    except ValueError:
        return math.nan


def _fits_int64(value: str, number: float) -> bool:
    """Whether an integral ``value`` (``number`` = its float) fits in int64, exactly."""
    if abs(number) < 2.0**62:
        return True
    try:
        exact = int(value.strip())
    except ValueError:
        exact = int(number)  # "1e19", "9.3e18": written as a float, compared as one
    return -(2**63) <= exact < 2**63


def _line_problem(line: str, sep: str, fields: Sequence[_Field]) -> str | None:
    """What is wrong with one line of a delimited file, or ``None`` (used on one line only)."""
    # csv.reader honours quotes as pandas does; "::" files have none.
    try:
        parts = line.split(sep) if len(sep) > 1 else next(csv.reader([line], delimiter=sep))
    except csv.Error as exc:  # e.g. a lone "\r" inside the line (binary data)
        return f"cannot be parsed ({exc}): {line[:200]!r}"
    if len(parts) != len(fields):
        return f"expected {len(fields)} fields separated by {sep!r}, found {len(parts)}"
    for value, (kind, what) in zip(parts, fields, strict=True):
        if kind in ("int", "float"):
            number = _parse_number(value)
            if kind == "int" and not (math.isfinite(number) and number == round(number)):
                return f"{what} {value!r} is not an integer"
            if kind == "int" and not _fits_int64(value, number):
                return f"{what} {value!r} is out of the int64 range"
            if kind == "float" and math.isnan(number):
                return f"{what} {value!r} is not a number"
            if kind == "float" and not math.isfinite(number):
                return f"{what} {value!r} is not a finite number"
            with np.errstate(over="ignore"):
                if kind == "float" and not np.isfinite(np.float32(number)):
                    return f"{what} {value!r} is out of the float32 range"
        if kind in ("id", "str", "time") and not value.strip():
            return f"{what} {value!r} is empty"
        if kind == "time" and _bad_times(pd.Series([value.strip()], dtype=object))[0]:
            return f"{what} {value!r} is neither a unix time nor an ISO-8601 date"
    return None


def _data_lines(
    data: bytes, sep: str, *, header: bool, block: int = 1 << 25
) -> tuple[np.ndarray, np.ndarray]:
    """Line numbers and separator counts of the data lines (non-blank, header dropped).

    Blank as pandas' C parser skips them: empty, or only spaces and tabs (tabs unless ``sep`` is
    a tab), before an optional ``\r``.

    Returns ``(lineno, n_sep)``: ``(R,)`` int64 1-based line numbers, in the order pandas returns
    the rows, and ``(R,)`` int64 counts of ``sep``'s byte (``":"`` for ``"::"``) in each line.
    Vectorised over blocks of ``block`` bytes cut at line ends, to bound the temporary arrays.
    """
    sep_byte = ord(sep[0])
    blank_bytes = [32] if sep_byte == 9 else [32, 9]
    linenos: list[np.ndarray] = []
    counts: list[np.ndarray] = []
    pos, line0 = 0, 0
    while pos < len(data):
        end = data.rfind(b"\n", pos, pos + block) + 1 if pos + block < len(data) else len(data)
        if end <= pos:  # one line longer than the block
            end = data.find(b"\n", pos + block) + 1 or len(data)
        buf = np.frombuffer(data, dtype=np.uint8, count=end - pos, offset=pos)
        nl = np.flatnonzero(buf == 10)
        ends = nl if len(nl) and nl[-1] == len(buf) - 1 else np.append(nl, len(buf))
        starts = np.concatenate(([0], nl + 1))[: len(ends)]
        lengths = ends - starts
        lengths -= (lengths > 0) & (buf[np.maximum(ends - 1, 0)] == 13)  # CRLF
        seps = np.flatnonzero(buf == sep_byte)
        n_sep = np.bincount(np.searchsorted(ends, seps, side="right"), minlength=len(ends))
        # (newlines count as non-blank bytes here, but no counted span holds one)
        solid = np.concatenate(([0], np.cumsum(~np.isin(buf, blank_bytes))))
        keep = solid[starts + lengths] > solid[starts]
        linenos.append(line0 + 1 + np.flatnonzero(keep))
        counts.append(n_sep[keep])
        line0 += len(ends)
        pos = end
    lineno = np.concatenate(linenos) if linenos else np.zeros(0, dtype=np.int64)
    n_sep = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
    if header:
        lineno, n_sep = lineno[1:], n_sep[1:]
    return lineno, n_sep


def _diagnose_delimited(
    src: _Source,
    sep: str,
    fields: Sequence[_Field],
    *,
    header: bool,
    chunk_rows: int = 100_000,
    boolean_words: bool = False,
) -> None:
    """Find the first bad line and raise :class:`DataFormatError`; return if nothing is found.

    Runs only after the fast parse failed, and stays vectorised (a 25M-line file takes seconds):

    1. separator counts per line, by numpy over the raw bytes → the first line with a wrong
       number of fields;
    2. the rows before it are parsed again, typed, in chunks → the first chunk that fails;
    3. that chunk (and the next, in case the parser read ahead) is re-read as text and checked
       column by column → the first bad row;
    4. only the earliest suspicious line is examined in Python, to say what is wrong with it.

    ``boolean_words``: the typed parse succeeded but may have read true/false words as 1/0 (see
    :func:`_read_delimited`); then, if the text holds such a word at all, every row is checked
    as text (step 3 over the whole file).
    """
    data = src.read_bytes()
    if boolean_words and not re.search(rb"(?i)true|false", data):
        return
    lineno, n_sep = _data_lines(data, sep, header=header)
    newlines = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)

    def line_start(line: int) -> int:
        return 0 if line == 1 else int(newlines[line - 2]) + 1

    candidates: list[int] = []
    # The typed parse decodes strictly: the first byte that is not UTF-8 is a candidate.
    utf8 = _utf8_problem(data)
    if utf8 is not None:
        candidates.append(utf8[0])
    # Quoted fields may hide separators; then counts prove nothing and pandas' parse decides.
    if sep == "::" or b'"' not in data:
        wrong = np.flatnonzero(n_sep != (len(fields) - 1) * len(sep))
        if len(wrong):
            candidates.append(int(lineno[wrong[0]]))
    n_rows = int(np.searchsorted(lineno, min(candidates))) if candidates else len(lineno)

    bad_chunk: int | None = 0 if boolean_words and n_rows else None
    if n_rows and not boolean_words:
        done = 0
        try:
            with _parser_warnings_as_errors():
                reader = _csv_frame(
                    io.BytesIO(data),
                    sep,
                    fields,
                    header=header,
                    as_text=False,
                    nrows=n_rows,
                    chunksize=chunk_rows,
                )
                for done, chunk in enumerate(reader):  # noqa: B007 (read by the except below)
                    _frame_arrays(chunk, sep, fields)
        except _parse_errors():
            bad_chunk = done
    if bad_chunk is not None:
        r0 = bad_chunk * chunk_rows
        r1 = n_rows if boolean_words else min(n_rows, r0 + 2 * chunk_rows)
        first = int(lineno[r0])
        try:
            with _parser_warnings_as_errors():
                df = _csv_frame(
                    io.BytesIO(data[line_start(first) :]),
                    sep,
                    fields,
                    header=False,
                    as_text=True,
                    nrows=r1 - r0,
                )
        except (ValueError, pd.errors.ParserError, pd.errors.ParserWarning) as exc:
            # Only with quoted fields: trust the parser's "line N" (counted from the region start).
            m = re.search(r"line (\d+)", str(exc))
            if m:
                candidates.append(first + int(m.group(1)) - 1)
            df = None
        if df is not None:
            bad = np.zeros(len(df), dtype=bool)
            for j, (kind, _) in enumerate(fields):
                col = df[f"f{j}"]
                if kind == "int":
                    # As lenient as pandas' typed parse, which accepts "1e3" or "7.0".
                    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
                    wrong = ~np.isfinite(values) | (values != np.round(values))
                    # Beyond int64: checked exactly, on the few values near the limit.
                    for r in np.flatnonzero(~wrong & (np.abs(values) >= 2.0**62)):
                        wrong[r] = not _fits_int64(col.iloc[r], values[r])
                    bad |= wrong
                elif kind == "float":
                    values = pd.to_numeric(col, errors="coerce").to_numpy(dtype=np.float64)
                    with np.errstate(over="ignore"):  # the typed parse reads float32
                        bad |= ~np.isfinite(values.astype(np.float32))
                elif kind in ("id", "str"):
                    bad |= col.isna().to_numpy(dtype=bool) | (col.str.strip() == "").to_numpy(
                        dtype=bool
                    )
                elif kind == "time":
                    bad |= _bad_times(col.fillna("").str.strip())
                if sep == "::" and j:
                    bad |= df[f"_gap{j}"].notna().to_numpy(dtype=bool)
            hits = np.flatnonzero(bad)
            if len(hits):
                candidates.append(int(lineno[r0 + hits[0]]))
    if not candidates:
        return
    line = min(candidates)
    end = int(newlines[line - 1]) if line - 1 < len(newlines) else len(data)
    text = data[line_start(line) : end].decode("utf-8", errors="replace").rstrip("\r")
    is_header = header and (len(lineno) == 0 or line < lineno[0])
    problem = None if is_header else _line_problem(text, sep, fields)
    if problem is None and utf8 is not None and utf8[0] == line:
        problem = utf8[1]
    raise DataFormatError(src.label, line, problem or f"cannot be parsed: {text[:200]!r}")


def _utf8_problem(data: bytes) -> tuple[int, str] | None:
    """``(1-based line, problem)`` of the first byte sequence that is not UTF-8, or ``None``."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        start = data.rfind(b"\n", 0, exc.start) + 1
        line = data.count(b"\n", 0, exc.start) + 1
        return line, (
            f"byte 0x{data[exc.start]:02x} at column {exc.start - start + 1} is not valid UTF-8 "
            "(save the file as UTF-8)"
        )
    return None


# --------------------------------------------------------------------------------------------
# MovieLens
# --------------------------------------------------------------------------------------------

_ML_FIELDS: list[_Field] = [
    ("int", "user id"),
    ("int", "item id"),
    ("float", "rating"),
    ("int", "timestamp"),
]


def _movielens_source(path: Path) -> _Source:
    """The ratings file for a MovieLens path: a file, a GroupLens zip, or a folder holding
    either."""
    _require_file(path)
    if path.is_dir():
        for name in _MOVIELENS_NAMES:
            for cand in (path / name, path / f"{name}.gz"):
                if cand.is_file():
                    return _movielens_source(cand)
        zips = sorted(path.glob("ml-*.zip"))
        if len(zips) == 1:
            return _movielens_source(zips[0])
        looked = ", ".join(f"{n}[.gz]" for n in _MOVIELENS_NAMES)
        raise FileNotFoundError(
            errno.ENOENT, f"No MovieLens ratings file ({looked}) in directory", str(path)
        )
    if _is_zip(path):
        members = _zip_files(path)
        for name in _MOVIELENS_NAMES:
            # Shallowest match first: the official zips have exactly one, in their top folder.
            hits = sorted(
                (m for m in members if m.rsplit("/", 1)[-1] == name), key=lambda m: m.count("/")
            )
            if hits:
                return _Source(path, hits[0])
        raise DataFormatError(
            path,
            None,
            f"zip archive without a MovieLens ratings file ({', '.join(_MOVIELENS_NAMES)}); "
            f"it holds {members[:10]}{' …' if len(members) > 10 else ''}",
        )
    return _Source(path)


def read_movielens(path: str | Path) -> Interactions:
    """Read MovieLens ratings in any official format.

    Accepted: ``u.data`` (100K: ``user \\t item \\t rating \\t timestamp``), ``ratings.dat``
    (1M/10M: ``user::item::rating::timestamp``) and ``ratings.csv`` (20M/25M/latest: header
    ``userId,movieId,rating,timestamp``); each plain, gzip-compressed, inside an official GroupLens
    zip (``ml-100k.zip``, ``ml-1m.zip``, ``ml-10m.zip``, ``ml-20m.zip``, ``ml-25m.zip``,
    ``ml-latest-small.zip``, …), or a directory holding one of these files (or one ``ml-*.zip``).
    The format is taken from the file name, else from the first line.

    Returns:
        ``Interactions`` with ``(N,)`` int64 users and items, float32 ratings and int64 timestamps,
        in file order.

    Raises:
        FileNotFoundError: the path does not exist (or a directory has no ratings file).
        DataFormatError: a malformed line (message names file and line).
    """
    src = _movielens_source(Path(path))
    first = src.first_line()
    if src.name == "ratings.dat" or "::" in first:
        sep, header = "::", False
    elif src.name == "u.data" or "\t" in first:
        sep, header = "\t", False
    else:
        # ratings.csv has a header row; tolerate files saved without one.
        # (a headerless file may start with a negative id: "-1,…" is data, not a header)
        sep, header = ",", bool(first) and not first.lstrip().lstrip("+-")[:1].isdigit()
    # No field is of kind "any", so no array is None.
    arrays = cast(list[np.ndarray], _read_delimited(src, sep, _ML_FIELDS, header=header))
    users, items, ratings, timestamps = arrays
    if not len(users):
        raise DataFormatError(
            src.label, None, "no ratings in the file (empty or header only; a truncated copy?)"
        )
    return Interactions(users, items, ratings, timestamps)


# --------------------------------------------------------------------------------------------
# Amazon ratings-only CSV
# --------------------------------------------------------------------------------------------


# ASINs: ISBN-10 for books (9 digits + digit or X), else "B" + 9 alphanumerics. Reviewer ids
# start with "A" (e.g. A1RSDE90N6RSZF), so the two never match the same pattern.
_ASIN_RE = r"[0-9]{9}[0-9X]|B[0-9A-Z]{9}"


def read_amazon_ratings(path: str | Path, *, order: str = "auto") -> Interactions:
    """Read an Amazon "ratings only" CSV (McAuley et al. 2014 ``ratings_Books.csv``, 2018
    ``Books.csv``).

    Format: no header, one line per rating with four fields: two ids, the rating (1.0–5.0) and
    unix seconds; plain or gzip. The 2014 files are ``user,item,rating,timestamp``; the 2018 files
    are documented as ``item,user,rating,timestamp``. ``order`` is ``"user,item"``,
    ``"item,user"`` or ``"auto"``: the column whose values (among the first 10,000 rows) look more
    like ASINs (ISBN-10 or ``B`` + 9 characters) is taken as the item.

    Returns:
        ``Interactions`` with ``(N,)`` object arrays of ``str`` ids (ASINs have leading zeros, so
        they are never turned into integers), float32 ratings and int64 timestamps.
    """
    if order not in ("auto", "user,item", "item,user"):
        raise ValueError(f"order must be 'auto', 'user,item' or 'item,user', got {order!r}")
    src = _plain_source(path)
    fields: list[_Field] = [
        ("str", "first id"),
        ("str", "second id"),
        ("float", "rating"),
        ("int", "timestamp"),
    ]
    # No field is of kind "any", so no array is None.
    arrays = cast(list[np.ndarray], _read_delimited(src, ",", fields, header=False))
    first, second, ratings, timestamps = arrays
    if not len(first):
        raise DataFormatError(src.label, None, "no ratings in the file (empty; a truncated copy?)")
    if order == "auto":
        head = slice(0, 10_000)
        asin_first = pd.Series(first[head], dtype=str).str.fullmatch(_ASIN_RE).mean()
        asin_second = pd.Series(second[head], dtype=str).str.fullmatch(_ASIN_RE).mean()
        order = "item,user" if asin_first > asin_second else "user,item"
    users, items = (first, second) if order == "user,item" else (second, first)
    return Interactions(users, items, ratings, timestamps)


# --------------------------------------------------------------------------------------------
# "user item item …" lines (LightGCN / KGAT / RecZoo splits)
# --------------------------------------------------------------------------------------------

# bytes.split() splits on exactly these ASCII whitespace bytes.
_WHITESPACE = np.array([9, 10, 11, 12, 13, 32], dtype=np.uint8)


def read_user_items_lines(path: str | Path) -> Interactions:
    """Read the ``user item item …`` line format of the standard train/test split files.

    Each non-blank line is a user id followed by that user's item ids, separated by spaces (any
    ASCII whitespace); plain or gzip. A line holding only a user (an empty test list) is valid
    and contributes no rows.

    Returns:
        ``Interactions`` with ``(N,)`` int64 users (repeated per item) and items, in file order;
        ratings and timestamps ``None``.
    """
    src = _plain_source(path)
    data = src.read_bytes()
    nul = data.find(b"\0")
    if nul >= 0:  # numpy's bytes arrays drop trailing NULs: "12\0" would silently read as 12
        column = nul - data.rfind(b"\n", 0, nul)
        raise DataFormatError(
            src.label,
            data.count(b"\n", 0, nul) + 1,
            f"NUL byte at column {column} (a binary file, not text?)",
        )
    buf = np.frombuffer(data, dtype=np.uint8)
    is_ws = np.isin(buf, _WHITESPACE)
    # A token starts at a non-whitespace byte that follows whitespace (or the file start).
    prev_ws = np.empty_like(is_ws)
    if len(buf):
        prev_ws[0] = True
        prev_ws[1:] = is_ws[:-1]
    starts = np.flatnonzero(~is_ws & prev_ws)
    # 0-based line of each token: the number of newlines before it.
    line_of = np.cumsum(buf == 10)[starts] if len(starts) else np.zeros(0, dtype=np.int64)
    tokens = np.array(data.split(), dtype=bytes) if len(starts) else np.zeros(0, dtype="S1")
    del data
    digits = np.char.isdigit(tokens)
    if not digits.all():
        i = int(np.argmin(digits))
        raise DataFormatError(
            src.label,
            int(line_of[i]) + 1,
            f"{tokens[i].decode(errors='replace')!r} is not a non-negative integer id",
        )
    try:
        values = tokens.astype(np.int64)
    except OverflowError:
        # Beyond int64: more than 19 significant digits, or 19 above the maximum (digit strings
        # of equal length compare like their numbers).
        digits19 = np.char.lstrip(tokens, b"0")
        length = np.char.str_len(digits19)
        too_big = (length > 19) | ((length == 19) & (digits19 > b"9223372036854775807"))
        i = int(np.argmax(too_big))
        raise DataFormatError(
            src.label, int(line_of[i]) + 1, f"id {tokens[i].decode()!r} is too large"
        ) from None
    # The first token of each line is the user.
    first = np.ones(len(values), dtype=bool)
    first[1:] = line_of[1:] != line_of[:-1]
    first_pos = np.flatnonzero(first)
    n_items = np.diff(np.append(first_pos, len(values))) - 1
    users = np.repeat(values[first_pos], n_items)
    items = values[~first]
    return Interactions(users, items)


# --------------------------------------------------------------------------------------------
# JSON list of lists (LCFN / BARS MovieLens-1M m1)
# --------------------------------------------------------------------------------------------


def read_json_lists(path: str | Path) -> Interactions:
    """Read a JSON list of lists: element ``u`` is the list of item ids of user ``u``.

    Used by the LCFN/BARS "Movielens1M_m1" split (``train_data.json`` …); plain or gzip.

    Returns:
        ``Interactions`` with ``(N,)`` int64 users (the list index) and items, in file order;
        ratings and timestamps ``None``.

    Raises:
        DataFormatError: invalid JSON (with its line), or an element that is not a list of
            integers (named by its index; JSON files of this kind are a single line).
    """
    src = _plain_source(path)
    text = src.read_bytes().decode("utf-8", errors="replace")
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(
            src.label, exc.lineno, f"invalid JSON at column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise DataFormatError(
            src.label, None, "JSON nested too deeply; expected a list of lists of item ids"
        ) from None
    one_line = text.rstrip().count("\n") == 0
    line = 1 if one_line else None
    if not isinstance(rows, list):
        raise DataFormatError(
            src.label, line, f"expected a JSON list of lists, got a {type(rows).__name__}"
        )
    # Type checks run in C (set(map(type, …))); the loops below only run to name a bad element.
    if set(map(type, rows)) - {list}:
        u = next(u for u, r in enumerate(rows) if type(r) is not list)
        raise DataFormatError(
            src.label,
            line,
            f"element {u} (user {u}) is a {type(rows[u]).__name__}, expected a list of item ids",
        )
    if set(map(type, itertools.chain.from_iterable(rows))) - {int}:
        u, k, v = next(
            (u, k, v) for u, r in enumerate(rows) for k, v in enumerate(r) if type(v) is not int
        )
        raise DataFormatError(
            src.label, line, f"user {u}, position {k}: {v!r} is not an integer item id"
        )
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    total = int(lengths.sum())
    try:
        items = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=total)
    except OverflowError:
        raise DataFormatError(src.label, line, "an item id does not fit in int64") from None
    users = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
    return Interactions(users, items)


# --------------------------------------------------------------------------------------------
# Generic CSV / Parquet table
# --------------------------------------------------------------------------------------------


def read_interactions_table(
    path: str | Path,
    *,
    user_col: str | int,
    item_col: str | int,
    rating_col: str | int | None = None,
    timestamp_col: str | int | None = None,
    sep: str = ",",
    header: bool = True,
) -> Interactions:
    """Read a generic interactions table: CSV/TSV (plain or gzip) or Parquet (``.parquet``).

    Columns are named (``header=True``) or 0-based positions (``header=False``; Parquet always has
    names). Ids become int64 when every value is a plain integer (no leading zeros), else ``str``;
    ratings float32; timestamps int64 unix seconds (Parquet timestamp columns are converted).
    Unmapped columns are read (so that rows with too many fields are caught) and dropped; a row
    may lack trailing *unmapped* fields (CSV writers often omit trailing empty fields), but every
    mapped field must be present and valid.

    Raises:
        DataFormatError: a mapped column does not exist (the message lists the columns that do),
            or a malformed row (file and line).
    """
    path = Path(path)
    _require_file(path)
    roles = {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": timestamp_col}
    with open(path, "rb") as fh:
        is_parquet = fh.read(4) == b"PAR1" or path.suffix == ".parquet"
    if is_parquet:
        return _read_parquet(path, roles)

    src = _plain_source(path)
    columns: Sequence[str | int]
    if header:
        columns = _header_columns(src, sep)
    else:
        first = src.first_line()
        columns = list(range(len(first.split(sep)))) if first else []
    positions: dict[str, int] = {}
    for role, col in roles.items():
        if col is None:
            continue
        if header and isinstance(col, str) and col in columns:
            positions[role] = columns.index(col)
        elif not header and isinstance(col, int) and 0 <= col < len(columns):
            positions[role] = col
        else:
            shown = columns if header else f"positions 0..{len(columns) - 1}"
            hint = (
                "" if header or isinstance(col, int) else " (header=False: give 0-based positions)"
            )
            raise DataFormatError(
                src.label,
                None,
                f"no column {col!r} for {role}_col ({_FLAGS[role]}){hint}; the file has columns"
                f" {shown}",
            )
    _check_distinct_roles(positions, lambda j: repr(columns[j]) if header else f"column {j}")
    fields: list[_Field] = [("any", str(c)) for c in columns]
    for role, j in positions.items():
        kind = {"user": "id", "item": "id", "rating": "float", "timestamp": "time"}[role]
        fields[j] = (kind, f"{role} ({columns[j]!r})" if header else f"{role} (column {j})")
    arrays = _read_delimited(src, sep, fields, header=header)

    def get(role: str) -> np.ndarray | None:
        return arrays[positions[role]] if role in positions else None

    # user_col and item_col are required, so their arrays are there.
    users, items = cast(np.ndarray, get("user")), cast(np.ndarray, get("item"))
    return Interactions(users, items, get("rating"), get("timestamp"))


def _header_columns(src: _Source, sep: str) -> list[str]:
    """The column names in the header row (the first non-blank line), as pandas reads them."""
    try:
        with src.open() as fh:
            return list(pd.read_csv(fh, sep=sep, nrows=0, engine="c", encoding="utf-8").columns)
    except pd.errors.EmptyDataError:
        raise DataFormatError(src.label, None, "the file is empty (no header row)") from None
    except (ValueError, pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        if isinstance(exc, DataFormatError):
            raise
        data = src.read_bytes()
        utf8 = _utf8_problem(data)
        if isinstance(exc, UnicodeDecodeError) and utf8 is not None:
            raise DataFormatError(src.label, *utf8) from None
        line = next((k + 1 for k, raw in enumerate(data.split(b"\n")) if raw.strip(b"\r")), None)
        raise DataFormatError(src.label, line, f"cannot parse the header row ({exc})") from None


def _check_distinct_roles(columns: Mapping[str, object], name: Callable[[Any], str]) -> None:
    """``ValueError`` when two roles map to one column (a rating column read as timestamps…)."""
    seen: dict[object, str] = {}
    for role, col in columns.items():
        if col in seen:
            raise ValueError(
                f"{seen[col]}_col and {role}_col both name {name(col)}; "
                "map each role to its own column"
            )
        seen[col] = role


_T = TypeVar("_T")


def _parquet_call(path: Path, read: Callable[[], _T]) -> _T:
    """``read()``, with pyarrow's errors on an unreadable file turned into
    :class:`DataFormatError`."""
    pa = require("pyarrow", "reading Parquet files")

    try:
        return read()
    except (pa.ArrowException, OSError) as exc:
        raise DataFormatError(path, None, f"not a readable Parquet file ({exc})") from None


def _read_parquet(path: Path, roles: dict[str, str | int | None]) -> Interactions:
    pa = require("pyarrow", "reading Parquet files")
    pc = require("pyarrow.compute", "reading Parquet files")
    pq = require("pyarrow.parquet", "reading Parquet files")

    names = _parquet_call(path, lambda: pq.read_schema(path).names)
    wanted: dict[str, str] = {}
    for role, col in roles.items():
        if col is None:
            continue
        if isinstance(col, int) and not isinstance(col, bool) and 0 <= col < len(names):
            col = names[col]
        if col not in names:
            raise DataFormatError(
                path,
                None,
                f"no column {col!r} for {role}_col ({_FLAGS[role]}); the file has columns {names}",
            )
        wanted[role] = str(col)
    _check_distinct_roles(wanted, repr)
    table = _parquet_call(path, lambda: pq.read_table(path, columns=sorted(set(wanted.values()))))

    def column(role: str) -> np.ndarray | None:
        if role not in wanted:
            return None
        arr = table.column(wanted[role]).combine_chunks()
        if arr.null_count:
            row = int(np.argmax(arr.is_null().to_numpy(zero_copy_only=False))) + 1
            raise DataFormatError(path, None, f"row {row}: {role} column {wanted[role]!r} is null")
        t = arr.type
        if role in ("user", "item"):
            if pa.types.is_integer(t):
                return arr.to_numpy().astype(np.int64, copy=False)
            if pa.types.is_floating(t):
                values = arr.to_numpy()
                if np.all(values == np.round(values)):
                    return values.astype(np.int64)
            return np.asarray(arr.cast(pa.string()).to_numpy(zero_copy_only=False), dtype=object)
        if role == "rating":
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
                raise DataFormatError(
                    path, None, f"rating column {wanted[role]!r} has type {t}, expected numbers"
                )
            with np.errstate(over="ignore"):
                ratings = arr.cast(pa.float32(), safe=False).to_numpy()
            if not np.isfinite(ratings).all():
                row = int(np.argmin(np.isfinite(ratings))) + 1
                raise DataFormatError(
                    path,
                    None,
                    f"row {row}: rating {arr[row - 1].as_py()!r} in column {wanted[role]!r} "
                    "is not a finite float32 number",
                )
            return ratings
        if pa.types.is_timestamp(t):
            return pc.cast(arr.cast(pa.timestamp("s", t.tz)), pa.int64()).to_numpy()
        if pa.types.is_integer(t):
            return arr.to_numpy().astype(np.int64, copy=False)
        if pa.types.is_floating(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
            try:
                return _times_to_seconds(pd.Series(arr.to_numpy(zero_copy_only=False)))
            except ValueError as exc:
                raise DataFormatError(path, None, f"column {wanted[role]!r}: {exc}") from None
        raise DataFormatError(
            path,
            None,
            f"timestamp column {wanted[role]!r} has type {t}; expected integer unix times,"
            " timestamps or ISO-8601 strings",
        )

    # user_col and item_col are required, so their arrays are there.
    users, items = cast(np.ndarray, column("user")), cast(np.ndarray, column("item"))
    return Interactions(users, items, column("rating"), column("timestamp"))


# --------------------------------------------------------------------------------------------
# Any rating log, format detected
# --------------------------------------------------------------------------------------------

# The CLI flag that names each role's column, for messages.
_FLAGS = {"user": "--user-col", "item": "--item-col", "rating": "--rating-col",
          "timestamp": "--time-col"}

# Header names recognised by read_ratings_file (compared case-insensitively).
_ALIASES = {
    "user": ("userid", "user_id", "user", "uid", "reviewerid", "visitorid", "customer_id"),
    "item": (
        "movieid",
        "itemid",
        "item_id",
        "item",
        "iid",
        "asin",
        "movie_id",
        "product_id",
        "productid",
    ),
    "rating": ("rating", "ratings", "score", "overall", "stars"),
    "timestamp": ("timestamp", "unixreviewtime", "unix_timestamp", "ts", "time"),
}


def _alias_columns(columns: Sequence[str]) -> dict[str, str]:
    lower = {str(c).strip().lower(): c for c in columns}
    found: dict[str, str] = {}
    for role, names in _ALIASES.items():
        for name in names:
            if name in lower:
                found[role] = lower[name]
                break
    return found


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_ratings_file(
    path: str | os.PathLike[str],
    *,
    user_col: str | int | None = None,
    item_col: str | int | None = None,
    rating_col: str | int | None = None,
    timestamp_col: str | int | None = None,
) -> Interactions:
    """Read a rating log whose format is detected from its content, or whose columns are named.

    Recognised, in this order: a MovieLens folder or GroupLens zip; Parquet, or a CSV/TSV with a
    header, whose columns are named like ``userId``/``user_id``/``user``, ``movieId``/``item_id``/
    ``item``/``asin``, and optionally ``rating`` and ``timestamp`` (MovieLens ``ratings.csv`` is one
    of these); MovieLens ``ratings.dat`` (``::``); headerless ``user,item[,rating[,timestamp]]``
    (comma or tab; the Amazon ratings-only CSV when the user ids are not integers, and
    MovieLens ``u.data``); plain or gzip.

    Columns given by name (files with a header, Parquet) or 0-based position (headerless files)
    override the detection, role by role: ``user_col="customer", item_col="sku",
    timestamp_col="event_time"`` reads a ``customer,sku,event_time`` CSV; roles not given are
    still detected from the header names above. Timestamps of such tables may be unix seconds or
    ISO-8601 dates (see :func:`read_interactions_table`).

    Returns:
        ``Interactions`` as the matching reader returns it.
    """
    path = Path(path)
    _require_file(path)
    given = {"user": user_col, "item": item_col, "rating": rating_col, "timestamp": timestamp_col}
    named = any(c is not None for c in given.values())
    if path.is_dir() or _is_zip(path):
        if named:
            raise DataFormatError(
                path, None, "a MovieLens folder or zip has fixed columns; drop the column flags"
            )
        return read_movielens(path)
    with open(path, "rb") as fh:
        is_parquet = fh.read(4) == b"PAR1"
    if is_parquet:
        pq = require("pyarrow.parquet", "reading Parquet files")
        names = _parquet_call(path, lambda: pq.read_schema(path).names)
        return _read_named(path, names, given, sep=",", header=True, line=None)
    src = _Source(path)
    first = src.first_line()
    if not first:
        raise DataFormatError(path, None, "the file is empty")
    if "::" in first and not named:
        return read_movielens(path)
    sep = "\t" if "\t" in first else ","
    fields = first.split(sep)
    header = not any(_is_number(f) for f in fields)
    if header and not named and [f.strip() for f in fields] == [
        "userId", "movieId", "rating", "timestamp"
    ]:
        return read_movielens(path)  # typed int64 ids straight away: faster than the generic path
    if header:
        # A header row: data rows have numbers (ids, ratings or timestamps), headers have none.
        return _read_named(path, fields, given, sep=sep, header=True, line=1)
    if named:
        positions = {role: _position(col, role, len(fields), path) for role, col in given.items()}
        return _read_named(
            path, list(range(len(fields))), positions, sep=sep, header=False, line=None
        )
    if len(fields) == 4 and fields[0].strip().isdigit() and fields[1].strip().isdigit():
        return read_movielens(path)  # u.data, or a ratings.csv saved without its header
    if len(fields) == 4 and sep == ",":
        return read_amazon_ratings(path)
    if len(fields) in (2, 3, 4):
        return read_interactions_table(
            path,
            user_col=0,
            item_col=1,
            rating_col=2 if len(fields) > 2 else None,
            timestamp_col=3 if len(fields) > 3 else None,
            sep=sep,
            header=False,
        )
    raise DataFormatError(
        path,
        1,
        f"cannot detect the format of a line with {len(fields)} fields separated by {sep!r}; "
        "name the columns with --user-col / --item-col (0-based positions in a headerless file;"
        " user_col= / item_col= in Python)",
    )


def _position(col: str | int | None, role: str, n_fields: int, path: Path) -> int | None:
    """A headerless file's column given as a 0-based position (an int, or digits from a flag)."""
    if col is None or isinstance(col, int):
        return col
    if not col.strip().isdigit():
        raise DataFormatError(
            path,
            1,
            f"the file has no header, so {_FLAGS[role]} takes a 0-based position"
            f" (0..{n_fields - 1}), not {col!r}",
        )
    return int(col)


def _read_named(
    path: Path,
    columns: Sequence[str | int],
    given: Mapping[str, str | int | None],
    *,
    sep: str,
    header: bool,
    line: int | None,
) -> Interactions:
    """A table whose roles are the ``given`` columns, the rest detected from header names
    (``line``: where the header is, for messages)."""
    found: dict[str, str | int | None] = dict(_alias_columns([str(c) for c in columns]))
    if not header:
        found = {}
    found.update({role: col for role, col in given.items() if col is not None})
    missing = [role for role in ("user", "item") if role not in found]
    if missing:
        roles, them = (missing[0], "it") if len(missing) == 1 else ("user and item", "them")
        raise DataFormatError(
            path,
            line,
            f"cannot tell the {roles} column{'s' * (them == 'them')} among {list(columns)};"
            f" name {them} with {' and '.join(_FLAGS[r] for r in missing)}"
            f" ({', '.join(f'{r}_col=' for r in missing)} in Python)",
        )
    return read_interactions_table(
        path,
        user_col=found["user"],  # type: ignore[arg-type]
        item_col=found["item"],  # type: ignore[arg-type]
        rating_col=found.get("rating"),
        timestamp_col=found.get("timestamp"),
        sep=sep,
        header=header,
    )
