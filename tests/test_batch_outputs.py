"""Batch integrity (issue 13): one transcript per recording, never overwritten; failing sources never stop a run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path, PurePosixPath

import pytest

from conftest import DATA, JFK
from dattavani_asr import Transcriber, make_options
from dattavani_asr.batch import BatchConfig, BatchRun
from dattavani_asr.batch.outputs import Destination, mirror, plan_destinations
from dattavani_asr.evaluation import normalize
from dattavani_asr.io.sources.base import SourceItem
from dattavani_asr.io.sources.local import LocalSink

FLEURS_003 = DATA / "fleurs" / "fleurs-en-003.ogg"  # "the cabbage juice changes color ..."
FLEURS_004 = DATA / "fleurs" / "fleurs-en-004.ogg"  # "many people don't think about them as dinosaurs ..."
CLI = [sys.executable, "-c", "from dattavani_asr.cli import main; main()"]


def _run(sources: list[str], out: Path | str | None, **config: object) -> object:
    run_config = BatchConfig(specs=sources, formats=["txt"], output_dir=out, **config)  # type: ignore[arg-type]
    return BatchRun(run_config, Transcriber("tiny.en"), make_options(trim_encoder=True)).run()


def _text(path: Path) -> str:
    return normalize(path.read_text())


@pytest.fixture()
def same_names(tmp_path: Path) -> Path:
    """Three different recordings that all want to be `talk`: talk.wav, talk.ogg and sub/talk.wav."""
    root = tmp_path / "talks"
    (root / "sub").mkdir(parents=True)
    shutil.copy(JFK, root / "talk.wav")  # a FLAC under a .wav name: decoded by content
    shutil.copy(FLEURS_003, root / "talk.ogg")
    shutil.copy(FLEURS_004, root / "sub" / "talk.wav")
    return root


def test_same_named_recordings_get_their_own_transcripts_beside_them(same_names: Path) -> None:
    summary = _run([str(same_names)], None, state_dir=same_names.parent / "state")
    assert (summary.files, summary.done, summary.failed) == (3, 3, 0)  # type: ignore[attr-defined]
    out = same_names / "gen-transcript"
    assert sorted(p.name for p in out.iterdir()) == ["talk.ogg.txt", "talk.wav.txt"]
    assert "ask not what your country" in _text(out / "talk.wav.txt")
    assert "cabbage juice" in _text(out / "talk.ogg.txt")
    assert "dinosaurs" in _text(same_names / "sub" / "gen-transcript" / "talk.txt")  # alone in its folder


def test_same_named_recordings_under_an_output_dir(same_names: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = _run([str(same_names)], out)
    assert (summary.done, summary.failed) == (3, 0)  # type: ignore[attr-defined]
    assert "ask not what your country" in _text(out / "talk.wav.txt")
    assert "cabbage juice" in _text(out / "talk.ogg.txt")
    assert "dinosaurs" in _text(out / "sub" / "talk.txt")
    # A re-run finds every output it wrote; a new same-named file next to them takes its own name.
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.txt")}
    shutil.copy(JFK, same_names / "sub" / "talk.flac")
    again = _run([str(same_names)], out)
    assert (again.done, again.skipped, again.failed) == (1, 3, 0)  # type: ignore[attr-defined]
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert "ask not what your country" in _text(out / "sub" / "talk.flac.txt")
    assert "dinosaurs" in _text(out / "sub" / "talk.txt")


def test_manifest_items_mirror_their_folders(tmp_path: Path) -> None:
    for folder, clip in (("a", JFK), ("b", FLEURS_004)):
        (tmp_path / "audio" / folder).mkdir(parents=True)
        shutil.copy(clip, tmp_path / "audio" / folder / "talk.wav")
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{tmp_path / 'audio/a/talk.wav'}\n{tmp_path / 'audio/b/talk.wav'}\n")
    out = tmp_path / "out"
    summary = _run([str(manifest)], out)
    assert (summary.done, summary.failed) == (2, 0)  # type: ignore[attr-defined]
    assert "ask not what your country" in _text(out / "a" / "talk.txt")
    assert "dinosaurs" in _text(out / "b" / "talk.txt")


def test_a_path_that_cannot_be_made_unique_fails_at_planning_and_overwrites_nothing(tmp_path: Path) -> None:
    """Talk.wav and talk.wav are two files here but one on a case-insensitive disk: the second is refused."""
    folder = tmp_path / "audio"
    folder.mkdir()
    shutil.copy(JFK, folder / "Talk.wav")
    shutil.copy(FLEURS_004, folder / "talk.wav")
    out = tmp_path / "out"
    summary = _run([str(folder)], out)
    assert (summary.files, summary.done, summary.failed) == (2, 1, 1)  # type: ignore[attr-defined]
    [failure] = summary.failures  # type: ignore[attr-defined]
    assert failure["error"] == "OutputError" and "not overwritten" in failure["message"]
    assert failure["file"].endswith("talk.wav")
    assert [p.name for p in out.glob("*.txt")] == ["Talk.wav.txt"]
    assert "ask not what your country" in _text(out / "Talk.wav.txt")


def test_another_sources_transcript_from_an_earlier_run_is_never_overwritten(tmp_path: Path) -> None:
    for folder, clip in (("day1", JFK), ("day2", FLEURS_004)):
        (tmp_path / folder).mkdir()
        shutil.copy(clip, tmp_path / folder / "talk.wav")
    out = tmp_path / "out"
    assert _run([str(tmp_path / "day1" / "talk.wav")], out).done == 1  # type: ignore[attr-defined]
    second = _run([str(tmp_path / "day2" / "talk.wav")], out)  # the same output name, another recording
    assert (second.done, second.failed) == (1, 0)  # type: ignore[attr-defined]
    assert "ask not what your country" in _text(out / "talk.txt")
    assert "dinosaurs" in _text(out / "talk.wav.txt")


def test_missing_path_and_dead_url_are_failed_items_and_the_rest_runs(tmp_path: Path) -> None:
    shutil.copy(JFK, tmp_path / "jfk.flac")
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"{tmp_path / 'jfk.flac'}\n{tmp_path / 'gone.wav'}\nhttp://127.0.0.1:9/dead.wav\n")
    out = tmp_path / "out"
    command = [*CLI, "batch", str(manifest), str(tmp_path / "also-missing"), "--output-dir", str(out)]
    env = {**os.environ, "DATTAVANI_MAX_DOWNLOAD_MB": "64"}
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "ask not what your country" in _text(out / "jfk.txt")
    summary = json.loads((out / "batch-summary.json").read_text())
    assert (summary["files"], summary["done"], summary["failed"]) == (4, 1, 3)
    failed = {failure["file"]: failure["error"] for failure in summary["failures"]}
    assert failed == {
        str(tmp_path / "gone.wav"): "UnreadablePathError",
        str(tmp_path / "also-missing"): "UnreadablePathError",
        "http://127.0.0.1:9/dead.wav": "UnreadablePathError",
    }
    assert "gone.wav" in result.stdout + result.stderr


def _item(uri: str, space: str, root: str, relative: str) -> SourceItem:
    name = PurePosixPath(relative).name
    return SourceItem(uri, name, PurePosixPath(relative), 1, "1", space=space, root=PurePosixPath(root))


def test_mirror_rebases_each_storage_space_on_its_common_root() -> None:
    items = [
        _item("/data/2019/a.wav", "file", "/data/2019", "a.wav"),
        _item("/data/2020/x/a.wav", "file", "/data/2020", "x/a.wav"),
        _item("s3://bucket/talks/a.wav", "s3", "/bucket/talks", "a.wav"),
        _item("s3://other/a.wav", "s3", "/other", "a.wav"),
    ]
    assert [str(item.relative) for item in mirror(items)] == [
        "2019/a.wav",
        "2020/x/a.wav",
        "s3/bucket/talks/a.wav",
        "s3/other/a.wav",
    ]
    one_folder = [_item("/data/a.wav", "file", "/data", "a.wav"), _item("/data/s/b.wav", "file", "/data", "s/b.wav")]
    assert [str(item.relative) for item in mirror(one_folder)] == ["a.wav", "s/b.wav"]


def test_planning_names_clashing_items_by_their_full_name(tmp_path: Path) -> None:
    sink = LocalSink(tmp_path)
    items = [
        _item("/d/talk.wav", "file", "/d", "talk.wav"),
        _item("/d/talk.ogg", "file", "/d", "talk.ogg"),
        _item("/d/other.wav", "file", "/d", "other.wav"),
    ]
    planned, refused = plan_destinations([(item, sink) for item in items], ["txt", "srt"], {})
    assert not refused
    assert [d.base for d in planned] == ["talk.wav", "talk.ogg", "other"]
    taken = {str(tmp_path / "other.txt").casefold(): "/elsewhere/other.wav"}  # by another source, last run
    planned, refused = plan_destinations([(items[2], sink)], ["txt"], taken)
    assert [d.base for d in planned] == ["other.wav"] and not refused
    taken[str(tmp_path / "other.wav.txt").casefold()] = "/elsewhere/other.flac"
    planned, refused = plan_destinations([(items[2], sink)], ["txt"], taken)
    assert not planned and "/elsewhere/other.flac" in str(refused[0][1])
    assert Destination(items[0], sink, "talk").targets(["txt"]) == [str(tmp_path / "talk.txt")]


@pytest.mark.base
def test_batch_takes_the_options_transcribe_takes(tmp_path: Path) -> None:
    shutil.copy(JFK, tmp_path / "jfk.flac")
    out = tmp_path / "out"
    (tmp_path / "dattavani-asr.toml").write_text('fallback_model = "base"\nmin_confidence = 1.0\n')
    command = [*CLI, "batch", str(tmp_path / "jfk.flac"), "--output-dir", str(out), "-f", "json", "--word-timestamps"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    segments = json.loads((out / "jfk.json").read_text())["segments"]
    assert all(segment["words"] for segment in segments)
    assert {segment["model"] for segment in segments} <= {"tiny.en", "base"}
    (tmp_path / "dattavani-asr.toml").write_text('fallback_model = "no-such-model"\n')  # the file's chain is used
    unknown = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert unknown.returncode == 7 and "no-such-model" in unknown.stderr
    refused = subprocess.run([*CLI, "batch", str(tmp_path), "--task", "translate", "--output-dir", str(out)],
                             check=False, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert refused.returncode == 8 and "English-only" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.parametrize(
    ("relative", "name"),
    [
        ("../../escape.wav", "escape.wav"),
        ("talks/../../../etc/escape.wav", "escape.wav"),
        ("talks/..\\..\\a.wav", "..\\..\\a.wav"),
        ("talks/bad\x00.wav", "bad\x00.wav"),
        ("talks/..", ".."),
    ],
)
def test_names_that_climb_out_of_the_output_folder_are_refused(tmp_path: Path, relative: str, name: str) -> None:
    sink = LocalSink(tmp_path / "out")
    hostile = replace(_item("/b/x.wav", "s3", "/b", "x.wav"), name=name, relative=PurePosixPath(relative))
    fine = _item("/b/talks/fine.wav", "s3", "/b", "talks/fine.wav")
    planned, refused = plan_destinations([(hostile, sink), (fine, sink)], ["txt"], {})
    assert [d.item.uri for d in planned] == [fine.uri]
    assert [item.uri for item, _ in refused] == [hostile.uri]
    assert "refused, nothing written" in str(refused[0][1])
