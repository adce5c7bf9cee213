"""Drive hostile inputs through the real CLI and the real service, and list every broken promise.

Each `check_*` returns a list of problems (empty when every promise held) and a `Tally` of what
happened, so the CI test asserts on the list and the campaign prints the tally. The processes run with
their own TMPDIR, which must be empty afterwards (onnxruntime's session marker `.ses` excepted).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np
from hostile import Hostile

CLI = [sys.executable, "-c", "from dattavani_asr.cli import main; main()"]
LIBRARY_TEMP_FILES = {".ses"}  # onnxruntime writes its session marker to TMPDIR once and reuses it
STATE_FILES = {"batch-summary.json", ".dattavani-batch.sqlite3"}


@dataclass
class Tally:
    inputs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def line(self, name: str) -> str:
        counts = ", ".join(f"{key} {value}" for key, value in sorted(self.outcomes.items()))
        return f"{name}: {self.inputs} inputs → {counts}; problems {len(self.problems)}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def leftovers(folder: Path) -> list[str]:
    """Files left in a process's TMPDIR, other than libraries' own markers."""
    return sorted(str(path) for path in folder.rglob("*") if path.name not in LIBRARY_TEMP_FILES)


def _env(tmpdir: Path, **extra: str) -> dict[str, str]:
    tmpdir.mkdir(parents=True, exist_ok=True)
    return os.environ | {"TMPDIR": str(tmpdir), "PYTHONWARNINGS": "ignore"} | extra


# ---- batch


def check_batch(inputs: Sequence[Hostile], work: Path, extra_args: Sequence[str] = ()) -> Tally:
    """One `batch` run over the inputs' folder: every input done (transcript) or failed (message)."""
    folder, out, tmpdir = inputs[0].path.parent, work / "out", work / "tmp-batch"
    command = [*CLI, "batch", str(folder), "--output-dir", str(out), *extra_args]
    result = subprocess.run(command, check=False, env=_env(tmpdir), capture_output=True, text=True, errors="replace")
    tally = Tally(len(inputs))
    problems = tally.problems
    if result.returncode not in (0, 1) or "Traceback" in result.stderr or "internal error" in result.stderr:
        problems.append(f"batch exit {result.returncode}: {result.stderr[-2000:]}")
    summary = json.loads((out / "batch-summary.json").read_text()) if (out / "batch-summary.json").exists() else {}
    failed = {item["file"]: item for item in summary.get("failures", [])}
    for hostile in inputs:
        _account(hostile, out, failed, tally)
    if summary.get("files") != len(inputs) or summary.get("done", 0) + summary.get("failed", 0) != len(inputs):
        problems.append(f"summary counts {summary.get('files')}/{summary.get('done')}/{summary.get('failed')}")
    strays = [p.name for p in out.iterdir() if p.name not in STATE_FILES and p.suffix != ".txt"]
    problems += [f"stray file in output folder: {name}" for name in strays]
    problems += [f"temp file left: {path}" for path in leftovers(tmpdir)]
    return tally


def _account(hostile: Hostile, out: Path, failed: dict[str, Any], tally: Tally) -> None:
    from dattavani_asr.core.errors import printable

    uri = printable(str(hostile.path.resolve()))
    transcript = out / (hostile.path.stem + ".txt")
    if uri in failed:
        tally.outcomes[f"failed {failed[uri]['error']}"] += 1
        if not failed[uri].get("message"):
            tally.problems.append(f"{uri}: failed without a message")
        if transcript.exists():
            tally.problems.append(f"{uri}: failed but has a transcript")
    elif transcript.exists():
        tally.outcomes["done"] += 1
    else:
        tally.problems.append(f"{uri} ({hostile.kind}): neither done nor failed")


# ---- the service


@contextmanager
def serve(work: Path, **settings: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A real `dattavani-asr serve` (own TMPDIR and data dir); yields its URL and process."""
    port = free_port()
    env = _env(work / "tmp-serve", **{f"DATTAVANI_SERVER_{key.upper()}": value for key, value in settings.items()})
    command = [*CLI, "serve", "--port", str(port), "--data-dir", str(work / "data")]
    log = (work / "serve.log").open("wb")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process)
        yield url, process
    finally:
        process.terminate()
        process.wait(60)
        log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server did not become ready (exit {process.poll()})")


def process_usage(pid: int) -> tuple[int, int]:
    """(open file descriptors, threads) of a process."""
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


def _answer_problem(name: str, response: httpx.Response) -> str | None:
    """A 5xx, a traceback, or a 4xx without an OpenAI-style error message."""
    if response.status_code >= 500 or "Traceback" in response.text:
        return f"{name}: HTTP {response.status_code} {response.text[:300]}"
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = None
        if not message:
            return f"{name}: HTTP {response.status_code} without an error message: {response.text[:200]}"
    return None


def check_uploads(url: str, inputs: Sequence[Hostile]) -> Tally:
    """POST each input to /v1/audio/transcriptions (name as uploaded: bytes as Latin-1 where not UTF-8)."""
    tally = Tally(len(inputs))
    with httpx.Client(base_url=url, timeout=300) as client:
        for hostile in inputs:
            name = os.fsencode(hostile.path.name).decode("latin-1")
            files = {"file": (name, hostile.path.read_bytes())}
            try:
                response = client.post("/v1/audio/transcriptions", files=files, data={"response_format": "json"})
            except httpx.TransportError as exc:
                tally.problems.append(f"{hostile.path.name}: {type(exc).__name__}: {exc}")
                continue
            tally.outcomes[f"HTTP {response.status_code}"] += 1
            problem = _answer_problem(hostile.path.name, response)
            if problem:
                tally.problems.append(problem)
    return tally


def url_path(hostile: Hostile) -> str:
    """The input's name as a URL path (percent-encoded bytes): the key a loopback file server serves it under."""
    return "/" + quote(os.fsencode(hostile.path.name))


def check_jobs(url: str, inputs: Sequence[Hostile], file_server: str | None) -> Tally:
    """Each input as an upload job and (when `file_server` serves them at `url_path`) a URL job: all finish."""
    tally = Tally(len(inputs) * (2 if file_server else 1))
    ids: list[tuple[str, str]] = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for hostile in inputs:
            files = {"file": (os.fsencode(hostile.path.name).decode("latin-1"), hostile.path.read_bytes())}
            ids.append((hostile.path.name, _submit(client, tally, hostile.path.name, files=files)))
            if file_server:
                job = {"url": file_server + url_path(hostile)}
                ids.append((f"url {hostile.path.name}", _submit(client, tally, "url", json=job)))
        for name, job_id in ids:
            _finish(client, tally, name, job_id)
    return tally


def _submit(client: httpx.Client, tally: Tally, name: str, **request: Any) -> str:
    response = client.post("/v1/jobs", **request)
    problem = _answer_problem(name, response)
    if problem:
        tally.problems.append(problem)
    if response.status_code != 202:
        tally.outcomes[f"refused {response.status_code}"] += 1
        return ""
    return str(response.json()["id"])


def _finish(client: httpx.Client, tally: Tally, name: str, job_id: str, timeout: float = 600) -> None:
    if not job_id:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            tally.outcomes[f"job {job['status']}"] += 1
            if job["status"] == "failed" and not (job.get("error") or {}).get("message"):
                tally.problems.append(f"job {name}: failed without a message")
            if (job.get("error") or {}).get("code") == "internal_error":
                tally.problems.append(f"job {name}: internal error {job['error']}")
            return
        time.sleep(0.1)
    tally.problems.append(f"job {name}: not finished after {timeout} s")


# ---- live streams


STREAM_CASES = (
    "odd-bytes",
    "garbage-text",
    "bad-json",
    "huge-frame",
    "bad-rate",
    "bad-encoding",
    "abrupt-close",
    "no-end",
    "silence",
    "noise",
    "float-nan",
)


def check_streams(url: str, speech: np.ndarray, rounds: int, seed: int = 0) -> Tally:
    """`rounds` hostile live sessions (cycling STREAM_CASES): the server answers, errors are events, never 1011."""
    tally = Tally(rounds)
    rng = random.Random(seed)
    ws = url.replace("http://", "ws://") + "/v1/stream"
    for index in range(rounds):
        case = STREAM_CASES[index % len(STREAM_CASES)]
        try:
            outcome = asyncio.run(asyncio.wait_for(_stream_case(ws, case, speech, rng), 120))
        except Exception as exc:  # a hang or a protocol error is a problem, named with its case
            tally.problems.append(f"stream {case}: {type(exc).__name__}: {exc}")
            continue
        tally.outcomes[outcome] += 1
        if outcome.startswith("closed 1011"):
            tally.problems.append(f"stream {case}: server error close")
    return tally


async def _stream_case(ws: str, case: str, speech: np.ndarray, rng: random.Random) -> str:
    import websockets

    query = {
        "bad-rate": "?sample_rate=" + rng.choice(["0", "-16000", "abc", "99999999999"]),
        "bad-encoding": "?encoding=mp5",
    }
    async with websockets.connect(ws + query.get(case, ""), max_size=None) as socket_:
        first = json.loads(await socket_.recv())
        if first.get("type") == "error":
            return f"refused {first.get('code')}"
        await _send_case(socket_, case, speech, rng)
        if case in ("abrupt-close", "no-end"):
            return case
        await socket_.send(json.dumps({"type": "end"}))
        async for message in socket_:
            if isinstance(message, str) and json.loads(message).get("type") == "error":
                continue
        code = socket_.close_code
        return f"closed {code}"


async def _send_case(socket_: Any, case: str, speech: np.ndarray, rng: random.Random) -> None:
    pcm = (np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()
    if case == "odd-bytes":
        await socket_.send(pcm[:3201])
        await socket_.send(pcm[3201:64001])
    elif case == "garbage-text":
        await socket_.send("\x00\xff not json at all")
    elif case == "bad-json":
        await socket_.send(json.dumps({"type": "config", "language": ["x"], "task": 7}))
    elif case == "huge-frame":
        await socket_.send(pcm * 3)
    elif case == "silence":
        await socket_.send(bytes(64000))
    elif case == "noise":
        await socket_.send(np.random.default_rng(rng.randrange(1 << 30)).bytes(64000))
    elif case == "float-nan":
        await socket_.send(np.full(8000, np.nan, dtype="<f4").tobytes())
    else:
        for start in range(0, min(len(pcm), 96000), 3200):
            await socket_.send(pcm[start : start + 3200])
    if case == "abrupt-close":
        socket_.transport.abort()
