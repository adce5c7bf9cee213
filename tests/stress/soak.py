"""Soak (issue 19): a real `dattavani-asr serve` under 4 clients at once for N minutes — sync transcriptions,
jobs (submit, wait, fetch) and 2 live streams paced in real time — then the figures: errors, server RSS drift
from the end of the first minute, open descriptors and threads, and p95 latency of the first and last minute.

    python tests/stress/soak.py --minutes 10

Exit status 1 when a promise broke (any error; RSS drift ≥ 10 %; descriptors grew; last-minute p95 more
than 20 % above the first minute's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import process_usage, serve

from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio

DATA = Path(__file__).resolve().parents[1] / "data"
CLIPS = [DATA / "misc" / "jfk.flac", *sorted((DATA / "fleurs").glob("fleurs-en-*.ogg"))[:4]]


@dataclass
class Record:
    started: float
    latencies: list[tuple[float, str, float]] = field(default_factory=list)  # (time, kind, seconds)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def latency(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.latencies.append((time.monotonic() - self.started, kind, seconds))

    def error(self, text: str) -> None:
        with self.lock:
            self.errors.append(text)


def sync_client(url: str, record: Record, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=300) as client:
        index = 0
        while not stop.is_set():
            clip = CLIPS[index % len(CLIPS)]
            index += 1
            began = time.monotonic()
            answer = client.post("/v1/audio/transcriptions", files={"file": (clip.name, clip.read_bytes())})
            if answer.status_code != 200 or not answer.json().get("text"):
                record.error(f"sync {clip.name}: HTTP {answer.status_code} {answer.text[:200]}")
            else:
                record.latency("sync", time.monotonic() - began)


def job_client(url: str, record: Record, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=300) as client:
        index = 0
        while not stop.is_set():
            clip = CLIPS[(index + 2) % len(CLIPS)]
            index += 1
            began = time.monotonic()
            submitted = client.post("/v1/jobs", files={"file": (clip.name, clip.read_bytes())})
            if submitted.status_code != 202:
                record.error(f"job submit: HTTP {submitted.status_code} {submitted.text[:200]}")
                continue
            job_id = submitted.json()["id"]
            while (job := client.get(f"/v1/jobs/{job_id}").json())["status"] not in ("succeeded", "failed"):
                time.sleep(0.2)
            result = client.get(f"/v1/jobs/{job_id}/result")
            if job["status"] != "succeeded" or result.status_code != 200:
                record.error(f"job {job_id}: {job['status']} {job.get('error')}")
            else:
                record.latency("job", time.monotonic() - began)


def stream_client(url: str, record: Record, stop: threading.Event, offset: int) -> None:
    speech = [decode_audio(clip) for clip in CLIPS]
    index = offset
    while not stop.is_set():
        audio = speech[index % len(speech)]
        index += 1
        try:
            asyncio.run(asyncio.wait_for(_one_stream(url, audio, record), 120))
        except Exception as exc:  # a broken session is an error of the soak, with its reason
            record.error(f"stream: {type(exc).__name__}: {exc}")


async def _one_stream(url: str, audio: np.ndarray, record: Record) -> None:
    import websockets

    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    chunk = SAMPLE_RATE // 10 * 2  # 100 ms
    async with websockets.connect(url.replace("http://", "ws://") + "/v1/stream") as socket_:
        json.loads(await socket_.recv())
        receiver = asyncio.ensure_future(_finals(socket_, record))
        for start in range(0, len(pcm), chunk):
            await socket_.send(pcm[start : start + chunk])
            await asyncio.sleep(0.1)
        await socket_.send(json.dumps({"type": "end"}))
        if not await receiver:
            record.error("stream: no final transcript")


async def _finals(socket_: object, record: Record) -> int:
    finals = 0
    async for message in socket_:  # type: ignore[attr-defined]
        event = json.loads(message)
        if event["type"] == "error":
            record.error(f"stream event: {event}")
        elif event["type"] == "final":
            finals += 1
            record.latency("stream final", max(0.0, event["audio_received"] - event["end"]))
    return finals


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def p95(values: list[float]) -> float:
    return float(np.percentile(values, 95)) if values else float("nan")


def report(record: Record, samples: list[tuple[float, float, int, int]], minutes: float) -> list[str]:
    """Print the figures; return the broken promises."""
    end = minutes * 60
    warm = next((sample for sample in samples if sample[0] >= 60), samples[0])
    last = samples[-1]
    drift = (last[1] - warm[1]) / warm[1] * 100
    print(f"soak: {minutes:g} min, 4 clients (sync, jobs, 2 live streams), {len(record.errors)} errors")
    peak = max(sample[1] for sample in samples)
    print(f"  RSS {warm[1]:.0f} MB after 1 min → {last[1]:.0f} MB at the end ({drift:+.1f} %), peak {peak:.0f} MB")
    print(f"  open fds {warm[2]} → {last[2]}, threads {warm[3]} → {last[3]}")
    broken = [f"error: {error}" for error in record.errors[:20]]
    broken += [f"RSS drift {drift:+.1f} %"] if drift >= 10 else []
    broken += [f"fds grew {warm[2]} → {last[2]}"] if last[2] > warm[2] + 2 else []
    for kind in ("sync", "job", "stream final"):
        first = [s for t, k, s in record.latencies if k == kind and t < 60]
        final = [s for t, k, s in record.latencies if k == kind and t >= end - 60]
        every = [s for _, k, s in record.latencies if k == kind]
        ratio = p95(final) / p95(first) if first and final else float("nan")
        median = statistics.median(every) if every else float("nan")
        print(
            f"  {kind}: {len(every)} done, p50 {median:.2f} s; p95 first minute {p95(first):.2f} s, "
            f"last minute {p95(final):.2f} s ({ratio:.2f}x)"
        )
        if kind == "sync" and not ratio <= 1.2:
            broken.append(f"sync p95 last/first minute {ratio:.2f}x")
    return broken


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="dattavani-soak-"))
    with serve(work) as (url, process):
        record = Record(time.monotonic())
        stop = threading.Event()
        clients: list[Callable[[], None]] = [
            lambda: sync_client(url, record, stop),
            lambda: job_client(url, record, stop),
            lambda: stream_client(url, record, stop, 0),
            lambda: stream_client(url, record, stop, 2),
        ]
        threads = [threading.Thread(target=client, daemon=True) for client in clients]
        for thread in threads:
            thread.start()
        samples = []
        while (elapsed := time.monotonic() - record.started) < args.minutes * 60:
            samples.append((elapsed, rss_mb(process.pid), *process_usage(process.pid)))
            time.sleep(5)
        stop.set()
        for thread in threads:
            thread.join(300)
        samples.append((time.monotonic() - record.started, rss_mb(process.pid), *process_usage(process.pid)))
    broken = report(record, samples, args.minutes)
    for problem in broken:
        print("  PROBLEM", problem)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
