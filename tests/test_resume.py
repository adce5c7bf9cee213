"""A long recording interrupted mid-way resumes after its last finished window: in batch runs and in jobs."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.core.transcript import Word
from dattavani_asr.core.types import AudioWindow, Decoded, RawSegment, WindowResult
from dattavani_asr.evaluation import word_error_rate
from dattavani_asr.pipeline.checkpoint import CHECKPOINT_AFTER_SECONDS, Checkpointer, WindowLog
from dattavani_asr.server import ServerSettings, create_app
from helpers_audio import cli_command, cli_env, write_wav16

DATA = Path(__file__).parent / "data"
CLIPS = [*sorted((DATA / "fleurs").glob("fleurs-en-*.ogg")), DATA / "misc" / "jfk.flac"]


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~170 s of real English speech (five FLEURS clips and JFK, three times, 0.7-s pauses)."""
    gap = np.zeros(int(0.7 * SAMPLE_RATE), dtype=np.float32)
    pieces = [part for path in CLIPS * 3 for part in (decode_audio(path), gap)]
    return write_wav16(tmp_path_factory.mktemp("long") / "talk.wav", np.concatenate(pieces))


def _result(offset: float, seconds: float, text: str) -> WindowResult:
    window = AudioWindow(offset, np.full(int(seconds * SAMPLE_RATE), 0.1, dtype=np.float32), 0.25, seconds - 0.5)
    words = (Word(offset + 0.3, offset + 0.9, " Hello", 0.91), Word(offset + 1.0, offset + 1.6, " there.", 0.77))
    segment = RawSegment(offset + 0.3, offset + 1.6, (50258, 2425), text, words, 0.83)
    decoded = Decoded((50258, 2425, 456), text, -0.21, 0.02, 1.4, 0.2)
    return WindowResult(window, decoded, (segment,), "en", "tiny.en", 0.81)


def _stored(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        try:
            return int(connection.execute("SELECT COUNT(*) FROM finished_windows").fetchone()[0])
        except sqlite3.OperationalError:  # the table is not there yet
            return 0


def test_finished_windows_are_stored_once_past_a_minute_and_load_back_whole() -> None:
    import threading

    log = WindowLog(sqlite3.connect(":memory:", check_same_thread=False), threading.Lock())
    keeper = Checkpointer(log, "talk.wav")
    assert keeper.resumed.results == [] and keeper.resumed.start is None
    first, second = _result(0.0, 29.5, " Hello there."), _result(29.5, 28.0, " Hello there.")
    keeper.add(first, 0.93)
    keeper.add(second, 0.93)
    assert log.load("talk.wav").results == [], "nothing is stored before the recording passes a minute"
    third = _result(57.5, 12.0, " Hello there.")
    assert third.window.end >= CHECKPOINT_AFTER_SECONDS
    keeper.add(third, 0.93)

    resumed = Checkpointer(log, "talk.wav").resumed
    assert [r.window.offset for r in resumed.results] == [0.0, 29.5, 57.5]
    assert resumed.start == pytest.approx(69.5) and resumed.language == "en" and resumed.language_probability == 0.93
    back = resumed.results[2]
    assert back.segments == third.segments and back.decoded == third.decoded and back.confidence == 0.81
    assert back.window.duration == pytest.approx(12.0) and back.window.speech_end == pytest.approx(11.5)
    assert resumed.stats(0.0).duration == pytest.approx(69.5)
    keeper.finished()
    assert log.load("talk.wav").results == []


def test_batch_killed_inside_a_long_file_resumes_after_its_last_window(long_recording: Path, tmp_path: Path) -> None:
    command = [*cli_command(), "batch", str(long_recording), "-f", "json,txt", "--output-dir"]
    whole = subprocess.run(
        [*command, str(tmp_path / "whole")], env=cli_env(), capture_output=True, timeout=300, check=False
    )
    assert whole.returncode == 0, whole.stderr

    out = tmp_path / "cut"
    state = out / ".dattavani-batch.sqlite3"
    process = subprocess.Popen([*command, str(out)], env=cli_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline and (not state.exists() or _stored(state) < 2):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _stored(state) >= 2 and not (out / "talk.txt").exists(), "the kill must come inside the file"

    second = subprocess.run(
        [*command, str(out)], env=cli_env(), capture_output=True, text=True, timeout=300, check=False
    )
    assert second.returncode == 0, second.stderr
    [said] = [line for line in second.stderr.splitlines() if line.startswith("resuming")]
    hours, minutes, seconds = said.split(" at ")[1].split()[0].split(":")
    point = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    resumed, uninterrupted = (json.loads((folder / "talk.json").read_text()) for folder in (out, tmp_path / "whole"))
    _assert_resumed(uninterrupted, resumed, point)
    assert resumed["duration"] == uninterrupted["duration"]
    assert _stored(state) == 0, "a finished file's windows are forgotten"


def _assert_resumed(expected: dict[str, Any], result: dict[str, Any], point: float) -> None:
    """What was finished before `point` is kept as it was, and the rest is transcribed as well as uninterrupted.

    Not byte for byte: a window that needs the temperature fallback samples, and CTranslate2's sampler
    is seeded once per thread, so its draw depends on what that thread sampled before."""
    before = [(s["start"], s["text"]) for s in expected["segments"] if s["end"] <= point]
    assert len(before) >= 3
    assert [(s["start"], s["text"]) for s in result["segments"]][: len(before)] == before, "the finished part is kept"
    assert word_error_rate([expected["text"]], [result["text"]]) <= 0.03
    assert all(a["start"] < b["start"] for a, b in zip(result["segments"], result["segments"][1:]))


def _settings(data_dir: Path) -> ServerSettings:
    """Batches of two windows: progress moves in small steps, so the stop can come between them."""
    return ServerSettings(data_dir=data_dir, shutdown_grace_seconds=0, device="cpu", log_json=False, batch_size=2)


def _job(client: TestClient, path: Path) -> str:
    with path.open("rb") as handle:
        response = client.post("/v1/jobs", files={"file": (path.name, handle)}, data={"response_format": "json"})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def _wait(client: TestClient, job_id: str, done: float = 2.0, timeout: float = 120.0) -> dict[str, object]:
    """The job once it is finished, or has made `done` progress."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled") or float(job.get("progress") or 0) >= done:
            return dict(job)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not there after {timeout} s")


def test_a_job_stopped_mid_way_resumes_after_its_last_window(
    long_recording: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with TestClient(create_app(_settings(tmp_path / "whole"))) as client:
        whole = _job(client, long_recording)
        assert _wait(client, whole)["status"] == "succeeded"
        expected = client.get(f"/v1/jobs/{whole}/result", params={"format": "verbose_json"}).json()

    data = tmp_path / "stopped"
    with TestClient(create_app(_settings(data))) as client:
        job_id = _job(client, long_recording)
        assert _wait(client, job_id, done=0.45)["status"] == "running"
    stored = _stored(data / "jobs.sqlite3")  # the stop queued it again, its windows kept
    assert stored >= 2

    with caplog.at_level("INFO", logger="dattavani_asr.server.jobs"), TestClient(create_app(_settings(data))) as client:
        job = _wait(client, job_id)
        assert job["status"] == "succeeded" and job["attempts"] == 2
        result = client.get(f"/v1/jobs/{job_id}/result", params={"format": "verbose_json"}).json()
    [point] = [
        float(r.getMessage().split("resumes at ")[1].split()[0])
        for r in caplog.records
        if "resumes at" in r.getMessage()
    ]
    _assert_resumed(expected, result, point)
    assert _stored(data / "jobs.sqlite3") == 0
