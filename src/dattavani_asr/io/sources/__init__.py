"""Input sources for batch runs: local paths, globs, manifests, and (see `remote`) URLs and clouds.

`expand_all()` turns command-line SOURCE arguments into `SourceItem`s, each paired with the
`Source` that can open it; a manifest may mix local paths and URLs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from ...core.errors import DattavaniError, InvalidOptionError
from .base import Sink, Source, SourceItem
from .local import MANIFEST_EXTENSIONS, LocalSink, LocalSource, manifest_entries

__all__ = [
    "LocalSink",
    "LocalSource",
    "Sink",
    "Source",
    "SourceItem",
    "SpecErrorHandler",
    "expand_all",
    "output_sink",
    "source_for",
]

SpecErrorHandler = Callable[[str, DattavaniError], None]  # (the spec or manifest entry, why it named nothing)


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


def _entries(spec: str) -> list[str]:
    return manifest_entries(Path(spec)) if _is_manifest(spec) else [spec]


def expand_all(
    specs: list[str], pattern: str | None = None, on_error: SpecErrorHandler | None = None
) -> Iterator[tuple[SourceItem, Source]]:
    """Every item named by `specs`, in order, without repeats.

    A spec (or manifest entry) that cannot be read (missing path, dead URL, unreadable manifest) is
    passed to `on_error` and the others go on; without `on_error` its error is raised.
    """
    seen: set[str] = set()
    for spec in specs:
        try:
            entries = _entries(spec)
        except DattavaniError as exc:
            if on_error is None:
                raise
            on_error(spec, exc)
            continue
        for entry in entries:
            try:
                source = source_for(entry)
                for item in source.expand(entry, pattern):
                    if item.uri not in seen:
                        seen.add(item.uri)
                        yield item, source
            except DattavaniError as exc:
                if on_error is None:
                    raise
                on_error(entry, exc)


def output_sink(output_dir: str) -> Sink:
    """The sink that mirrors items under `--output-dir`: a local folder, `s3://` / `gs://` bucket
    prefix or Google Drive folder (`gdrive://<id>` or its address). Checked here, before any work."""
    if "://" not in output_dir:
        return LocalSink(Path(output_dir))
    try:
        from .remote import tree_sink
    except ImportError as exc:  # pragma: no cover - the remote modules import nothing optional
        raise InvalidOptionError(f"--output-dir {output_dir}: remote outputs are not available ({exc})") from exc
    return tree_sink(output_dir)
