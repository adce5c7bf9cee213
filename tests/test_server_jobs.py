"""Durable jobs: submit, poll, results, cancel, list, bad uploads, URL jobs, webhooks, restarts."""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import srt
from fastapi.testclient import TestClient

from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.audio.formats import encode_video_only
from dattavani_asr.core.transcript import Segment, Transcript
from dattavani_asr.evaluation import word_error_rate
from dattavani_asr.io.retrying import RetryPolicy
from dattavani_asr.server import ServerSettings, create_app
from dattavani_asr.server.jobs import download as download_module
from dattavani_asr.server.jobs.store import JobStore, NewJob
from dattavani_asr.server.security import UrlGuard
from dattavani_asr.server.webhooks import CircuitBreaker, Delivery, WebhookSender
from helpers_audio import cli_command, cli_env, write_wav16
from http_server import serve_files

DATA = Path(__file__).parent / "data"
JFK = DATA / "misc" / "jfk.flac"
JFK_PHRASE = "ask not what your country can do for you"
FLEURS_EN = sorted((DATA / "fleurs").glob("fleurs-en-*.ogg"))
FINISHED = ("succeeded", "failed", "cancelled")


def _settings(data_dir: Path, **overrides: Any) -> ServerSettings:
    # one job worker, as most tests here were written for (the default is two: see the fairness test)
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "shutdown_grace_seconds": 0,
        "device": "cpu",
        "log_json": False,
        "job_workers": 1,
    }
    return ServerSettings(**(values | overrides))


@contextmanager
def _client(data_dir: Path, **overrides: Any) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(data_dir, **overrides))) as client:
        yield client


def _submit(client: TestClient, path: Path, **fields: Any) -> dict[str, Any]:
    with path.open("rb") as handle:
        response = client.post("/v1/jobs", files={"file": (path.name, handle)}, data=fields)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    return dict(response.json())


def _wait(client: TestClient, job_id: str, until: tuple[str, ...] = FINISHED, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return dict(job)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not {until} after {timeout} s: {job}")


def _runs(data_dir: Path, job_id: str) -> list[str | None]:
    with sqlite3.connect(data_dir / "jobs.sqlite3") as db:
        rows = db.execute("SELECT outcome FROM runs WHERE job_id = ? ORDER BY attempt", (job_id,)).fetchall()
    return [row[0] for row in rows]


def _files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~100 s of real English speech (FLEURS + JFK, twice): long enough to be caught running."""
    gap = np.zeros(SAMPLE_RATE // 2, dtype=np.float32)
    pieces = [part for path in [*FLEURS_EN, JFK] * 2 for part in (decode_audio(path), gap)]
    return write_wav16(tmp_path_factory.mktemp("clips") / "long.wav", np.concatenate(pieces))


# ---- submit, poll, results, list


def test_upload_job_runs_and_serves_results_in_every_format(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        submitted = _submit(client, JFK, timestamp_granularities="word", response_format="srt")
        assert submitted["status"] == "queued" and submitted["duration"] == pytest.approx(11.0, abs=0.1)
        other = _submit(client, FLEURS_EN[3])
        job = _wait(client, submitted["id"])
        assert job["status"] == "succeeded", job
        assert job["progress"] == 1.0 and job["attempts"] == 1 and job["error"] is None
        assert job["created_at"] <= job["started_at"] <= job["finished_at"]
        assert job["word_timestamps"] is True and job["source"] == {"type": "upload", "filename": "jfk.flac"}
        base = f"/v1/jobs/{job['id']}/result"

        as_json = client.get(base, params={"format": "json"}).json()
        assert JFK_PHRASE in as_json["text"].lower().replace(",", "")
        assert as_json["source"] == "jfk.flac" and as_json["segments"][0]["words"]
        default = client.get(base)  # the job's response_format: srt
        cues = list(srt.parse(default.text))
        assert len(cues) >= 1 and cues[-1].end.total_seconds() == pytest.approx(11.0, abs=1.0)
        assert default.headers["content-type"].startswith("application/x-subrip")
        vtt = client.get(base, params={"format": "vtt"}).text
        assert vtt.startswith("WEBVTT") and "-->" in vtt
        text = client.get(base, params={"format": "text"}).text
        assert JFK_PHRASE in text.lower().replace(",", "")
        verbose = client.get(base, params={"format": "verbose_json"}).json()
        assert verbose["duration"] == pytest.approx(11.0, abs=0.1) and len(verbose["words"]) > 15
        tsv = client.get(base, params={"format": "tsv"}).text
        assert tsv.splitlines()[0] == "start\tend\ttext"
        assert client.get(base, params={"format": "docx"}).status_code == 400

        second = _wait(client, other["id"])
        assert second["status"] == "succeeded"
        assert "cabbage" in client.get(f"/v1/jobs/{other['id']}/result?format=txt").text.lower()
        assert _files(tmp_path / "uploads") == []  # uploads go once jobs finish
        assert _files(tmp_path / "results") == sorted([f"{job['id']}.json", f"{other['id']}.json"])
        metrics = client.get("/metrics").text
        assert 'dattavani_jobs{state="succeeded"} 2.0' in metrics


def test_list_is_newest_first_with_limit_status_and_paging(tmp_path: Path) -> None:
    with _client(tmp_path) as client:
        ids = [_submit(client, FLEURS_EN[4])["id"] for _ in range(3)]
        for job_id in ids:
            _wait(client, job_id)
        listed = client.get("/v1/jobs").json()
        assert [job["id"] for job in listed["data"]] == ids[::-1] and listed["has_more"] is False
        page = client.get("/v1/jobs", params={"limit": 2}).json()
        assert [job["id"] for job in page["data"]] == [ids[2], ids[1]] and page["has_more"] is True
        rest = client.get("/v1/jobs", params={"limit": 2, "after": page["last_id"]}).json()
        assert [job["id"] for job in rest["data"]] == [ids[0]] and rest["has_more"] is False
        assert len(client.get("/v1/jobs", params={"status": "succeeded"}).json()["data"]) == 3
        assert client.get("/v1/jobs", params={"status": "queued"}).json()["data"] == []
        assert client.get("/v1/jobs", params={"status": "done"}).status_code == 400
        unknown = client.get("/v1/jobs/job_nope")
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "job_not_found"
        assert client.get("/v1/jobs/job_nope/result").status_code == 404
        assert client.delete("/v1/jobs/job_nope").status_code == 404


# ---- cancel


def test_cancel_queued_and_running_jobs(tmp_path: Path, long_clip: Path) -> None:
    with _client(tmp_path) as client:
        running = _submit(client, long_clip)
        queued = _submit(client, JFK)  # one worker: waits behind the long clip
        not_ready = client.get(f"/v1/jobs/{queued['id']}/result")
        assert not_ready.status_code == 409 and not_ready.json()["error"]["code"] == "job_queued"

        cancelled = client.delete(f"/v1/jobs/{queued['id']}")
        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        assert _files(tmp_path / "uploads") == [running["id"]]

        _wait(client, running["id"], until=("running",))
        started = time.monotonic()
        stopped = client.delete(f"/v1/jobs/{running['id']}")
        assert stopped.status_code == 200 and stopped.json()["status"] == "cancelled"
        assert time.monotonic() - started < 3.0, "a running job must stop promptly"
        job = client.get(f"/v1/jobs/{running['id']}").json()
        assert job["progress"] < 1 and job["error"]["code"] == "cancelled"
        assert client.get(f"/v1/jobs/{running['id']}/result").json()["error"]["code"] == "job_cancelled"
        assert _runs(tmp_path, running["id"]) == ["cancelled"]
        assert _runs(tmp_path, queued["id"]) == []  # never ran
        assert _files(tmp_path / "uploads") == [] and _files(tmp_path / "results") == []

        done = _submit(client, FLEURS_EN[4])
        _wait(client, done["id"])
        again = client.delete(f"/v1/jobs/{done['id']}")
        assert again.status_code == 409 and again.json()["error"]["code"] == "job_succeeded"


# ---- bad uploads


def _header_only_wav() -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(b"")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "content", "status", "code"),
    [
        ("notes.mp3", b"These are meeting notes, not audio.\n" * 40, 415, "unsupported_media"),
        ("noise.ogg", np.random.default_rng(1).bytes(64_000), 415, "unsupported_media"),
        ("screen.mp4", None, 415, "no_audio_stream"),
        ("empty.wav", b"", 400, "empty_audio"),
        ("header.wav", _header_only_wav(), 400, "empty_audio"),
    ],
    ids=["text", "random", "video-only", "empty", "header-only"],
)
def test_bad_uploads_are_refused_and_leave_nothing(
    tmp_path: Path, name: str, content: bytes | None, status: int, code: str
) -> None:
    body = encode_video_only(duration=1.0) if content is None else content
    with _client(tmp_path) as client:
        response = client.post("/v1/jobs", files={"file": (name, body)})
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code and name in error["message"] and str(tmp_path) not in error["message"]
        assert client.get("/v1/jobs").json()["data"] == []
    assert _files(tmp_path / "uploads") == []


def test_oversize_bad_options_and_missing_input(tmp_path: Path) -> None:
    with _client(tmp_path, max_upload_mb=0.05) as client:
        too_big = client.post("/v1/jobs", files={"file": ("jfk.flac", JFK.read_bytes())})
        assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"
        small = FLEURS_EN[4].read_bytes()
        assert len(small) < 0.05 * 1048576
        for fields, param in [
            ({"temperature": "3"}, "temperature"),
            ({"task": "summarise"}, "task"),
            ({"timestamp_granularities[]": "letter"}, "timestamp_granularities.0"),
            ({"colour": "blue"}, "colour"),
            ({"response_format": "docx"}, "response_format"),
        ]:
            response = client.post("/v1/jobs", files={"file": ("a.ogg", small)}, data=fields)
            assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text
        unknown_model = client.post("/v1/jobs", files={"file": ("a.ogg", small)}, data={"model": "nope"})
        assert unknown_model.status_code == 400 and "nope" in unknown_model.json()["error"]["message"]
        missing = client.post("/v1/jobs", data={"language": "en"})
        assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
        assert client.post("/v1/jobs", json={"model": "tiny.en"}).status_code == 400
        assert client.post("/v1/jobs", content=b"{", headers={"content-type": "application/json"}).status_code == 400
        assert client.post("/v1/jobs", content=b"x", headers={"content-type": "audio/flac"}).status_code == 415
        assert client.get("/v1/jobs").json()["data"] == []
    assert _files(tmp_path / "uploads") == []


def test_full_queue_answers_429_with_retry_after(tmp_path: Path, long_clip: Path) -> None:
    with _client(tmp_path, max_queued_jobs=2) as client:
        accepted: list[Any] = []
        refused: list[Any] = []
        for _ in range(4):
            with long_clip.open("rb") as handle:
                response = client.post("/v1/jobs", files={"file": ("long.wav", handle)})
            (accepted if response.status_code == 202 else refused).append(response)
        assert refused, "a fourth job must not fit a queue of 2 behind one running job"
        assert all(r.status_code == 429 and int(r.headers["retry-after"]) >= 1 for r in refused)
        assert refused[0].json()["error"]["type"] == "rate_limit_error"
        ids = [r.json()["id"] for r in accepted]
        assert sorted(_files(tmp_path / "uploads")) == sorted(ids)  # refused uploads left nothing
        for job_id in ids:
            client.delete(f"/v1/jobs/{job_id}")
    assert _files(tmp_path / "uploads") == []


# ---- URL jobs


def test_url_jobs_download_run_and_fail_clearly(tmp_path: Path) -> None:
    files = {"/jfk.flac": JFK.read_bytes(), "/notes.mp3": b"not audio at all\n" * 100}
    with serve_files(files) as server, _client(tmp_path, allow_private_urls=True) as client:
        good = client.post("/v1/jobs", json={"url": f"{server.url}/jfk.flac?sig=secret", "response_format": "text"})
        dead = client.post("/v1/jobs", json={"url": f"{server.url}/gone.flac"})
        junk = client.post("/v1/jobs", json={"url": f"{server.url}/notes.mp3"})
        assert {good.status_code, dead.status_code, junk.status_code} == {202}
        assert good.json()["source"] == {"type": "url", "url": f"{server.url}/jfk.flac"}  # no query: may be secret

        job = _wait(client, good.json()["id"])
        assert job["status"] == "succeeded" and job["duration"] == pytest.approx(11.0, abs=0.1)
        assert JFK_PHRASE in client.get(f"/v1/jobs/{job['id']}/result").text.lower().replace(",", "")
        failed = _wait(client, dead.json()["id"])
        assert failed["status"] == "failed" and failed["error"]["code"] == "download_failed"
        assert "HTTP 404" in failed["error"]["message"]
        undecodable = _wait(client, junk.json()["id"])
        assert undecodable["status"] == "failed" and undecodable["error"]["code"] == "unsupported_media"
        assert str(tmp_path) not in undecodable["error"]["message"]
        assert [entry.path for entry in server.log if entry.method == "GET"].count("/jfk.flac") == 1
        assert [entry.path for entry in server.log].count("/gone.flac") == 1  # a 404 is not retried
    assert _files(tmp_path / "uploads") == []


def test_url_job_retries_a_server_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_module, "DEFAULT_POLICY", RetryPolicy(backoff=0.01, max_backoff=0.05))
    files = {"/jfk.flac": JFK.read_bytes()}
    with serve_files(files, fail_first=1) as server, _client(tmp_path, allow_private_urls=True) as client:
        submitted = client.post("/v1/jobs", json={"url": f"{server.url}/jfk.flac", "response_format": "text"})
        job = _wait(client, submitted.json()["id"])
        assert job["status"] == "succeeded", job
        assert JFK_PHRASE in client.get(f"/v1/jobs/{job['id']}/result").text.lower().replace(",", "")
    assert [(entry.method, entry.status) for entry in server.log] == [("GET", 503), ("GET", 200)]
    assert _files(tmp_path / "uploads") == []


def test_loopback_urls_are_refused_by_default(tmp_path: Path) -> None:
    with serve_files({"/jfk.flac": JFK.read_bytes()}) as server, _client(tmp_path) as client:
        refused = client.post("/v1/jobs", json={"url": f"{server.url}/jfk.flac"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "forbidden_url"
        not_http = client.post("/v1/jobs", json={"url": "file:///etc/passwd"})
        assert not_http.status_code == 400 and not_http.json()["error"]["code"] == "invalid_url"
        with JFK.open("rb") as handle:
            hook = client.post(
                "/v1/jobs", files={"file": ("jfk.flac", handle)}, data={"webhook_url": "http://127.0.0.1:9/hook"}
            )
        assert hook.status_code == 400 and hook.json()["error"]["param"] == "webhook_url"
        assert server.log == [] and client.get("/v1/jobs").json()["data"] == []
    assert _files(tmp_path / "uploads") == []


# ---- webhooks


@dataclass
class Receiver:
    fail_first: int
    bodies: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    url: str = ""
    raw: list[bytes] = field(default_factory=list)
    signatures: list[str | None] = field(default_factory=list)


@contextmanager
def _receiver(fail_first: int) -> Iterator[Receiver]:
    state = Receiver(fail_first)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers["Content-Length"]))
            state.raw.append(raw)
            state.signatures.append(self.headers.get("X-Dattavani-Signature"))
            body = json.loads(raw)
            status = 500 if len(state.bodies) < state.fail_first else 204
            state.bodies.append(body)
            state.statuses.append(status)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_is_retried_with_backoff_until_delivered(tmp_path: Path) -> None:
    settings = {"allow_private_urls": True, "webhook_backoff_seconds": 0.05, "webhook_max_attempts": 5}
    with _receiver(fail_first=2) as receiver, _client(tmp_path, **settings) as client:
        submitted = _submit(client, FLEURS_EN[4], webhook_url=receiver.url)
        job = _wait(client, submitted["id"])
        assert job["status"] == "succeeded"
        deadline = time.monotonic() + 20
        while (client.get(f"/v1/jobs/{job['id']}").json()["webhook"] or {}).get("status") != "delivered":
            assert time.monotonic() < deadline, client.get(f"/v1/jobs/{job['id']}").json()
            time.sleep(0.05)
        webhook = client.get(f"/v1/jobs/{job['id']}").json()["webhook"]
    assert receiver.statuses == [500, 500, 204]
    assert webhook["attempts"] == 3 and webhook["error"] is None
    last = receiver.bodies[-1]
    assert last["type"] == "job.succeeded" and last["job"]["id"] == job["id"]
    assert last["job"]["result_url"] == f"/v1/jobs/{job['id']}/result"


def test_webhooks_are_signed_with_the_server_secret(tmp_path: Path) -> None:
    import hashlib
    import hmac

    settings = {"allow_private_urls": True, "webhook_secret": "s3cret", "webhook_backoff_seconds": 0.05}
    with _receiver(fail_first=0) as receiver, _client(tmp_path, **settings) as client:
        submitted = _submit(client, FLEURS_EN[4], webhook_url=receiver.url)
        _wait(client, submitted["id"])
        deadline = time.monotonic() + 20
        while not receiver.raw:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    [signature] = receiver.signatures
    assert signature is not None
    fields = dict(part.split("=", 1) for part in signature.split(","))
    assert abs(int(fields["t"]) - time.time()) < 60
    expected = hmac.new(b"s3cret", fields["t"].encode() + b"." + receiver.raw[0], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)
    forged = hmac.new(b"other", fields["t"].encode() + b"." + receiver.raw[0], hashlib.sha256).hexdigest()
    assert fields["v1"] != forged
    sender = WebhookSender(lambda *outcome: None)
    assert sender.signature(b"{}") == {}  # no secret: unsigned (documented)


def test_a_job_can_sign_its_webhook_with_its_own_secret(tmp_path: Path) -> None:
    import hashlib
    import hmac

    settings = {"allow_private_urls": True, "webhook_secret": "server-secret", "webhook_backoff_seconds": 0.05}
    own = "job-secret-0123456789"
    with _receiver(fail_first=0) as receiver, _client(tmp_path, **settings) as client:
        submitted = _submit(client, FLEURS_EN[4], webhook_url=receiver.url, webhook_secret=own)
        job = _wait(client, submitted["id"])
        assert own not in json.dumps(job) and own not in json.dumps(client.get("/v1/jobs").json())
        deadline = time.monotonic() + 20
        while not receiver.raw:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        short = client.post("/v1/jobs", files={"file": ("a.flac", b"x")}, data={"webhook_secret": "short"})
        assert short.status_code == 400 and short.json()["error"]["param"] == "webhook_secret"
    fields = dict(part.split("=", 1) for part in (receiver.signatures[0] or "").split(","))
    expected = hmac.new(own.encode(), fields["t"].encode() + b"." + receiver.raw[0], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(fields["v1"], expected)


def test_circuit_breaker_stops_calling_a_failing_receiver(tmp_path: Path) -> None:
    outcomes: list[tuple[str, str, int, str | None]] = []
    sender = WebhookSender(
        lambda *outcome: outcomes.append(outcome),
        max_attempts=4,
        backoff=0.01,
        breaker_failures=2,
        breaker_cooldown=60.0,
        guard=UrlGuard(allow_private=True),
    )
    with _receiver(fail_first=100) as receiver:
        sender.start()
        try:
            sender.deliver(Delivery("job_a", receiver.url, {"n": 1}))
            sender.deliver(Delivery("job_b", receiver.url, {"n": 2}))
        finally:
            sender.stop()
    assert receiver.statuses == [500, 500]  # opened after 2 failures: no more calls
    assert [(key, status, attempts) for key, status, attempts, _ in outcomes] == [
        ("job_a", "failed", 4),
        ("job_b", "failed", 4),
    ]
    assert all("circuit open" in (error or "") for *_, error in outcomes)


def test_circuit_breaker_half_opens_after_cooldown() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, cooldown=10.0, clock=lambda: now[0])
    breaker.failure()
    assert breaker.allow() and breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.0
    assert breaker.allow() and breaker.state == "half_open"
    assert not breaker.allow()  # one trial call at a time
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 20.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow() and breaker.consecutive == 0


# ---- stop, restart and recovery


def test_graceful_stop_queues_running_job_again_and_restart_finishes_it(tmp_path: Path, long_clip: Path) -> None:
    with _client(tmp_path) as client:
        job_id = _submit(client, long_clip)["id"]
        _wait(client, job_id, until=("running",))
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        assert db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone() == ("queued",)
    assert _runs(tmp_path, job_id) == ["requeued"]
    assert _files(tmp_path / "uploads") == [job_id]  # kept for the restart
    with _client(tmp_path) as client:
        job = _wait(client, job_id, timeout=120)
        assert job["status"] == "succeeded" and job["attempts"] == 2
        assert JFK_PHRASE in client.get(f"/v1/jobs/{job_id}/result?format=text").text.lower().replace(",", "")
    assert _runs(tmp_path, job_id) == ["requeued", "succeeded"]
    assert _files(tmp_path / "uploads") == []


def test_restart_recovers_what_a_killed_server_left(tmp_path: Path) -> None:
    """As SIGKILL leaves it: one job's result written but not marked, one mid-run, one cancel in flight."""
    store = JobStore(tmp_path / "jobs.sqlite3")
    options = {"request": {"model": "tiny.en"}, "response_format": "text"}
    for name in ("written", "midway", "cancelling"):
        store.add(NewJob(f"job_{name}", "upload", f"{name}.ogg", options), max_queued=10)
        store.claim_next()
    store.request_cancel("job_cancelling")
    store.close()
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    for name in ("midway", "cancelling"):
        (uploads / f"job_{name}").write_bytes(FLEURS_EN[4].read_bytes())
    (uploads / "job_refused.part").write_bytes(b"half an upload")
    marker = Transcript(
        (Segment(0, 0.0, 1.0, " Written before the kill.", -0.1, 0.0, 1.0, 0.0, 0.9),), "en", 1.0, 1.0, "tiny.en"
    )
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "job_written.json").write_text(json.dumps(marker.to_dict()))

    with _client(tmp_path) as client:
        assert client.get("/v1/jobs/job_written/result").text == "Written before the kill.\n"
        assert client.get("/v1/jobs/job_cancelling").json()["status"] == "cancelled"
        midway = _wait(client, "job_midway")
        assert midway["status"] == "succeeded" and midway["attempts"] == 2
        assert "dinosaurs" in client.get("/v1/jobs/job_midway/result").text
    assert _runs(tmp_path, "job_written") == ["succeeded"]  # not run again
    assert _runs(tmp_path, "job_midway") == ["interrupted", "succeeded"]
    assert _runs(tmp_path, "job_cancelling") == ["cancelled"]
    assert _files(uploads) == []


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _server(data_dir: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    command = [*cli_command(), "serve", "--port", str(port), "--data-dir", str(data_dir), "--log-level", "warning"]
    process = subprocess.Popen(command, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else "server exited"
            assert time.monotonic() < deadline, "server did not answer /health"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _references() -> dict[str, str]:
    """Each English recording's reference, by file name."""
    with (DATA / "manifest.jsonl").open(encoding="utf-8") as handle:
        items = [json.loads(line) for line in handle if line.strip()]
    return {
        Path(item["file"]).name: item["reference"] for item in items if item["file"] != "misc/stereo_diarization.wav"
    }


def _assert_each_text_is_its_own_recordings(clips: dict[str, Path], texts: dict[str, str]) -> None:
    """Each job's result is its own recording's transcript: close to that recording's reference, further from
    every other recording's, and the same recording uploaded twice reads the same."""
    references = _references()
    for job_id, clip in clips.items():
        own = word_error_rate([references[clip.name]], [texts[job_id]])
        others = {
            name: word_error_rate([references[name]], [texts[job_id]]) for name in {c.name for c in clips.values()}
        }
        del others[clip.name]
        assert own < 0.25 and own < min(others.values()), (job_id, clip.name, texts[job_id], own, others)
    for first, second in itertools.combinations(clips, 2):
        same = clips[first] == clips[second]
        assert (word_error_rate([texts[first]], [texts[second]]) < 0.2) == same, (clips[first], clips[second])


def test_sigkill_mid_way_then_restart_finishes_all_ten_jobs_once(tmp_path: Path) -> None:
    clips = [*FLEURS_EN, JFK, *FLEURS_EN[:4]]
    port = _free_port()
    base = f"http://127.0.0.1:{port}/v1/jobs"
    with _server(tmp_path, port) as process:
        ids = []
        for clip in clips:
            response = httpx.post(base, files={"file": (clip.name, clip.read_bytes())}, timeout=30)
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        deadline = time.monotonic() + 90
        while True:
            states = [job["status"] for job in httpx.get(base, params={"limit": 100}, timeout=10).json()["data"]]
            if states.count("succeeded") >= 2:
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        at_kill = dict(db.execute("SELECT id, status FROM jobs").fetchall())
    assert sum(status == "succeeded" for status in at_kill.values()) < 10, "the kill must come mid-way"

    with _server(tmp_path, port):
        deadline = time.monotonic() + 120
        while True:
            jobs = {job["id"]: job for job in httpx.get(base, params={"limit": 100}, timeout=10).json()["data"]}
            if all(job["status"] in FINISHED for job in jobs.values()):
                break
            assert time.monotonic() < deadline, {k: v["status"] for k, v in jobs.items()}
            time.sleep(0.1)
        texts = {job_id: httpx.get(f"{base}/{job_id}/result", params={"format": "text"}).text for job_id in ids}
    assert sorted(jobs) == sorted(ids) and all(job["status"] == "succeeded" for job in jobs.values())
    assert JFK_PHRASE in texts[ids[5]].lower().replace(",", "")
    _assert_each_text_is_its_own_recordings(dict(zip(ids, clips, strict=True)), texts)
    for job_id in ids:  # each job's transcription completed exactly once, across both servers
        assert _runs(tmp_path, job_id).count("succeeded") == 1, (job_id, _runs(tmp_path, job_id))
        runs = _runs(tmp_path, job_id)
        if at_kill[job_id] == "succeeded":
            assert runs == ["succeeded"]
        elif at_kill[job_id] == "running":  # run again, or found finished (result written before the kill)
            assert runs in (["interrupted", "succeeded"], ["succeeded"]), runs
    assert _files(tmp_path / "uploads") == []
    assert len(_files(tmp_path / "results")) == 10


def test_a_short_job_is_not_starved_by_a_long_one(tmp_path: Path, long_clip: Path) -> None:
    assert ServerSettings.model_fields["job_workers"].default == 2
    with _client(tmp_path, job_workers=2) as client:  # the default: two job workers, shortest first
        longs = [_submit(client, long_clip) for _ in range(3)]  # two run, one waits
        short = _submit(client, JFK)  # queued after the third long one
        done_short = _wait(client, short["id"], timeout=180)
        assert done_short["status"] == "succeeded"
        third = client.get(f"/v1/jobs/{longs[2]['id']}").json()
        # the short job overtook the long one queued before it
        assert third["status"] == "queued" or third["started_at"] >= done_short["started_at"]
        for job in longs:
            client.delete(f"/v1/jobs/{job['id']}")


def test_shortest_queued_job_goes_first_and_waiting_ages_it(tmp_path: Path) -> None:
    from dattavani_asr.server.jobs import store as jobs_store

    store = jobs_store.JobStore(tmp_path / "jobs.sqlite3")
    try:
        store.add(jobs_store.NewJob("long", "upload", "a", {}, duration=1200.0), max_queued=10)
        store.add(jobs_store.NewJob("short", "upload", "b", {}, duration=11.0), max_queued=10)
        store.add(jobs_store.NewJob("unknown", "upload", "c", {}), max_queued=10)
        first = store.claim_next()
        assert first is not None and first.id == "short"
        with store._tx() as db:  # the long job has waited 20 minutes: it now goes before a fresh short one
            db.execute("UPDATE jobs SET created_at = created_at - 1300 WHERE id = 'long'")
        store.add(jobs_store.NewJob("fresh", "upload", "d", {}, duration=30.0), max_queued=10)
        second = store.claim_next()
        assert second is not None and second.id == "long"
    finally:
        store.close()
