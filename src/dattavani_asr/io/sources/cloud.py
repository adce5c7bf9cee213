"""Object stores through fsspec: `s3://bucket/prefix` (s3fs) and `gs://bucket/prefix` (gcsfs).

The S3 endpoint follows `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` or `FSSPEC_S3_ENDPOINT_URL` (for MinIO,
R2, moto…); credentials follow the usual AWS chain. Google Cloud Storage uses Application Default
Credentials, and `STORAGE_EMULATOR_HOST` for an emulator.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast

from ...core.errors import InvalidOptionError, OutputError, UnreadablePathError
from ..writers import OUTPUT_SUBDIR
from .base import SourceItem
from .http import missing_extra, one_line
from .local import is_media

DEFAULT_BLOCK_SIZE = 4 << 20  # bytes per ranged GET (s3fs would otherwise fetch 50 MB at a time)
S3_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "FSSPEC_S3_ENDPOINT_URL")
VERSION_KEYS = ("ETag", "etag", "md5Hash", "crc32c", "generation", "LastModified", "mtime", "updated")


def s3_endpoint() -> str | None:
    for variable in S3_ENDPOINT_VARIABLES:
        if os.environ.get(variable):
            return os.environ[variable]
    return None


def cloud_version(info: dict[str, Any]) -> str:
    """ETag (S3), md5/crc32c (GCS), else the modification time: what identifies the object's content."""
    for key in VERSION_KEYS:
        if info.get(key):
            return str(info[key]).strip('"')
    return f"size:{info.get('size')}"


def cloud_filesystem(protocol: str) -> Any:
    """A fresh fsspec filesystem (no listing cache: a batch run must see what is there now)."""
    try:
        import fsspec

        fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise missing_extra(f"{protocol}:// sources", exc) from exc
    options: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    if protocol == "s3" and (endpoint := s3_endpoint()):
        options["endpoint_url"] = endpoint
    return fsspec.filesystem(protocol, **options)


def _hidden(relative: PurePosixPath) -> bool:
    return any(part == OUTPUT_SUBDIR or part.startswith(".") for part in relative.parent.parts)


class CloudSource:
    """Every media object under a bucket prefix (recursively), or one object."""

    def __init__(self, protocol: str, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        self.protocol = protocol
        self.block_size = block_size
        self._fs: Any = None

    def filesystem(self) -> Any:
        if self._fs is None:
            self._fs = cloud_filesystem(self.protocol)
        return self._fs

    def matches(self, spec: str) -> bool:
        return spec.startswith(f"{self.protocol}://")

    def uri(self, path: str) -> str:
        return f"{self.protocol}://{path}"

    def _item(self, path: str, info: dict[str, Any], relative: PurePosixPath) -> SourceItem:
        size = info.get("size")
        return SourceItem(
            uri=self.uri(path),
            name=PurePosixPath(path).name,
            relative=relative,
            size=int(size) if size is not None else None,
            version=cloud_version(info),
            space=self.protocol,
            root=PurePosixPath("/" + path[: len(path) - len(str(relative))].rstrip("/")),  # bucket/prefix
        )

    def expand(self, spec: str, pattern: str | None) -> Iterator[SourceItem]:
        fs = self.filesystem()
        root = str(fs._strip_protocol(spec)).rstrip("/")
        try:
            info = fs.info(root)
            found = {} if info.get("type") == "file" else fs.find(root, detail=True)
        except FileNotFoundError as exc:
            raise UnreadablePathError(f"{spec}: no such bucket, prefix or object") from exc
        except Exception as exc:  # permissions, credentials, unreachable endpoint
            raise UnreadablePathError(f"{spec}: cannot list ({one_line(exc)})") from exc
        if info.get("type") == "file":
            yield self._item(root, info, PurePosixPath(PurePosixPath(root).name))
            return
        for path in sorted(found):
            relative = PurePosixPath(path).relative_to(root)
            name = relative.name
            if _hidden(relative) or not is_media(Path(name)) or (pattern is not None and not fnmatch(name, pattern)):
                continue
            yield self._item(path, found[path], relative)

    def open(self, item: SourceItem) -> IO[bytes]:
        fs = self.filesystem()
        try:
            stream = fs.open(str(fs._strip_protocol(item.uri)), "rb", block_size=self.block_size)
        except Exception as exc:
            raise UnreadablePathError(f"{item.uri}: cannot open ({one_line(exc)})") from exc
        return cast(IO[bytes], stream)

    def default_sink(self) -> CloudSink:
        return CloudSink(self)


def _put(source: CloudSource, path: str, content: str) -> str:
    """One PUT of `content` at `path` (atomic on object stores); its URI."""
    try:
        source.filesystem().pipe_file(path, content.encode("utf-8"))
    except Exception as exc:
        raise OutputError(f"{source.uri(path)}: cannot write ({one_line(exc)})") from exc
    return source.uri(path)


class CloudSink:
    """Writes `<folder of the object>/gen-transcript/<filename>` in the same bucket."""

    def __init__(self, source: CloudSource) -> None:
        self.source = source

    def path_for(self, item: SourceItem, filename: str) -> str:
        if not self.source.matches(item.uri):
            raise OutputError(f"{item.uri}: not a {self.source.protocol}:// object; use --output-dir")
        path = PurePosixPath(item.uri.removeprefix(f"{self.source.protocol}://"))
        return str(path.parent / OUTPUT_SUBDIR / filename)

    def target(self, item: SourceItem, filename: str) -> str:
        return self.source.uri(self.path_for(item, filename))

    def write(self, item: SourceItem, filename: str, content: str) -> str:
        return _put(self.source, self.path_for(item, filename), content)


class CloudTreeSink:
    """Mirrors items under a bucket prefix given as `--output-dir` (`s3://archive/out/<relative folder>/<filename>`)."""

    def __init__(self, source: CloudSource, uri: str) -> None:
        self.source = source
        self.root = uri.removeprefix(f"{source.protocol}://").strip("/")
        if not self.root:
            raise InvalidOptionError(f"{uri}: name a bucket to write into")

    def path_for(self, item: SourceItem, filename: str) -> str:
        return str(PurePosixPath(self.root, *item.relative.parent.parts, filename))

    def target(self, item: SourceItem, filename: str) -> str:
        return self.source.uri(self.path_for(item, filename))

    def write(self, item: SourceItem, filename: str, content: str) -> str:
        return _put(self.source, self.path_for(item, filename), content)
