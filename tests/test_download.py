"""Downloads against a local HTTP server on 127.0.0.1 (never the internet): fresh, cached, resumed
(206), restarted (server ignores Range), interrupted, checksum mismatches, HTTP errors, offline."""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import io
import re
import socket
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deep_retrieval.data.download import DOWNLOADS, DownloadError, download_dataset
from deep_retrieval.data.readers import read_movielens

V2018_RATINGS_SHA256 = "80da8b3393dae325bbba5a31f291a6ba55d8d4f4396de3c456f2c1635b1b70e8"


def _embedded(name: str) -> bytes:
    res = importlib.resources.files("deep_retrieval").joinpath(
        "datasets", "movielens-latest-small", name
    )
    return gzip.decompress(res.read_bytes())


def _zip(ratings: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("ml-latest-small/", "")
        zf.writestr("ml-latest-small/movies.csv", _embedded("movies.csv.gz"))
        zf.writestr("ml-latest-small/ratings.csv", ratings)
    return buf.getvalue()


@pytest.fixture(scope="module")
def good_zip() -> bytes:
    """An ``ml-latest-small.zip`` like GroupLens' (2018 release), built from the embedded files."""
    ratings = _embedded("ratings.csv.gz")
    assert hashlib.sha256(ratings).hexdigest() == V2018_RATINGS_SHA256
    return _zip(ratings)


@dataclass
class Server:
    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    honour_range: bool = True
    cut_after: int | None = None  # send only this many body bytes once, then drop the connection


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        state: Server = self.server.state  # type: ignore[attr-defined]
        state.requests.append((self.path, self.headers.get("Range")))
        data = state.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if m and state.honour_range:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.cut_after is not None:
            body, state.cut_after = body[: state.cut_after], None
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass


@pytest.fixture
def server(good_zip: bytes) -> Iterator[Server]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    state = Server(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    state.files["/ml-latest-small.zip"] = good_zip
    httpd.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _get(server: Server, dest: Path, name: str = "movielens-latest-small", **kw: object) -> Path:
    kw.setdefault("url", f"{server.base}/ml-latest-small.zip")
    return download_dataset(name, dest, timeout=5, **kw)  # type: ignore[arg-type]


def test_fresh_download_then_cached(server: Server, tmp_path: Path, good_zip: bytes) -> None:
    calls: list[tuple[int, int | None]] = []
    path = _get(server, tmp_path / "data", progress=lambda done, total: calls.append((done, total)))
    assert path == tmp_path / "data" / "ml-latest-small.zip"
    assert path.read_bytes() == good_zip
    assert not (tmp_path / "data" / "ml-latest-small.zip.part").exists()
    assert calls[0] == (0, len(good_zip)) and calls[-1] == (len(good_zip), len(good_zip))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert server.requests == [("/ml-latest-small.zip", None)]
    # The downloaded archive is a MovieLens source the readers accept.
    assert len(read_movielens(path)) == 100_836

    # Cached: verified on disk, no second request.
    assert _get(server, tmp_path / "data") == path
    assert len(server.requests) == 1


def test_resume_with_range(server: Server, tmp_path: Path, good_zip: bytes) -> None:
    half = len(good_zip) // 2
    (tmp_path / "ml-latest-small.zip.part").write_bytes(good_zip[:half])
    calls: list[tuple[int, int | None]] = []
    path = _get(server, tmp_path, progress=lambda d, t: calls.append((d, t)))
    assert path.read_bytes() == good_zip
    assert server.requests == [("/ml-latest-small.zip", f"bytes={half}-")]
    assert calls[0] == (half, len(good_zip)) and calls[-1] == (len(good_zip), len(good_zip))


def test_server_ignoring_range_restarts(server: Server, tmp_path: Path, good_zip: bytes) -> None:
    server.honour_range = False
    # A stale part file (even with wrong bytes) must be replaced, not appended to.
    (tmp_path / "ml-latest-small.zip.part").write_bytes(b"garbage" * 1000)
    path = _get(server, tmp_path)
    assert path.read_bytes() == good_zip
    assert server.requests[0][1] == "bytes=7000-"


def test_complete_part_file_and_416(server: Server, tmp_path: Path, good_zip: bytes) -> None:
    (tmp_path / "ml-latest-small.zip.part").write_bytes(good_zip)
    path = _get(server, tmp_path)
    assert path.read_bytes() == good_zip and not (tmp_path / "ml-latest-small.zip.part").exists()


def test_interrupted_transfer_keeps_part_then_resumes(
    server: Server, tmp_path: Path, good_zip: bytes
) -> None:
    server.cut_after = 100_000
    with pytest.raises(DownloadError, match="run the download again to resume") as err:
        _get(server, tmp_path)
    part = tmp_path / "ml-latest-small.zip.part"
    assert str(part) in str(err.value)
    assert part.read_bytes() == good_zip[:100_000]
    assert not (tmp_path / "ml-latest-small.zip").exists()
    path = _get(server, tmp_path)
    assert path.read_bytes() == good_zip
    assert server.requests[-1] == ("/ml-latest-small.zip", "bytes=100000-")


def test_archive_checksum_mismatch_deletes_part(
    server: Server, tmp_path: Path, good_zip: bytes
) -> None:
    wrong = "0" * 32
    with pytest.raises(DownloadError) as err:
        _get(server, tmp_path, checksum=f"md5:{wrong}")
    msg = str(err.value)
    assert f"md5 {wrong}" in msg and f"md5 {hashlib.md5(good_zip).hexdigest()}" in msg
    assert not (tmp_path / "ml-latest-small.zip.part").exists()
    assert not (tmp_path / "ml-latest-small.zip").exists()


def test_archive_checksum_match(server: Server, tmp_path: Path, good_zip: bytes) -> None:
    # movielens-20m is verified by the md5 of the archive; a mirror with its own checksum works.
    server.files["/ml-20m.zip"] = good_zip
    sha = hashlib.sha256(good_zip).hexdigest()
    path = _get(
        server, tmp_path, "movielens-20m", url=f"{server.base}/ml-20m.zip", checksum=f"sha256:{sha}"
    )
    assert path == tmp_path / "ml-20m.zip" and path.read_bytes() == good_zip
    # With the built-in (GroupLens) md5, this stand-in archive is rejected, naming both digests.
    (tmp_path / "other").mkdir()
    with pytest.raises(DownloadError, match="cd245b17a1ae2cc31bb14903e1204af3") as err:
        _get(server, tmp_path / "other", "movielens-20m", url=f"{server.base}/ml-20m.zip")
    assert hashlib.md5(good_zip).hexdigest() in str(err.value)


def test_latest_small_release_check(server: Server, tmp_path: Path) -> None:
    # A regenerated ml-latest-small (different ratings.csv) fails the 2018-release check.
    server.files["/ml-latest-small.zip"] = _zip(b"userId,movieId,rating,timestamp\n1,1,5.0,1\n")
    with pytest.raises(DownloadError, match="regenerates ml-latest-small") as err:
        _get(server, tmp_path)
    assert V2018_RATINGS_SHA256 in str(err.value)
    assert not (tmp_path / "ml-latest-small.zip.part").exists()


def test_existing_bad_file_is_not_overwritten(server: Server, tmp_path: Path) -> None:
    (tmp_path / "ml-latest-small.zip").write_bytes(b"not a zip")
    with pytest.raises(DownloadError, match="exists but does not match"):
        _get(server, tmp_path)
    assert (tmp_path / "ml-latest-small.zip").read_bytes() == b"not a zip"
    assert server.requests == []


def test_http_error(server: Server, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404"):
        _get(server, tmp_path, url=f"{server.base}/missing.zip")


def test_offline(tmp_path: Path) -> None:
    # A port nobody listens on: bind, note the port, close.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/ml-20m.zip"
    with pytest.raises(DownloadError) as err:
        download_dataset("movielens-20m", tmp_path, url=url, timeout=5)
    msg = str(err.value)
    assert "appears to be offline" in msg
    assert (
        str(tmp_path / "ml-20m.zip") in msg
        and url in msg
        and "cd245b17a1ae2cc31bb14903e1204af3" in msg
    )
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match="downloadable: movielens-20m, movielens-25m, movielens-latest-small"
    ):
        download_dataset("gowalla", tmp_path)
    with pytest.raises(ValueError, match="not 'md5:"):
        download_dataset("movielens-20m", tmp_path, checksum="crc:1234", url="http://127.0.0.1:9/x")


def test_builtin_checksums() -> None:
    # Published by GroupLens beside each archive (ml-20m.zip.md5, ml-25m.zip.md5).
    assert DOWNLOADS["movielens-20m"].checksum == "md5:cd245b17a1ae2cc31bb14903e1204af3"
    assert DOWNLOADS["movielens-25m"].checksum == "md5:6b51fb2759a8657d3bfcbfc42b592ada"
    assert DOWNLOADS["movielens-latest-small"].member_sha256 == V2018_RATINGS_SHA256
    for spec in DOWNLOADS.values():
        assert spec.url == f"https://files.grouplens.org/datasets/movielens/{spec.filename}"
