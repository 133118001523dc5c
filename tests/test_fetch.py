"""fetch: every source gives the same bytes; failing sources fall through to the next;
every failure is one clear line."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import math
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.errors import StageError
from nn.data import IdxError, from_idx
from sources import download, idx, named, origins
from sources.catalog import DIGITS, FILES, Mirror
from tests.project import DIGITS as DIGITS_PARAMS
from tests.project import GIB, Project, assert_clean_failure

CAP = "over 1 GiB, the cap for one file (MAX_IDX_BYTES"
TIMEOUT = "no complete answer within 1 s (fetch.timeout"
TLS = {}  # the HTTPS twin of the server fixture: its url and certificate, when openssl is there


def header(*shape):
    """A uint8 idx header declaring `shape`."""
    return struct.pack(">BBBB", 0, 0, 8, len(shape)) + struct.pack(f">{len(shape)}I", *shape)


@pytest.fixture(scope="module")
def digits_files():
    return origins.from_sklearn_digits()


@pytest.fixture(scope="module")
def bombs():
    """gzip bombs, a few MB each: 4 GiB of zeros; an idx header declaring MNIST's 47 MB, then
    4 GiB of zeros; and a header declaring 65536**4 bytes (past 2**64). One 64 MiB member of
    zeros, compressed once as a stream, repeated: a gzip file may hold many members."""
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    member = b"".join([z.compress(zeros) for _ in range(64)] + [z.flush()])
    four_gib = member * 64
    return {"zeros": four_gib,
            "header": gzip.compress(header(60000, 28, 28), mtime=0) + four_gib,
            "huge-header": gzip.compress(header(65536, 65536, 65536, 65536), mtime=0)}


@pytest.fixture(scope="module")
def server(digits_files, bombs, tmp_path_factory):
    """127.0.0.1 mirror: /ok/ serves the gz files; /404/, /500/, /garbage/, /slow/, /flaky/ misbehave;
    /drip/ and /driphead/ send a byte every 0.3 s (body, headers); /huge/ announces 5 GiB; /nolength/
    sends no Content-Length; /bomb/ serves a gzip bomb; /nothttp/, /short/, /ftp/ answer wrongly."""
    gz = {f"{name}.gz": gzip.compress(data, mtime=0) for name, data in digits_files.items()}
    hits = {"flaky": 0}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def drip(self, data):
            try:
                for byte in data[:100]:  # 30 s at most
                    self.wfile.write(bytes([byte]))
                    time.sleep(0.3)
            except OSError:  # the client gave up
                pass

        def head(self, length=None, code=200, **headers):
            self.send_response(code)
            if length is not None:
                self.send_header("Content-Length", str(length))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()

        def do_GET(self):
            mode, _, name = self.path.strip("/").partition("/")
            if mode == "drip":
                self.head(1000)
                return self.drip(b"x" * 1000)
            if mode == "driphead":
                return self.drip(b"HTTP/1.0 200 OK\r\nContent-Length: 1000\r\n\r\n")
            if mode == "huge":
                self.head(5 * GIB)
                return self.wfile.write(b"\x1f\x8b")
            if mode == "nothttp":
                return self.wfile.write(b"SSH-2.0-OpenSSH_9.6\r\n")
            if mode == "short":
                self.head(1000)
                return self.wfile.write(b"\x1f\x8b\x08")
            if mode == "ftp":
                return self.head(code=302, Location="ftp://127.0.0.1/x.gz")
            if mode == "bomb":
                self.head(len(bombs["header"]))
                return self.wfile.write(bombs["header"])
            if mode == "nolength" and name in gz:
                self.head()
                return self.wfile.write(gz[name])
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
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    tls = _tls_context(tmp_path_factory.mktemp("tls"))
    if tls:  # the same, over HTTPS, with a self-signed certificate the tests trust
        https = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        https.socket = tls.wrap_socket(https.socket, server_side=True)
        threading.Thread(target=https.serve_forever, daemon=True).start()
        TLS["url"] = f"https://127.0.0.1:{https.server_address[1]}"
    yield f"http://127.0.0.1:{httpd.server_address[1]}", gz, hits
    httpd.shutdown()
    if tls:
        https.shutdown()


def _tls_context(folder):
    """A server context with a fresh self-signed certificate for 127.0.0.1, named by SSL_CERT_FILE
    in os.environ while the module runs; None without an openssl command."""
    if not shutil.which("openssl"):
        return None
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    TLS["cert"] = str(cert)
    return context



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
        named.fetch(DIGITS, "auto", 1, 0)[0],
        named.fetch(DIGITS, str(plain), 1, 0)[0],
        named.fetch(DIGITS, str(packed), 1, 0)[0],
        named.fetch(DIGITS, f"{url}/ok/", 2, 0)[0],
        named.fetch(with_mirrors(mirror(server, "ok")), "auto", 2, 0)[0],
    ]
    assert all(r == digits_files for r in results)


def test_idx_from_a_url_gives_the_same_bytes_and_records_their_hashes(server, digits_files):
    """fetch.dataset idx with a URL: the four .gz files downloaded, nothing pinned, every sha256
    recorded; no classes.txt there (a 404): the classes are numbered."""
    files, meta = idx.dataset(f"{server[0]}/ok/", 2, 0)
    assert files == digits_files
    assert meta["sha256"] == {name: hashlib.sha256(data).hexdigest() for name, data in digits_files.items()}
    assert meta["classes"] == [str(d) for d in range(10)] and meta["shape"] == [8, 8]
    with pytest.raises(StageError, match="HTTP 404"):
        idx.dataset(f"{server[0]}/404/", 2, 0)


@pytest.mark.parametrize("mode,why", [("404", "HTTP 404"), ("500", "HTTP 500"), ("garbage", "checksum"),
                                      ("slow", "no complete answer within 0.3 s")])
def test_a_failing_mirror_falls_through_to_the_next(server, digits_files, mode, why, caplog):
    dataset = with_mirrors(mirror(server, mode), mirror(server, "ok"))
    files, label = named.fetch(dataset, "auto", 0.3, 0)
    assert files == digits_files and label == "mirror ok"
    assert why in caplog.text


def test_retries_recover_from_a_transient_5xx(server, digits_files):
    files, label = named.fetch(with_mirrors(mirror(server, "flaky")), "auto", 2, 1)
    assert files == digits_files and label == "mirror flaky"


def test_garbage_without_published_checksum_is_caught_as_bad_gzip(server):
    with pytest.raises(StageError, match="not a valid gzip file"):
        named.fetch(DIGITS, f"{server[0]}/garbage/", 2, 0)


def test_every_source_failing_lists_each_source(server, monkeypatch):
    monkeypatch.setattr(origins, "from_sklearn_digits", lambda: (_ for _ in ()).throw(origins.SourceError("offline")))
    dataset = with_mirrors(mirror(server, "404"), mirror(server, "500"))
    with pytest.raises(StageError) as info:
        named.fetch(dataset, "auto", 1, 0)
    message = str(info.value)
    assert "every source failed" in message and "\n" not in message
    assert "[mirror 404]" in message and "HTTP 404" in message
    assert "[mirror 500]" in message and "HTTP 500" in message


def test_folder_missing(tmp_path):
    with pytest.raises(StageError, match="no such folder"):
        named.fetch(DIGITS, str(tmp_path / "nope"), 1, 0)


def test_folder_empty(tmp_path):
    with pytest.raises(StageError, match="missing train-images-idx3-ubyte"):
        named.fetch(DIGITS, str(tmp_path), 1, 0)


def test_folder_missing_one_file(digits_files, tmp_path):
    for name, data in digits_files.items():
        if name != "t10k-labels-idx1-ubyte":
            (tmp_path / name).write_bytes(data)
    with pytest.raises(StageError, match="missing t10k-labels-idx1-ubyte"):
        named.fetch(DIGITS, str(tmp_path), 1, 0)


def test_folder_with_corrupted_file(digits_files, tmp_path):
    for name, data in digits_files.items():
        (tmp_path / name).write_bytes(data)
    data = bytearray(digits_files["train-images-idx3-ubyte"])
    data[100] ^= 0xFF
    (tmp_path / "train-images-idx3-ubyte").write_bytes(bytes(data))
    with pytest.raises(StageError, match="train-images-idx3-ubyte: content sha256 .* does not match"):
        named.fetch(DIGITS, str(tmp_path), 1, 0)


def test_folder_with_truncated_gzip(digits_files, tmp_path):
    for name, data in digits_files.items():
        (tmp_path / f"{name}.gz").write_bytes(gzip.compress(data))
    packed = (tmp_path / "t10k-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(StageError, match="t10k-images-idx3-ubyte.gz is not a valid gzip file"):
        named.fetch(DIGITS, str(tmp_path), 1, 0)


def fetch_error(source, timeout=1, dataset=DIGITS) -> str:
    """fetch from `source` -> its one-line error (it must fail)."""
    with pytest.raises(StageError) as info:
        named.fetch(dataset, source, timeout, 0)
    message = str(info.value)
    assert "every source failed" in message and "\n" not in message
    return message


# -- a slow or hostile server ---------------------------------------------------------
@pytest.mark.parametrize("mode", ["drip", "driphead"])
def test_a_dripping_server_is_cut_off_at_the_timeout(server, mode):
    """fetch.timeout bounds the whole request by the clock, not each read."""
    start = time.monotonic()
    message = fetch_error(f"{server[0]}/{mode}/")
    assert time.monotonic() - start < 2.5
    assert TIMEOUT in message and f"/{mode}/train-images-idx3-ubyte.gz" in message


def test_a_dripping_https_server_is_cut_off_too(server, monkeypatch):
    """TLS wraps (detaches) the socket the deadline watches: the deadline must still hold."""
    if "cert" not in TLS:
        pytest.skip("no openssl command to make a certificate")
    monkeypatch.setenv("SSL_CERT_FILE", TLS["cert"])
    https = TLS["url"]
    with tempfile.TemporaryFile() as f:
        download.get(f"{https}/ok/t10k-labels-idx1-ubyte.gz", f, 5, 0, 10 ** 6, "1 MB")  # the certificate works
        start = time.monotonic()
        with pytest.raises(download.DownloadError, match=r"drip/x.gz: no complete answer within 1 s"):
            download.get(f"{https}/drip/x.gz", f, 1, 0, 10 ** 6, "1 MB")
        assert time.monotonic() - start < 2.5


@pytest.mark.parametrize("mode,pattern", [
    ("huge", f"the server announces {5 * GIB} bytes, {CAP}"),
    ("bomb", "decompresses to more than the 47040016 bytes its idx header declares"),
    ("nothttp", "not a valid HTTP answer (BadStatusLine: SSH-2.0-OpenSSH_9.6)"),
    ("short", "the connection closed after 3 of 1000 bytes"),
    ("ftp", "unknown url type: ftp"),
])
def test_a_hostile_server_gets_one_line(server, mode, pattern):
    message = fetch_error(f"{server[0]}/{mode}/")
    assert f"{server[0]}/{mode}/train-images-idx3-ubyte.gz: {pattern}" in message


@pytest.mark.parametrize("url", ["http://127.0.0.1:abc/", "http://[::1/", "http://a..b/"])
def test_an_invalid_url(url):
    assert "not a valid URL" in fetch_error(url)


def test_a_download_without_content_length_stops_at_the_cap(server):
    url = f"{server[0]}/nolength/train-images-idx3-ubyte.gz"
    with tempfile.TemporaryFile() as f:
        download.get(url, f, 2, 0, 10 ** 6, "1 MB")  # the file is smaller
        with pytest.raises(download.DownloadError, match="nolength/train-images-idx3-ubyte.gz: more than 100 B"):
            download.get(url, f, 2, 0, 100, "100 B")


# -- a hostile folder -------------------------------------------------------------------
def _symlink_loop(path):
    os.symlink(path.parent / "loop-b", path.parent / "loop-a")
    os.symlink(path.parent / "loop-a", path.parent / "loop-b")
    os.symlink(path.parent / "loop-a", path)


def _socket(path):
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


def _sparse(path):
    path.touch()
    os.truncate(path, 5 * GIB)  # no disk space used


GZ = ".gz"
SMALL_GZ = gzip.compress(bytes(99), mtime=0)


@pytest.mark.parametrize("suffix,make,pattern", [
    ("", lambda p: p.mkdir(), "not a regular file but a directory"),
    (GZ, lambda p: p.mkdir(), "not a regular file but a directory"),
    ("", os.mkfifo, "not a regular file but a FIFO"),  # and no hang on opening it
    (GZ, lambda p: os.symlink("/dev/zero", p), "not a regular file but a device"),
    ("", _socket, "cannot be opened (No such device or address)"),
    ("", _symlink_loop, "cannot be opened (Too many levels of symbolic links)"),
    ("", _sparse, f"{5 * GIB} bytes, {CAP}"),
    (GZ, _sparse, f"{5 * GIB} bytes, {CAP}"),
    (GZ, lambda p: p.write_bytes(SMALL_GZ[:-8] + bytes(8)), "not a valid gzip file (CRC check failed"),
    (GZ, lambda p: p.write_bytes(SMALL_GZ + b"junk"), "not a valid gzip file (Not a gzipped file"),
])
def test_a_hostile_file_in_the_folder_gets_one_line(digits_files, tmp_path, suffix, make, pattern):
    name = "t10k-images-idx3-ubyte"  # the third file: two are read before it
    for other, data in digits_files.items():
        if other != name:
            (tmp_path / other).write_bytes(data)
    make(tmp_path / (name + suffix))
    message = fetch_error(str(tmp_path))
    assert f"{tmp_path / (name + suffix)}" in message and pattern in message


def test_a_folder_that_is_not_one(tmp_path):
    (tmp_path / "file").write_bytes(b"x")
    assert f"{tmp_path / 'file'}: not a folder" in fetch_error(str(tmp_path / "file"))
    os.symlink(tmp_path / "loop", tmp_path / "loop")
    assert f"{tmp_path / 'loop'}: cannot be read (Too many levels of symbolic links)" in fetch_error(
        str(tmp_path / "loop"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_read_permission(digits_files, tmp_path):
    for name, data in digits_files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "train-labels-idx1-ubyte").chmod(0)
    assert f"{tmp_path / 'train-labels-idx1-ubyte'}: cannot be opened (Permission denied)" in fetch_error(str(tmp_path))


def test_any_os_error_becomes_a_source_error(digits_files, tmp_path, monkeypatch):
    """As root (no permission errors to make), an EACCES from the open, mocked."""
    for name, data in digits_files.items():
        (tmp_path / name).write_bytes(data)
    real_open = os.open

    def deny(path, *args, **kwargs):
        if str(path).endswith("train-labels-idx1-ubyte"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", deny)
    assert f"{tmp_path / 'train-labels-idx1-ubyte'}: cannot be opened (Permission denied)" in fetch_error(str(tmp_path))


# -- idx headers ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(65536, 65536, 65536, 65536),  # 2**64: int64 arithmetic wraps to 0
                                   (2 ** 32 - 1,) * 3, (2 ** 31, 2 ** 31, 4)])
def test_an_idx_header_asking_for_too_much_is_refused_from_the_header(shape):
    declared = 4 + 4 * len(shape) + math.prod(shape)  # Python ints: exact
    with pytest.raises(IdxError, match=rf"header says shape .* \({declared} bytes\) but the file has 84 bytes"):
        from_idx(header(*shape) + b"\0" * (84 - 4 - 4 * len(shape)))


@pytest.mark.parametrize("bomb,pattern", [
    ("huge-header", f"its idx header declares shape (65536, 65536, 65536, 65536) ({2 ** 64 + 20} bytes), {CAP}"),
    ("header", "decompresses to more than the 47040016 bytes its idx header declares"),
])
def test_a_gzip_bomb_with_an_idx_header_is_refused_early(bombs, tmp_path, digits_files, bomb, pattern):
    for name, data in digits_files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "train-images-idx3-ubyte").unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(bombs[bomb])
    start = time.monotonic()
    assert pattern in fetch_error(str(tmp_path))
    assert time.monotonic() - start < 2


# -- the stage: one line, under a 2 GB address-space cap, and data/raw untouched ----------------
@pytest.fixture(scope="module")
def fetched(tmp_path_factory, digits_files):
    """A digits project with data/raw fetched from a local folder."""
    src = tmp_path_factory.mktemp("digits")
    for name, data in digits_files.items():
        (src / name).write_bytes(data)
    project = Project(tmp_path_factory.mktemp("fetched"), DIGITS_PARAMS)
    project.set("fetch.source", str(src))
    assert project.stage("fetch").returncode == 0, "fetch from a folder failed"
    return project


def snapshot(project) -> dict:
    raw = project.path / "data/raw"
    return {p.relative_to(raw): p.read_bytes() for p in sorted(raw.rglob("*"))}


@pytest.mark.parametrize("case", ["zeros-bomb", "header-bomb", "huge-header", "huge-file", "url-bomb", "drip"])
def test_the_stage_refuses_in_one_line_and_keeps_data_raw(fetched, bombs, server, digits_files, tmp_path, case):
    before = snapshot(fetched)
    assert len(before) == 5
    bad = tmp_path / "src"
    bad.mkdir()
    for name, data in digits_files.items():
        (bad / name).write_bytes(data)
    last = bad / "t10k-labels-idx1-ubyte"  # three files are read before it
    source, timeout, patterns = str(bad), 30, [f"{last}.gz: "]
    if case == "zeros-bomb":
        patterns += ["decompresses to more than 1 GiB, the cap for one file (MAX_IDX_BYTES"]
    elif case == "header-bomb":
        patterns += ["decompresses to more than the 47040016 bytes its idx header declares"]
    elif case == "huge-header":
        patterns += ["its idx header declares shape (65536, 65536, 65536, 65536)", CAP]
    elif case == "huge-file":
        patterns = [f"{last}: {5 * GIB} bytes, {CAP}"]
    elif case == "url-bomb":
        source, patterns = f"{server[0]}/bomb/", [f"{server[0]}/bomb/train-images-idx3-ubyte.gz: decompresses"]
    else:
        source, timeout, patterns = f"{server[0]}/drip/", 1, [f"{server[0]}/drip/train-images-idx3-ubyte.gz: {TIMEOUT}"]
    if case == "huge-file":
        last.unlink()
        _sparse(last)
    elif source == str(bad):
        last.unlink()
        (bad / f"{last.name}.gz").write_bytes(bombs[case.removesuffix("-bomb")])
    fetched.set("fetch.source", source)
    fetched.set("fetch.timeout", timeout)
    fetched.set("fetch.retries", 0)
    start = time.monotonic()
    proc = fetched.stage("fetch", memory=2 * GIB)
    line = assert_clean_failure(proc, "every source failed", *patterns)
    assert "does not match the pinned" not in line  # refused by the cap, not the content pin
    if case == "drip":
        assert time.monotonic() - start < 8  # the stage's start-up, and 1 s of dripping (not 30)
    assert snapshot(fetched) == before


def test_unpickler_refuses_anything_but_arrays():
    import os
    import pickle

    import numpy as np

    arrays = pickle.dumps(((np.zeros((2, 3), np.float32), np.arange(2)),), protocol=3)
    loaded = origins.load_arrays_pickle(arrays)
    assert loaded[0][0].shape == (2, 3)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        origins.load_arrays_pickle(pickle.dumps(os.system))


def test_a_rerun_of_fetch_takes_the_last_fetch_s_files_from_dvc_s_cache(tmp_path, monkeypatch):
    """An image added under data/source (fetch's dependency) reruns fetch for a named dataset too:
    it takes dvc.lock's data/raw back from DVC's cache, checked against the pins, instead of
    downloading MNIST again (offline, it would fail). Another dataset's files are not taken."""
    project = Project(tmp_path / "p", DIGITS_PARAMS)
    project.repro()
    before = project.digests(f"data/raw/{name}" for name in FILES)
    (project.path / "data/source/mine").mkdir()
    (project.path / "data/source/mine/a.txt").write_text("later: my own images\n")
    proc = project.dvc("repro")
    assert "Running stage 'fetch'" in proc.stdout and "Running stage 'prepare'" not in proc.stdout
    assert "fetch: fetched digits from the last fetch (the data/raw dvc.lock records" in proc.stderr
    assert project.digests(before) == before
    monkeypatch.chdir(project.path)
    assert named.reuse(DIGITS)[0] == {name: project.read(f"data/raw/{name}") for name in FILES}
    other = dataclasses.replace(DIGITS, content={**DIGITS.content, FILES[0]: "0" * 64})
    assert named.reuse(other) is None  # files that are not this dataset's: fetched from its sources instead
    shutil.rmtree(project.path / ".dvc/cache")
    shutil.rmtree(project.path / ".dvc/tmp/outputs")
    assert named.reuse(DIGITS) is None  # nothing kept: nothing to take
