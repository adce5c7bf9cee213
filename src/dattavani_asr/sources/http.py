"""Single files over HTTP(S), streamed with Range requests through fsspec (never downloaded whole)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO, Any, cast
from urllib.parse import unquote, urlsplit

from ..errors import InvalidOptionError, UnreadablePathError
from .base import Sink, SourceItem

DEFAULT_BLOCK_SIZE = 1 << 20  # bytes fetched per Range request
CONNECT_TIMEOUT = 30.0
READ_TIMEOUT = 120.0
INSTALL_HINT = "pip install 'dattavani-asr[remote]'"


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


def http_filesystem() -> Any:
    """An fsspec HTTPFileSystem with connect/read timeouts but no overall limit (long files stream for long)."""
    try:
        import aiohttp
        from fsspec.implementations.http import HTTPFileSystem
    except ImportError as exc:
        raise missing_extra("http(s) sources", exc) from exc
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
    return HTTPFileSystem(client_kwargs={"timeout": timeout})


def unreadable(url: str, exc: BaseException) -> UnreadablePathError:
    if isinstance(exc, FileNotFoundError):
        return UnreadablePathError(f"{url}: not found (HTTP 404)")
    status = getattr(exc, "status", None)
    detail = f"HTTP {status}" if isinstance(status, int) else one_line(exc)
    return UnreadablePathError(f"{url}: cannot read ({detail})")


class HttpSource:
    """A single file URL. `expand` sends one HEAD; `open` returns a seekable Range-request reader."""

    def __init__(self, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        self.block_size = block_size
        self._fs: Any = None

    def filesystem(self) -> Any:
        if self._fs is None:
            self._fs = http_filesystem()
        return self._fs

    def matches(self, spec: str) -> bool:
        return spec.lower().startswith(("http://", "https://"))

    def expand(self, spec: str, pattern: str | None) -> Iterator[SourceItem]:
        """The one file the URL names (`pattern` does not apply to an explicitly named file)."""
        fs = self.filesystem()
        try:
            info = fs.info(spec)
        except Exception as exc:  # FileNotFoundError, aiohttp.ClientError, timeouts: a dead or refusing server
            raise unreadable(spec, exc) from exc
        name = url_name(spec)
        size = info.get("size")
        yield SourceItem(
            uri=spec,
            name=name,
            relative=PurePosixPath(name),
            size=int(size) if size is not None else None,
            version=http_version(info),
        )

    def open(self, item: SourceItem) -> IO[bytes]:
        """Seekable when the server gives a size and honours Range; a forward-only stream otherwise."""
        fs = self.filesystem()
        try:
            stream = fs.open(item.uri, "rb", block_size=self.block_size, size=item.size)
        except Exception as exc:
            raise unreadable(item.uri, exc) from exc
        return cast(IO[bytes], stream)

    def default_sink(self) -> Sink:
        raise InvalidOptionError(
            "http(s) sources have no writable location beside them: transcribing URLs needs --output-dir"
        )
