"""One core for every entry point (issue 14): the same clip gives the same text through the CLI, a batch
run, the OpenAI-compatible HTTP API (the official client) and a job."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI

from conftest import DATA
from dattavani_asr import Transcriber, make_options
from dattavani_asr.batch import BatchConfig, BatchRun
from dattavani_asr.server import ServerSettings, create_app

CLI = [sys.executable, "-c", "from dattavani_asr.cli import main; main()"]
CASES = [
    pytest.param("tiny.en", "fleurs/fleurs-en-000.ogg", id="tiny.en-en"),
    pytest.param("tiny.en", "misc/jfk.flac", id="tiny.en-jfk"),
    pytest.param("base", "fleurs/fleurs-de-001.ogg", id="base-de", marks=pytest.mark.base),
    pytest.param("base", "fleurs/fleurs-es-002.ogg", id="base-es", marks=pytest.mark.base),
    pytest.param("base", "fleurs/fleurs-fr-000.ogg", id="base-fr", marks=pytest.mark.base),
    pytest.param("base", "fleurs/fleurs-en-004.ogg", id="base-en", marks=pytest.mark.base),
]


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = ServerSettings(data_dir=tmp_path_factory.mktemp("server"), job_workers=1)
    with TestClient(create_app(settings)) as client:
        yield client


def _cli(model: str, clip: Path) -> str:
    command = [*CLI, "transcribe", str(clip), "--model", model, "-o", "-", "-f", "txt"]
    result = subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
    return result.stdout.strip()


def _batch(model: str, clip: Path, out: Path) -> str:
    config = BatchConfig(specs=[str(clip)], formats=["txt"], output_dir=out)
    summary = BatchRun(config, Transcriber(model), make_options()).run()
    assert (summary.done, summary.failed) == (1, 0)
    return (out / f"{clip.stem}.txt").read_text().strip()


def _http(http: TestClient, model: str, clip: Path) -> str:
    client = OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http, max_retries=0)
    with clip.open("rb") as handle:
        return client.audio.transcriptions.create(model=model, file=handle).text.strip()


def _job(http: TestClient, model: str, clip: Path) -> str:
    with clip.open("rb") as handle:
        job = http.post("/v1/jobs", files={"file": (clip.name, handle)}, data={"model": model}).json()
    deadline = time.monotonic() + 180
    while http.get(f"/v1/jobs/{job['id']}").json()["status"] not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, "job did not finish"
        time.sleep(0.05)
    return http.get(f"/v1/jobs/{job['id']}/result", params={"format": "txt"}).text.strip()


@pytest.mark.slow
@pytest.mark.parametrize(("model", "clip"), CASES)
def test_every_entry_point_gives_the_same_text(http: TestClient, model: str, clip: str, tmp_path: Path) -> None:
    path = DATA / clip
    texts = {
        "transcribe": _cli(model, path),
        "batch": _batch(model, path, tmp_path / "out"),
        "http": _http(http, model, path),
        "job": _job(http, model, path),
    }
    same = {name: " ".join(text.split()) for name, text in texts.items()}  # the txt writer wraps lines
    assert same["transcribe"], texts
    assert set(same.values()) == {same["transcribe"]}, texts
