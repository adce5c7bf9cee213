"""Damaged and hostile inputs at volume (sized for CI; tests/stress/fuzz_campaign.py runs the full campaign):
150 through `batch`, 60 through HTTP uploads, jobs by upload and by URL, and hostile live sessions. Every input
is done or failed with a message, nothing answers 5xx or prints a traceback, the output folder holds only
transcripts and the run state, and no temp file, descriptor or thread is left behind."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent / "stress"))

from harness import (
    STREAM_CASES,
    check_batch,
    check_jobs,
    check_streams,
    check_uploads,
    leftovers,
    process_usage,
    serve,
    url_path,
)
from hostile import Hostile, make_inputs

from conftest import JFK
from dattavani_asr.audio.decode import decode_audio
from http_server import serve_files

pytestmark = pytest.mark.slow
SEED = 20261206


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> list[Hostile]:
    return make_inputs(tmp_path_factory.mktemp("hostile") / "inputs", 150, seed=SEED)


def test_150_damaged_files_through_batch(hostile: list[Hostile], tmp_path: Path) -> None:
    tally = check_batch(hostile, tmp_path)
    assert not tally.problems, tally.problems
    assert tally.outcomes["done"] >= 40, tally.outcomes  # the damaged files that still hold speech are transcribed
    assert sum(count for outcome, count in tally.outcomes.items() if outcome.startswith("failed")) >= 60
    kinds_failed = {item.kind for item in hostile if not (tmp_path / "out" / (item.path.stem + ".txt")).exists()}
    assert {"empty", "random-bytes", "no-audio-track", "text-as-audio", "silence-bomb"} <= kinds_failed


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, Path]]:
    work = tmp_path_factory.mktemp("service")
    with serve(work, allow_private_urls="true", max_upload_mb="50") as (url, process):
        yield url, process.pid, work


def _settled_usage(pid: int, baseline: tuple[int, int], seconds: float = 20.0) -> tuple[int, int]:
    """The process's (fds, threads) once idle workers have wound down (or after `seconds`)."""
    deadline = time.monotonic() + seconds
    usage = process_usage(pid)
    while time.monotonic() < deadline and (usage[0] > baseline[0] + 2 or usage[1] > baseline[1] + 2):
        time.sleep(0.5)
        usage = process_usage(pid)
    return usage


def test_hostile_uploads_jobs_and_streams_through_the_service(
    hostile: list[Hostile], service: tuple[str, int, Path]
) -> None:
    url, pid, work = service
    speech = decode_audio(JFK)
    # Warm every path once (models loaded, thread pools grown to their size), then count from there.
    warm = check_uploads(url, [item for item in hostile if item.kind == "bit-flipped"][:2])
    warm_jobs = check_jobs(url, hostile[:2], None)
    warm_streams = check_streams(url, speech, rounds=len(STREAM_CASES))
    assert not warm.problems and not warm_jobs.problems and not warm_streams.problems
    baseline = process_usage(pid)
    uploads = check_uploads(url, hostile[:60])
    assert not uploads.problems, uploads.problems
    refused = sum(count for outcome, count in uploads.outcomes.items() if outcome in ("HTTP 400", "HTTP 415"))
    assert uploads.outcomes["HTTP 200"] >= 15 and refused >= 20, uploads.outcomes
    with serve_files({url_path(item): item.path.read_bytes() for item in hostile[60:80]}) as files:
        jobs = check_jobs(url, hostile[60:80], files.url)
    assert not jobs.problems, jobs.problems
    assert jobs.outcomes["job succeeded"] >= 8 and jobs.outcomes["job failed"] >= 8, jobs.outcomes
    streams = check_streams(url, speech, rounds=11)
    assert not streams.problems, streams.problems
    assert streams.outcomes["closed 1000"] >= 6 and streams.outcomes["refused invalid_option"] == 2, streams.outcomes
    assert httpx.get(f"{url}/ready", timeout=5).status_code == 200
    fine = httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("jfk.flac", JFK.read_bytes())}, timeout=120)
    assert "ask not what your country" in fine.json()["text"].lower()
    fds, threads = _settled_usage(pid, baseline)
    assert fds <= baseline[0] + 2 and threads <= baseline[1] + 2, (baseline, (fds, threads))
    assert leftovers(work / "tmp-serve") == []
    log = (work / "serve.log").read_text(errors="replace")
    assert "Traceback" not in log and '"level": "error"' not in log, log[-3000:]
    assert sorted(path.name for path in (work / "data" / "uploads").iterdir()) == []
