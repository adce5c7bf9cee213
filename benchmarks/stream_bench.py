"""Live transcription latency of `dattavani-asr serve` over its WebSocket (docs/streaming.md).

Starts `dattavani-asr serve --preload tiny.en` in a subprocess (its own temporary data folder),
waits for /health then /ready, and streams real English clips from ../shared/audio (joined with a
second of silence between them) at real-time pace from 1, 4 and 8 concurrent sessions; session k
starts with clip k (the clips rotated), so concurrent sessions pause at different moments, as
different speakers do (`--same-audio`: every session streams the same audio, nearly in unison —
the worst case, every final at once). Reports:

- final latency: wall time a `final` arrived minus the wall time the audio at its `end` was sent
  (p50/p95/max over all finals of all sessions);
- partial interval: time between consecutive partial/final events within speech, and from the
  time the first word of a stretch of speech was sent to its first event;
- lag: seconds of audio sent minus the event's `audio_received`;
- WER of each session's `done` text against the references and against offline transcription of
  the same clips (`Transcriber("tiny.en")`, clip by clip).

`--long 600` also streams 10 minutes (clips looped) in one session and reports the lag in the last
minute and the server's RSS at the start and the end. The table ends with pass/fail per acceptance
line of issue 5. The server and its folder are removed on any exit (also on SIGTERM / Ctrl-C).

    python benchmarks/stream_bench.py --sessions 1,4,8 --long 600 --json stream-bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from dattavani_asr import Transcriber
from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.cli.stream_client import StreamReport, percentile, stream_pcm
from dattavani_asr.evaluation import word_error_rate

ROOT = Path(__file__).resolve().parents[1]
FRAME = SAMPLE_RATE // 10  # 100-ms frames, as a microphone client sends
GAP_SECONDS = 1.0  # silence between clips
STAGGER_SECONDS = 0.37  # concurrent sessions start out of step, as real callers do
RSS_EVERY_SECONDS = 5.0


@dataclass
class Clip:
    name: str
    audio: np.ndarray
    reference: str


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--audio", type=Path, default=ROOT.parent / "shared" / "audio", help="folder with manifest.jsonl"
    )
    parser.add_argument("--sessions", default="1,4,8", help="comma-separated concurrent session counts ('' = none)")
    parser.add_argument("--long", type=float, default=0.0, help="seconds of one continuous stream (0 = skip)")
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument(
        "--same-audio", action="store_true", help="every session streams the same clips in the same order (worst case)"
    )
    parser.add_argument(
        "--phrases",
        action="store_true",
        help="stream the clips cut at their pauses into phrases of a few words (benchmarks/phrases.py), a second "
        "of silence after each: short utterances, where live captions lose most against offline",
    )
    parser.add_argument("--json", type=Path, help="write the measurements here")
    return parser.parse_args()


def english_clips(audio_dir: Path) -> list[Clip]:
    """The English clips of the manifest that have a reference (each channel of a stereo file on its own)."""
    lines = (audio_dir / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    items = [json.loads(line) for line in lines if line.strip()]
    return [
        Clip(
            f"{item['file']}" + (f"#{item['channel']}" if item.get("channel") is not None else ""),
            decode_audio(audio_dir / item["file"], channel=item.get("channel")),
            item["reference"],
        )
        for item in items
        if item["lang"] == "en" and item.get("reference")
    ]


def phrase_clips_of(audio_dir: Path, folder: Path) -> list[Clip]:
    """The English clips cut at their pauses (phrases timed with base where installed, else tiny.en)."""
    from dattavani_asr.models import resolve
    from phrases import phrase_clips
    from transcribe_bench import load_items

    try:
        resolve("base")
        timing = "base"
    except Exception:  # base not installed here: tiny.en times the reference words
        timing = "tiny.en"
    items = [item for item in load_items(audio_dir / "manifest.jsonl", audio_dir, ["en"]) if item.reference]
    pieces = phrase_clips(items, folder, timing, min_pause=0.2)
    return [Clip(Path(piece.path).name, decode_audio(piece.path), piece.reference) for piece in pieces]


def joined(clips: list[Clip], seconds: float | None = None) -> tuple[np.ndarray, str]:
    """The clips with a second of silence after each, looped until `seconds` when given; and their references."""
    silence = np.zeros(int(SAMPLE_RATE * GAP_SECONDS), np.float32)
    pieces: list[np.ndarray] = []
    references: list[str] = []
    total = 0.0
    while not pieces or (seconds is not None and total < seconds):
        for clip in clips:
            pieces += [clip.audio, silence]
            references.append(clip.reference)
            total += clip.audio.shape[0] / SAMPLE_RATE + GAP_SECONDS
            if seconds is not None and total >= seconds:
                break
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
def server(model: str) -> Iterator[tuple[str, psutil.Process]]:
    """`dattavani-asr serve` in a subprocess with a temporary data folder; yields (ws URL, process)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="stream-bench-") as tmp:
        command = [sys.executable, "-c", "from dattavani_asr.cli import main; main()", "serve", "--port", str(port)]
        command += ["--data-dir", str(Path(tmp) / "data"), "--preload", model, "--log-level", "warning"]
        log_path = Path(tmp) / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"http://127.0.0.1:{port}", process, log_path)
            yield f"ws://127.0.0.1:{port}/v1/stream?model={model}&language=en", psutil.Process(process.pid)
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_ready(base: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait for /health (the process answers) then /ready (models preloaded)."""
    deadline = time.monotonic() + 180
    for path in ("/health", "/ready"):
        while True:
            if process.poll() is not None:
                raise SystemExit(
                    f"server exited ({process.returncode}):\n{log_path.read_text(errors='replace')[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise SystemExit(f"server not answering {path} within 180 s")
            try:
                if httpx.get(base + path, timeout=10).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)


def run_sessions(url: str, audios: list[np.ndarray]) -> tuple[list[StreamReport | None], list[str]]:
    """One session per audio, streamed at real time, started STAGGER_SECONDS apart; (reports in
    the order of `audios`, None for a failed session; failures)."""
    reports: list[StreamReport | None] = [None] * len(audios)
    failures: list[str] = []

    def run(index: int) -> None:
        try:
            reports[index] = stream_pcm(url, chunks(audios[index]), realtime=True, timeout=300)
        except Exception as exc:  # a failed session is a result, not a crash of the benchmark
            failures.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(index,), name=f"session-{index}") for index in range(len(audios))]
    for thread in threads:
        thread.start()
        time.sleep(STAGGER_SECONDS)
    for thread in threads:
        thread.join()
    return reports, failures


def session_clips(clips: list[Clip], count: int, same_audio: bool) -> list[list[Clip]]:
    """The clips each session streams: all of them, session k starting with clip k."""
    return [
        clips if same_audio else clips[index % len(clips) :] + clips[: index % len(clips)] for index in range(count)
    ]


def mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def summarise(
    runs: list[StreamReport | None], failures: list[str], references: list[str], offline: list[str]
) -> dict[str, Any]:
    """Figures over all sessions; `references` and `offline` hold each session's expected texts."""
    reports = [report for report in runs if report is not None]
    expected = [(reference, text) for report, reference, text in zip(runs, references, offline) if report is not None]
    latencies = [value for report in reports for value in report.final_latencies()]
    gaps = [value for report in reports for value in report.update_gaps()[0]]
    onsets = [value for report in reports for value in report.update_gaps()[1]]
    lags = [lag for report in reports for _, lag in report.lags(until=report.ended_at)]
    return {
        "sessions": len(reports) + len(failures),
        "failed": failures,
        "finals": len(latencies),
        "final_p50": percentile(latencies, 50),
        "final_p95": percentile(latencies, 95),
        "final_max": max(latencies, default=None),
        "gap_mean": mean(gaps),
        "gap_p95": percentile(gaps, 95),
        "gap_max": max(gaps, default=None),
        "first_partial_mean": mean(onsets),
        "first_partial_p95": percentile(onsets, 95),
        "first_partial_max": max(onsets, default=None),
        "lag_p95": percentile(lags, 95),
        "lag_max": max(lags, default=None),
        "wer_reference": mean([word_error_rate([ref], [r.text], "en") for r, (ref, _) in zip(reports, expected)]),
        "wer_vs_offline": mean([word_error_rate([off], [r.text], "en") for r, (_, off) in zip(reports, expected)]),
    }


class RssSampler(threading.Thread):
    """The server's resident memory every few seconds while a stream runs (MB)."""

    def __init__(self, process: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.process, self.samples, self.stop = process, [self.rss(process)], threading.Event()

    @staticmethod
    def rss(process: psutil.Process) -> float:
        return float(process.memory_info().rss) / 2**20

    def run(self) -> None:
        while not self.stop.wait(RSS_EVERY_SECONDS):
            self.samples.append(self.rss(self.process))


def long_run(url: str, process: psutil.Process, audio: np.ndarray) -> dict[str, Any]:
    sampler = RssSampler(process)
    sampler.start()
    [report], failures = run_sessions(url, [audio])
    sampler.stop.set()
    sampler.join()
    sampler.samples.append(RssSampler.rss(process))
    result: dict[str, Any] = {"seconds": audio.shape[0] / SAMPLE_RATE, "failed": failures}
    result |= {
        "rss_start_mb": sampler.samples[0],
        "rss_end_mb": sampler.samples[-1],
        "rss_max_mb": max(sampler.samples),
    }
    result["rss_growth_mb"] = result["rss_end_mb"] - result["rss_start_mb"]
    if report is None:
        return result
    end = report.ended_at or report.sent_wall[-1]
    lags = report.lags(until=end)
    last_minute = [lag for wall, lag in lags if wall >= end - 60]
    finals = [(wall, latency) for (wall, _), latency in zip(report.of_type("final"), report.final_latencies())]
    gaps, onsets = report.update_gaps()
    return result | {
        "lag_p95_last_minute": percentile(last_minute, 95),
        "lag_max_last_minute": max(last_minute, default=None),
        "lag_max": max((lag for _, lag in lags), default=None),
        "finals": len(finals),
        "final_p95": percentile([latency for _, latency in finals], 95),
        "final_p95_first_minute": percentile([lat for wall, lat in finals if wall < report.sent_wall[0] + 60], 95),
        "final_p95_last_minute": percentile([lat for wall, lat in finals if wall >= end - 60], 95),
        "gap_max": max(gaps, default=None),
        "first_partial_max": max(onsets, default=None),
    }


def acceptance(results: dict[str, Any]) -> list[tuple[str, bool | None, str]]:
    """(line of issue 5, passed — None when not measured —, the measured value)."""
    one, four, long = results.get("sessions_1"), results.get("sessions_4"), results.get("long")
    every = None if one is None else max(one["gap_max"] or 0.0, one["first_partial_max"] or 0.0)
    lines = [
        ("1 session: final latency p50 < 0.5 s", one, one and one["final_p50"], 0.5, "s"),
        ("1 session: final latency p95 < 1 s", one, one and one["final_p95"], 1.0, "s"),
        ("1 session: partials at least every 1 s during speech (max gap, onset included)", one, every, 1.0, "s"),
        ("10 min: p95 lag in the last minute < 1.5 s", long, long and long.get("lag_p95_last_minute"), 1.5, "s"),
        ("10 min: memory growth < 50 MB", long, long and long["rss_growth_mb"], 50.0, "MB"),
        ("4 sessions: final latency p95 < 1.5 s", four, four and four["final_p95"], 1.5, "s"),
    ]
    return [_verdict(line, row, value, limit, unit) for line, row, value, limit, unit in lines]


def _verdict(
    line: str, row: dict[str, Any] | None, value: float | None, limit: float, unit: str
) -> tuple[str, bool | None, str]:
    if row is None:
        return line, None, "not measured"
    if row.get("failed"):
        return line, False, f"{len(row['failed'])} session(s) failed"
    if value is None:
        return line, False, "no events"
    return line, value < limit, f"{value:.3f} {unit}"


def cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def print_table(results: dict[str, Any]) -> None:
    columns = ["finals", "final_p50", "final_p95", "final_max", "gap_mean", "gap_max", "first_partial_mean"]
    columns += ["first_partial_max", "lag_p95", "lag_max", "wer_reference", "wer_vs_offline"]
    rows = [(key, row) for key, row in results.items() if key.startswith("sessions_")]
    print("\nsessions  " + "  ".join(f"{name:>18}" for name in columns))
    for key, row in rows:
        print(f"{key.split('_')[1]:>8}  " + "  ".join(f"{cell(row[name]):>18}" for name in columns))
        for failure in row["failed"]:
            print(f"          failed session: {failure}")
    if "long" in results:
        print("\nlong stream: " + ", ".join(f"{key} {cell(value)}" for key, value in results["long"].items()))
    print("\nacceptance (issue 5):")
    for line, passed, measured in results["acceptance"]:
        verdict = {True: "PASS", False: "FAIL", None: "----"}[passed]
        print(f"  {verdict}  {line}: {measured}")
    print(f"load average (1 min) before {results['load_before']:.2f}, after {results['load_after']:.2f}")


def measure(args: argparse.Namespace) -> dict[str, Any]:
    clips = phrase_clips_of(args.audio, Path(tempfile.mkdtemp())) if args.phrases else english_clips(args.audio)
    audio, _ = joined(clips)
    print(f"{len(clips)} clips, {audio.shape[0] / SAMPLE_RATE:.1f} s per session; offline transcription…", flush=True)
    transcriber = Transcriber(args.model)
    offline = {clip.name: transcriber.transcribe(clip.audio).text for clip in clips}
    results: dict[str, Any] = {
        "model": args.model,
        "audio_seconds": audio.shape[0] / SAMPLE_RATE,
        "cpus": os.cpu_count(),
        "same_audio": args.same_audio,
        "phrases": args.phrases,
    }
    results["load_before"] = psutil.getloadavg()[0]
    with server(args.model) as (url, process):
        run_sessions(url, [audio[: SAMPLE_RATE * 4]])  # warm-up
        for count in (int(part) for part in args.sessions.split(",") if part.strip()):
            print(f"{count} concurrent session(s)…", flush=True)
            orders = session_clips(clips, count, args.same_audio)
            streams = [joined(order) for order in orders]
            reports, failures = run_sessions(url, [audio for audio, _ in streams])
            expected_offline = [" ".join(offline[clip.name] for clip in order) for order in orders]
            references = [reference for _, reference in streams]
            results[f"sessions_{count}"] = summarise(reports, failures, references, expected_offline)
            results[f"sessions_{count}"]["load_after_run"] = psutil.getloadavg()[0]
        if args.long:
            print(f"{args.long:.0f}-s continuous stream…", flush=True)
            results["long"] = long_run(url, process, joined(clips, args.long)[0])
    results["load_after"] = psutil.getloadavg()[0]
    results["acceptance"] = acceptance(results)
    return results


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server and temp folder are cleaned up
    results = measure(args)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(passed is not False for _, passed, _ in results["acceptance"]) else 1


if __name__ == "__main__":
    sys.exit(main())
