"""Live transcription latency of `dattavani-asr serve` over its WebSocket (docs/streaming.md).

Starts the server in a subprocess, then streams real English clips (joined with a second of
silence) at real-time pace from 1, 4 and 8 concurrent sessions. Per session: final latency (wall
time of a final minus the wall time its `end` audio was sent), the interval between updates,
lag (audio sent minus audio the server had at each event) and WER against the references and
against offline transcription. `--long 600` streams 10 minutes (clips looped) in one session and
reports lag in the last minute and the server's memory at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from dattavani_asr import Transcriber
from dattavani_asr.audio import SAMPLE_RATE, decode_audio
from dattavani_asr.evaluation import word_error_rate
from dattavani_asr.stream_client import StreamReport, stream_pcm

ROOT = Path(__file__).resolve().parents[1]
FRAME = int(SAMPLE_RATE * 0.1)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audio", type=Path, default=ROOT.parent / "shared" / "audio")
    parser.add_argument("--sessions", default="1,4,8", help="comma-separated concurrent session counts")
    parser.add_argument("--long", type=float, default=0.0, help="seconds of one continuous stream (0 = skip)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    return parser.parse_args()


def english_clips(audio_dir: Path) -> list[tuple[np.ndarray, str]]:
    items = [json.loads(line) for line in (audio_dir / "manifest.jsonl").read_text().splitlines() if line.strip()]
    chosen = [i for i in items if i["lang"] == "en" and i.get("reference") and i.get("channel") is None]
    return [(decode_audio(audio_dir / item["file"]), item["reference"]) for item in chosen]


def joined(clips: list[tuple[np.ndarray, str]], seconds: float | None = None) -> tuple[np.ndarray, str]:
    """Clips with a second of silence after each; looped until `seconds` when given."""
    pieces, references, total = [], [], 0.0
    while True:
        for audio, reference in clips:
            pieces += [audio, np.zeros(SAMPLE_RATE, np.float32)]
            references.append(reference)
            total += audio.shape[0] / SAMPLE_RATE + 1.0
            if seconds is not None and total >= seconds:
                return np.concatenate(pieces), " ".join(references)
        if seconds is None:
            return np.concatenate(pieces), " ".join(references)


def chunks(audio: np.ndarray) -> Iterator[tuple[bytes, float]]:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2")
    for start in range(0, pcm.shape[0], FRAME):
        piece = pcm[start : start + FRAME]
        yield piece.tobytes(), piece.shape[0] / SAMPLE_RATE


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server() -> Iterator[tuple[str, psutil.Process]]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as tmp:
        command = [sys.executable, "-c", "from dattavani_asr.cli import main; main()", "serve", "--port", str(port)]
        command += ["--data-dir", tmp, "--preload", "tiny.en", "--log-level", "warning"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_ready(f"http://127.0.0.1:{port}")
            yield f"ws://127.0.0.1:{port}/v1/stream?language=en", psutil.Process(process.pid)
        finally:
            process.terminate()
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_ready(base: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/ready", timeout=30).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit("server did not become ready")


def sessions(url: str, audio: np.ndarray, count: int) -> list[StreamReport]:
    reports: list[StreamReport | None] = [None] * count

    def run(index: int) -> None:
        reports[index] = stream_pcm(url, chunks(audio), realtime=True, timeout=300)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
        time.sleep(0.37)  # sessions start out of step, as real callers do
    for thread in threads:
        thread.join()
    return [report for report in reports if report is not None]


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def summarise(reports: list[StreamReport], reference: str, offline: str) -> dict[str, Any]:
    latencies = [value for report in reports for value in report.final_latencies()]
    gaps = [value for report in reports for value in report.update_gaps()]
    texts = [report.text for report in reports]
    return {
        "sessions": len(reports),
        "finals": len(latencies),
        "final_p50": percentile(latencies, 50),
        "final_p95": percentile(latencies, 95),
        "update_gap_mean": statistics.fmean(gaps) if gaps else None,
        "update_gap_p95": percentile(gaps, 95),
        "wer_reference": statistics.fmean(word_error_rate([reference], [t], "en") for t in texts),
        "wer_vs_offline": statistics.fmean(word_error_rate([offline], [t], "en") for t in texts),
    }


def long_run(url: str, process: psutil.Process, audio: np.ndarray) -> dict[str, Any]:
    rss_start = process.memory_info().rss / 2**20
    report = sessions(url, audio, 1)[0]
    rss_end = process.memory_info().rss / 2**20
    lags = report.lags()
    last_minute = [lag for wall, lag in lags if wall >= lags[-1][0] - 60] if lags else []
    return {
        "seconds": audio.shape[0] / SAMPLE_RATE,
        "lag_p95_last_minute": percentile(last_minute, 95),
        "rss_start_mb": rss_start,
        "rss_end_mb": rss_end,
        "rss_growth_mb": rss_end - rss_start,
        "final_p95": percentile(report.final_latencies(), 95),
    }


def show(name: str, row: dict[str, Any]) -> None:
    cells = ", ".join(
        f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}" for key, value in row.items()
    )
    print(f"{name}: {cells}", flush=True)


def main() -> int:
    args = parse_args()
    clips = english_clips(args.audio)
    audio, reference = joined(clips)
    offline = Transcriber("tiny.en").transcribe(audio).text
    results: dict[str, Any] = {"load_before": psutil.getloadavg()[0]}
    with server() as (url, process):
        sessions(url, audio[: SAMPLE_RATE * 3], 1)  # warm-up
        for count in (int(part) for part in args.sessions.split(",") if part):
            results[f"sessions_{count}"] = summarise(sessions(url, audio, count), reference, offline)
            show(f"{count} session(s)", results[f"sessions_{count}"])
        if args.long:
            results["long"] = long_run(url, process, joined(clips, args.long)[0])
            show(f"{args.long:.0f}-s stream", results["long"])
    results["load_after"] = psutil.getloadavg()[0]
    print(f"load average before {results['load_before']:.2f}, after {results['load_after']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
