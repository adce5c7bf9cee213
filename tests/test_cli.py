"""The command line end to end, in real subprocesses."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import JFK, JFK_PHRASE
from dattavani_asr.evaluation import normalize

CLI = [sys.executable, "-c", "from dattavani_asr.cli import main; main()"]


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("DATTAVANI_") or k == "DATTAVANI_CACHE_DIR"}
    environment.update(env or {})
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, cwd=cwd, env=environment, timeout=300, check=False
    )


@pytest.fixture()
def jfk_copy(tmp_path: Path) -> Path:
    target = tmp_path / "talks" / "jfk.flac"
    target.parent.mkdir()
    shutil.copy(JFK, target)
    return target


def test_transcribe_default_placement_and_stdout(jfk_copy: Path) -> None:
    result = run("transcribe", str(jfk_copy))
    assert result.returncode == 0, result.stderr
    assert JFK_PHRASE in normalize(result.stdout)
    written = jfk_copy.parent / "gen-transcript" / "jfk.txt"
    assert JFK_PHRASE in normalize(written.read_text())
    assert "Traceback" not in result.stderr


def test_transcribe_every_format_into_output_dir(jfk_copy: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("transcribe", str(jfk_copy), "--format", "all", "--output-dir", str(out), "--word-timestamps", "-q")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["jfk.json", "jfk.srt", "jfk.tsv", "jfk.txt", "jfk.vtt"]
    data = json.loads((out / "jfk.json").read_text())
    assert data["language"] == "en" and data["segments"][0]["words"]
    assert (out / "jfk.vtt").read_text().startswith("WEBVTT")
    assert not (jfk_copy.parent / "gen-transcript").exists()


def test_output_dash_writes_to_stdout_only(jfk_copy: Path) -> None:
    result = run("transcribe", str(jfk_copy), "-o", "-", "-f", "srt")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1\n00:00:0")
    assert " --> " in result.stdout
    assert not (jfk_copy.parent / "gen-transcript").exists()


def test_clip_range_from_cli(jfk_copy: Path) -> None:
    result = run("transcribe", str(jfk_copy), "--start", "8", "-o", "-", "-f", "txt")
    assert result.returncode == 0, result.stderr
    assert "fellow" not in result.stdout.lower() and "your country" in result.stdout.lower()


def test_one_bad_file_does_not_stop_the_others(jfk_copy: Path) -> None:
    missing = jfk_copy.parent / "missing.mp3"
    result = run("transcribe", str(missing), str(jfk_copy))
    assert result.returncode == 3
    assert JFK_PHRASE in normalize(result.stdout)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "missing.mp3" in errors[0]


def test_english_only_model_refuses_hindi(jfk_copy: Path) -> None:
    result = run("transcribe", str(jfk_copy), "--language", "hi")
    assert result.returncode == 8
    assert "English-only" in result.stderr and "Traceback" not in result.stderr


def test_bad_format_is_a_usage_error(jfk_copy: Path) -> None:
    result = run("transcribe", str(jfk_copy), "--format", "docx")
    assert result.returncode == 8 and "unknown format" in result.stderr


def test_config_file_sets_defaults(jfk_copy: Path) -> None:
    (jfk_copy.parent / "dattavani-asr.toml").write_text('formats = ["vtt"]\n')
    result = run("transcribe", "jfk.flac", "-q", cwd=jfk_copy.parent)
    assert result.returncode == 0, result.stderr
    assert (jfk_copy.parent / "gen-transcript" / "jfk.vtt").is_file()
    assert not (jfk_copy.parent / "gen-transcript" / "jfk.txt").exists()


def test_health_check_passes() -> None:
    result = run("health-check")
    assert result.returncode == 0, result.stderr
    assert "decode + inference" in result.stdout and "FAIL" not in result.stdout


def test_health_check_fails_truthfully_on_missing_model(tmp_path: Path) -> None:
    result = run("health-check", env={"DATTAVANI_MODEL": str(tmp_path / "nowhere")})
    assert result.returncode == 1
    assert "FAIL" in result.stdout


def test_inputs_differing_only_by_extension_do_not_overwrite(jfk_copy: Path) -> None:
    twin = jfk_copy.with_suffix(".ogg")
    from dattavani_asr.audio.decode import decode_audio
    from dattavani_asr.audio.formats import COMMON_FORMATS, encode_audio

    opus = next(case for case in COMMON_FORMATS if case.name == "ogg (opus)")
    twin.write_bytes(encode_audio(decode_audio(JFK, end=4.0), 16000, opus))
    result = run("transcribe", str(jfk_copy), str(twin), "-q")
    assert result.returncode == 0, result.stderr
    folder = jfk_copy.parent / "gen-transcript"
    assert sorted(p.name for p in folder.iterdir()) == ["jfk.flac.txt", "jfk.ogg.txt"]
    assert "country" in (folder / "jfk.flac.txt").read_text()
    assert "country" not in (folder / "jfk.ogg.txt").read_text()


def test_messages_are_printed_as_they_are(capsys: pytest.CaptureFixture[str]) -> None:
    """Rich markup must not eat brackets in install hints."""
    from dattavani_asr.cli.common import say_error

    say_error("base is not installed: pip install 'dattavani-asr[base]'")
    assert "pip install 'dattavani-asr[base]'" in capsys.readouterr().err
