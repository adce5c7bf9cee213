"""One writer class per output format, and atomic placement of the files they write."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, TextIO

from ..core.errors import InvalidOptionError, OutputError
from ..core.transcript import Transcript

OUTPUT_SUBDIR = "gen-transcript"


def format_timestamp(seconds: float, decimal_marker: str = ".", always_hours: bool = False) -> str:
    milliseconds = max(0, round(seconds * 1000))
    hours, milliseconds = divmod(milliseconds, 3_600_000)
    minutes, milliseconds = divmod(milliseconds, 60_000)
    secs, milliseconds = divmod(milliseconds, 1000)
    hours_part = f"{hours:02d}:" if always_hours or hours else ""
    return f"{hours_part}{minutes:02d}:{secs:02d}{decimal_marker}{milliseconds:03d}"


class Writer:
    """Renders a transcript in one format."""

    extension: ClassVar[str] = ""

    def write(self, transcript: Transcript, stream: TextIO) -> None:
        raise NotImplementedError


class TxtWriter(Writer):
    extension = "txt"

    def write(self, transcript: Transcript, stream: TextIO) -> None:
        for segment in transcript.segments:
            if segment.text.strip():
                label = f"[{segment.speaker}] " if segment.speaker else ""
                stream.write(label + segment.text.strip() + "\n")


class _SubtitleWriter(Writer):
    decimal_marker: ClassVar[str] = "."
    always_hours: ClassVar[bool] = False

    def escape(self, text: str) -> str:
        """Make cue text safe: one line (a blank line would end the cue), no '-->' (a timing line)."""
        return " ".join(text.split()).replace("-->", "->")

    def speaker(self, name: str, text: str) -> str:
        """A cue's text with its speaker."""
        return f"[{name}] {text}"

    def cues(self, transcript: Transcript) -> list[tuple[str, str, str]]:
        cues = []
        for segment in transcript.segments:
            text = self.escape(segment.text)
            text = self.speaker(self.escape(segment.speaker), text) if text and segment.speaker else text
            if text:
                cues.append((self.time(segment.start), self.time(max(segment.end, segment.start + 0.001)), text))
        return cues

    def time(self, seconds: float) -> str:
        return format_timestamp(seconds, self.decimal_marker, self.always_hours)


class SrtWriter(_SubtitleWriter):
    extension = "srt"
    decimal_marker = ","
    always_hours = True

    def write(self, transcript: Transcript, stream: TextIO) -> None:
        for index, (start, end, text) in enumerate(self.cues(transcript), start=1):
            stream.write(f"{index}\n{start} --> {end}\n{text}\n\n")


class VttWriter(_SubtitleWriter):
    extension = "vtt"
    always_hours = True

    def escape(self, text: str) -> str:
        """WebVTT cue text is markup: '&', '<' and '>' must be character references."""
        flat = " ".join(text.split())
        return flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    def speaker(self, name: str, text: str) -> str:
        """WebVTT's voice span: players show or style the speaker."""
        return f"<v {name}>{text}"

    def write(self, transcript: Transcript, stream: TextIO) -> None:
        stream.write("WEBVTT\n\n")
        for start, end, text in self.cues(transcript):
            stream.write(f"{start} --> {end}\n{text}\n\n")


class TsvWriter(Writer):
    """Start and end in integer milliseconds, as openai/whisper writes them."""

    extension = "tsv"

    def write(self, transcript: Transcript, stream: TextIO) -> None:
        speakers = bool(transcript.speakers)  # a speaker column only when there are speakers
        stream.write("start\tend\tspeaker\ttext\n" if speakers else "start\tend\ttext\n")
        for segment in transcript.segments:
            text = " ".join(segment.text.split())  # no tab or line break may split a row
            who = f"{segment.speaker or ''}\t" if speakers else ""
            stream.write(f"{round(segment.start * 1000)}\t{round(segment.end * 1000)}\t{who}{text}\n")


class JsonWriter(Writer):
    extension = "json"

    def write(self, transcript: Transcript, stream: TextIO) -> None:
        json.dump(transcript.to_dict(), stream, ensure_ascii=False, indent=2)
        stream.write("\n")


WRITERS: dict[str, type[Writer]] = {w.extension: w for w in (TxtWriter, SrtWriter, VttWriter, TsvWriter, JsonWriter)}


def parse_formats(spec: str | list[str]) -> list[str]:
    """'txt,srt' or ['txt', 'srt'] or 'all' → validated list of formats, in order, no repeats."""
    items = spec.split(",") if isinstance(spec, str) else [part for item in spec for part in item.split(",")]
    formats: list[str] = []
    for item in (part.strip().lower() for part in items):
        if not item:
            continue
        if item == "all":
            return list(WRITERS)
        if item not in WRITERS:
            raise InvalidOptionError(f"unknown format {item!r}: use any of {', '.join(WRITERS)} or all")
        if item not in formats:
            formats.append(item)
    if not formats:
        raise InvalidOptionError("no output format given")
    return formats


def get_writer(fmt: str) -> Writer:
    return WRITERS[parse_formats(fmt)[0]]()


def output_path(source: Path, fmt: str, output_dir: Path | None, *, keep_suffix: bool = False) -> Path:
    """`<input folder>/gen-transcript/<name>.<ext>` by default, or `<output_dir>/<name>.<ext>`.

    `keep_suffix` names it `<name>.<input ext>.<ext>`, for inputs that differ only by extension.
    """
    folder = output_dir if output_dir is not None else source.parent / OUTPUT_SUBDIR
    return folder / f"{source.name if keep_suffix else source.stem}.{fmt}"


def render(transcript: Transcript, fmt: str) -> str:
    """The transcript in one format, as text."""
    buffer = io.StringIO()
    get_writer(fmt).write(transcript, buffer)
    return buffer.getvalue()


def write_atomic(transcript: Transcript, fmt: str, path: Path) -> Path:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    return _write_atomic(lambda stream: get_writer(fmt).write(transcript, stream), path)


def write_text_atomic(content: str, path: Path) -> Path:
    """Atomically write `content` to `path` (temp file beside it, fsync, rename)."""
    return _write_atomic(lambda stream: stream.write(content), path)


def _write_atomic(produce: Callable[[TextIO], object], path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as stream:
            produce(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
    return path


def write_stdout(transcript: Transcript, fmt: str, stream: TextIO | None = None) -> None:
    get_writer(fmt).write(transcript, stream or sys.stdout)
