"""`dattavani-asr stream`: a file or stdin PCM through the live protocol, in-process or to a server."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from conftest import JFK
from dattavani_asr.audio import decode_audio
from dattavani_asr.evaluation import word_error_rate
from helpers_audio import cli_command, cli_env


def run_cli(args: Sequence[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    process = subprocess.run(
        [*cli_command(), *args], input=stdin, env=cli_env(), capture_output=True, timeout=180, check=False
    )
    out, err = process.stdout.decode(), process.stderr.decode()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def test_file_to_in_process_engine_prints_finals_and_latency() -> None:
    result = run_cli(["stream", str(JFK), "--fast"])
    assert result.returncode == 0, result.stderr
    finals = [line.split("] ", 1)[1] for line in result.stdout.splitlines() if line.startswith("[")]
    assert word_error_rate([JFK_TEXT], [" ".join(finals)]) < 0.2, result.stdout
    assert "final latency p50" in result.stdout


def test_raw_pcm_from_stdin_as_json_lines() -> None:
    audio = np.concatenate([decode_audio(JFK), np.zeros(16000, np.float32)])
    pcm = audio.astype("<f4").tobytes()
    result = run_cli(["stream", "-", "--fast", "--json", "--encoding", "pcm_f32le"], stdin=pcm)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert events[0]["type"] == "ready" and events[-1]["type"] == "done"
    assert "country" in events[-1]["text"].lower()


def test_dead_url_is_a_clean_error() -> None:
    result = run_cli(["stream", str(JFK), "--url", "ws://127.0.0.1:9/v1/stream"])
    assert result.returncode == 11
    assert "cannot open ws://127.0.0.1:9/v1/stream" in result.stderr and "Traceback" not in result.stderr


def test_missing_file_is_a_clean_error(tmp_path: Path) -> None:
    result = run_cli(["stream", str(tmp_path / "no-such.wav"), "--fast"])
    assert result.returncode == 3 and "no such file" in result.stderr
