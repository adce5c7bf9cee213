"""`dattavani-asr stream FILE|-`: live transcription of a file or of raw PCM from stdin.

Speaks the WebSocket protocol of docs/streaming.md to a server (`--url`) or, without one, to the
service started in this process on a free loopback port.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import typer
from rich.console import Console
from rich.markup import escape

from ..core.errors import EmptyAudioError, InvalidOptionError, StreamError

FRAME_SECONDS = 0.1
BYTES_PER_SAMPLE = {"pcm_s16le": 2, "pcm_f32le": 4}
Chunk = tuple[bytes, float]
console = Console(stderr=True, soft_wrap=True)  # as cli.app's (not imported: app imports this module)


@contextmanager
def local_server(model: str | None = None, api_keys: list[str] | None = None) -> Iterator[str]:
    """The service in this process (uvicorn in a thread, loopback only); yields its ws:// stream URL.

    Its data folder is a temporary directory, removed with the server at the end.
    """
    import uvicorn

    from ..server import ServerSettings, create_app

    data_dir = Path(tempfile.mkdtemp(prefix="dattavani-stream-"))
    listener = socket.socket()
    try:
        listener.bind(("127.0.0.1", 0))
        port = int(listener.getsockname()[1])
        settings = ServerSettings(  # type: ignore[call-arg]
            data_dir=data_dir, default_model=model or "tiny.en", api_keys=api_keys or [], log_json=False
        )
        config = uvicorn.Config(create_app(settings), log_level="error", lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        try:
            _wait_started(server, thread)
            yield f"ws://127.0.0.1:{port}/v1/stream"
        finally:
            server.should_exit = True
            thread.join(30)
    finally:
        listener.close()
        shutil.rmtree(data_dir, ignore_errors=True)


def _wait_started(server: Any, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 120
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise StreamError("the in-process server did not start")


def file_chunks(path: Path) -> list[Chunk]:
    """A file decoded (now, so a bad file fails before anything starts) to 16-kHz s16le 100-ms frames."""
    import numpy as np

    from ..audio.decode import SAMPLE_RATE, decode_audio

    audio = decode_audio(path)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    step = int(SAMPLE_RATE * FRAME_SECONDS) * 2
    return [
        (pcm[offset : offset + step], len(pcm[offset : offset + step]) / 2 / SAMPLE_RATE)
        for offset in range(0, len(pcm), step)
    ]


def stdin_chunks(sample_rate: int, encoding: str) -> Iterator[Chunk]:
    """Raw PCM from stdin in ~100-ms frames (a frame may end mid-sample; the server keeps the rest)."""
    width = BYTES_PER_SAMPLE[encoding]
    step = int(sample_rate * FRAME_SECONDS) * width
    while piece := sys.stdin.buffer.read(step):
        yield piece, len(piece) / width / sample_rate


class Printer:
    """Finals as lines on stdout (or every event as a JSON line); partials on one rewritten stderr line
    when stderr is a terminal; lag and error events as stderr lines."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.live = sys.stderr.isatty()
        self._partial_shown = False

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if self.as_json:
            print(json.dumps(event, ensure_ascii=False), flush=True)
        elif kind == "partial" and self.live:
            width = max(20, shutil.get_terminal_size().columns - 3)
            sys.stderr.write(f"\r\x1b[2K\x1b[2m… {event['text'][-width:]}\x1b[0m")
            sys.stderr.flush()
            self._partial_shown = True
        elif kind == "final":
            self.clear()
            print(f"[{event['start']:7.2f} → {event['end']:7.2f}] {event['text']}", flush=True)
        if kind in ("lag", "error"):
            self.clear()
            console.print(f"[yellow]{escape(_describe(event))}[/yellow]", highlight=False)

    def clear(self) -> None:
        if self._partial_shown:
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()
            self._partial_shown = False


def _describe(event: dict[str, Any]) -> str:
    if event["type"] == "lag":
        return f"server behind by {event.get('behind', 0):.1f} s; updates every {event.get('step', 0):.1f} s"
    return f"server error ({event.get('code', 'error')}): {event.get('message', '')}"


def stream_url(base: str, **params: str | None) -> str:
    """`base` with the given query parameters set (those of `base` kept unless given here)."""
    parts = urlsplit(base)
    if parts.scheme not in ("ws", "wss"):
        raise InvalidOptionError(f"--url must be a ws:// or wss:// URL, not {base!r}")
    query = dict(parse_qsl(parts.query)) | {key: value for key, value in params.items() if value}
    return urlunsplit(parts._replace(path=parts.path or "/v1/stream", query=urlencode(query)))


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def print_statistics(summary: dict[str, Any], fast: bool = False) -> None:
    """Latency statistics on stderr."""
    note = " (--fast: audio sent faster than real time, so these are not live latencies)" if fast else ""
    lines = [
        f"{summary['audio_seconds']:.1f} s of audio, {summary['finals']} finals{note}",
        f"final latency p50 {_ms(summary['final_latency_p50'])}, p95 {_ms(summary['final_latency_p95'])}",
        f"partial interval mean {_ms(summary['update_gap_mean'])}, max {_ms(summary['update_gap_max'])}; "
        f"first partial after speech starts: mean {_ms(summary['first_update_mean'])}, "
        f"max {_ms(summary['first_update_max'])}",
        f"lag at the end {_ms(summary['lag_last'])}, max {_ms(summary['lag_max'])}",
    ]
    console.print("\n".join(lines), highlight=False)


def _chunks(source: str, sample_rate: int, encoding: str) -> tuple[Any, int, str]:
    if source != "-":
        return file_chunks(Path(source)), 16000, "pcm_s16le"
    if encoding not in BYTES_PER_SAMPLE:
        raise InvalidOptionError(f"--encoding must be one of {', '.join(BYTES_PER_SAMPLE)}")
    if sys.stdin.isatty():
        raise InvalidOptionError("'-' reads raw PCM from stdin: pipe audio into it")
    return stdin_chunks(sample_rate, encoding), sample_rate, encoding


def stream(
    source: Annotated[str, typer.Argument(help="Audio/video file, or - for raw mono PCM on stdin")],
    url: Annotated[str | None, typer.Option(help="ws://host:port/v1/stream (default: an in-process engine)")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key of the server")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="Send as fast as possible instead of at real time")] = False,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Default: the server's default")] = None,
    language: Annotated[str | None, typer.Option("--language", "-l", help="ISO code; default: detect")] = None,
    sample_rate: Annotated[int, typer.Option(min=8000, max=192000, help="Rate of raw PCM on stdin")] = 16000,
    encoding: Annotated[str, typer.Option(help="Raw PCM on stdin: pcm_s16le or pcm_f32le")] = "pcm_s16le",
    as_json: Annotated[bool, typer.Option("--json", help="Print every event as a JSON line")] = False,
) -> None:
    """Transcribe live: finals on stdout as they are committed, then latency statistics on stderr."""
    from .stream_client import stream_pcm

    chunks, rate, encoding = _chunks(source, sample_rate, encoding)
    params = {"model": model, "language": language, "sample_rate": str(rate), "encoding": encoding}
    printer = Printer(as_json)
    try:
        with local_server(model) if url is None else _given(url) as base:
            result = stream_pcm(
                stream_url(base, **params), chunks, api_key=api_key, realtime=not fast, on_event=printer
            )
    finally:
        printer.clear()
    if not result.sent_audio:
        raise EmptyAudioError("stdin: no audio")
    print_statistics(result.summary(), fast)


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url
