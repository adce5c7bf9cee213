"""Writers: every format round-trips through a real parser; files appear atomically or not at all."""

from __future__ import annotations

import html
import io
import json
import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest
import srt
import webvtt

from dattavani_asr.core.errors import InvalidOptionError, OutputError
from dattavani_asr.core.transcript import Segment, Timings, Transcript, Word
from dattavani_asr.io import writers
from dattavani_asr.io.writers import (
    OUTPUT_SUBDIR,
    WRITERS,
    format_timestamp,
    get_writer,
    output_path,
    parse_formats,
    write_atomic,
    write_stdout,
)

ALL_FORMATS = ["txt", "srt", "vtt", "tsv", "json"]


def _segment(index: int, start: float, end: float, text: str, words: tuple[Word, ...] = ()) -> Segment:
    return Segment(
        id=index,
        start=start,
        end=end,
        text=text,
        avg_logprob=-0.25,
        no_speech_prob=0.01,
        compression_ratio=1.4,
        temperature=0.0,
        confidence=0.9,
        tokens=(50364, 1029 + index, 50414),
        words=words,
        model="tiny.en",
    )


# (start, end, text as written by the model, the cue text a subtitle should show)
SEGMENTS = [
    (0.0, 2.5, " Ask not what your country can do for you.", "Ask not what your country can do for you."),
    (61.25, 64.0, " ನಮಸ್ಕಾರ, ಇದು ಕನ್ನಡ ಪರೀಕ್ಷೆ.", "ನಮಸ್ಕಾರ, ಇದು ಕನ್ನಡ ಪರೀಕ್ಷೆ."),
    (3725.5, 3727.25, " नमस्ते दुनिया, यह हिंदी है।", "नमस्ते दुनिया, यह हिंदी है।"),
    (3727.25, 3730.0, " Then --> the arrow & <b>tags</b>", "Then --> the arrow & <b>tags</b>"),
    (3730.0, 3731.0, "   ", ""),  # empty: no cue
    (7200.0, 7200.0, " first line\n\nsecond\tline ", "first line second line"),  # zero length, blank line
]
SRT_TIMES = [
    ("00:00:00,000", "00:00:02,500"),
    ("00:01:01,250", "00:01:04,000"),
    ("01:02:05,500", "01:02:07,250"),
    ("01:02:07,250", "01:02:10,000"),
    ("02:00:00,000", "02:00:00,001"),
]


@pytest.fixture()
def transcript() -> Transcript:
    words = (Word(0.0, 0.4, " Ask", 0.98), Word(0.4, 0.7, " not", 0.95))
    segments = tuple(
        _segment(i, start, end, text, words if i == 0 else ()) for i, (start, end, text, _) in enumerate(SEGMENTS)
    )
    return Transcript(
        segments=segments,
        language="kn",
        language_probability=0.87,
        duration=7201.5,
        model="tiny.en",
        source="/archive/talk.mp3",
        timings=Timings(audio=1.5, inference=20.25, total=21.75),
    )


def _cue_texts() -> list[str]:
    return [cue for *_, cue in SEGMENTS if cue]


def _seconds(stamp: str) -> float:
    hours, minutes, seconds = stamp.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@pytest.mark.parametrize(
    ("seconds", "marker", "hours", "expected"),
    [
        (0.0, ".", False, "00:00.000"),
        (-0.5, ".", False, "00:00.000"),
        (59.9996, ".", False, "01:00.000"),
        (61.25, ",", True, "00:01:01,250"),
        (3725.5, ",", True, "01:02:05,500"),
        (3725.5, ".", False, "01:02:05.500"),
        (36000.001, ".", True, "10:00:00.001"),
    ],
)
def test_format_timestamp(seconds: float, marker: str, hours: bool, expected: str) -> None:
    assert format_timestamp(seconds, marker, hours) == expected


def test_srt_round_trips(transcript: Transcript, tmp_path: Path) -> None:
    path = write_atomic(transcript, "srt", tmp_path / "talk.srt")
    subtitles = list(srt.parse(path.read_text(encoding="utf-8")))
    assert [s.index for s in subtitles] == [1, 2, 3, 4, 5]
    texts = [s.content for s in subtitles]
    expected = _cue_texts()
    expected[3] = expected[3].replace("-->", "->")  # SRT has no escaping: the arrow would read as a timing line
    assert texts == expected
    times = [(s.start, s.end) for s in subtitles]
    assert times == [(timedelta(seconds=_seconds(a)), timedelta(seconds=_seconds(b))) for a, b in SRT_TIMES]
    assert subtitles[2].start == timedelta(hours=1, minutes=2, seconds=5, milliseconds=500)


def test_vtt_round_trips(transcript: Transcript, tmp_path: Path) -> None:
    path = write_atomic(transcript, "vtt", tmp_path / "talk.vtt")
    text = path.read_text(encoding="utf-8")
    assert text.startswith("WEBVTT\n\n")
    captions = list(webvtt.read(str(path)))
    assert [html.unescape(c.text) for c in captions] == _cue_texts()
    assert [(c.start, c.end) for c in captions] == [(a.replace(",", "."), b.replace(",", ".")) for a, b in SRT_TIMES]
    assert "<b>" not in text and "-->  the" not in text
    assert text.count("-->") == len(captions)  # only on timing lines


def test_json_matches_to_dict(transcript: Transcript, tmp_path: Path) -> None:
    path = write_atomic(transcript, "json", tmp_path / "talk.json")
    raw = path.read_text(encoding="utf-8")
    assert "ನಮಸ್ಕಾರ" in raw and "नमस्ते" in raw  # real characters, not \\u escapes
    data = json.loads(raw)
    expected = transcript.to_dict()
    assert data == {**expected, "segments": list(expected["segments"])}  # to_dict() keeps a tuple
    assert data["text"] == transcript.text
    assert data["segments"][0]["words"][1] == {"start": 0.4, "end": 0.7, "word": " not", "probability": 0.95}
    assert data["timings"] == {"audio": 1.5, "inference": 20.25, "total": 21.75}


def test_tsv_has_header_and_integer_milliseconds(transcript: Transcript, tmp_path: Path) -> None:
    path = write_atomic(transcript, "tsv", tmp_path / "talk.tsv")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "start\tend\ttext"
    rows = [line.split("\t") for line in lines[1:]]
    assert len(rows) == len(SEGMENTS)
    assert all(len(row) == 3 for row in rows)
    assert [(int(start), int(end)) for start, end, _ in rows] == [
        (round(start * 1000), round(end * 1000)) for start, end, *_ in SEGMENTS
    ]
    assert rows[2][:2] == ["3725500", "3727250"]
    assert [text for *_, text in rows] == [cue for *_, cue in SEGMENTS]


def test_txt_has_one_line_per_spoken_segment(transcript: Transcript, tmp_path: Path) -> None:
    path = write_atomic(transcript, "txt", tmp_path / "talk.txt")
    expected = "".join(text.strip() + "\n" for _, _, text, _ in SEGMENTS if text.strip())  # no line for silence
    assert path.read_text(encoding="utf-8") == expected


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_write_atomic_leaves_only_the_target(fmt: str, transcript: Transcript, tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / f"talk.{fmt}"
    assert write_atomic(transcript, fmt, target) == target
    assert [p.name for p in target.parent.iterdir()] == [target.name]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    buffer = io.StringIO()
    write_stdout(transcript, fmt, buffer)
    assert target.read_text(encoding="utf-8") == buffer.getvalue()


def test_output_path() -> None:
    source = Path("/archive/2024/talk.final.mp3")
    assert output_path(source, "srt", None) == Path("/archive/2024") / OUTPUT_SUBDIR / "talk.final.srt"
    assert OUTPUT_SUBDIR == "gen-transcript"
    assert output_path(source, "json", Path("/out")) == Path("/out/talk.final.json")
    assert output_path(Path("clip.wav"), "txt", None) == Path(OUTPUT_SUBDIR) / "clip.txt"


def _failing_write(self: writers.Writer, transcript: Transcript, stream: io.TextIOBase) -> None:
    stream.write("1\n00:00:00,000 --> 00:00:02,500\nAsk not\n\n" * 200)
    stream.flush()
    raise RuntimeError("writer crashed half-way")


def test_failed_write_leaves_no_file(transcript: Transcript, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writers.SrtWriter, "write", _failing_write)
    target = tmp_path / OUTPUT_SUBDIR / "talk.srt"
    with pytest.raises(RuntimeError, match="half-way"):
        write_atomic(transcript, "srt", target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []


def test_failed_write_keeps_the_previous_file(
    transcript: Transcript, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = write_atomic(transcript, "srt", tmp_path / "talk.srt")
    before = target.read_bytes()
    monkeypatch.setattr(writers.SrtWriter, "write", _failing_write)
    with pytest.raises(RuntimeError):
        write_atomic(transcript, "srt", target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["talk.srt"]


def test_interrupted_write_leaves_no_temp_file(
    transcript: Transcript, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(self: writers.Writer, transcript: Transcript, stream: io.TextIOBase) -> None:
        stream.write("partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(writers.TxtWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(transcript, "txt", tmp_path / "talk.txt")
    assert list(tmp_path.iterdir()) == []


def test_os_errors_become_output_errors(transcript: Transcript, tmp_path: Path) -> None:
    occupied = tmp_path / "talk.txt"
    occupied.mkdir()  # a directory where the file should go: the final rename fails
    with pytest.raises(OutputError, match=r"talk\.txt"):
        write_atomic(transcript, "txt", occupied)
    assert [p.name for p in tmp_path.iterdir()] == ["talk.txt"]
    assert list(occupied.iterdir()) == []
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not-a-dir"):
        write_atomic(transcript, "txt", blocker / "talk.txt")
    assert OutputError.exit_code not in (0, 1, 2)


def test_temp_file_is_beside_the_target(
    transcript: Transcript, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def spy(self: writers.Writer, transcript: Transcript, stream: io.TextIOBase) -> None:
        seen.extend(os.listdir(tmp_path))
        stream.write("text\n")

    monkeypatch.setattr(writers.TxtWriter, "write", spy)
    write_atomic(transcript, "txt", tmp_path / "talk.txt")
    assert len(seen) == 1 and seen[0].startswith(".talk.txt.") and seen[0].endswith(".part")
    assert [p.name for p in tmp_path.iterdir()] == ["talk.txt"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("txt,srt", ["txt", "srt"]),
        (" SRT , txt ,srt,", ["srt", "txt"]),
        ("all", ALL_FORMATS),
        ("vtt,all", ALL_FORMATS),
        (["json", "tsv,txt"], ["json", "tsv", "txt"]),
    ],
)
def test_parse_formats(spec: str | list[str], expected: list[str]) -> None:
    assert parse_formats(spec) == expected


@pytest.mark.parametrize("spec", ["docx", "txt,docx", "", " , ", []])
def test_parse_formats_rejects(spec: str | list[str]) -> None:
    with pytest.raises(InvalidOptionError) as caught:
        parse_formats(spec)
    if "docx" in str(spec):
        assert "'docx'" in str(caught.value)
        assert all(fmt in str(caught.value) for fmt in ALL_FORMATS)


def test_writer_registry() -> None:
    assert sorted(WRITERS) == sorted(ALL_FORMATS)
    assert all(WRITERS[fmt].extension == fmt for fmt in WRITERS)
    assert isinstance(get_writer("SRT"), writers.SrtWriter)
    with pytest.raises(InvalidOptionError):
        get_writer("docx")
