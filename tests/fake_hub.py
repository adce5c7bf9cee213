"""A tiny stand-in for the Hugging Face Hub, served from local files over plain HTTP.

It implements only what `huggingface_hub.snapshot_download` (2.x) asks for:

- `GET /api/models/{repo}/revision/{rev}`: repo info; the client needs `id` and `sha` (the commit).
- `GET /api/models/{repo}/tree/{commit}?recursive=...`: the file listing snapshot_download filters with
  `allow_patterns` (2.x lists the tree; it no longer relies on the `siblings` of the repo info).
- `HEAD /{repo}/resolve/{rev}/{file}`: file metadata from headers: `X-Repo-Commit`, `ETag` and
  `Content-Length`. Like the real Hub, LFS files answer with a 302 to a "CDN" on another origin
  (a second port on 127.0.0.1) and carry `X-Linked-Etag` / `X-Linked-Size` on the redirect.
- `GET` of the file (or of the CDN url), honouring `Range: bytes=a-[b]` with a 206 reply.
- `GET /api/agent-harnesses`: huggingface_hub fetches this registry once a day when it builds its
  User-Agent header (unless HF_HUB_DISABLE_TELEMETRY is set); answered with an empty registry.

No response carries `X-Xet-Hash` and no tree entry carries `xetHash`, so hf_xet is never used.
`cut_after` makes the first full GET of a file stop early, to exercise the client's Range resume.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import unquote, urlsplit

CHUNK = 1 << 20
LFS_THRESHOLD = 10 * 1024 * 1024


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    host: str
    range: str | None


@dataclass(frozen=True)
class FileMeta:
    name: str
    source: Path | bytes
    size: int
    sha256: str
    git_oid: str
    lfs: bool

    def lfs_pointer(self) -> bytes:
        return _lfs_pointer(self.sha256, self.size)

    def tree_entry(self) -> dict[str, object]:
        entry: dict[str, object] = {"type": "file", "path": self.name, "size": self.size, "oid": self.git_oid}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(self.lfs_pointer())}
        return entry

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end] (inclusive) of the file."""
        if isinstance(self.source, bytes):
            yield self.source[start : end + 1]
            return
        with self.source.open("rb") as handle:
            handle.seek(start)
            remaining = end + 1 - start
            while remaining > 0 and (block := handle.read(min(CHUNK, remaining))):
                remaining -= len(block)
                yield block


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_meta(name: str, source: Path | bytes) -> FileMeta:
    data = source if isinstance(source, bytes) else None
    digest = hashlib.sha256(data or b"")
    if isinstance(source, Path):
        with source.open("rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    lfs = size > LFS_THRESHOLD or name.endswith(".bin")
    if lfs:
        content = _lfs_pointer(digest.hexdigest(), size)
    else:
        content = source if isinstance(source, bytes) else source.read_bytes()
    return FileMeta(name, source, size, digest.hexdigest(), _git_blob_oid(content), lfs)


@dataclass
class FakeRepo:
    repo_id: str
    files: dict[str, FileMeta]
    commit: str = ""

    def __post_init__(self) -> None:
        self.commit = self.commit or hashlib.sha1(self.repo_id.encode()).hexdigest()

    def knows_revision(self, revision: str) -> bool:
        return revision in ("main", self.commit)


@dataclass
class FakeHub:
    """Serve `repos` ({repo_id: {filename: path or bytes}}) on 127.0.0.1 at a random port."""

    repos: Mapping[str, Mapping[str, Path | bytes]]
    cut_after: dict[str, int] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _repos: dict[str, FakeRepo] = field(default_factory=dict, init=False)
    _by_sha: dict[str, FileMeta] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _servers: list[ThreadingHTTPServer] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        for repo_id, files in self.repos.items():
            metas = {name: file_meta(name, source) for name, source in files.items()}
            self._repos[repo_id] = FakeRepo(repo_id, metas)
            self._by_sha.update({meta.sha256: meta for meta in metas.values()})

    @property
    def port(self) -> int:
        assert self._servers, "hub not started"
        return int(self._servers[0].server_address[1])

    @property
    def cdn_endpoint(self) -> str:
        assert self._servers, "hub not started"
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def commit(self, repo_id: str) -> str:
        return self._repos[repo_id].commit

    def start(self) -> FakeHub:
        handler = type("Handler", (_Handler,), {"hub": self})
        for role in ("hub", "cdn"):  # two origins: the hub redirects LFS files to the "cdn"
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            server.daemon_threads = True
            serve = threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=role, daemon=True
            )
            serve.start()
            self._servers.append(server)
        return self

    def stop(self) -> None:
        while self._servers:
            server = self._servers.pop()
            server.shutdown()
            server.server_close()

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def paths(self, method: str | None = None) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests if method is None or r.method == method]

    def take_cut(self, name: str) -> int | None:
        with self._lock:
            return self.cut_after.pop(name, None)

    def route(self, handler: _Handler, path: str) -> None:
        if path == "/api/agent-harnesses":
            handler.send_json({"standardEnvVars": [], "harnesses": {}})
        elif match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/revision/([^/]+)", path):
            self._with_repo(handler, match[1], match[2], self._info)
        elif match := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)", path):
            self._with_repo(handler, match[1], match[2], self._tree)
        elif match := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            name = match[3]
            self._with_repo(handler, match[1], match[2], lambda h, repo: self._resolve(h, repo, name))
        elif (match := re.fullmatch(r"/cdn/([0-9a-f]{64})", path)) and match[1] in self._by_sha:
            handler.send_file(self._by_sha[match[1]], {})
        else:
            handler.send_json({"error": "not found"}, status=404)

    def _with_repo(self, handler: _Handler, repo_id: str, revision: str, then: RepoView) -> None:
        repo = self._repos.get(repo_id)
        if repo is None:
            handler.send_json({"error": "Repository not found"}, 404, {"X-Error-Code": "RepoNotFound"})
        elif not repo.knows_revision(revision):
            handler.send_json({"error": "Invalid rev id"}, 404, {"X-Error-Code": "RevisionNotFound"})
        else:
            then(handler, repo)

    @staticmethod
    def _info(handler: _Handler, repo: FakeRepo) -> None:
        siblings = [{"rfilename": name} for name in repo.files]
        handler.send_json({"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.commit, "siblings": siblings})

    @staticmethod
    def _tree(handler: _Handler, repo: FakeRepo) -> None:
        handler.send_json([meta.tree_entry() for meta in repo.files.values()])

    def _resolve(self, handler: _Handler, repo: FakeRepo, name: str) -> None:
        meta = repo.files.get(name)
        commit = {"X-Repo-Commit": repo.commit}
        if meta is None:
            handler.send_json({"error": "Entry not found"}, 404, {**commit, "X-Error-Code": "EntryNotFound"})
        elif meta.lfs:  # like the Hub: redirect LFS files to a CDN on another origin
            cdn = f"{self.cdn_endpoint}/cdn/{meta.sha256}"
            linked = {"X-Linked-Etag": f'"{meta.sha256}"', "X-Linked-Size": str(meta.size)}
            handler.send_empty(302, {**commit, **linked, "ETag": f'"{meta.git_oid}"', "Location": cdn})
        else:
            handler.send_file(meta, {**commit, "ETag": f'"{meta.git_oid}"'})


RepoView = Callable[["_Handler", FakeRepo], None]


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    match = re.fullmatch(r"bytes=(\d+)-(\d*)", header or "")
    if match is None:
        return None
    start, end = int(match[1]), int(match[2]) if match[2] else size - 1
    return start, min(end, size - 1)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hub: FakeHub

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        path = unquote(urlsplit(self.path).path)
        self.hub.record(Request(self.command, path, self.headers.get("Host", ""), self.headers.get("Range")))
        try:
            self.hub.route(self, path)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def send_empty(self, status: int, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": "0"}.items():
            self.send_header(key, value)
        self.end_headers()

    def send_json(self, payload: object, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        for key, value in {**(headers or {}), "Content-Type": "application/json"}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_file(self, meta: FileMeta, headers: Mapping[str, str]) -> None:
        span = _parse_range(self.headers.get("Range"), meta.size)
        start, end = span or (0, meta.size - 1)
        self.send_response(206 if span else 200)
        base = {"ETag": f'"{meta.sha256}"', "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        for key, value in {**base, **headers, "Content-Length": str(end + 1 - start)}.items():
            self.send_header(key, value)
        if span:
            self.send_header("Content-Range", f"bytes {start}-{end}/{meta.size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        cut = self.hub.take_cut(meta.name) if not span else None
        sent = 0
        for block in meta.chunks(start, end):
            if cut is not None and sent + len(block) > cut:
                self.wfile.write(block[: cut - sent])
                self.wfile.flush()
                self.close_connection = True  # hang up mid-body: the client must resume with Range
                return
            self.wfile.write(block)
            sent += len(block)
