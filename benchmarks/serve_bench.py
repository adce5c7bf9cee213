#!/usr/bin/env python3
"""Latency and throughput of `dattavani-asr serve` under concurrent clients, next to a lock-per-request baseline.

Two servers are started by the benchmark, one after the other (never at the same time), each on a free
loopback port as a subprocess with the same environment:

- ours: ``dattavani-asr serve --port P --data-dir TMP --preload MODEL`` (default settings), ready once
  ``GET /health`` and then ``GET /ready`` answer 200;
- baseline: ``benchmarks/baseline_server.py``, FastAPI + uvicorn running faster-whisper the usual way
  (``WhisperModel(DIR, device="cpu", compute_type="int8")``, ``transcribe(file, beam_size=B)``) one request
  at a time behind a ``threading.Lock``, on the same CTranslate2 model directory
  (``dattavani_asr.models.resolve(MODEL)``).

For each client count in ``--clients``, N client threads (one ``httpx.Client`` each) run a closed loop against
the server's ``POST /v1/audio/transcriptions`` (multipart ``file``, ``model=whisper-1``, ``response_format=json``):
send a clip, wait for the answer, send the next, until ``--requests`` requests in all have been sent (or, with
``--seconds S``, until S seconds have passed; requests in flight then finish and count). Clips are handed out
round-robin, so concurrent requests carry different clips. Before measuring, every client sends one warm-up
request (not counted). Throughput = successful requests / wall time from the first send to the last answer;
audio throughput = their audio seconds / the same wall time; latency = client-side wall time of one request
(upload, queueing, decoding, answer); errors = non-200 answers and transport failures.

Clips (written as 16 kHz mono WAV files into a temp dir, read into memory before the run): by default the
single-channel English recordings of ``../shared/audio/manifest.jsonl`` (``--audio``). A recording of
``--min-seconds`` to ``--max-whole`` seconds is sent whole and keeps its reference; a longer one is cut into
``--clip-seconds`` pieces (no reference: WER is not scored on cut pieces); shorter ones are joined in manifest
order (0.5 s of silence between, references joined) until they reach ``--min-seconds``. With the shared
audio this gives ~10-s clips that all have a reference. ``--clips DIR`` takes every audio file in DIR
instead, treated the same way, with a reference from a ``NAME.txt`` beside it when there is one.
WER = corpus WER over every successful answer to a clip with a reference, after Whisper's normalisation
(``dattavani_asr.evaluation.word_error_rate``); ``variants`` = how many clips got more than one distinct text.

    python benchmarks/serve_bench.py --clients 4 --requests 8            # a smoke run
    python benchmarks/serve_bench.py --clients 1,4,8 --requests 48 --json /tmp/serve.json --markdown /tmp/serve.md
    python benchmarks/serve_bench.py --clients 4 --seconds 60 --servers ours
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from transcribe_bench import REPO, cpu_name, default_audio_dir, pct, split_list, versions_text

SERVERS = ("ours", "baseline")
LABELS = {
    "ours": "Dattavani ASR `serve`",
    "baseline": "faster-whisper int8, lock per request",
}
SAMPLE_RATE = 16000
JOIN_GAP_S = 0.5
AUDIO_SUFFIXES = {".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm", ".mp4", ".mkv", ".wma"}
LEGEND = (
    "requests = successful measured requests (warm-up excluded); req/s and audio s/s = successful requests and "
    "their audio seconds per wall second (first send to last answer); p50/p95/p99 = client-side latency of one "
    "request; CPU s = the server process's CPU time during the run; RSS = its resident memory at the end; "
    "WER = corpus WER over answers to clips with a reference; ours / baseline = throughput ratio (above 1 = "
    "ours serves more)."
)


@dataclass(frozen=True)
class Clip:
    """One request body: a 16 kHz mono WAV file, its audio length and (when whole) its reference."""

    name: str
    path: str
    duration: float
    reference: str | None
    origin: str


@dataclass(frozen=True)
class Recording:
    """A source recording: where it is, its reference if any."""

    id: str
    path: str
    reference: str | None


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    doc = (__doc__ or "").split("\n\n")
    parser = argparse.ArgumentParser(
        description=doc[0], epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", default="4", help="comma-separated client counts, e.g. 1,4,8")
    parser.add_argument("--requests", type=int, default=32, help="measured requests per client count")
    parser.add_argument("--seconds", type=float, default=0.0, help="measure for S seconds instead of --requests")
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"subset of {','.join(SERVERS)}, in order")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the servers N times, order reversed each round")
    parser.add_argument("--model", default="tiny.en", help="registry name served by both")
    parser.add_argument("--beam-size", type=int, default=5, help="the baseline's beam (ours: its default)")
    parser.add_argument("--audio", type=Path, default=None, help="audio folder (default ../shared/audio or tests/data)")
    parser.add_argument("--manifest", type=Path, default=None, help="default: AUDIO/manifest.jsonl")
    parser.add_argument("--clips", type=Path, default=None, help="use every audio file in DIR instead")
    parser.add_argument("--clip-seconds", type=float, default=10.0, help="length of pieces cut from long recordings")
    parser.add_argument("--min-seconds", type=float, default=8.0, help="shorter recordings are joined up to this")
    parser.add_argument("--max-whole", type=float, default=12.0, help="longer recordings are cut into pieces")
    parser.add_argument("--timeout", type=float, default=120.0, help="client timeout per request, seconds")
    parser.add_argument("--startup-timeout", type=float, default=300.0, help="seconds to wait for /ready")
    parser.add_argument("--json", type=Path, default=None, help="write every measurement here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the report here")
    args = parser.parse_args(argv)
    args.client_counts = [int(n) for n in split_list(args.clients)]
    unknown = sorted(set(split_list(args.servers)) - set(SERVERS))
    if unknown or not args.client_counts or min(args.client_counts) < 1:
        parser.error(f"unknown server(s) {', '.join(unknown)}" if unknown else "--clients needs counts >= 1")
    if (args.requests < 1 and args.seconds <= 0) or args.rounds < 1:
        parser.error("--requests and --rounds must be >= 1 (or give --seconds)")
    args.audio = (args.audio or default_audio_dir()).resolve()
    args.manifest = args.manifest or args.audio / "manifest.jsonl"
    return args


# --------------------------------------------------------------------------- clips


def manifest_recordings(manifest: Path, audio_dir: Path) -> list[Recording]:
    """Single-channel English manifest entries (with or without a reference), in manifest order."""
    if not manifest.is_file():
        raise SystemExit(f"no manifest at {manifest} (pass --audio or --clips)")
    recordings = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line) if line.strip() else {}
        if entry.get("lang") == "en" and entry.get("channel") is None:
            path = (audio_dir / entry["file"]).resolve()
            recordings.append(Recording(entry["file"], str(path), entry.get("reference") or None))
    return recordings


def folder_recordings(folder: Path) -> list[Recording]:
    """Every audio file under `folder`; a sibling NAME.txt is its reference."""
    recordings = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        text = path.with_suffix(".txt")
        reference = text.read_text(encoding="utf-8").strip() if text.is_file() else None
        recordings.append(Recording(str(path.relative_to(folder)), str(path.resolve()), reference or None))
    return recordings


def write_wav(path: Path, samples: np.ndarray) -> None:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())


def pieces(audio: np.ndarray, seconds: float, min_seconds: float) -> Iterator[np.ndarray]:
    """Consecutive `seconds`-long pieces; a last piece shorter than `min_seconds` is dropped."""
    step = int(seconds * SAMPLE_RATE)
    for start in range(0, len(audio), step):
        piece = audio[start : start + step]
        if len(piece) >= min_seconds * SAMPLE_RATE:
            yield piece


class ClipMaker:
    """Turns recordings into ~`--clip-seconds` request clips written under `folder`."""

    def __init__(self, args: argparse.Namespace, folder: Path) -> None:
        self.args, self.folder = args, folder
        self.clips: list[Clip] = []
        self.pending: dict[bool, list[tuple[Recording, np.ndarray]]] = {True: [], False: []}

    def add(self, name: str, samples: np.ndarray, reference: str | None, origin: str) -> None:
        path = self.folder / f"{len(self.clips):03d}_{Path(name).stem}.wav"
        write_wav(path, samples)
        self.clips.append(Clip(path.name, str(path), len(samples) / SAMPLE_RATE, reference, origin))

    def take(self, recording: Recording) -> None:
        from dattavani_asr.audio.decode import decode_audio

        audio = decode_audio(recording.path)
        seconds, args = len(audio) / SAMPLE_RATE, self.args
        if seconds < args.min_seconds:
            self.join(recording, audio)
        elif seconds <= args.max_whole:
            self.add(recording.id, audio, recording.reference, f"whole {recording.id}")
        else:
            for index, piece in enumerate(pieces(audio, args.clip_seconds, args.min_seconds)):
                start = index * args.clip_seconds
                self.add(f"{Path(recording.id).stem}_{int(start)}s", piece, None, f"{recording.id} from {start:g} s")

    def join(self, recording: Recording, audio: np.ndarray) -> None:
        """Collect short recordings (with and without references apart) until they reach --min-seconds."""
        group = self.pending[recording.reference is not None]
        group.append((recording, audio))
        gap = np.zeros(int(JOIN_GAP_S * SAMPLE_RATE), dtype=np.float32)
        joined = np.concatenate([part for _, a in group for part in (a, gap)][:-1])
        if len(joined) < self.args.min_seconds * SAMPLE_RATE:
            return
        ids = [r.id for r, _ in group]
        reference = " ".join(r.reference or "" for r, _ in group) if recording.reference else None
        self.add("joined_" + Path(ids[0]).stem, joined, reference, "joined " + " + ".join(ids))
        group.clear()


def make_clips(args: argparse.Namespace, folder: Path) -> list[Clip]:
    if args.clips is not None:
        recordings = folder_recordings(args.clips.resolve())
    else:
        recordings = manifest_recordings(args.manifest, args.audio)
    maker = ClipMaker(args, folder)
    for recording in recordings:
        maker.take(recording)
    if not maker.clips:
        raise SystemExit("no clips: no recording long enough (see --min-seconds)")
    return maker.clips


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(name: str, args: argparse.Namespace, port: int, data_dir: Path) -> list[str]:
    if name == "ours":
        exe = shutil.which("dattavani-asr")
        base = [exe] if exe else [sys.executable, "-c", "from dattavani_asr.cli import main; main()"]
        return [*base, "serve", "--port", str(port), "--data-dir", str(data_dir), "--preload", args.model]
    script = Path(__file__).resolve().with_name("baseline_server.py")
    command = [sys.executable, str(script), "--model-dir", args.model_dir, "--port", str(port)]
    return [*command, "--beam-size", str(args.beam_size)]


def tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    return "\n".join(text.splitlines()[-lines:])


def wait_ready(process: subprocess.Popen[bytes], base: str, timeout: float, log: Path) -> float:
    """Poll GET /health, then GET /ready, until both answer 200; returns the seconds it took."""
    import httpx

    started = time.perf_counter()
    with httpx.Client(timeout=10.0) as client:
        for route in ("/health", "/ready"):
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"server exited with code {process.returncode}:\n{tail(log)}")
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"{route} not 200 after {timeout:g} s:\n{tail(log)}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(base + route).status_code == 200:
                        break
                time.sleep(0.25)
    return time.perf_counter() - started


def stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate (SIGTERM, graceful), then kill after 20 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextlib.contextmanager
def running_server(name: str, args: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, Any, float]]:
    """Start one server, wait until it is ready, yield (base URL, psutil process, ready seconds); always stop it."""
    import psutil

    port, data_dir, log = free_port(), tmp / f"{name}-data", tmp / f"{name}.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    with log.open("wb") as out:
        started = time.perf_counter()
        command = server_command(name, args, port, data_dir)
        print(f"starting {name}: {' '.join(command)}", file=sys.stderr)
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_ready(process, base, args.startup_timeout, log)
            yield base, psutil.Process(process.pid), time.perf_counter() - started
        finally:
            stop(process)
            args.logs[name] = tail(log, 40)


# --------------------------------------------------------------------------- load


class Plan:
    """Hands out the next clip to send, until the request budget or the deadline is spent."""

    def __init__(self, clips: list[Clip], requests: int, seconds: float) -> None:
        self.clips, self.requests, self.seconds = clips, requests, seconds
        self.lock, self.sent, self.deadline = threading.Lock(), 0, 0.0
        self.abort = threading.Event()

    def start(self) -> None:
        self.deadline = time.perf_counter() + self.seconds

    def next(self) -> Clip | None:
        with self.lock:
            over = time.perf_counter() >= self.deadline if self.seconds > 0 else self.sent >= self.requests
            if over or self.abort.is_set():
                return None
            self.sent += 1
            return self.clips[(self.sent - 1) % len(self.clips)]


def send(client: Any, url: str, clip: Clip, body: bytes) -> dict[str, Any]:
    """One request; its client-side latency, status and text (or error)."""
    files = {"file": (clip.name, body, "audio/wav")}
    data = {"model": "whisper-1", "response_format": "json"}
    started = time.perf_counter()
    record: dict[str, Any] = {"clip": clip.name, "start": started}
    try:
        response = client.post(url, files=files, data=data)
        record["status"] = response.status_code
        if response.status_code == 200:
            record["text"] = str(response.json().get("text", ""))
        else:
            record["error"] = f"HTTP {response.status_code}: {response.text[:200]}"
    except Exception as exc:  # transport errors and bad JSON count as errors, they do not stop the run
        record.update(status=None, error=f"{type(exc).__name__}: {exc}"[:300])
    record["end"] = time.perf_counter()
    record["latency_s"] = record["end"] - started
    return record


def client_loop(plan: Plan, url: str, bodies: dict[str, bytes], timeout: float, out: list[dict[str, Any]]) -> None:
    import httpx

    with httpx.Client(timeout=timeout) as client:
        while (clip := plan.next()) is not None:
            out.append(send(client, url, clip, bodies[clip.name]))


def run_load(base: str, plan: Plan, clients: int, bodies: dict[str, bytes], timeout: float) -> list[dict[str, Any]]:
    """`clients` closed-loop client threads until the plan is spent; every request's record."""
    url = base + "/v1/audio/transcriptions"
    outs: list[list[dict[str, Any]]] = [[] for _ in range(clients)]
    threads = [
        threading.Thread(target=client_loop, args=(plan, url, bodies, timeout, out), daemon=True) for out in outs
    ]
    plan.start()
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    finally:
        plan.abort.set()
    return sorted((record for out in outs for record in out), key=lambda record: record["start"])


# --------------------------------------------------------------------------- scoring


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def clip_wer(records: list[dict[str, Any]], clips: dict[str, Clip]) -> tuple[float | None, int]:
    """Corpus WER over successful answers to clips with a reference, and how many answers that was."""
    from dattavani_asr.evaluation import word_error_rate

    scored = [r for r in records if "text" in r and clips[r["clip"]].reference]
    if not scored:
        return None, 0
    references = [clips[r["clip"]].reference or "" for r in scored]
    return word_error_rate(references, [r["text"] for r in scored], "en"), len(scored)


def summarise(records: list[dict[str, Any]], clips: dict[str, Clip]) -> dict[str, Any]:
    ok = [r for r in records if "text" in r]
    wall = max(r["end"] for r in records) - min(r["start"] for r in records) if records else 0.0
    latencies = [r["latency_s"] for r in ok]
    audio = sum(clips[r["clip"]].duration for r in ok)
    wer, scored = clip_wer(records, clips)
    texts: dict[str, set[str]] = {}
    for record in ok:
        texts.setdefault(record["clip"], set()).add(record["text"])
    return {
        "requests": len(ok),
        "errors": len(records) - len(ok),
        "error_kinds": dict(Counter(str(r.get("error", ""))[:80] for r in records if "text" not in r)),
        "wall_s": wall,
        "rps": len(ok) / wall if wall else 0.0,
        "audio_per_s": audio / wall if wall else 0.0,
        "audio_s": audio,
        "p50_s": percentile(latencies, 50),
        "p95_s": percentile(latencies, 95),
        "p99_s": percentile(latencies, 99),
        "mean_s": float(np.mean(latencies)) if latencies else None,
        "wer": wer,
        "wer_answers": scored,
        "variants": sum(len(found) > 1 for found in texts.values()),
        "texts": {name: sorted(found) for name, found in texts.items()},
    }


def measure_one(base: str, proc: Any, clients: int, args: argparse.Namespace, clips: list[Clip]) -> dict[str, Any]:
    """Warm up with one request per client, then measure; server CPU/RSS and load average around it."""
    bodies = {clip.name: Path(clip.path).read_bytes() for clip in clips}
    warm = run_load(base, Plan(clips, clients, 0.0), clients, bodies, args.timeout)
    warm_errors = [r["error"] for r in warm if "error" in r]
    cpu_before, load_before = sum(proc.cpu_times()[:2]), os.getloadavg()
    records = run_load(base, Plan(clips, args.requests, args.seconds), clients, bodies, args.timeout)
    result = summarise(records, {clip.name: clip for clip in clips})
    result.update(clients=clients, warmup_errors=warm_errors, records=records)
    result.update(server_cpu_s=sum(proc.cpu_times()[:2]) - cpu_before, server_rss_mb=proc.memory_info().rss / 2**20)
    result.update(load_before=load_before, load_after=os.getloadavg())
    return result


def measure_server(name: str, args: argparse.Namespace, clips: list[Clip], tmp: Path) -> dict[str, Any]:
    """Start `name`, run every client count against it, stop it. A failed start is reported, not raised."""
    try:
        with running_server(name, args, tmp) as (base, proc, ready_s):
            print(f"  {name} ready after {ready_s:.1f} s", file=sys.stderr)
            runs = []
            for clients in args.client_counts:
                print(f"  {name}: {clients} client(s) ...", file=sys.stderr)
                runs.append(measure_one(base, proc, clients, args, clips))
                print(f"    {status_line(runs[-1])}", file=sys.stderr)
    except RuntimeError as exc:
        print(f"  {name} FAILED: {exc}", file=sys.stderr)
        return {"server": name, "error": str(exc), "log": args.logs.get(name, "")}
    return {"server": name, "ready_s": ready_s, "runs": runs, "log": args.logs.get(name, "")}


def status_line(run: dict[str, Any]) -> str:
    p95 = run["p95_s"]
    return (
        f"{run['requests']} ok, {run['errors']} errors, {run['rps']:.2f} req/s, "
        f"p95 {'n/a' if p95 is None else f'{p95:.2f} s'}, load {run['load_after'][0]:.2f}"
    )


# --------------------------------------------------------------------------- reporting


def secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def throughput_ratio(results: list[dict[str, Any]], clients: int, round_: int) -> float | None:
    """ours req/s over baseline req/s for one client count in one round."""
    rps = {}
    for result in results:
        for run in result.get("runs", []) if result["round"] == round_ else []:
            if run["clients"] == clients and run["requests"]:
                rps[result["server"]] = run["rps"]
    if "ours" not in rps or "baseline" not in rps:
        return None
    return float(rps["ours"] / rps["baseline"])


def label(result: dict[str, Any], rounds: int) -> str:
    return LABELS[result["server"]] + (f" (round {result['round']})" if rounds > 1 else "")


def table(results: list[dict[str, Any]], rounds: int) -> list[str]:
    head = ["server", "clients", "requests", "errors", "req/s", "audio s/s", "p50 s", "p95 s", "p99 s"]
    head += ["WER % (answers)", "variants", "CPU s", "RSS MB", "load 1m before/after", "ours / baseline"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for result in results:
        if "error" in result:
            reason = result["error"].splitlines()[0][:120]
            lines.append(f"| {label(result, rounds)} | failed: {reason} |" + " |" * (len(head) - 2))
            continue
        for run in result["runs"]:
            cells = [label(result, rounds), str(run["clients"]), str(run["requests"]), str(run["errors"])]
            cells += [f"{run['rps']:.2f}", f"{run['audio_per_s']:.1f}"]
            cells += [secs(run["p50_s"]), secs(run["p95_s"]), secs(run["p99_s"])]
            cells += [f"{pct(run['wer'])} ({run['wer_answers']})", str(run["variants"])]
            cells += [f"{run['server_cpu_s']:.1f}", f"{run['server_rss_mb']:.0f}"]
            cells += [f"{run['load_before'][0]:.2f} / {run['load_after'][0]:.2f}"]
            ratio = throughput_ratio(results, run["clients"], result["round"]) if result["server"] == "ours" else None
            cells.append("" if result["server"] != "ours" else "-" if ratio is None else f"{ratio:.2f}")
            lines.append("| " + " | ".join(cells) + " |")
    return lines


def setup_line(args: argparse.Namespace, clips: list[Clip]) -> str:
    durations = [clip.duration for clip in clips]
    with_ref = sum(clip.reference is not None for clip in clips)
    budget = f"{args.seconds:g} s" if args.seconds > 0 else f"{args.requests} requests"
    return (
        f"Model `{args.model}`; {len(clips)} clips of {min(durations):.1f}-{max(durations):.1f} s "
        f"(mean {np.mean(durations):.2f} s, {with_ref} with a reference); {budget} per client count after one "
        f"warm-up request per client; baseline beam {args.beam_size}, ours at its default settings. "
        f"CPU: {cpu_name()} ({os.cpu_count()} cores); load average at start {args.load_start[0]:.2f}. "
        f"{versions_text()}."
    )


def acceptance(results: list[dict[str, Any]], clients: int = 4) -> list[str]:
    """The issue's acceptance line at `clients` clients, per round: ours p95 < 2 s, throughput >= 1.5x baseline."""
    lines = []
    for result in results:
        run = next((r for r in result.get("runs", []) if r["clients"] == clients), None)
        if result["server"] != "ours" or run is None or run["p95_s"] is None:
            continue
        ratio = throughput_ratio(results, clients, result["round"])
        ratio_text = "no baseline" if ratio is None else f"{ratio:.2f}x ({'met' if ratio >= 1.5 else 'NOT met'})"
        p95 = f"{run['p95_s']:.2f} s ({'met' if run['p95_s'] < 2.0 else 'NOT met'})"
        lines.append(f"- round {result['round']}: p95 {p95}, throughput vs baseline {ratio_text}")
    head = f"Acceptance at {clients} clients (p95 < 2 s; throughput >= 1.5x the baseline in the same round):"
    return [head, "", *lines] if lines else []


def errors_section(results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for result in results:
        for run in result.get("runs", []):
            for kind, count in {**run["error_kinds"], **Counter(run["warmup_errors"])}.items():
                lines.append(f"- {result['server']}, {run['clients']} clients: {count} x {kind}")
    return ["Errors:", "", *lines] if lines else []


def render(args: argparse.Namespace, clips: list[Clip], results: list[dict[str, Any]]) -> str:
    lines = [setup_line(args, clips), "", LEGEND, "", *table(results, args.rounds), "", *acceptance(results), ""]
    lines += ["Clips:", "", *(f"- `{c.name}` {c.duration:.2f} s: {c.origin}" for c in clips), ""]
    errors = errors_section(results)
    return "\n".join([*lines, *errors, *([""] if errors else [])])


def write_outputs(args: argparse.Namespace, text: str, clips: list[Clip], results: list[dict[str, Any]]) -> None:
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    if args.json:
        payload: dict[str, Any] = {"setup": setup_line(args, clips), "clips": [asdict(c) for c in clips]}
        payload.update(results=results, load_start=args.load_start, load_end=os.getloadavg())
        args.json.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")


# --------------------------------------------------------------------------- main


def on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    from dattavani_asr.models import resolve

    args = parse_args(argv)
    try:
        args.model_dir, args.logs, args.load_start = str(resolve(args.model)), {}, os.getloadavg()
    except Exception as exc:  # ModelError and friends: a clear message, not a traceback
        raise SystemExit(f"cannot resolve model {args.model!r}: {exc}") from exc
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background (SIG_IGN)
    print(f"load average {args.load_start[0]:.2f} {args.load_start[1]:.2f} (repo {REPO})", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="dattavani-serve-bench-") as tmp:
        clips_dir = Path(tmp) / "clips"
        clips_dir.mkdir()
        clips = make_clips(args, clips_dir)
        print(f"{len(clips)} clips, {sum(c.duration for c in clips):.1f} s of audio", file=sys.stderr)
        results = []
        for round_ in range(1, args.rounds + 1):
            order = split_list(args.servers)
            for name in order if round_ % 2 else order[::-1]:
                print(f"round {round_}/{args.rounds}: {name}", file=sys.stderr)
                results.append({**measure_server(name, args, clips, Path(tmp)), "round": round_})
    text = render(args, clips, results)
    print(text)
    write_outputs(args, text, clips, results)
    return 0 if all("error" not in r and not any(run["errors"] for run in r["runs"]) for r in results) else 1


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt:
        print("interrupted: servers stopped, temp files removed", file=sys.stderr)
        raise SystemExit(130) from None
