"""An in-memory stand-in for the Drive v3 endpoints the Drive source and sink use, over loopback HTTP.

files.list (with `q`, forced small pages and nextPageToken), files.get (metadata, or alt=media with
Range), files.create (JSON metadata, e.g. folders), multipart upload create and media PATCH update.
Every request is logged so tests can check what went over the wire.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

FOLDER = "application/vnd.google-apps.folder"
_STRING = r"'((?:[^'\\]|\\.)*)'"
_CLAUSE = re.compile(
    rf"\s*(?:{_STRING}\s+in\s+parents|trashed\s*=\s*(true|false)|(name|mimeType)\s*(=|!=)\s*{_STRING})\s*(?:and\b|$)"
)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    range: str | None
    status: int
    body_bytes: int = 0


@dataclass
class FakeDrive:
    page_size: int = 2  # the most files.list returns per page, whatever the client asks
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    log: list[Request] = field(default_factory=list)
    url: str = ""
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, parent: str | None, mime: str, content: bytes | None = None) -> str:
        with self._lock:
            file_id = f"fake{next(self._ids):04d}-{hashlib.md5(name.encode()).hexdigest()[:8]}"
            self.files[file_id] = {
                "id": file_id,
                "name": name,
                "mimeType": mime,
                "parents": [parent] if parent else [],
                "content": content,
                "version": 1,
                "trashed": False,
            }
        return file_id

    def metadata(self, file_id: str) -> dict[str, Any]:
        entry = self.files[file_id]
        out = {key: entry[key] for key in ("id", "name", "mimeType", "parents")}
        out["modifiedTime"] = f"2024-01-01T00:00:{entry['version']:02d}.000Z"
        if entry["content"] is not None:
            out["size"] = str(len(entry["content"]))
            out["md5Checksum"] = hashlib.md5(entry["content"]).hexdigest()
        return out

    def named(self, name: str, parent: str | None = None) -> list[dict[str, Any]]:
        return [f for f in self.files.values() if f["name"] == name and (parent is None or parent in f["parents"])]

    def requests(self, method: str, path_prefix: str = "") -> list[Request]:
        return [entry for entry in self.log if entry.method == method and entry.path.startswith(path_prefix)]

    def query(self, q: str) -> list[dict[str, Any]]:
        """Files matching a Drive query made of `and`-joined clauses this stand-in knows."""
        tests: list[Callable[[dict[str, Any]], bool]] = []
        position = 0
        while position < len(q):
            match = _CLAUSE.match(q, position)
            if not match:
                raise ValueError(f"unsupported query at {q[position:]!r}")
            position = match.end()
            parent, trashed, key, op, value = match.groups()
            if parent is not None:
                tests.append(_field_test("parents", _unescape(parent), contains=True))
            elif trashed is not None:
                tests.append(_field_test("trashed", trashed == "true"))
            else:
                tests.append(_field_test(key, _unescape(value), negate=op == "!="))
        return sorted((f for f in self.files.values() if all(test(f) for test in tests)), key=lambda f: f["name"])


def _field_test(
    key: str, wanted: object, contains: bool = False, negate: bool = False
) -> Callable[[dict[str, Any]], bool]:
    def test(entry: dict[str, Any]) -> bool:
        hit = wanted in entry[key] if contains else entry[key] == wanted
        return hit != negate

    return test


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", header or "")
    if not match:
        return None
    start = int(match.group(1))
    end = min(size, int(match.group(2)) + 1) if match.group(2) else size
    return start, end


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], bytes, str]:
    message: Any = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=email.policy.HTTP
    )
    parts = list(message.iter_parts())
    metadata = json.loads(parts[0].get_payload(decode=True))
    return metadata, bytes(parts[1].get_payload(decode=True)), str(parts[1].get_content_type())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    drive: FakeDrive

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(
        self, status: int, payload: Any = None, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> None:
        data = body if body is not None else json.dumps(payload if payload is not None else {}).encode()
        # Logged before replying: a client may read the reply and check the log before this thread resumes.
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        self.drive.log.append(Request(self.command, parts.path, query, self.headers.get("Range"), status, len(data)))
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if body is not None else "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _parsed(self) -> tuple[str, dict[str, str], bytes]:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        return parts.path, query, self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        path, query, _ = self._parsed()
        if path == "/drive/v3/files":
            self._list(query)
            return
        file_id = path.removeprefix("/drive/v3/files/")
        if not path.startswith("/drive/v3/files/") or file_id not in self.drive.files:
            self._reply(404, {"error": {"code": 404, "message": f"File not found: {file_id}."}})
        elif query.get("alt") == "media":
            self._media(file_id)
        else:
            self._reply(200, self.drive.metadata(file_id))

    def _list(self, query: dict[str, str]) -> None:
        found = self.drive.query(query.get("q", ""))
        size = min(int(query.get("pageSize", 100)), self.drive.page_size)
        start = int(query.get("pageToken", 0))
        page: dict[str, Any] = {"files": [self.drive.metadata(f["id"]) for f in found[start : start + size]]}
        if start + size < len(found):
            page["nextPageToken"] = str(start + size)
        self._reply(200, page)

    def _media(self, file_id: str) -> None:
        content = self.drive.files[file_id]["content"]
        if content is None:
            self._reply(403, {"error": {"code": 403, "message": "Only files with binary content can be downloaded."}})
            return
        span = _byte_range(self.headers.get("Range"), len(content))
        if span is None:
            self._reply(200, body=content)
            return
        headers = {"Content-Range": f"bytes {span[0]}-{span[1] - 1}/{len(content)}"}
        self._reply(206, body=content[span[0] : span[1]], headers=headers)

    def do_POST(self) -> None:
        path, query, body = self._parsed()
        if path == "/drive/v3/files":
            metadata, content = json.loads(body), None
        elif path == "/upload/drive/v3/files" and query.get("uploadType") == "multipart":
            metadata, content, _ = _multipart(self.headers["Content-Type"], body)
        else:
            self._reply(400, {"error": {"code": 400, "message": f"unsupported {path} {query}"}})
            return
        parents = metadata.get("parents") or [None]
        file_id = self.drive.add(metadata["name"], parents[0], metadata.get("mimeType", "text/plain"), content)
        self._reply(200, {"id": file_id})

    def do_PATCH(self) -> None:
        path, query, body = self._parsed()
        file_id = path.removeprefix("/upload/drive/v3/files/")
        if file_id not in self.drive.files or query.get("uploadType") != "media":
            self._reply(404, {"error": {"code": 404, "message": f"File not found: {file_id}."}})
            return
        entry = self.drive.files[file_id]
        entry["content"] = body
        entry["version"] += 1
        self._reply(200, {"id": file_id})


@contextmanager
def serve_drive(drive: FakeDrive) -> Iterator[FakeDrive]:
    handler = type("Handler", (_Handler,), {"drive": drive})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    drive.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield drive
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
