"""HTTP downloads for fetch: a wall-clock deadline per request, a size cap, retries.

`timeout` bounds each whole request - connect, TLS handshake, headers and body -
by the clock: a watchdog shuts the request's sockets down at its deadline, so a
server that sends one byte now and then cannot keep it alive (a socket timeout
alone bounds each read, not the request). Name resolution (DNS) is not covered.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import BinaryIO

from tqdm import tqdm


class DownloadError(Exception):
    """The URL did not deliver; the message names it and says why."""


class _Again(Exception):
    """This try failed; another may not (a timeout, a dropped connection, a 5xx answer)."""


class _Final(Exception):
    """This try failed and another would too (a 4xx answer, too large, not a valid URL)."""


class _Deadline:
    """Shuts down every socket of one request when its time is up (through a duplicate of
    each: TLS detaches the socket it wraps, and shuts down the TLS state under a reader)."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.cancel()
        with self._lock:
            for sock in self._sockets:
                sock.close()

    def connect(self, address, timeout=None, source_address=None, **kwargs) -> socket.socket:
        """socket.create_connection, with the time left as its timeout and the socket watched."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        sock = socket.create_connection(address, left, source_address, **kwargs)
        with self._lock:
            self._sockets.append(sock.dup())
            if self.expired:
                _shut(sock)
        return sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock: socket.socket) -> None:
    """Wake any read blocked on the connection: it sees end-of-stream, or an error."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Watched:
    """A handler mixin: its connections connect through the deadline."""

    deadline: _Deadline

    def do_open(self, http_class, req, **kwargs):
        deadline = self.deadline

        class Connection(http_class):
            def __init__(self, *args, **kw):
                super().__init__(*args, **kw)
                self._create_connection = deadline.connect

        return super().do_open(Connection, req, **kwargs)


class _HTTP(_Watched, urllib.request.HTTPHandler):
    pass


class _HTTPS(_Watched, urllib.request.HTTPSHandler):
    pass


def _opener(deadline: _Deadline) -> urllib.request.OpenerDirector:
    """http(s) only - a redirect to ftp: or file: is refused - with proxies and redirects."""
    opener = urllib.request.OpenerDirector()
    for handler in (urllib.request.ProxyHandler(), urllib.request.UnknownHandler(),
                    urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPRedirectHandler(),
                    urllib.request.HTTPErrorProcessor(), _HTTP(), _HTTPS()):
        handler.deadline = deadline
        opener.add_handler(handler)
    return opener


def _cause(exc: Exception):
    return exc.reason if isinstance(exc, urllib.error.URLError) else exc  # a str, or the socket's error


def _why(exc: Exception) -> str:
    """A failed try's reason, on one line (a server chooses some of this text)."""
    cause = _cause(exc)
    text = " ".join(str(cause).split())[:300] or type(cause).__name__
    if isinstance(cause, http.client.HTTPException) and not isinstance(cause, OSError):
        return f"not a valid HTTP answer ({type(cause).__name__}: {text})"
    return text


def _get_once(url: str, into: BinaryIO, timeout: float, max_bytes: int, cap: str) -> None:
    size = length = 0
    with _Deadline(timeout) as deadline:
        try:
            with _opener(deadline).open(url, timeout=timeout) as resp:
                length = resp.length  # Content-Length, or None (absent or malformed)
                if length is not None and length > max_bytes:
                    raise _Final(f"the server announces {length} bytes, over {cap}")
                with tqdm(total=length, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                          leave=False, disable=None) as bar:
                    while chunk := resp.read1(1 << 16):
                        size += len(chunk)
                        if size > max_bytes:
                            raise _Final(f"more than {cap}")
                        into.write(chunk)
                        bar.update(len(chunk))
        except urllib.error.HTTPError as exc:
            raise (_Final if exc.code < 500 else _Again)(f"HTTP {exc.code} {_why(exc)}") from None
        except (http.client.InvalidURL, ValueError, OverflowError) as exc:  # e.g. a bad port or host
            raise _Final(f"not a valid URL ({' '.join(str(exc).split())})") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            # at the deadline a read sees an error, or end-of-stream (checked below)
            if not (deadline.expired or isinstance(_cause(exc), TimeoutError)):
                raise _Again(_why(exc)) from None
            deadline.expired = True
    if deadline.expired:
        raise _Again(f"no complete answer within {timeout:g} s (fetch.timeout; raise it for a slow link)")
    if length is not None and size < length:
        raise _Again(f"the connection closed after {size} of {length} bytes")


def get(url: str, into: BinaryIO, timeout: float, retries: int, max_bytes: int, cap: str) -> None:
    """GET url into the file `into` (emptied first), at most `max_bytes` (described as `cap`),
    each try within `timeout` seconds all told. Timeouts, dropped connections and 5xx answers
    are retried `retries` times; DownloadError naming the url if it never delivers."""
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(min(0.5 * 2 ** (attempt - 1), 4.0))
        into.seek(0)
        into.truncate()
        try:
            return _get_once(url, into, timeout, max_bytes, cap)
        except _Final as exc:
            raise DownloadError(f"{url}: {exc}") from None
        except _Again as exc:
            last = exc
    raise DownloadError(f"{url}: {last}")
