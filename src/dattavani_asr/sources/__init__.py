"""Input sources for batch runs: local paths, globs, manifests, and (see `remote`) URLs and clouds.

`expand_all()` turns command-line SOURCE arguments into `SourceItem`s, each paired with the
`Source` that can open it; a manifest may mix local paths and URLs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..errors import InvalidOptionError
from .base import Sink, Source, SourceItem
from .local import MANIFEST_EXTENSIONS, LocalSink, LocalSource, manifest_entries

__all__ = ["LocalSink", "LocalSource", "Sink", "Source", "SourceItem", "expand_all", "source_for"]


def _sources() -> list[Source]:
    sources: list[Source] = []
    try:
        from .remote import remote_sources
    except ImportError:
        pass
    else:
        sources.extend(remote_sources())
    sources.append(LocalSource())
    return sources


def source_for(spec: str) -> Source:
    for source in _sources():
        if source.matches(spec):
            return source
    scheme = spec.split("://", 1)[0]
    raise InvalidOptionError(f"{spec}: unsupported source scheme {scheme!r} (install dattavani-asr[remote]?)")


def _is_manifest(spec: str) -> bool:
    path = Path(spec)
    return "://" not in spec and path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS


def expand_all(specs: list[str], pattern: str | None = None) -> Iterator[tuple[SourceItem, Source]]:
    """Every item named by `specs`, in order, without repeats."""
    seen: set[str] = set()
    for spec in specs:
        entries = manifest_entries(Path(spec)) if _is_manifest(spec) else [spec]
        for entry in entries:
            source = source_for(entry)
            for item in source.expand(entry, pattern):
                if item.uri not in seen:
                    seen.add(item.uri)
                    yield item, source
