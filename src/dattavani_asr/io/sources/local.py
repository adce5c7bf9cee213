"""Local files: a file, a folder (recursive), a glob, or a manifest of paths/URLs."""

from __future__ import annotations

import csv
import glob
import json
import os
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath
from typing import IO

from ...core.errors import InvalidOptionError, OutputError, UnreadablePathError, printable
from ..writers import OUTPUT_SUBDIR
from .base import SourceItem

MEDIA_EXTENSIONS = frozenset(
    [
        "aac",
        "ac3",
        "aif",
        "aiff",
        "alac",
        "amr",
        "ape",
        "au",
        "avi",
        "flac",
        "m4a",
        "m4b",
        "m4v",
        "mka",
        "mkv",
        "mov",
        "mp2",
        "mp3",
        "mp4",
        "mpeg",
        "mpg",
        "oga",
        "ogg",
        "opus",
        "ts",
        "wav",
        "weba",
        "webm",
        "wma",
        "wmv",
        "3gp",
    ]
)
MANIFEST_EXTENSIONS = (".txt", ".lst", ".csv", ".jsonl", ".tsv")
GLOB_CHARS = "*?["


def is_media(path: Path) -> bool:
    return path.suffix.lower().lstrip(".") in MEDIA_EXTENSIONS


def local_item(path: Path, root: Path) -> SourceItem:
    """`path`, found under the folder `root` that its spec named (a file's own folder when named alone)."""
    stat = path.stat()
    relative = PurePosixPath(path.relative_to(root).as_posix())
    return SourceItem(
        uri=printable(str(path.resolve())),  # the file is still opened by its bytes
        name=path.name,
        relative=relative,
        size=stat.st_size,
        version=str(stat.st_mtime_ns),
        local_path=path.resolve(),
        space="file",
        root=PurePosixPath(os.path.abspath(root)),
    )


def _folder(root: Path, pattern: str | None) -> Iterator[SourceItem]:
    for directory, folders, files in os.walk(root):
        folders[:] = sorted(f for f in folders if f != OUTPUT_SUBDIR and not f.startswith("."))
        for name in sorted(files):
            path = Path(directory) / name
            if is_media(path) and (pattern is None or fnmatch(name, pattern)):
                yield local_item(path, root)


def manifest_entries(path: Path) -> list[str]:
    """Paths/URLs listed in a manifest: one per line, or a CSV/TSV/JSONL `path` column."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UnreadablePathError(f"{path}: cannot read the manifest ({exc})") from exc
    if path.suffix == ".jsonl":
        return _jsonl_paths(path, text)
    if path.suffix in (".csv", ".tsv"):
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix == ".tsv" else ",")
        if not reader.fieldnames or "path" not in reader.fieldnames:
            raise InvalidOptionError(f"{path}: manifest needs a 'path' column (found {reader.fieldnames})")
        return [row["path"].strip() for row in reader if row.get("path", "").strip()]
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _jsonl_paths(path: Path, text: str) -> list[str]:
    paths = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidOptionError(f"{path}:{number}: not a JSON object ({exc.msg})") from exc
        if isinstance(row, dict) and row.get("path"):
            paths.append(str(row["path"]))
    return paths


class LocalSource:
    """Files on this machine. Manifests may name URLs; those are expanded by the caller."""

    def matches(self, spec: str) -> bool:
        return "://" not in spec

    def expand(self, spec: str, pattern: str | None) -> Iterator[SourceItem]:
        if any(char in spec for char in GLOB_CHARS) and not Path(spec).exists():
            matches = sorted(glob.glob(spec, recursive=True))
            root = Path(os.path.commonpath(matches)) if matches else Path.cwd()
            root = root if root.is_dir() else root.parent
            for match in map(Path, matches):
                if match.is_file() and is_media(match):
                    yield local_item(match, root)
            return
        path = Path(spec).expanduser()
        if path.is_dir():
            yield from _folder(path, pattern)
        elif path.is_file():
            yield local_item(path, path.parent)
        elif path.exists() or path.is_symlink():
            raise UnreadablePathError(f"{spec}: not a regular file or folder (or a broken link)")
        else:
            raise UnreadablePathError(f"{spec}: no such file, folder or glob match")

    def open(self, item: SourceItem) -> IO[bytes]:
        assert item.local_path is not None
        try:
            return item.local_path.open("rb")
        except OSError as exc:  # gone, or its permissions changed, since the folder was listed
            raise UnreadablePathError(f"{item.uri}: cannot read ({exc.strerror or exc})") from exc

    def default_sink(self) -> LocalSink:
        return LocalSink(None)


class LocalSink:
    """Writes `<file's folder>/gen-transcript/<filename>`, or `<output_dir>/<relative folder>/<filename>`."""

    def __init__(self, output_dir: Path | None = None) -> None:
        self.output_dir = output_dir

    def path_for(self, item: SourceItem, filename: str) -> Path:
        if self.output_dir is not None:
            return Path(os.path.abspath(self.output_dir / Path(*item.relative.parent.parts) / filename))
        if item.local_path is None:
            raise OutputError(f"{item.uri}: a remote item needs --output-dir")
        return item.local_path.parent / OUTPUT_SUBDIR / filename

    def target(self, item: SourceItem, filename: str) -> str:
        return str(self.path_for(item, filename))

    def write(self, item: SourceItem, filename: str, content: str) -> str:
        from ..writers import write_text_atomic

        target = self.path_for(item, filename)
        if target.parent.is_dir():  # temp files of a run that was killed mid-write
            for stale in target.parent.glob(f".{target.name}.*.part"):
                stale.unlink(missing_ok=True)
        return str(write_text_atomic(content, target))
