"""Chaos, CI-sized: a real batch run and a real job server SIGKILLed at chosen moments, then resumed.

Every input is finished exactly once (a file recorded done is never written again, a job has one
succeeded run and its result is never replaced) and the outputs are the bytes of an uninterrupted run
(JSON without its wall-time `timings`). The moments are chosen, not timed: the child is started through
`HOOK`, which SIGKILLs its own process when a named function is called (`before`) or has returned
(`after`) — inside a long recording right after its first windows were stored, between a file's outputs
and the run state recording it done, between a job's result and its status. `benchmarks/chaos.py`
is the campaign at random moments.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import httpx
import numpy as np
import pytest

from dattavani_asr import Transcriber
from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.batch import BatchConfig, BatchRun
from dattavani_asr.batch.state import RunState
from dattavani_asr.core.options import TranscribeOptions
from dattavani_asr.core.types import AudioWindow, Decoded, WindowResult
from helpers_audio import cli_env, write_wav16

pytestmark = pytest.mark.slow

DATA = Path(__file__).parent / "data"
FORMATS = ("txt", "srt", "json")
HOOK = """
import importlib, os, signal, sys
spec = os.environ.get("CHAOS_KILL")
if spec:
    module, qualname, when = spec.split(":")
    owner_name, name = qualname.split(".")
    owner = getattr(importlib.import_module(module), owner_name)
    original = getattr(owner, name)
    arm = os.environ.get("CHAOS_ARM")

    def fire():
        if arm is None or os.path.exists(arm):
            os.kill(os.getpid(), signal.SIGKILL)

    def hooked(*args, **kwargs):
        if when == "before":
            fire()
        result = original(*args, **kwargs)
        if when == "after":
            fire()
        return result

    setattr(owner, name, hooked)
from dattavani_asr.cli import main
main()
"""
SAVE = "dattavani_asr.pipeline.checkpoint:WindowLog.save:after"  # a long recording's windows were just stored
KILLED = -signal.SIGKILL


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short FLEURS clips (packed together) and a 74-s recording of real speech (checkpointed past 60 s)."""
    folder = tmp_path_factory.mktemp("chaos-inputs")
    (folder / "clips").mkdir()
    for name in ("fleurs-en-003.ogg", "fleurs-en-004.ogg"):
        (folder / "clips" / name).write_bytes((DATA / "fleurs" / name).read_bytes())
    clips = [*sorted((DATA / "fleurs").glob("fleurs-en-*.ogg")), DATA / "misc" / "jfk.flac"]
    gap = np.zeros(int(0.7 * SAMPLE_RATE), dtype=np.float32)
    pieces = [part for path in [*clips, clips[0], clips[3]] for part in (decode_audio(path), gap)]
    write_wav16(folder / "talk.wav", np.concatenate(pieces))
    return folder


def canonical(path: Path) -> bytes:
    """The file's bytes; a JSON transcript without its wall times."""
    if path.suffix != ".json":
        return path.read_bytes()
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("timings", None)
    return json.dumps(data, sort_keys=True).encode()


def assert_like_uninterrupted(mine: list[Path], theirs: list[Path], resumed_at: float | None = None) -> None:
    """The same bytes (JSON without wall times). A recording resumed inside at `resumed_at` (the end of its last
    stored window): the same text, and the same segments up to that point; after it, the same segments timed
    within 0.5 s: the VAD starts afresh there, so the next window no longer reaches back into the pause before
    it, and its first segment's start is clamped to a different onset (DEVELOPERS, "Resume")."""
    for path, expected in zip(mine, theirs):
        if resumed_at is None or path.suffix == ".txt":
            assert canonical(path) == canonical(expected), f"{path.name} differs from the uninterrupted run"
    if resumed_at is None:
        return
    got, want = (json.loads(next(p for p in paths if p.suffix == ".json").read_text()) for paths in (mine, theirs))
    assert got["text"] == want["text"] and len(got["segments"]) == len(want["segments"])
    for a, b in zip(got["segments"], want["segments"]):
        if b["end"] <= resumed_at:
            assert a == b, "a segment finished before the kill changed"
        else:
            assert a["text"] == b["text"] and abs(a["start"] - b["start"]) <= 0.5 and abs(a["end"] - b["end"]) <= 0.5


def stored_end(db_path: Path) -> float:
    """The end of the last window stored in a run's database (where a resumed recording goes on)."""
    with closing(sqlite3.connect(db_path)) as db:
        rows = db.execute("SELECT result FROM finished_windows").fetchall()
    return max(offset + samples / SAMPLE_RATE for offset, samples, *_ in (json.loads(r[0])["window"] for r in rows))


def inodes(paths: list[Path]) -> dict[Path, int]:
    """A file rewritten atomically (temp file + rename) gets a new inode."""
    return {path: path.stat().st_ino for path in paths}


def hooked(kill: str | None, arm: Path | None = None) -> tuple[list[str], dict[str, str]]:
    env = cli_env({"CHAOS_KILL": kill} if kill else {}) | ({"CHAOS_ARM": str(arm)} if arm else {})
    return [sys.executable, "-c", HOOK], env


# --------------------------------------------------------------------------- batch


def run_batch(inputs: Path, out: Path, kill: str | None = None) -> subprocess.CompletedProcess[str]:
    command, env = hooked(kill)
    command += ["batch", str(inputs), "-d", str(out), "-f", ",".join(FORMATS), "--batch-size", "2"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


def batch_state(out: Path) -> tuple[dict[str, str], int]:
    with closing(sqlite3.connect(out / ".dattavani-batch.sqlite3")) as db:  # closed: the run's close then ends the WAL
        statuses = {Path(uri).name: status for uri, status in db.execute("SELECT uri, status FROM files")}
        (stored,) = db.execute("SELECT COUNT(*) FROM finished_windows").fetchone()
    return statuses, int(stored)


def outputs_of(out: Path, name: str) -> list[Path]:
    return [out / f"{name}.{fmt}" for fmt in FORMATS]


NAMES = {"fleurs-en-003.ogg": "clips/fleurs-en-003", "fleurs-en-004.ogg": "clips/fleurs-en-004", "talk.wav": "talk"}


def committed(out: Path) -> dict[Path, int]:
    """The outputs of the files the run state records done (which no later run may write again)."""
    statuses, _ = batch_state(out)
    return inodes([path for name, stem in NAMES.items() if statuses[name] == "done" for path in outputs_of(out, stem)])


def test_batch_killed_three_times_finishes_every_file_once_with_uninterrupted_bytes(
    inputs: Path, tmp_path: Path
) -> None:
    reference, out = tmp_path / "reference", tmp_path / "out"
    assert run_batch(inputs, reference).returncode == 0

    first = run_batch(inputs, out, kill=SAVE)  # inside the long recording, its first windows stored
    statuses, stored = batch_state(out)
    assert first.returncode == KILLED and stored > 0 and statuses["talk.wav"] == "running"
    resumed_at = stored_end(out / ".dattavani-batch.sqlite3")
    done = committed(out)

    second = run_batch(inputs, out, kill="dattavani_asr.batch.state:RunState.finished:before")
    assert second.returncode == KILLED and "resuming" in second.stdout + second.stderr
    statuses, _ = batch_state(out)
    written = [name for name, stem in NAMES.items() if all(p.exists() for p in outputs_of(out, stem))]
    assert any(statuses[name] == "running" for name in written), "killed between outputs and the state"
    done |= committed(out)

    third = run_batch(inputs, out, kill="dattavani_asr.batch.state:RunState.finished:after")  # done, then killed
    assert third.returncode == KILLED
    assert committed(out).items() >= done.items(), "a file recorded done was written again"
    done |= committed(out)

    last = run_batch(inputs, out)
    assert last.returncode == 0, last.stderr
    assert committed(out).items() >= done.items(), "a file recorded done was written again"
    for stem in NAMES.values():
        assert_like_uninterrupted(
            outputs_of(out, stem), outputs_of(reference, stem), resumed_at if stem == "talk" else None
        )
    summary = json.loads((out / "batch-summary.json").read_text())
    assert (summary["files"], summary["done"] + summary["skipped"], summary["failed"]) == (3, 3, 0)
    assert batch_state(out)[1] == 0, "no stored windows are left"
    expected = {p for stem in NAMES.values() for p in outputs_of(out, stem)}
    expected |= {out / "batch-summary.json", out / ".dattavani-batch.sqlite3"}
    assert {path for path in out.rglob("*") if path.is_file()} == expected, "no temp or partial file is left"


# --------------------------------------------------------------------------- jobs


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`dattavani-asr serve` on one data dir, started through HOOK."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self.url = f"http://127.0.0.1:{free_port()}"
        self.process: subprocess.Popen[bytes] | None = None
        self.log = data.parent / "server.log"

    def start(self, kill: str | None = None, arm: Path | None = None) -> None:
        command, env = hooked(kill, arm)
        command += ["serve", "--port", self.url.rsplit(":", 1)[1], "--data-dir", str(self.data)]
        self.log.write_bytes(b"")
        with self.log.open("ab") as log:  # a file, not a pipe: a full pipe would block the server
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"server did not start: {self.stop()}")

    def wait_killed(self) -> str:
        assert self.process is not None
        assert self.process.wait(120) == KILLED
        return self.log.read_text(errors="replace")

    def stop(self) -> str:
        assert self.process is not None
        self.process.terminate()
        self.process.wait(60)
        return self.log.read_text(errors="replace")

    def submit(self, path: Path) -> str:
        with path.open("rb") as handle:
            response = httpx.post(f"{self.url}/v1/jobs", files={"file": (path.name, handle)}, timeout=60)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    def wait(self, job: str) -> None:
        deadline = time.monotonic() + 120
        while httpx.get(f"{self.url}/v1/jobs/{job}", timeout=10).json()["status"] != "succeeded":
            assert time.monotonic() < deadline, f"job {job} did not succeed"
            time.sleep(0.2)

    def results(self, job: str, folder: Path) -> list[Path]:
        folder.mkdir(exist_ok=True)
        saved = []
        for fmt in FORMATS:
            response = httpx.get(f"{self.url}/v1/jobs/{job}/result", params={"format": fmt}, timeout=30)
            assert response.status_code == 200, response.text
            saved.append(folder / f"result.{fmt}")
            saved[-1].write_bytes(response.content)
        return saved


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "data")
    yield running
    if running.process is not None and running.process.poll() is None:
        running.stop()


def jobs_state(data: Path) -> tuple[dict[str, str], dict[str, list[str | None]], int]:
    with closing(sqlite3.connect(data / "jobs.sqlite3")) as db:
        statuses = dict(db.execute("SELECT id, status FROM jobs").fetchall())
        runs: dict[str, list[str | None]] = {}
        for job, outcome in db.execute("SELECT job_id, outcome FROM runs ORDER BY job_id, attempt"):
            runs.setdefault(job, []).append(outcome)
        (stored,) = db.execute("SELECT COUNT(*) FROM finished_windows").fetchone()
    return statuses, runs, int(stored)


def test_job_server_killed_twice_finishes_the_job_once_with_uninterrupted_bytes(
    inputs: Path, server: Server, tmp_path: Path
) -> None:
    arm = tmp_path / "arm"
    server.start(kill=SAVE, arm=arm)  # armed once the reference job is done
    reference = server.submit(inputs / "talk.wav")
    server.wait(reference)
    expected = server.results(reference, tmp_path / "reference")
    arm.touch()
    job = server.submit(inputs / "talk.wav")
    server.wait_killed()  # inside the recording, right after its first windows were stored
    statuses, _, stored = jobs_state(server.data)
    assert statuses[job] == "running" and stored > 0
    resumed_at = stored_end(server.data / "jobs.sqlite3")

    server.start(kill="dattavani_asr.server.jobs.store:JobStore.finish:before")
    said = server.wait_killed()  # its result written, not yet recorded succeeded
    assert f"job {job} resumes at" in said
    result = server.data / "results" / f"{job}.json"
    written = inodes([result, server.data / "results" / f"{reference}.json"])

    server.start()
    server.wait(job)
    got = server.results(job, tmp_path / "chaos")
    assert f"job {job}: result found after restart" in server.stop()
    assert_like_uninterrupted(got, expected, resumed_at)
    statuses, runs, stored = jobs_state(server.data)
    assert statuses == {reference: "succeeded", job: "succeeded"}
    assert runs[reference] == ["succeeded"] and runs[job].count("succeeded") == 1
    assert inodes(list(written)) == written, "a finished job's result was written again"
    assert stored == 0 and not os.listdir(server.data / "uploads") and not list(server.data.rglob("*.part"))


# --------------------------------------------------------------------------- what the chaos runs found


def test_a_summary_half_written_by_a_killed_run_is_cleaned_up(tmp_path: Path) -> None:
    """A run killed while writing its summary left `.batch-summary.json.*.part` in the output folder for good."""
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".batch-summary.json.k1ll3d.part"
    stale.write_text("{")
    transcriber = cast(Transcriber, SimpleNamespace(model_name="tiny.en"))
    BatchRun(BatchConfig(specs=[], formats=["txt"], output_dir=out), transcriber, TranscribeOptions()).run()
    assert not stale.exists() and json.loads((out / "batch-summary.json").read_text())["files"] == 0


def test_a_file_recorded_done_forgets_its_stored_windows_in_the_same_transaction(tmp_path: Path) -> None:
    """A kill between recording a long file done and dropping its windows left them in the state for good."""
    state = RunState(tmp_path / "state.sqlite3")
    window = AudioWindow(57.5, np.zeros(12 * SAMPLE_RATE, dtype=np.float32), 0.2, 11.5)
    result = WindowResult(window, Decoded((50258,), " Hi.", -0.2, 0.01, 1.1, 0.0), (), "en", "tiny.en", 0.8)
    state.windows.save("/talk.wav", 0, [result], 1.0)
    assert len(state.windows.load("/talk.wav").results) == 1
    state.finished("/talk.wav", 69.5, 3.0, ["/out/talk.txt"])
    assert state.windows.recordings() == []
    state.close()
