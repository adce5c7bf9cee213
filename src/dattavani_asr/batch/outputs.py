"""Where each item's transcripts go: one output path per source, by construction, or a planning error.

Two sources must never share a transcript. Names are `<stem>.<format>`; items whose transcripts would
land on the same path as another item's (`talk.wav` and `talk.ogg` in one folder, `Talk.wav` and
`talk.mp3` on a case-insensitive disk) are all named `<name>.<format>` instead (`talk.wav.txt`), as
`transcribe` does. Under `--output-dir` every item keeps its folder: its path below the common root of
all the sources of its storage space (`mirror`), so `a/talk.wav` and `b/talk.wav` from one manifest
become `a/talk.txt` and `b/talk.txt`, and a single folder is mirrored as it always was. A path that
is still taken (by an earlier item of the run, or by a transcript another source finished in an
earlier run of the same output folder) fails that item at planning time: nothing is overwritten.

Names come from other people's storage (object keys, Drive titles, URLs): an item whose folder or name
would climb out of the output folder (`..`, `.`, an absolute part, a separator or NUL in a name) fails
with an `OutputError` and nothing is written for it.

The plan depends only on the sources named and the state's record of finished items, so re-running
the same command plans the same paths and resumes exactly.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

from ..core.errors import OutputError
from ..io.sources.base import Sink, SourceItem


@dataclass(frozen=True)
class Destination:
    """One item's place: its sink and the file name its transcripts take, without the format."""

    item: SourceItem
    sink: Sink
    base: str

    def filename(self, fmt: str) -> str:
        return f"{self.base}.{fmt}"

    def targets(self, formats: Sequence[str]) -> list[str]:
        return [self.sink.target(self.item, self.filename(fmt)) for fmt in formats]


def common_root(roots: Sequence[PurePosixPath]) -> PurePosixPath:
    return PurePosixPath(os.path.commonpath([str(root) for root in roots])) if roots else PurePosixPath("/")


def mirror(items: Sequence[SourceItem]) -> list[SourceItem]:
    """Items with `relative` rebased on the common root of their storage space's sources.

    With sources in several spaces (local files and s3, say), local files keep that layout and every
    other item goes under a folder named after its space, at its full path there (`s3/<bucket>/<key>`).
    """
    roots: dict[str, list[PurePosixPath]] = defaultdict(list)
    for item in items:
        roots[item.space].append(item.root)
    shared = {space: common_root(found) for space, found in roots.items()}
    mirrored = []
    for item in items:
        full = item.root / item.relative
        if len(shared) > 1 and item.space != "file":
            relative = PurePosixPath(item.space) / full.relative_to("/")
        else:
            relative = full.relative_to(shared[item.space])
        mirrored.append(replace(item, relative=relative))
    return mirrored


def _key(target: str) -> str:
    return target.casefold()


def _clashing(candidates: Sequence[Destination], formats: Sequence[str], taken: Mapping[str, str]) -> set[int]:
    """Indices of candidates whose default paths another candidate, or another source's past output, has."""
    claims = Counter(_key(target) for candidate in candidates for target in set(candidate.targets(formats)))
    clashing = set()
    for index, candidate in enumerate(candidates):
        keys = [_key(target) for target in candidate.targets(formats)]
        if any(claims[key] > 1 or taken.get(key, candidate.item.uri) != candidate.item.uri for key in keys):
            clashing.add(index)
    return clashing


_SEPARATORS = ("/", "\\", "\x00")


def unsafe_path(item: SourceItem) -> str | None:
    """Why `item`'s folder or name cannot name an output path safely, or None when it can."""
    if item.relative.is_absolute():
        return f"its path {str(item.relative)!r} is absolute"
    for part in (*item.relative.parent.parts, item.name):
        if part in ("", ".", "..") or any(mark in part for mark in _SEPARATORS):
            return f"its path has the part {part!r}"
    return None


def plan_destinations(
    items: Sequence[tuple[SourceItem, Sink]], formats: Sequence[str], taken: Mapping[str, str]
) -> tuple[list[Destination], list[tuple[SourceItem, OutputError]]]:
    """A unique place for every item, in order, or why it has none.

    `taken` maps output paths (case-folded) already written for finished items to their source URIs.
    """
    refused: list[tuple[SourceItem, OutputError]] = []
    safe = []
    for item, sink in items:
        reason = unsafe_path(item)
        if reason is None:
            safe.append((item, sink))
        else:
            refused.append((item, OutputError(f"{item.uri}: {reason}; refused, nothing written")))
    candidates = [Destination(item, sink, item.stem) for item, sink in safe]
    clashing = _clashing(candidates, formats, taken)
    claimed: dict[str, str] = {}
    planned: list[Destination] = []
    for index, candidate in enumerate(candidates):
        destination = replace(candidate, base=candidate.item.name) if index in clashing else candidate
        targets = destination.targets(formats)
        owners = [(target, claimed.get(_key(target)) or taken.get(_key(target))) for target in targets]
        conflicts = [(target, owner) for target, owner in owners if owner not in (None, destination.item.uri)]
        if conflicts:
            target, owner = conflicts[0]
            refused.append((destination.item, OutputError(f"{target} already belongs to {owner}; not overwritten")))
            continue
        claimed.update((_key(target), destination.item.uri) for target in targets)
        planned.append(destination)
    return planned, refused
