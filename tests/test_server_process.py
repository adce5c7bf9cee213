"""The real `dattavani-asr serve` process: graceful SIGTERM, JSON logs with request ids, OTLP traces."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from conftest import DATA, JFK_PHRASE

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that only counts what arrives."""

    received: ClassVar[list[tuple[str, int]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Collector.received.append((self.path, len(body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def start_server(tmp_path: Path, port: int, env: dict[str, str]) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", "from dattavani_asr.cli import main; main()", "serve", "--port", str(port)]
    command += ["--data-dir", str(tmp_path / "data")]
    process = subprocess.Popen(command, env=os.environ | env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"server did not start: {process.stderr.read() if process.stderr else ''}")


def test_sigterm_finishes_in_flight_request_then_exits(tmp_path: Path, collector: str) -> None:
    port = free_port()
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": collector, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    process = start_server(tmp_path, port, env)
    outcome: dict[str, Any] = {}

    def call() -> None:
        with (DATA / "misc" / "jfk.flac").open("rb") as handle:
            response = httpx.post(
                f"http://127.0.0.1:{port}/v1/audio/transcriptions",
                files={"file": handle},
                headers={"X-Request-ID": "req-under-test"},
                timeout=120,
            )
        outcome["status"], outcome["body"] = response.status_code, response.json()

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.5)  # the request is in flight (first use also loads the model)
    process.send_signal(signal.SIGTERM)
    caller.join(120)
    assert process.wait(60) in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after its graceful stop
    assert outcome["status"] == 200 and JFK_PHRASE in outcome["body"]["text"].lower().replace(",", "")
    logs = [
        json.loads(line)
        for line in (process.stderr.read() if process.stderr else "").splitlines()
        if line.startswith("{")
    ]
    assert any(
        entry["request_id"] == "req-under-test" and "/v1/audio/transcriptions" in entry["message"] for entry in logs
    )
    assert any(path == "/v1/traces" and size > 0 for path, size in Collector.received)
