"""`dattavani-asr stream FILE|-`: live transcription of a file or of raw PCM from stdin."""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import typer

from ..errors import InvalidOptionError, StreamError
from .app import console, report

FRAME_SECONDS = 0.1
BYTES_PER_SAMPLE = {"pcm_s16le": 2, "pcm_f32le": 4}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def local_server(model: str | None) -> Iterator[str]:
    """The service in this process (uvicorn in a thread, loopback only); yields its ws:// base URL."""
    import uvicorn

    from ..server import ServerSettings, create_app

    with tempfile.TemporaryDirectory(prefix="dattavani-stream-") as data_dir:
        settings = ServerSettings(data_dir=Path(data_dir), default_model=model or "tiny.en", log_json=False)  # type: ignore[call-arg]
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 60
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            raise StreamError("the in-process server did not start")
        try:
            yield f"ws://127.0.0.1:{port}/v1/stream"
        finally:
            server.should_exit = True
            thread.join(30)


def file_chunks(path: Path) -> Iterator[tuple[bytes, float]]:
    """A file decoded to 16-kHz s16le, in 100-ms frames."""
    import numpy as np

    from ..audio import SAMPLE_RATE, decode_audio

    audio = decode_audio(path)
    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    step = int(SAMPLE_RATE * FRAME_SECONDS) * 2
    for offset in range(0, len(pcm), step):
        piece = pcm[offset : offset + step]
        yield piece, len(piece) / 2 / SAMPLE_RATE


def stdin_chunks(sample_rate: int, encoding: str) -> Iterator[tuple[bytes, float]]:
    width = BYTES_PER_SAMPLE[encoding]
    step = int(sample_rate * FRAME_SECONDS) * width
    while piece := sys.stdin.buffer.read(step):
        yield piece, len(piece) / width / sample_rate


class Printer:
    """Partials on one rewritten stderr line, finals as lines on stdout (or JSON lines)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def __call__(self, event: dict[str, Any]) -> None:
        if self.as_json:
            print(json.dumps(event, ensure_ascii=False), flush=True)
        elif event["type"] == "partial":
            console.print(f"\r[dim]… {event['text'][-100:]}[/dim]", end="", highlight=False)
        elif event["type"] == "final":
            console.print("\r", end="")
            print(f"[{event['start']:7.2f} → {event['end']:7.2f}] {event['text']}", flush=True)
        elif event["type"] in ("lag", "error"):
            console.print(f"\r[yellow]{event['type']}: {event.get('message') or event}[/yellow]", highlight=False)


def _query(model: str | None, language: str | None, sample_rate: int, encoding: str) -> str:
    params = {"model": model, "language": language, "sample_rate": str(sample_rate), "encoding": encoding}
    return urlencode({key: value for key, value in params.items() if value})


def _print_stats(summary: dict[str, Any]) -> None:
    def seconds(value: Any) -> str:
        return "-" if value is None else f"{value:.2f} s"

    report.print(
        f"finals {summary['finals']}; final latency p50 {seconds(summary['final_latency_p50'])}, "
        f"p95 {seconds(summary['final_latency_p95'])}; update interval mean {seconds(summary['update_gap_mean'])}, "
        f"max {seconds(summary['update_gap_max'])}; lag at the end {seconds(summary['lag_last'])}",
        highlight=False,
        style=None,
    )


def stream(
    source: Annotated[str, typer.Argument(help="Audio/video file, or - for raw PCM on stdin")],
    url: Annotated[str | None, typer.Option(help="ws://host:port/v1/stream (default: an in-process engine)")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key of the server")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="Send as fast as possible instead of at real time")] = False,
    model: Annotated[str | None, typer.Option("--model", "-m")] = None,
    language: Annotated[str | None, typer.Option("--language", "-l")] = None,
    sample_rate: Annotated[int, typer.Option(help="Rate of raw PCM on stdin")] = 16000,
    encoding: Annotated[str, typer.Option(help="pcm_s16le or pcm_f32le (stdin)")] = "pcm_s16le",
    as_json: Annotated[bool, typer.Option("--json", help="Print every event as a JSON line")] = False,
) -> None:
    """Transcribe live: print partial and final lines, then latency statistics."""
    from ..stream_client import stream_pcm

    if encoding not in BYTES_PER_SAMPLE:
        raise InvalidOptionError(f"encoding must be one of {', '.join(BYTES_PER_SAMPLE)}")
    if source == "-":
        chunks = stdin_chunks(sample_rate, encoding)
    else:
        chunks, sample_rate, encoding = file_chunks(Path(source)), 16000, "pcm_s16le"
    query = _query(model, language, sample_rate, encoding)
    with local_server(model) if url is None else _given(url) as base:
        result = stream_pcm(f"{base}?{query}", chunks, api_key=api_key, realtime=not fast, on_event=Printer(as_json))
    console.print("\r", end="")
    _print_stats(result.summary())


@contextmanager
def _given(url: str) -> Iterator[str]:
    yield url.split("?", 1)[0]
