"""A loopback HTTP file server that counts requests and bytes sent, and can misbehave on request:
no Range support, no HEAD, no Content-Length, failing first requests, bodies cut off mid-way,
fixed statuses and redirects."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


@dataclass
class Served:
    method: str
    path: str
    range: str | None
    status: int
    body_bytes: int
    host: str | None = None  # the request's Host header


@dataclass
class FileServer:
    """Serves `files` (URL path → bytes). `log` records every response.

    Requests are numbered from 1 in arrival order (HEAD and GET alike): the first `fail_first`
    answer `fail_status` (with `retry_after` when set), and those numbered in `cut` send half their
    body, then close the connection.
    """

    files: dict[str, bytes]
    accept_ranges: bool = True  # advertise `Accept-Ranges: bytes`
    honour_ranges: bool = True  # False: a Range header is ignored (200 with the whole file)
    head: bool = True  # False: HEAD is answered 405
    content_length: bool = True  # False: no Content-Length, the body ends when the connection closes
    fail_first: int = 0
    fail_status: int = 503
    retry_after: str | None = None
    cut: set[int] = field(default_factory=set)
    statuses: dict[str, int] = field(default_factory=dict)  # path → status answered instead of the file
    redirects: dict[str, str] = field(default_factory=dict)  # path → Location of a 302
    log: list[Served] = field(default_factory=list)
    requests: int = 0
    server: ThreadingHTTPServer | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def number(self) -> int:
        with self.lock:
            self.requests += 1
            return self.requests

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}"

    def responses(self, path: str, method: str = "GET") -> list[Served]:
        return [entry for entry in self.log if entry.path == path and entry.method == method]


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """[start, end) for a single `bytes=a-b` range, or None when unsatisfiable."""
    match = _RANGE.match(header.strip())
    if not match or not (match.group(1) or match.group(2)):
        return None
    if not match.group(1):
        return max(0, size - int(match.group(2))), size
    start = int(match.group(1))
    end = min(size, int(match.group(2)) + 1) if match.group(2) else size
    return (start, end) if start < size and start < end else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: FileServer  # set on a subclass per server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, with_body: bool) -> None:
        number = self.state.number()
        path = self.path.split("?", 1)[0]
        data = self.state.files.get(path)
        range_header = self.headers.get("Range")
        if number <= self.state.fail_first:
            headers = {"Retry-After": self.state.retry_after} if self.state.retry_after else {}
            self._reply(self.state.fail_status, b"try again", headers, with_body, range_header)
        elif path in self.state.redirects:
            self._reply(302, b"", {"Location": self.state.redirects[path]}, with_body, range_header)
        elif path in self.state.statuses or data is None:
            self._reply(self.state.statuses.get(path, 404), b"no", {}, with_body, range_header)
        elif self.command == "HEAD" and not self.state.head:
            self._reply(405, b"", {"Allow": "GET"}, with_body, range_header)
        else:
            self._send_file(data, with_body, range_header, cut=number in self.state.cut)

    def _send_file(self, data: bytes, with_body: bool, range_header: str | None, cut: bool) -> None:
        headers = {
            "ETag": f'"{hashlib.md5(data).hexdigest()}"',
            "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT",
            "Content-Type": "application/octet-stream",
        }
        if self.state.accept_ranges:
            headers["Accept-Ranges"] = "bytes"
        if range_header is None or not self.state.honour_ranges:
            self._reply(200, data, headers, with_body, range_header, cut)
            return
        span = _byte_range(range_header, len(data))
        if span is None:
            headers["Content-Range"] = f"bytes */{len(data)}"
            self._reply(416, b"", headers, with_body, range_header)
            return
        headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{len(data)}"
        self._reply(206, data[span[0] : span[1]], headers, with_body, range_header, cut)

    def _reply(
        self,
        status: int,
        body: bytes,
        headers: dict[str, str],
        with_body: bool,
        rng: str | None,
        cut: bool = False,
    ) -> None:
        sent = body[: len(body) // 2] if cut else body
        # Logged before replying: a client may read the reply and check the log before this thread resumes.
        self.state.log.append(
            Served(
                self.command,
                self.path.split("?", 1)[0],
                rng,
                status,
                len(sent) if with_body else 0,
                self.headers.get("Host"),
            )
        )
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if self.state.content_length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if with_body:
            self.wfile.write(sent)
        if cut:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

    def do_GET(self) -> None:
        self._send(with_body=True)

    def do_HEAD(self) -> None:
        self._send(with_body=False)


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"state": state})


@contextmanager
def serve_files(files: dict[str, bytes], **behaviour: Any) -> Iterator[FileServer]:
    """Serve `files` on a loopback port; `behaviour` sets the other `FileServer` fields."""
    state = FileServer(files, **behaviour)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
