"""A loopback HTTP file server with Range support that counts requests and bytes sent."""

from __future__ import annotations

import hashlib
import re
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


@dataclass
class FileServer:
    """Serves `files` (URL path → bytes). `log` records every response."""

    files: dict[str, bytes]
    log: list[Served] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

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


def _handler(state: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, with_body: bool) -> None:
            path = self.path.split("?", 1)[0]
            data = state.files.get(path)
            range_header = self.headers.get("Range")
            if data is None:
                self._reply(404, b"not found", {}, with_body, range_header)
                return
            headers = {
                "Accept-Ranges": "bytes",
                "ETag": f'"{hashlib.md5(data).hexdigest()}"',
                "Last-Modified": "Wed, 21 Oct 2015 07:28:00 GMT",
                "Content-Type": "application/octet-stream",
            }
            if range_header is None:
                self._reply(200, data, headers, with_body, None)
                return
            span = _byte_range(range_header, len(data))
            if span is None:
                headers["Content-Range"] = f"bytes */{len(data)}"
                self._reply(416, b"", headers, with_body, range_header)
                return
            headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{len(data)}"
            self._reply(206, data[span[0] : span[1]], headers, with_body, range_header)

        def _reply(self, status: int, body: bytes, headers: dict[str, str], with_body: bool, rng: str | None) -> None:
            # Logged before replying: a client may read the reply and check the log before this thread resumes.
            sent = len(body) if with_body else 0
            state.log.append(Served(self.command, self.path.split("?", 1)[0], rng, status, sent))
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(with_body=True)

        def do_HEAD(self) -> None:
            self._send(with_body=False)

    return Handler


@contextmanager
def serve_files(files: dict[str, bytes]) -> Iterator[FileServer]:
    state = FileServer(files)
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
