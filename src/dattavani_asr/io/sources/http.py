"""Single files over HTTP(S) with httpx: read in byte ranges when the server offers them, else
downloaded (size-capped) to an anonymous temp file. Every request is retried with backoff behind a
circuit breaker per host (`retrying`), including the range reads in the middle of a long file.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote, urlsplit

import httpx

from ...core.errors import EmptyAudioError, InvalidOptionError, UnreadablePathError
from ..retrying import (
    DEFAULT_POLICY,
    CircuitOpenError,
    RetryPolicy,
    TransientError,
    call_with_retries,
    guarded,
    raise_if_transient,
)
from .base import Sink, SourceItem

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

DEFAULT_BLOCK_SIZE = 1 << 20  # bytes fetched per Range request
CONNECT_TIMEOUT = 30.0
READ_TIMEOUT = 120.0
DEFAULT_MAX_DOWNLOAD_MB = 4096  # servers without byte ranges: the most written to a temp file
MAX_DOWNLOAD_ENV = "DATTAVANI_MAX_DOWNLOAD_MB"
INSTALL_HINT = "pip install 'dattavani-asr[remote]'"
# Sizes and byte offsets must be those of the file itself, not of a compressed transfer.
REQUEST_HEADERS = {"User-Agent": "dattavani-asr", "Accept-Encoding": "identity"}

T = TypeVar("T")


def missing_extra(what: str, exc: ImportError) -> InvalidOptionError:
    return InvalidOptionError(f"{what} need `{INSTALL_HINT}` ({exc.name or exc} is not installed)")


def one_line(exc: BaseException) -> str:
    """The first line of an exception's text, or its class name when it has none."""
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def url_name(url: str) -> str:
    """The file name a URL ends with (percent-decoded), or its host when the path is empty."""
    parts = urlsplit(url)
    return PurePosixPath(unquote(parts.path)).name or parts.netloc or "download"


def http_version(info: dict[str, Any]) -> str:
    """Content identity from HTTP headers: ETag, else Content-MD5/Digest, else Last-Modified, else size."""
    for key in ("ETag", "Content-MD5", "Digest", "Last-Modified"):
        value = info.get(key)
        if value:
            return str(value).removeprefix("W/").strip('"')
    return f"size:{info.get('size')}"


def max_download_bytes() -> int:
    """The download cap: `DATTAVANI_MAX_DOWNLOAD_MB` when set, else `DEFAULT_MAX_DOWNLOAD_MB`."""
    value = os.environ.get(MAX_DOWNLOAD_ENV, "").strip()
    if not value:
        return DEFAULT_MAX_DOWNLOAD_MB << 20
    if not value.isdigit() or int(value) < 1:
        raise InvalidOptionError(f"{MAX_DOWNLOAD_ENV}={value!r}: expected a whole number of MB (1 or more)")
    return int(value) << 20


@dataclass(frozen=True)
class RemoteFile:
    """What a HEAD (or a GET's headers) says about a URL."""

    size: int | None
    version: str
    ranges: bool


def remote_file(response: httpx.Response) -> RemoteFile:
    headers = response.headers
    length = headers.get("content-length", "")
    size = int(length) if length.isdigit() else None
    names = ("ETag", "Content-MD5", "Digest", "Last-Modified")
    info: dict[str, Any] = {name: headers.get(name) for name in names} | {"size": size}
    ranges = headers.get("accept-ranges", "").strip().lower() == "bytes"
    return RemoteFile(size, http_version(info), ranges)


def check_status(response: httpx.Response, url: str) -> None:
    """Pass a success; `TransientError` for 429/5xx; `UnreadablePathError` (no retry) for the rest."""
    raise_if_transient(response)
    status = response.status_code
    if status in (404, 410):
        raise UnreadablePathError(f"{url}: not found (HTTP {status})")
    if not response.is_success:
        detail = f"HTTP {status} {response.reason_phrase}".strip()
        raise UnreadablePathError(f"{url}: cannot read ({detail})")


def content_range(response: httpx.Response) -> tuple[int, int, int] | None:
    """(first, last, total) from `Content-Range: bytes first-last/total`, or None (e.g. total `*`)."""
    unit, _, spec = response.headers.get("content-range", "").strip().partition(" ")
    span, _, total = spec.partition("/")
    first, _, last = span.partition("-")
    if unit.lower() != "bytes" or not (first.isdigit() and last.isdigit() and total.isdigit()):
        return None
    return int(first), int(last), int(total)


class RangeReader(io.RawIOBase):
    """A seekable raw stream of `size` bytes; `fetch(start, end)` reads bytes [start, end) remotely.

    Each read fetches at most `block_size` bytes; wrap it in `io.BufferedReader` with the same size.
    `first_block` (bytes from offset 0, already fetched) is served without a request.
    """

    def __init__(
        self,
        name: str,
        size: int,
        fetch: Callable[[int, int], bytes],
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        first_block: bytes = b"",
        on_close: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.size = size
        self.fetch = fetch
        self.block_size = block_size
        self.first_block = first_block
        self.on_close = on_close
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        bases = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}
        if whence not in bases:
            raise ValueError(f"invalid whence ({whence})")
        if bases[whence] + offset < 0:
            raise ValueError("negative seek position")
        self._position = bases[whence] + offset
        return self._position

    def readinto(self, buffer: WriteableBuffer) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        target = memoryview(buffer).cast("B")
        start = self._position
        end = min(start + len(target), start + self.block_size, self.size)
        if end <= start:
            return 0
        if start < len(self.first_block):
            data = self.first_block[start : min(end, len(self.first_block))]
        else:
            data = self.fetch(start, end)
        target[: len(data)] = data
        self._position += len(data)
        return len(data)

    def readall(self) -> bytes:
        """The rest of the stream, a block per request (the default would send one per 8 KiB)."""
        chunks = []
        while chunk := self.read(self.block_size):
            chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self.on_close is not None:
                self.on_close()
        finally:
            super().close()


@dataclass(frozen=True)
class _FirstBlock:
    data: bytes
    size: int


class HttpSource:
    """A single file URL. `expand` sends one HEAD; `open` returns a seekable binary stream."""

    def __init__(
        self,
        block_size: int = DEFAULT_BLOCK_SIZE,
        *,
        policy: RetryPolicy | None = None,
        max_download: int | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        self.block_size = block_size
        self.policy = policy or DEFAULT_POLICY
        self.max_download = max_download  # None: read DATTAVANI_MAX_DOWNLOAD_MB when first needed
        # No overall limit: a long file streams for long.
        self.timeout = timeout or httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
        self._ranges: dict[str, bool] = {}  # uri → whether its HEAD offered byte ranges

    def matches(self, spec: str) -> bool:
        return spec.lower().startswith(("http://", "https://"))

    def client(self) -> httpx.Client:
        return httpx.Client(timeout=self.timeout, follow_redirects=True, headers=REQUEST_HEADERS)

    def expand(self, spec: str, pattern: str | None) -> Iterator[SourceItem]:
        """The one file the URL names (`pattern` does not apply to an explicitly named file)."""
        if not urlsplit(spec).hostname:
            raise UnreadablePathError(f"{spec}: not a URL (no host name)")
        with self.client() as client:
            remote = self._retried(spec, lambda: self._head(client, spec))
        self._ranges[spec] = remote.ranges
        name = url_name(spec)
        parts = urlsplit(spec)
        folder = PurePosixPath("/", parts.netloc, *PurePosixPath(unquote(parts.path)).parent.parts[1:])
        yield SourceItem(
            uri=spec,
            name=name,
            relative=PurePosixPath(name),
            size=remote.size,
            version=remote.version,
            space="http",
            root=folder,  # host/folder: URLs of one folder share it
        )

    def open(self, item: SourceItem) -> IO[bytes]:
        """Range reads when the server honours them and gives a size; else the whole file, downloaded."""
        client = self.client()
        try:
            ranged = self._ranges.get(item.uri, True)
            opened = self._retried(item.uri, lambda: self._first_get(client, item.uri, ranged))
        except BaseException:
            client.close()
            raise
        if isinstance(opened, _FirstBlock):
            reader = RangeReader(
                item.uri,
                opened.size,
                lambda start, end: self._fetch_range(client, item.uri, start, end),
                block_size=self.block_size,
                first_block=opened.data,
                on_close=client.close,
            )
            return io.BufferedReader(reader, buffer_size=self.block_size)
        client.close()
        return opened

    def default_sink(self) -> Sink:
        raise InvalidOptionError(
            "http(s) sources have no writable location beside them: transcribing URLs needs --output-dir"
        )

    def _retried(self, url: str, attempt: Callable[[], T]) -> T:
        """`attempt()` through the host's breaker, retried; every failure becomes an UnreadablePathError."""

        def guarded_attempt() -> T:
            with guarded(url):
                return attempt()

        try:
            return call_with_retries(guarded_attempt, self.policy)
        except TransientError as exc:
            raise UnreadablePathError(f"{url}: cannot read ({exc})") from exc
        except CircuitOpenError as exc:
            raise UnreadablePathError(f"{url}: {exc}") from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise UnreadablePathError(f"{url}: cannot read ({type(exc).__name__}: {one_line(exc)})") from exc

    def _head(self, client: httpx.Client, url: str) -> RemoteFile:
        response = client.head(url)
        # 405/501: no HEAD here; 403: URLs signed for GET only (S3, GCS) refuse a HEAD.
        if response.status_code not in (403, 405, 501):
            check_status(response, url)
            return remote_file(response)
        with client.stream("GET", url) as response:  # HEAD refused: the headers of a GET, body unread
            check_status(response, url)
            return remote_file(response)

    def _first_get(self, client: httpx.Client, url: str, ranged: bool) -> _FirstBlock | IO[bytes]:
        """The first block when the server answers a Range request with 206 and a size; else a download."""
        headers = {"Range": f"bytes=0-{self.block_size - 1}"} if ranged else {}
        with client.stream("GET", url, headers=headers) as response:
            if response.status_code == 416 and content_range_total(response) == 0:
                raise EmptyAudioError(f"{url}: file is empty (0 bytes)")
            check_status(response, url)
            span = content_range(response) if response.status_code == 206 else None
            if span is not None and span[0] == 0:
                data = response.read()
                if len(data) != span[1] + 1:
                    raise TransientError(f"short reply: {len(data)} of {span[1] + 1} bytes")
                return _FirstBlock(data, span[2])
            if response.status_code != 206:
                return self._download(response, url)
        return self._first_get(client, url, ranged=False)  # a 206 without a total size: fetch it whole

    def _fetch_range(self, client: httpx.Client, url: str, start: int, end: int) -> bytes:
        def attempt() -> bytes:
            with client.stream("GET", url, headers={"Range": f"bytes={start}-{end - 1}"}) as response:
                check_status(response, url)
                span = content_range(response)
                if response.status_code != 206 or span is None or span[0] != start:
                    raise UnreadablePathError(f"{url}: the server stopped honouring byte ranges mid-file")
                data = response.read()
            if len(data) != end - start:
                raise TransientError(f"short reply: {len(data)} of {end - start} bytes")
            return data

        return self._retried(url, attempt)

    def _download(self, response: httpx.Response, url: str) -> IO[bytes]:
        """The response body in an anonymous temp file (gone once closed, or if the process dies), rewound."""
        cap = self.max_download if self.max_download is not None else max_download_bytes()
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise too_large(url, cap)
        raw = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115 - returned open, closed by the caller
        raw.name = url
        stream = io.BufferedRandom(raw, buffer_size=self.block_size)
        try:
            size = 0
            for chunk in response.iter_bytes(self.block_size):
                size += len(chunk)
                if size > cap:
                    raise too_large(url, cap)
                stream.write(chunk)
            stream.flush()
            stream.seek(0)
        except OSError as exc:
            stream.close()
            raise UnreadablePathError(f"{url}: cannot store the download ({exc.strerror or exc})") from exc
        except BaseException:
            stream.close()
            raise
        if size == 0:
            stream.close()
            raise EmptyAudioError(f"{url}: file is empty (0 bytes)")
        return stream


def content_range_total(response: httpx.Response) -> int | None:
    """The total size in `Content-Range: bytes */total` (a 416's answer)."""
    total = response.headers.get("content-range", "").rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None


def too_large(url: str, cap: int) -> UnreadablePathError:
    return UnreadablePathError(
        f"{url}: larger than the {cap / 1048576:g} MB download limit (the server cannot serve byte ranges; "
        f"raise {MAX_DOWNLOAD_ENV} to allow more)"
    )
