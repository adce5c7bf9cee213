"""Batch runs on real recordings: outputs, failures, resume, manifests, timeouts, packing."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
import pytest

from conftest import DATA, JFK, fleurs
from dattavani_asr import Transcriber, make_options
from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.batch import BatchConfig, BatchRun
from dattavani_asr.batch.jobs import EndMessage, FileJob, WindowMessage
from dattavani_asr.batch.packing import (
    build_pack,
    decode_packs,
    pack_limit,
    part_doubt,
    plan_packs,
    unpack,
)
from dattavani_asr.batch.pipeline import WindowGate
from dattavani_asr.core.options import DecodingOptions, VadOptions
from dattavani_asr.core.transcript import Word
from dattavani_asr.core.types import AudioWindow, Decoded, RawSegment, WindowResult
from dattavani_asr.evaluation import word_error_rate
from dattavani_asr.io.sources.base import SourceItem
from dattavani_asr.io.sources.local import LocalSink, LocalSource
from dattavani_asr.pipeline.run import trims_encoder
from helpers_audio import write_wav16
from test_packing_seams import PHRASE_FILES, assert_transcript_is_its_own

CLI = [sys.executable, "-c", "from dattavani_asr.cli import main; main()"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DATTAVANI_") or k == "DATTAVANI_CACHE_DIR"}


@pytest.fixture()
def archive(tmp_path: Path) -> Path:
    """Five FLEURS English clips (one in a subfolder), JFK, and one corrupt file."""
    root = tmp_path / "archive"
    (root / "day2").mkdir(parents=True)
    for index, item in enumerate(fleurs("en")):
        target = root / ("day2" if index == 4 else "") / Path(item["file"]).name
        shutil.copy(DATA / item["file"], target)
    shutil.copy(JFK, root / "jfk.flac")
    (root / "broken.mp3").write_bytes(os.urandom(4000))
    return root


def _references() -> dict[str, str]:
    refs = {Path(item["file"]).stem: item["reference"] for item in fleurs("en")}
    refs["jfk"] = (
        "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."
    )
    return refs


def _run(tiny: Transcriber, sources: list[str], out: Path, trim_encoder: bool = False, **config: Any) -> Any:
    options = make_options(trim_encoder=trim_encoder)
    run = BatchRun(BatchConfig(specs=sources, formats=["txt", "json"], output_dir=out, **config), tiny, options)
    return run.run()


def _wer_of(out: Path) -> float:
    refs = _references()
    texts = {path.stem: path.read_text() for path in out.rglob("*.txt")}
    return word_error_rate([refs[k] for k in sorted(texts)], [texts[k] for k in sorted(texts)])


def test_folder_run_writes_mirrored_outputs_and_records_the_corrupt_file(
    tiny: Transcriber, archive: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    summary = _run(tiny, [str(archive)], out)
    assert (summary.files, summary.done, summary.failed, summary.skipped) == (7, 6, 1, 0)
    assert summary.failures[0]["error"] == "UndecodableAudioError" and "broken.mp3" in summary.failures[0]["file"]
    assert (out / "day2" / "fleurs-en-004.txt").is_file()
    assert _wer_of(out) < 0.12
    data = json.loads((out / "batch-summary.json").read_text())
    assert data["done"] == 6 and data["failed"] == 1 and data["audio_seconds"] == pytest.approx(51.9, abs=0.5)
    assert not list(out.rglob("*.part"))


def test_second_run_does_nothing_and_retry_failed_retries(tiny: Transcriber, archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _run(tiny, [str(archive)], out)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.txt")}
    again = _run(tiny, [str(archive)], out)
    assert (again.done, again.skipped, again.failed) == (0, 7, 0)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*.txt")} == before
    retried = _run(tiny, [str(archive)], out, retry_failed=True)
    assert (retried.done, retried.skipped, retried.failed) == (0, 6, 1)
    changed = archive / "jfk.flac"
    os.utime(changed, ns=(time.time_ns(), time.time_ns()))
    assert _run(tiny, [str(archive)], out).done == 1  # a touched file is done again


def test_manifests_txt_and_jsonl(tiny: Transcriber, archive: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"# clips\n{archive / 'jfk.flac'}\n{archive / 'day2' / 'fleurs-en-004.ogg'}\n")
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"path": str(archive / "fleurs-en-000.ogg"), "speaker": "x"}) + "\n")
    summary = _run(tiny, [str(listing), str(rows)], tmp_path / "out")
    assert (summary.files, summary.done) == (3, 3)
    assert {p.name for p in (tmp_path / "out").rglob("*.txt")} == {"jfk.txt", "fleurs-en-004.txt", "fleurs-en-000.txt"}


def test_default_placement_is_gen_transcript_beside_each_file(tiny: Transcriber, archive: Path) -> None:
    (archive / "broken.mp3").unlink()
    run = BatchRun(BatchConfig(specs=[str(archive)], formats=["srt"]), tiny, make_options())
    assert run.run().done == 6
    assert (archive / "gen-transcript" / "jfk.srt").is_file()
    assert (archive / "day2" / "gen-transcript" / "fleurs-en-004.srt").is_file()


class _StallingSource(LocalSource):
    """A source whose one file never delivers data in time (a dead network share)."""

    def open(self, item: SourceItem) -> IO[bytes]:
        if item.name.startswith("stall"):
            time.sleep(6.0)
            return io.BytesIO(b"")
        return super().open(item)


def test_file_timeout_fails_only_the_slow_file(
    tiny: Transcriber, archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (archive / "broken.mp3").unlink()
    shutil.copy(JFK, archive / "stall.flac")
    monkeypatch.setattr("dattavani_asr.io.sources._sources", lambda: [_StallingSource()])
    summary = _run(tiny, [str(archive)], tmp_path / "out", file_timeout=2.0)
    assert summary.done == 6 and summary.failed == 1
    assert summary.failures[0]["error"] == "FileTimeoutError" and "stall.flac" in summary.failures[0]["file"]


def _done_records(out: Path) -> dict[str, list[str]]:
    """The files the state database records as done, with their outputs."""
    state = out / ".dattavani-batch.sqlite3"
    if not state.exists():
        return {}
    with sqlite3.connect(state) as db:
        try:
            rows = db.execute("SELECT uri, outputs FROM files WHERE status = 'done'").fetchall()
        except sqlite3.OperationalError:  # the table is not there yet
            return {}
    return {uri: json.loads(outputs or "[]") for uri, outputs in rows}


@pytest.fixture()
def phrase_archive(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """18 short files (9 phrases of three recordings, twice) and their references: sentences run on from
    one file into the next, so packed windows hold several files and segments span them."""
    root = tmp_path / "phrases"
    root.mkdir()
    references = {}
    for number, (name, start, end, reference) in enumerate(PHRASE_FILES):
        audio = decode_audio(DATA / name)[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)]
        for copy in ("", "again-"):
            write_wav16(root / f"{copy}{Path(name).stem}-{number}.wav", audio)
        references[f"{Path(name).stem}-{number}"] = reference
    return root, references


def _assert_each_transcript_is_its_own_files(out: Path, references: dict[str, str]) -> None:
    """Every transcript is its own file's (`assert_transcript_is_its_own`), both copies of each file."""
    texts = {path.stem: path.read_text() for path in sorted(out.rglob("*.txt"))}
    assert len(texts) == 2 * len(references)
    for name, text in texts.items():
        own = name.removeprefix("again-")
        others = [reference for other, reference in references.items() if other != own]
        assert_transcript_is_its_own(name, text, references[own], others)
    own_references = [references[name.removeprefix("again-")] for name in texts]
    assert word_error_rate(own_references, list(texts.values())) < 0.2


def test_kill_9_then_resume_finishes_every_file_exactly_once(
    phrase_archive: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    archive, references = phrase_archive
    out = tmp_path / "out"
    # packed (the default); batches of two packs, so that files finish in several steps and the kill comes between
    command = [*CLI, "batch", str(archive), "--output-dir", str(out), "-f", "txt,srt", "--batch-size", "2"]
    process = subprocess.Popen(command, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(_done_records(out)) < 3 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    recorded = _done_records(out)  # done before the kill: outputs written, then recorded
    assert 3 <= len(recorded) < 18, "the kill must come mid-way"
    kept_outputs = {path: Path(path).stat().st_mtime_ns for outputs in recorded.values() for path in outputs}
    assert len(kept_outputs) == 2 * len(recorded)

    second = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300, check=False)
    assert second.returncode == 0, second.stderr
    summary = json.loads((out / "batch-summary.json").read_text())
    # every file exactly once over the two runs: what was recorded is skipped, everything else is done now
    # (a file killed between its outputs and its record is done again, its outputs replaced whole)
    assert (summary["files"], summary["skipped"], summary["done"], summary["failed"]) == (
        18,
        len(recorded),
        18 - len(recorded),
        0,
    )
    assert {path: Path(path).stat().st_mtime_ns for path in kept_outputs} == kept_outputs, "a done file was redone"
    assert set(_done_records(out)) == {str(path) for path in archive.glob("*.wav")}
    srts = sorted(out.rglob("*.srt"))
    assert len(srts) == 18 and all(p.read_text().startswith("1\n") for p in srts)
    assert len(list(out.rglob("*.txt"))) == 18
    assert not [p for p in out.rglob("*") if p.name.endswith((".part", ".tmp"))]
    _assert_each_transcript_is_its_own_files(out, references)
    kept = (out / "batch-summary.json").read_bytes()
    started = time.monotonic()
    third = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=60, check=False)
    assert third.returncode == 0 and time.monotonic() - started < 5.0
    assert (out / "batch-summary.json").read_bytes() == kept  # a run with nothing to do keeps the last summary


def _window(offset: float, seconds: float) -> AudioWindow:
    return AudioWindow(offset, np.full(int(seconds * 16000), 0.1, dtype=np.float32))


def test_packing_groups_in_order_and_splits_a_segment_between_files_by_word() -> None:
    windows = [_window(100.0, 8.0), _window(0.5, 10.0), _window(3.0, 12.0), _window(0.0, 4.0)]
    groups = plan_packs(windows, limit=29.0, gap=1.0)
    assert groups == [[0, 1], [2, 3]]
    pack = build_pack(windows, groups[0], gap=1.0)
    assert pack.window.duration == pytest.approx(19.0)
    decoded = Decoded((), "", -0.2, 0.01, 1.3, 0.0)
    # one segment over both parts (as packed decoding gives a sentence that runs on): split between words
    words = (Word(0.2, 3.0, " one", 0.9), Word(3.0, 8.4, " first", 0.9), Word(8.6, 12.0, " second", 0.9))
    segments = (RawSegment(0.2, 12.0, (1,), " one first second", words), RawSegment(12.0, 18.6, (2,), " two"))
    result = WindowResult(pack.window, decoded, segments, "en", "tiny.en", 0.8)
    first, second = unpack(pack, result)
    assert [s.text for s in first.segments] == [" one first"] and first.window is windows[0]
    assert [(w.word, w.start, w.end) for w in first.segments[0].words] == [
        (" one", 100.2, 103.0),
        (" first", 103.0, 108.0),
    ]
    assert (first.segments[0].start, first.segments[0].end) == (100.2, 108.0)  # clamped to the file's 8 s
    assert [s.text for s in second.segments] == [" second", " two"] and second.window is windows[1]
    assert [(w.word, w.start, w.end) for w in second.segments[0].words] == [(" second", 0.5, 3.5)]
    assert second.segments[1].start == pytest.approx(0.5 + 3.0) and second.segments[1].end == pytest.approx(0.5 + 9.6)


def test_local_sink_mirrors_relative_paths(tmp_path: Path) -> None:
    item = SourceItem("/x/a/b.mp3", "b.mp3", PurePosixPath("a/b.mp3"), 1, "1")
    assert LocalSink(tmp_path).path_for(item, "b.vtt") == tmp_path / "a" / "b.vtt"


@pytest.mark.parametrize("trim_encoder", [False, True], ids=["full-encoder", "trimmed-encoder"])
def test_packed_run_keeps_accuracy(tiny: Transcriber, archive: Path, tmp_path: Path, trim_encoder: bool) -> None:
    (archive / "broken.mp3").unlink()
    out = tmp_path / "out"
    summary = _run(tiny, [str(archive)], out, trim_encoder=trim_encoder, pack=True)
    assert (summary.done, summary.failed) == (6, 0)
    assert _wer_of(out) < 0.15
    assert len(list(out.rglob("*.txt"))) == 6


def test_trimmed_encoder_packs_short_windows_and_is_the_default_for_english_only_models() -> None:
    assert pack_limit(trim_encoder=True) < 15.0
    assert 25.0 < pack_limit(trim_encoder=False) < 30.0
    assert trims_encoder(None, multilingual=False) and not trims_encoder(None, multilingual=True)
    assert trims_encoder(True, multilingual=True) and not trims_encoder(False, multilingual=False)


def test_local_sink_removes_temp_files_left_by_a_killed_run(tmp_path: Path) -> None:
    item = SourceItem("/x/a/b.mp3", "b.mp3", PurePosixPath("a/b.mp3"), 1, "1")
    stale = tmp_path / "a" / ".b.txt.k3j9x1.part"
    stale.parent.mkdir(parents=True)
    stale.write_text("half a transcr")
    written = LocalSink(tmp_path).write(item, "b.txt", "whole text\n")
    assert Path(written).read_text() == "whole text\n"
    assert sorted(p.name for p in stale.parent.iterdir()) == ["b.txt"]


class _JitterSource(LocalSource):
    """Local files that take a random while to open, so decoder threads finish in a random order."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        self.lock = threading.Lock()

    def open(self, item: SourceItem) -> IO[bytes]:
        with self.lock:
            delay = self.random.uniform(0.0, 0.4)
        time.sleep(delay)
        return super().open(item)


def _outputs(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): p.read_text() for p in sorted(out.rglob("*")) if p.suffix in (".txt", ".srt")}


def test_packed_runs_are_identical_whatever_the_workers_and_thread_timing(
    tiny: Transcriber, archive: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which windows share a pack must not depend on which decoder thread finishes first."""
    (archive / "broken.mp3").unlink()
    for clip in sorted(archive.glob("*.ogg"))[:3]:
        shutil.copy(clip, archive / f"again-{clip.name}")
    outputs = []
    for run, workers in enumerate((1, 4, 3)):
        monkeypatch.setattr("dattavani_asr.io.sources._sources", lambda run=run: [_JitterSource(run)])
        out = tmp_path / f"out{run}"
        config = BatchConfig(specs=[str(archive)], formats=["txt", "srt"], output_dir=out, pack=True, workers=workers)
        summary = BatchRun(config, tiny, make_options()).run()
        assert (summary.done, summary.failed) == (9, 0)
        outputs.append(_outputs(out))
    assert len(outputs[0]) == 18
    assert outputs[1] == outputs[0] and outputs[2] == outputs[0]
    refs = _references()
    texts = {Path(name).stem: text for name, text in outputs[0].items() if name.endswith(".txt")}
    names = sorted(texts)
    assert word_error_rate([refs[n.removeprefix("again-")] for n in names], [texts[n] for n in names]) < 0.12


def _job(index: int) -> FileJob:
    item = SourceItem(f"/x/{index}.wav", f"{index}.wav", PurePosixPath(f"{index}.wav"), 1, "1")
    return FileJob(index, item, LocalSource(), LocalSink(None), str(index))


def _name(message: Any) -> tuple[int, str]:
    return message.job.index, message.window if isinstance(message, WindowMessage) else "end"


def test_gate_releases_job_by_job_and_bounds_what_it_holds() -> None:
    jobs = [_job(0), _job(1), _job(2)]
    gate = WindowGate(jobs, limit=2)
    assert gate.put(WindowMessage(jobs[2], "c0")) and gate.put(WindowMessage(jobs[1], "b0"))
    blocked = threading.Thread(target=gate.put, args=(WindowMessage(jobs[1], "b1"),))
    blocked.start()
    time.sleep(0.3)
    assert blocked.is_alive()  # two windows of later jobs are held: a third waits
    assert gate.put(WindowMessage(jobs[0], "a0"))  # the job being read is never blocked by later ones
    assert gate.put(EndMessage(jobs[0], 1))
    assert [m.window for m in gate.take(1, 0.0) if isinstance(m, WindowMessage)] == ["a0"]
    assert [_name(m) for m in gate.take(1, 0.0)] == [(0, "end"), (1, "b0")]
    blocked.join(timeout=5)
    assert not blocked.is_alive()  # job 1 is read now: its decoder may go on
    gate.put(EndMessage(jobs[1], 2))
    gate.put(EndMessage(jobs[2], 1))
    assert [_name(m) for m in gate.take(10, 0.0)] == [(1, "b1"), (1, "end"), (2, "c0"), (2, "end")]
    assert gate.exhausted


def _clip_windows(*names: str) -> list[AudioWindow]:
    from dattavani_asr.audio.decode import iter_audio
    from dattavani_asr.audio.windows import speech_windows

    return [w for name in names for w in speech_windows(iter_audio(str(DATA / name)), VadOptions())]


def test_part_doubt_flags_lost_words_loops_and_empty_parts() -> None:
    window = AudioWindow(5.0, np.zeros(8 * 16000, dtype=np.float32), speech_start=0.2)
    decoded = Decoded((), "", -0.2, 0.01, 1.3, 0.0)

    def result(*words: tuple[str, float, float]) -> WindowResult:
        timed = tuple(Word(start, end, text, 0.9) for text, start, end in words)
        segment = (
            RawSegment(timed[0].start, timed[-1].end, (), "".join(w.word for w in timed), timed) if timed else None
        )
        return WindowResult(window, decoded, (segment,) if segment else (), "en", "tiny.en", 0.8)

    options = DecodingOptions()
    spread = [(f" w{i}", 5.2 + i * 0.6, 5.6 + i * 0.6) for i in range(12)]
    assert part_doubt(result(*spread), options) is None
    assert part_doubt(result(*spread[:5]), options) == "uncovered"  # the last 4 s of speech have no word
    assert part_doubt(result(), options) == "empty"
    loop = [(" the same thing", 5.2 + i * 0.6, 5.6 + i * 0.6) for i in range(12)]
    assert part_doubt(result(*loop), options) == "repetition"


class _LosingEngine:
    """The real engine, except that packed windows lose their last second of words (a boundary loss)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.calls: list[int] = []

    def transcribe_batch(self, windows: list[AudioWindow], options: Any, language: str | None) -> Any:
        results, detected, probability = self.engine.transcribe_batch(windows, options, language)
        self.calls.append(len(windows))
        if options.word_timestamps and options.temperatures == (0.0,):
            results = [_drop_words_after(r, r.window.end - 8.0) for r in results]
        return results, detected, probability


def _drop_words_after(result: WindowResult, cut: float) -> WindowResult:
    segments = []
    for segment in result.segments:
        words = tuple(w for w in segment.words if w.end <= cut)
        if words:
            text = "".join(w.word for w in words)
            segments.append(replace(segment, words=words, text=text, end=words[-1].end))
    return replace(result, segments=tuple(segments))


def test_parts_that_lost_words_in_a_pack_are_decoded_again_alone(tiny: Transcriber) -> None:
    windows = _clip_windows("fleurs/fleurs-en-003.ogg", "fleurs/fleurs-en-000.ogg")
    options = make_options(language="en").decoding
    alone = [r.decoded.text for r in tiny.engine().transcribe_batch(windows, options, "en")[0]]
    engine = _LosingEngine(tiny.engine())
    first, second = decode_packs(engine, [build_pack(windows, [0, 1])], options, "en")[0]
    assert engine.calls == [1, 1]  # one packed pass, then the damaged part alone
    assert "".join(s.text for s in first.segments).strip() == alone[0]  # kept from the pack, intact
    assert second.decoded.text == alone[1]  # the second clip's share had lost words: decoded alone
    assert not any(s.words for s in first.segments + second.segments)  # no word timestamps were asked for
