"""fetch: every source gives the same bytes; failing sources fall through to the next;
every failure is one clear line."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stages import fetch as F
from stages.common import StageError
from stages.datasets import DIGITS, FILES, Mirror


@pytest.fixture(scope="module")
def digits_files():
    return F.from_sklearn_digits()


@pytest.fixture(scope="module")
def server(digits_files):
    """127.0.0.1 mirror: /ok/ serves the gz files; /404/, /500/, /garbage/, /slow/, /flaky/ misbehave."""
    gz = {f"{name}.gz": gzip.compress(data, mtime=0) for name, data in digits_files.items()}
    hits = {"flaky": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            mode, _, name = self.path.strip("/").partition("/")
            if mode == "flaky":
                hits["flaky"] += 1
                if hits["flaky"] % 2:
                    return self.send_error(503)
                mode = "ok"
            if mode == "slow":
                time.sleep(1.0)
                mode = "ok"
            if mode == "404" or name not in gz:
                return self.send_error(404)
            if mode == "500":
                return self.send_error(500)
            body = b"<html>not a gzip</html>" if mode == "garbage" else gz[name]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", gz, hits
    httpd.shutdown()


def mirror(server, mode, checksums=True):
    url, gz, _ = server
    sums = {name: hashlib.sha256(gz[f"{name}.gz"]).hexdigest() for name in FILES} if checksums else {}
    return Mirror(mode, f"{url}/{mode}/", "sha256", sums)


def with_mirrors(*mirrors):
    return dataclasses.replace(DIGITS, mirrors=tuple(mirrors))


def test_every_source_gives_the_same_bytes(server, digits_files, tmp_path):
    plain, packed = tmp_path / "plain", tmp_path / "packed"
    plain.mkdir(), packed.mkdir()
    for name, data in digits_files.items():
        (plain / name).write_bytes(data)
        (packed / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=9, mtime=987654))
    url = server[0]
    results = [
        F.fetch(DIGITS, "auto", 1, 0)[0],
        F.fetch(DIGITS, str(plain), 1, 0)[0],
        F.fetch(DIGITS, str(packed), 1, 0)[0],
        F.fetch(DIGITS, f"{url}/ok/", 2, 0)[0],
        F.fetch(with_mirrors(mirror(server, "ok")), "auto", 2, 0)[0],
    ]
    assert all(r == digits_files for r in results)


@pytest.mark.parametrize("mode,why", [("404", "HTTP 404"), ("500", "HTTP 500"), ("garbage", "checksum"),
                                      ("slow", "timed out")])
def test_a_failing_mirror_falls_through_to_the_next(server, digits_files, mode, why, caplog):
    dataset = with_mirrors(mirror(server, mode), mirror(server, "ok"))
    files, label = F.fetch(dataset, "auto", 0.3, 0)
    assert files == digits_files and label == "mirror ok"
    assert why in caplog.text


def test_retries_recover_from_a_transient_5xx(server, digits_files):
    files, label = F.fetch(with_mirrors(mirror(server, "flaky")), "auto", 2, 1)
    assert files == digits_files and label == "mirror flaky"


def test_garbage_without_published_checksum_is_caught_as_bad_gzip(server):
    with pytest.raises(StageError, match="not a valid gzip file"):
        F.fetch(DIGITS, f"{server[0]}/garbage/", 2, 0)


def test_every_source_failing_lists_each_source(server, monkeypatch):
    monkeypatch.setattr(F, "from_sklearn_digits", lambda: (_ for _ in ()).throw(F.SourceError("offline")))
    dataset = with_mirrors(mirror(server, "404"), mirror(server, "500"))
    with pytest.raises(StageError) as info:
        F.fetch(dataset, "auto", 1, 0)
    message = str(info.value)
    assert "every source failed" in message and "\n" not in message
    assert "[mirror 404]" in message and "HTTP 404" in message
    assert "[mirror 500]" in message and "HTTP 500" in message


def test_folder_missing(tmp_path):
    with pytest.raises(StageError, match="no such folder"):
        F.fetch(DIGITS, str(tmp_path / "nope"), 1, 0)


def test_folder_empty(tmp_path):
    with pytest.raises(StageError, match="missing train-images-idx3-ubyte"):
        F.fetch(DIGITS, str(tmp_path), 1, 0)


def test_folder_missing_one_file(digits_files, tmp_path):
    for name, data in digits_files.items():
        if name != "t10k-labels-idx1-ubyte":
            (tmp_path / name).write_bytes(data)
    with pytest.raises(StageError, match="missing t10k-labels-idx1-ubyte"):
        F.fetch(DIGITS, str(tmp_path), 1, 0)


def test_folder_with_corrupted_file(digits_files, tmp_path):
    for name, data in digits_files.items():
        (tmp_path / name).write_bytes(data)
    data = bytearray(digits_files["train-images-idx3-ubyte"])
    data[100] ^= 0xFF
    (tmp_path / "train-images-idx3-ubyte").write_bytes(bytes(data))
    with pytest.raises(StageError, match="train-images-idx3-ubyte: content sha256 .* does not match"):
        F.fetch(DIGITS, str(tmp_path), 1, 0)


def test_folder_with_truncated_gzip(digits_files, tmp_path):
    for name, data in digits_files.items():
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(data))
    packed = (tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(StageError, match="t10k-images-idx3-ubyte.gz is not a valid gzip file"):
        F.fetch(DIGITS, str(tmp_path), 1, 0)


def test_unpickler_refuses_anything_but_arrays():
    import os
    import pickle

    import numpy as np

    arrays = pickle.dumps(((np.zeros((2, 3), np.float32), np.arange(2)),), protocol=3)
    loaded = F.load_arrays_pickle(arrays)
    assert loaded[0][0].shape == (2, 3)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        F.load_arrays_pickle(pickle.dumps(os.system))
