"""What every input source provides: items to transcribe, and a sink for their transcripts."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Protocol


@dataclass(frozen=True)
class SourceItem:
    """One audio/video file to transcribe, wherever it lives.

    `uri` is its canonical address (an absolute local path, `https://…`, `s3://…`, `gs://…`,
    `gdrive://<file id>`); `relative` is its path under `root`, the folder (prefix, URL folder, Drive
    folder) that the source spec named, inside the storage `space` (`file`, `s3`, `gs`, `http`,
    `gdrive`): a batch run mirrors `relative` under `--output-dir`, after rebasing it on the common
    root of all its sources (`batch.outputs`). `size` + `version` (mtime, ETag, md5 or modifiedTime)
    identify its content so a changed file is transcribed again.
    """

    uri: str
    name: str
    relative: PurePosixPath
    size: int | None
    version: str
    local_path: Path | None = None
    parent_id: str | None = None  # e.g. the Drive folder holding the file
    space: str = "file"
    root: PurePosixPath = field(default_factory=lambda: PurePosixPath("/"))

    @property
    def stem(self) -> str:
        return PurePosixPath(self.name).stem


class Sink(Protocol):
    """Where one item's transcripts go. `write` must be atomic: all of `content` or nothing."""

    def target(self, item: SourceItem, filename: str) -> str:
        """Where `write(item, filename, …)` would store it (a path or URI), without touching storage:
        two items with equal targets (ignoring case) would overwrite each other."""
        ...

    def write(self, item: SourceItem, filename: str, content: str) -> str:
        """Store `content` as `filename` (e.g. `talk.txt`) among `item`'s transcripts; return where it went."""
        ...


class Source(Protocol):
    """A kind of input (local, http, s3/gs, Google Drive)."""

    def matches(self, spec: str) -> bool:
        """Whether this source understands `spec` (a path, glob, manifest or URL)."""
        ...

    def expand(self, spec: str, pattern: str | None) -> Iterator[SourceItem]:
        """Every audio item `spec` names, filtered by the glob `pattern` when given."""
        ...

    def open(self, item: SourceItem) -> IO[bytes]:
        """A readable, preferably seekable, binary stream of the item (streamed, not downloaded)."""
        ...

    def default_sink(self) -> Sink:
        """Where transcripts go without `--output-dir` (e.g. a gen-transcript folder beside it)."""
        ...
