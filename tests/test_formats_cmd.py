"""`check_formats()` and `dattavani-asr formats`: what really decodes here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import dattavani_asr.audio.decode
from dattavani_asr.audio.formats import COMMON_FORMATS, FormatCase, FormatCheck, check_formats
from helpers_audio import run_cli


@pytest.fixture(scope="module")
def results() -> list[FormatCheck]:
    return check_formats()


def test_every_common_format_decodes(results: list[FormatCheck]) -> None:
    assert [item.case for item in results] == list(COMMON_FORMATS)
    failed = {item.case.name: item.detail for item in results if not item.ok}
    assert failed == {}
    for item in results:
        seconds = float(item.detail.split(" s decoded")[0])
        assert 0.9 <= seconds <= 1.1, item


def test_common_formats_cover_audio_and_video_containers() -> None:
    containers = {case.container for case in COMMON_FORMATS}
    assert {"wav", "flac", "mp3", "ogg", "webm", "ipod", "mp4", "matroska"} <= containers
    assert {case.video for case in COMMON_FORMATS if case.video} >= {"libx264", "mpeg4"}


def test_unavailable_formats_are_reported_not_raised() -> None:
    cases = (
        FormatCase("no codec", "wav", "no_such_codec"),
        FormatCase("no container", "no_such_container", "pcm_s16le"),
        FormatCase("codec not allowed in container", "wav", "libopus", 48000, "s16"),
    )
    checks = check_formats(cases)
    assert [item.ok for item in checks] == [False, False, False]
    assert all(item.detail for item in checks)
    assert "no_such_container" in checks[1].detail


@pytest.mark.parametrize(
    ("fake", "reason"),
    [
        (lambda source: np.zeros(16000, dtype=np.float32), "silence"),
        (lambda source: np.full(5 * 16000, 0.3, dtype=np.float32), "wrong length"),
    ],
)
def test_a_decode_that_loses_the_tone_is_not_ok(
    fake: Callable[[object], np.ndarray], reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dattavani_asr.audio.decode, "decode_audio", fake)
    checks = check_formats(COMMON_FORMATS[:2])
    assert [item.ok for item in checks] == [False, False], reason


def test_formats_command_lists_what_decodes(tmp_path: Path) -> None:
    result = run_cli(["formats"], cwd=tmp_path, env={"COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    rows = [line for line in output.splitlines() if line.startswith("│")]
    for case in COMMON_FORMATS:
        row = next((line for line in rows if f" {case.name} " in line), None)
        assert row is not None, f"{case.name} missing from:\n{output}"
        cells = [cell.strip() for cell in row.strip("│").split("│")]
        assert cells[:5] == [case.name, case.container, case.codec, case.video or "", "yes"]
    for name in ("mp3", "flac", "opus"):
        assert name in output
    assert "PyAV" in output
    assert list(tmp_path.iterdir()) == []
