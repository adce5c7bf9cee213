"""Batch on Ray: engine replicas as actors give the same outputs and state as a local run."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import DATA, JFK, fleurs
from dattavani_asr import Transcriber, make_options
from dattavani_asr.batch import BatchConfig, BatchRun, BatchSummary
from dattavani_asr.batch.ray_engine import RayClusterError, ReplicaPlan, chunks, plan_replicas
from dattavani_asr.batch.state import STATE_FILENAME
from dattavani_asr.evaluation import word_error_rate

pytest.importorskip("ray")

SUFFIXES = (".txt", ".srt")
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


@pytest.fixture()
def clips(tmp_path: Path) -> Path:
    """The FLEURS English clips (one in a subfolder) and JFK."""
    root = tmp_path / "archive"
    (root / "day2").mkdir(parents=True)
    for index, item in enumerate(fleurs("en")):
        shutil.copy(DATA / item["file"], root / ("day2" if index == 4 else "") / Path(item["file"]).name)
    shutil.copy(JFK, root / "jfk.flac")
    return root


def _run(tiny: Transcriber, clips: Path, out: Path, **config: Any) -> BatchSummary:
    run_config = BatchConfig(specs=[str(clips)], formats=["txt", "srt"], output_dir=out, **config)
    return BatchRun(run_config, tiny, make_options()).run()


def _outputs(out: Path) -> dict[str, str]:
    return {str(path.relative_to(out)): path.read_text() for path in sorted(out.rglob("*")) if path.suffix in SUFFIXES}


def _state(out: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(out / STATE_FILENAME) as db:
        return sorted(db.execute("SELECT uri, status, attempts, options, audio_seconds FROM files").fetchall())


def test_ray_run_matches_local_run_and_resumes(clips: Path, tmp_path: Path) -> None:
    """Without packing, window batches do not depend on timing, so the outputs of one replica must
    be byte-identical to a local run with the same threads. (Split over 2 replicas of 1 thread, the
    batches and thread counts differ, and on some CPUs CTranslate2's results then differ in the last
    bits: a timestamp by 0.06 s, a capital letter; test_ray_run_with_packing covers 2 replicas.)"""
    tiny = Transcriber("tiny.en", device="cpu", cpu_threads=2)
    local = _run(tiny, clips, tmp_path / "local", pack=False)
    remote = _run(tiny, clips, tmp_path / "ray", pack=False, ray_address="local", ray_replicas=1)
    assert (remote.files, remote.done, remote.failed, remote.skipped) == (6, 6, 0, 0)
    assert (local.files, local.done) == (remote.files, remote.done)
    assert remote.audio_seconds == local.audio_seconds
    assert _outputs(tmp_path / "ray") == _outputs(tmp_path / "local")
    assert _state(tmp_path / "ray") == _state(tmp_path / "local")
    summary = json.loads((tmp_path / "ray" / "batch-summary.json").read_text())
    assert summary["done"] == 6 and summary["failed"] == 0
    again = _run(tiny, clips, tmp_path / "ray", pack=False, ray_address="local", ray_replicas=2)
    assert (again.done, again.skipped, again.failed) == (0, 6, 0)


def test_ray_run_with_packing(tiny: Transcriber, clips: Path, tmp_path: Path) -> None:
    """Packed windows depend on which files' windows are pending together, in local runs too, so
    outputs are compared with the references (as tests/test_batch.py does), not with a local run."""
    summary = _run(tiny, clips, tmp_path / "out", ray_address="local", ray_replicas=2)
    assert (summary.done, summary.failed) == (6, 0)
    refs = {Path(item["file"]).stem: item["reference"] for item in fleurs("en")}
    refs["jfk"] = JFK_TEXT
    texts = {path.stem: path.read_text() for path in (tmp_path / "out").rglob("*.txt")}
    assert word_error_rate([refs[k] for k in sorted(texts)], [texts[k] for k in sorted(texts)]) < 0.12


def test_unreachable_ray_address_fails_fast_with_one_line(tiny: Transcriber, clips: Path, tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(RayClusterError, match=r"cannot reach the Ray cluster at ray://127\.0\.0\.1:1") as caught:
        _run(tiny, clips, tmp_path / "out", ray_address="ray://127.0.0.1:1")
    assert time.monotonic() - started < 30
    assert "\n" not in str(caught.value)


def test_replica_plan_and_chunks() -> None:
    assert plan_replicas({"CPU": 8.0}, "auto", None, None) == ReplicaPlan(4, 2.0, 0.0)
    assert plan_replicas({"CPU": 2.0}, "cpu", 2, None) == ReplicaPlan(2, 1.0, 0.0)
    assert plan_replicas({"CPU": 16.0, "GPU": 2.0}, "auto", None, None) == ReplicaPlan(2, 8.0, 1.0)
    assert plan_replicas({"CPU": 16.0, "GPU": 2.0}, "cpu", None, 4) == ReplicaPlan(4, 4, 0.0)
    with pytest.raises(RayClusterError, match="no GPUs"):
        plan_replicas({"CPU": 4.0}, "cuda", None, None)
    assert chunks(5, 2) == [range(0, 3), range(3, 5)]
    assert chunks(1, 3) == [range(0, 1)]
