"""Abuse of the service: URLs that lead to private hosts (directly, through DNS, through redirects, through a
second DNS answer), path traversal in upload names and job ids, and per-key rate limits under concurrent load."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import JFK
from dattavani_asr.server import ServerSettings, create_app, security
from dattavani_asr.server.errors import APIError
from dattavani_asr.server.jobs.download import JobFailure, download
from dattavani_asr.server.security import UrlGuard
from http_server import serve_files

JFK_PHRASE = "ask not what your country can do for you"
FINISHED = ("succeeded", "failed", "cancelled")


@contextmanager
def _client(data_dir: Path, **overrides: Any) -> Iterator[TestClient]:
    values: dict[str, Any] = {"data_dir": data_dir, "shutdown_grace_seconds": 0, "log_json": False, "job_workers": 1}
    with TestClient(create_app(ServerSettings(**(values | overrides)))) as client:
        yield client


def _wait(client: TestClient, job_id: str, timeout: float = 90.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in FINISHED:
            return dict(job)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not finished after {timeout} s")


def _fake_dns(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """The guard's lookups answered from `answers` (other names as usual); returns the names looked up."""
    asked: list[str] = []
    real = security.resolve

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return list(answers[host]) if host in answers else real(host, port)

    monkeypatch.setattr(security, "resolve", resolve)
    return asked


# ---- SSRF


def test_names_resolving_to_private_addresses_are_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    answers = {
        "intranet.example": ["10.0.0.7"],
        "metadata.example": ["169.254.169.254"],
        "mixed.example": ["93.184.216.34", "127.0.0.1"],  # one private answer is enough to refuse
        "v6.example": ["::1"],
    }
    _fake_dns(monkeypatch, answers)
    with _client(tmp_path) as client:
        for host in answers:
            refused = client.post("/v1/jobs", json={"url": f"http://{host}/talk.flac"})
            assert refused.status_code == 400, (host, refused.text)
            assert refused.json()["error"]["code"] == "forbidden_url"
            with JFK.open("rb") as handle:
                hook = client.post(
                    "/v1/jobs", files={"file": ("jfk.flac", handle)}, data={"webhook_url": f"https://{host}/hook"}
                )
            assert hook.status_code == 400 and hook.json()["error"]["param"] == "webhook_url"
        assert client.get("/v1/jobs").json()["data"] == []


def test_a_checked_url_is_pinned_to_the_address_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([["93.184.216.34"], ["127.0.0.1"]])  # DNS rebinding: public when checked, loopback after
    monkeypatch.setattr(security, "resolve", lambda host, port: next(answers))
    pinned = UrlGuard().check("https://user:pw@files.example:8443/a/talk.flac?sig=1")
    assert pinned.url == "https://user:pw@93.184.216.34:8443/a/talk.flac?sig=1"
    assert pinned.headers == {"Host": "files.example:8443"}
    assert pinned.extensions == {"sni_hostname": "files.example"}  # certificates still checked for the name
    monkeypatch.setattr(security, "resolve", lambda host, port: ["2606:2800:220:1::1"])
    assert UrlGuard().check("http://files.example/t.wav").url == "http://[2606:2800:220:1::1]/t.wav"


def test_downloads_go_to_the_checked_address_not_a_second_lookup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`rebind.invalid` has no DNS record at all: the download only works if it uses the pinned address."""
    monkeypatch.setattr(security, "resolve", lambda host, port: ["127.0.0.1"])
    monkeypatch.setattr(security, "_public_addresses", security.resolve)  # loopback counts as public here
    with serve_files({"/jfk.flac": JFK.read_bytes()}) as server:
        port = server.url.rsplit(":", 1)[1]
        size = download(
            f"http://rebind.invalid:{port}/jfk.flac",
            tmp_path / "a",
            limit=1 << 30,
            guard=UrlGuard(),
            cancel=threading.Event(),
        )
        assert size == JFK.stat().st_size
        assert [(entry.path, entry.host) for entry in server.log] == [("/jfk.flac", f"rebind.invalid:{port}")]


def test_every_redirect_hop_is_checked(tmp_path: Path) -> None:
    """An allowed internal host redirecting to another private host: the second hop is refused unread."""
    with serve_files({"/jfk.flac": JFK.read_bytes()}) as server:
        port = server.url.rsplit(":", 1)[1]
        server.redirects["/to-loopback"] = f"http://127.0.0.1:{port}/jfk.flac"
        server.redirects["/same-host"] = "/jfk.flac"
        with _client(tmp_path, allowed_url_hosts=[f"localhost:{port}"]) as client:
            bounced = client.post("/v1/jobs", json={"url": f"http://localhost:{port}/to-loopback"}).json()
            failed = _wait(client, bounced["id"])
            assert failed["status"] == "failed" and failed["error"]["code"] == "forbidden_url", failed
            assert "127.0.0.1" in failed["error"]["message"]
            assert [entry.path for entry in server.log] == ["/to-loopback"]
            followed = client.post("/v1/jobs", json={"url": f"http://localhost:{port}/same-host"}).json()
            job = _wait(client, followed["id"])
            assert job["status"] == "succeeded", job
            assert JFK_PHRASE in client.get(f"/v1/jobs/{job['id']}/result").text.lower().replace(",", "")
        assert [entry.path for entry in server.log] == ["/to-loopback", "/same-host", "/jfk.flac"]
    with pytest.raises(JobFailure, match="non-public"):  # the same guard in the downloader itself
        download(f"http://127.0.0.1:{port}/x", tmp_path / "b", limit=1, guard=UrlGuard(), cancel=threading.Event())


def test_the_allow_list_matches_host_and_port_exactly() -> None:
    guard = UrlGuard(allowed_hosts=frozenset({"minio.internal:9000", "nas"}))
    assert guard.allows_host("minio.internal", 9000) and guard.allows_host("nas", 8080)
    assert not guard.allows_host("minio.internal", 9001) and not guard.allows_host("nas.evil", None)
    with pytest.raises(APIError, match="non-public"):
        guard.check("http://localhost:9000/x")


# ---- path traversal


def test_hostile_upload_names_and_job_ids_touch_no_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    outside = tmp_path / "evil.flac"
    with _client(data) as client:
        for name in ("../../evil.flac", "/etc/passwd", "..\\..\\evil.flac", "a/../../../evil.flac"):
            with JFK.open("rb") as handle:
                sync = client.post(
                    "/v1/audio/transcriptions", files={"file": (name, handle)}, data={"model": "tiny.en"}
                )
            assert sync.status_code == 200 and JFK_PHRASE in sync.json()["text"].lower().replace(",", "")
        with JFK.open("rb") as handle:
            job = client.post("/v1/jobs", files={"file": ("../../evil.flac", handle)}).json()
        assert _wait(client, job["id"])["status"] == "succeeded"
        for job_id in ("..", "../jobs.sqlite3", "..%2F..%2Fetc%2Fpasswd", "%2e%2e", job["id"] + "/../x"):
            for suffix in ("", "/result"):
                answer = client.get(f"/v1/jobs/{job_id}{suffix}")
                assert answer.status_code == 404, (job_id, suffix, answer.status_code)
            assert client.delete(f"/v1/jobs/{job_id}").status_code == 404
    assert not outside.exists() and not (tmp_path / "passwd").exists()
    assert sorted(path.name for path in (data / "results").iterdir()) == [f"{job['id']}.json"]
    assert list((data / "uploads").iterdir()) == []


# ---- per-key limits under concurrent load


def test_per_key_rate_limits_hold_under_concurrent_requests(tmp_path: Path) -> None:
    keys = ["key-a-0123456789", "key-b-0123456789"]
    with _client(tmp_path, api_keys=keys, rate_limit_per_minute=5) as client:
        statuses: list[tuple[str, int, str | None]] = []
        lock = threading.Lock()

        def call(key: str) -> None:
            answer = client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            with lock:
                statuses.append((key, answer.status_code, answer.headers.get("Retry-After")))

        threads = [threading.Thread(target=call, args=(keys[0],)) for _ in range(16)]
        threads += [threading.Thread(target=call, args=(keys[1],)) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        counts = Counter((key, status) for key, status, _ in statuses)
        assert counts == {(keys[0], 200): 5, (keys[0], 429): 11, (keys[1], 200): 3}
        assert all(int(wait or 0) >= 1 for key, status, wait in statuses if status == 429)
        with JFK.open("rb") as handle:  # a limited key cannot spend the server's time on uploads either
            refused = client.post(
                "/v1/audio/transcriptions",
                files={"file": ("jfk.flac", handle)},
                headers={"Authorization": f"Bearer {keys[0]}"},
            )
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"


def test_oversized_uploads_at_once_are_all_refused_and_the_server_stays_healthy(tmp_path: Path) -> None:
    body = b"\0" * (5 << 20)  # 5 MB against a 2 MB cap
    with _client(tmp_path, max_upload_mb=2.0) as client:
        answers: list[int] = []

        def upload(index: int) -> None:
            files = {"file": (f"big{index}.wav", body)}
            answers.append(client.post("/v1/audio/transcriptions", files=files).status_code)

        threads = [threading.Thread(target=upload, args=(index,)) for index in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert answers == [413] * 8
        assert client.get("/health").status_code == 200
        with JFK.open("rb") as handle:
            fine = client.post("/v1/audio/transcriptions", files={"file": ("jfk.flac", handle)})
        assert fine.status_code == 200 and JFK_PHRASE in fine.json()["text"].lower().replace(",", "")
