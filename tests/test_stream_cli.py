"""`dattavani-asr stream`: a file or stdin PCM through the live protocol, in-process or to a server."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from conftest import JFK, JFK_PHRASE
from dattavani_asr.audio.decode import decode_audio
from dattavani_asr.cli.stream_client import StreamReport
from dattavani_asr.cli.stream_cmd import local_server
from dattavani_asr.evaluation import normalize, word_error_rate
from helpers_audio import cli_command, cli_env


def run_cli(args: Sequence[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    process = subprocess.run(
        [*cli_command(), "stream", *args],
        input=stdin if stdin is not None else b"",
        env=cli_env(),
        capture_output=True,
        timeout=180,
        check=False,
    )
    out, err = process.stdout.decode(), process.stderr.decode()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
MS = r"(-|\d+ ms)"
STATISTICS = re.compile(
    r"(?P<audio>[\d.]+) s of audio, (?P<finals>\d+) finals.*? "
    rf"final latency p50 (?P<p50>{MS}), p95 (?P<p95>{MS}) "
    rf"partial interval mean (?P<gap_mean>{MS}), max (?P<gap_max>{MS}); "
    rf"first partial after speech starts: mean (?P<first_mean>{MS}), max (?P<first_max>{MS}) "
    rf"lag at the end (?P<lag>{MS}), max (?P<lag_max>{MS})"
)
FINAL_LINE = re.compile(r"\[\s*(?P<start>[\d.]+) → \s*(?P<end>[\d.]+)\] (?P<text>.+)")


def statistics_of(stderr: str) -> dict[str, float | None]:
    """The numbers `stream` prints on stderr: seconds of audio, finals, and the measures in seconds (None: '-')."""
    found = STATISTICS.search(" ".join(stderr.split()))
    assert found, stderr
    values: dict[str, float | None] = {"audio": float(found["audio"]), "finals": float(found["finals"])}
    for key, text in found.groupdict().items():
        if key not in values:
            values[key] = None if text == "-" else int(text.removesuffix(" ms")) / 1000
    return values


def assert_latencies_sane(values: dict[str, float | None], limit: float = 30.0) -> None:
    """A final's latency and a first partial's delay are measured (not '-'), positive and ordered."""
    p50, p95, first_mean, first_max = (values[key] for key in ("p50", "p95", "first_mean", "first_max"))
    assert p50 is not None and p95 is not None and 0.0 < p50 <= p95 < limit, values
    assert first_mean is not None and first_max is not None and 0.0 < first_mean <= first_max < limit, values
    for low, high in (("gap_mean", "gap_max"), ("lag", "lag_max")):
        low_value, high_value = values[low], values[high]
        assert (low_value is None) == (high_value is None), values
        assert low_value is None or high_value is None or 0.0 <= low_value <= high_value < limit, values


def test_file_to_in_process_engine_prints_finals_and_latency() -> None:
    result = run_cli([str(JFK), "--fast"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    finals = [FINAL_LINE.fullmatch(line) for line in lines]
    assert lines and all(finals), result.stdout
    times = [(float(final["start"]), float(final["end"])) for final in finals if final]
    assert all(0.0 <= start < end <= 11.1 for start, end in times), times
    assert all(end <= later for (_, end), (later, _) in itertools.pairwise(times)), times  # in order, no overlap
    text = " ".join(final["text"] for final in finals if final)
    assert JFK_PHRASE in normalize(text) and word_error_rate([JFK_TEXT], [text]) < 0.1, text
    values = statistics_of(result.stderr)
    assert values["audio"] == pytest.approx(11.0, abs=0.1) and values["finals"] == len(lines), values
    assert_latencies_sane(values)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("encoding", "rate"), [("pcm_f32le", 16000), ("pcm_s16le", 8000)])
def test_raw_pcm_from_stdin_as_json_lines(encoding: str, rate: int) -> None:
    audio = np.concatenate([decode_audio(JFK), np.zeros(8000, np.float32)])
    if rate == 8000:  # halve the rate (averaging pairs is a crude low-pass)
        audio = audio[: audio.shape[0] // 2 * 2].reshape(-1, 2).mean(axis=1)
    pcm = audio.astype("<f4").tobytes() if encoding == "pcm_f32le" else (audio * 32767).astype("<i2").tobytes()
    args = ["-", "--fast", "--json", "--encoding", encoding, "--sample-rate", str(rate)]
    result = run_cli(args, stdin=pcm)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[0]["type"] == "ready" and events[0]["sample_rate"] == rate
    assert events[-1]["type"] == "done" and abs(events[-1]["audio_received"] - audio.shape[0] / rate) < 0.01
    finals = [event for event in events if event["type"] == "final"]
    assert finals and events[-1]["text"] == " ".join(final["text"] for final in finals)
    seconds = audio.shape[0] / rate
    assert all(0.0 <= f["start"] < f["end"] <= seconds and f["audio_received"] <= seconds for f in finals), finals
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(finals)), finals
    # the first final is fragile here ("and so am i fell in americans": 18-36 % WER), the rest is not
    text = normalize(events[-1]["text"])
    assert text.endswith("what your country can do for you ask what you can do for your country"), text
    assert word_error_rate([JFK_TEXT], [text]) < 0.5, text
    values = statistics_of(result.stderr)
    assert values["audio"] == pytest.approx(seconds, abs=0.1) and values["finals"] == len(finals), values
    assert_latencies_sane(values)


def test_dead_url_is_a_clean_error() -> None:
    result = run_cli([str(JFK), "--url", "ws://127.0.0.1:9/v1/stream"])
    assert result.returncode == 11, result.stderr
    assert result.stderr.startswith("error: cannot open ws://127.0.0.1:9/v1/stream"), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""


def test_refused_key_is_a_clean_error() -> None:
    with local_server(api_keys=["right-key"]) as url:
        result = run_cli([str(JFK), "--url", url, "--api-key", "wrong-key", "--fast"])
    assert result.returncode == 11, result.stderr
    assert "refused (invalid_api_key: incorrect API key)" in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["{tmp}/no-such.wav"], 3, "no such file"),
        (["{readme}"], 4, "not a readable audio/video file"),
        (["{jfk}", "--url", "http://127.0.0.1:9/"], 8, "ws:// or wss://"),
        (["-", "--encoding", "pcm_u8"], 8, "--encoding must be one of"),
    ],
)
def test_bad_input_is_a_clean_error(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    readme = Path(__file__).parents[1] / "README.md"
    result = run_cli([arg.format(tmp=tmp_path, readme=readme, jfk=JFK) for arg in args])
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_report_statistics_follow_their_definitions() -> None:
    report = StreamReport(sent_audio=[0.5, 1.0, 1.5, 2.0, 2.5, 3.0], sent_wall=[10.5, 11.0, 11.5, 12.0, 12.5, 13.0])
    report.events = [
        (10.0, {"type": "ready"}),
        (11.2, {"type": "partial", "text": "a", "start": 0.2, "end": 0.5, "audio_received": 1.0}),
        (11.9, {"type": "partial", "text": "a b", "start": 0.2, "end": 1.2, "audio_received": 1.5}),
        (12.3, {"type": "final", "text": "a b", "start": 0.2, "end": 1.4, "audio_received": 2.0}),
        (13.1, {"type": "partial", "text": "c", "start": 2.1, "end": 2.4, "audio_received": 2.5}),
        (13.4, {"type": "final", "text": "c", "start": 2.1, "end": 2.6, "audio_received": 3.0}),
        (13.5, {"type": "done", "text": "a b c", "audio_received": 3.0}),
    ]
    report.ended_at = 13.05
    assert report.final_latencies() == pytest.approx([12.3 - 11.5, 13.4 - 13.0])
    gaps, onsets = report.update_gaps()
    assert gaps == pytest.approx([0.7, 0.4, 0.3]) and onsets == pytest.approx([11.2 - 10.5, 13.1 - 12.5])
    assert [lag for _, lag in report.lags()] == pytest.approx([0.0, 0.0, 0.0, 0.5, 0.0, 0.0])
    summary = report.summary()
    assert summary["lag_last"] == pytest.approx(0.0) and summary["finals"] == 2 and report.text == "a b c"
