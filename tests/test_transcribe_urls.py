"""`dattavani-asr transcribe` with http(s) URLs, and refusing inputs whose transcripts would collide."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import JFK, JFK_PHRASE
from dattavani_asr.config import Settings
from dattavani_asr.core.errors import InvalidOptionError, UnreadablePathError
from dattavani_asr.evaluation import normalize
from dattavani_asr.io.sources.http import DEFAULT_MAX_DOWNLOAD_MB
from helpers_audio import run_cli
from http_server import FileServer, serve_files


@pytest.fixture
def plain_server(tmp_path: Path) -> Iterator[str]:
    """`python -m http.server` (no Range support) serving a folder holding jfk.flac; yields its URL."""
    folder = tmp_path / "served"
    folder.mkdir()
    shutil.copy(JFK, folder / "jfk.flac")
    command = [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(folder)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (http://127.0.0.1:N/) ..."
        port = banner.split(" port ")[1].split()[0]
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


@pytest.fixture
def file_server() -> Iterator[FileServer]:
    with serve_files({"/talks/jfk.flac": JFK.read_bytes()}) as server:
        yield server


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def test_url_from_a_server_without_ranges_is_transcribed_into_the_current_directory(
    plain_server: str, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    result = run_cli(["transcribe", f"{plain_server}/jfk.flac"], cwd=work)
    assert result.returncode == 0, result.stderr
    assert JFK_PHRASE in normalize(result.stdout)
    assert JFK_PHRASE in normalize((work / "gen-transcript" / "jfk.txt").read_text())
    assert sorted(path.name for path in work.rglob("*")) == ["gen-transcript", "jfk.txt"]
    assert "Traceback" not in result.stderr


def test_url_to_stdout_writes_nothing(file_server: FileServer, tmp_path: Path) -> None:
    result = run_cli(["transcribe", f"{file_server.url}/talks/jfk.flac", "-o", "-", "-f", "srt"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1\n00:00:0") and JFK_PHRASE in normalize(result.stdout)
    assert list(tmp_path.iterdir()) == []


def test_dead_url_is_one_error_and_the_other_inputs_still_run(file_server: FileServer, tmp_path: Path) -> None:
    local = tmp_path / "talks" / "jfk.flac"
    local.parent.mkdir()
    shutil.copy(JFK, local)
    dead, good = f"{file_server.url}/talks/gone.flac", f"{file_server.url}/talks/jfk.flac"
    result = run_cli(["transcribe", dead, str(local), good], cwd=tmp_path)
    assert result.returncode == UnreadablePathError.exit_code
    assert _errors(result.stderr) == [f"error: {dead}: not found (HTTP 404)"]
    assert "Traceback" not in result.stderr
    assert normalize(result.stdout).count(JFK_PHRASE) == 2
    assert (tmp_path / "gen-transcript" / "jfk.txt").is_file()  # the URL's, in the current directory
    assert (local.parent / "gen-transcript" / "jfk.txt").is_file()  # the file's, beside it
    assert [entry.path for entry in file_server.log].count("/talks/gone.flac") == 1  # a 404 is not retried


@pytest.mark.parametrize("second", ["b/talk.wav", "b/TALK.wav"])
def test_inputs_that_would_write_the_same_transcript_are_refused_up_front(tmp_path: Path, second: str) -> None:
    for name in ("a/talk.wav", second):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        shutil.copy(JFK, tmp_path / name)
    result = run_cli(["transcribe", "--output-dir", "out", "a/talk.wav", second], cwd=tmp_path)
    assert result.returncode == InvalidOptionError.exit_code
    [error] = _errors(result.stderr)
    assert "a/talk.wav" in error and second in error and "--output-dir" in error
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert not (tmp_path / "out").exists()


def test_download_cap_default_is_the_sources_default() -> None:
    assert Settings().max_download_mb == DEFAULT_MAX_DOWNLOAD_MB
