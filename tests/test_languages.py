"""Kannada and Hindi: the script guard, foreign-script suppression and a model per language."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import DATA, JFK, fleurs
from dattavani_asr import Transcriber
from dattavani_asr.audio.decode import decode_audio
from dattavani_asr.core.errors import InvalidOptionError
from dattavani_asr.core.scripts import count_script, wrong_script
from dattavani_asr.core.transcript import Segment, Transcript
from dattavani_asr.engine.script_tokens import foreign_script_tokens, token_scripts
from dattavani_asr.pipeline.guard import flag_segments, script_warnings
from dattavani_asr.pipeline.routing import parse_routes
from dattavani_asr.server import ServerSettings, create_app
from helpers_audio import run_cli

KANNADA = "ನಮಸ್ಕಾರ, ಇಂದು ನಾವು ದತ್ತಾತ್ರೇಯರ ಬಗ್ಗೆ ಮಾತನಾಡೋಣ."
HINDI = "भारत एक विशाल देश है, जहाँ अनेक भाषाएँ बोली जाती हैं।"


def segment(text: str, language: str = "") -> Segment:
    return Segment(0, 0.0, 2.0, text, -0.3, 0.1, 1.2, 0.0, 0.8, language=language)


def test_scripts_of_kannada_hindi_and_their_neighbours() -> None:
    assert not wrong_script(KANNADA, "kn") and not wrong_script(HINDI, "hi")
    assert wrong_script("நமஸ்காரம் இன்று", "kn")  # Tamil for Kannada
    assert wrong_script("نمستے آج ہم", "hi")  # Urdu's script for Hindi
    assert not wrong_script(f"{KANNADA} Vedanta and the Upanishads", "kn")  # English inside a Kannada talk
    assert count_script("ಕನ್ನಡ abc", "kn").expected == 5  # vowel signs count with their letters


def test_guard_flags_wrong_script_and_names_the_fix() -> None:
    segments = flag_segments([segment(KANNADA), segment("நமஸ்காரம் இன்று நாம்")], "kn")
    assert [s.wrong_script for s in segments] == [False, True]
    [warning] = script_warnings(segments, "kn", "base", 2)
    assert "1 of 2 segments are not in Kannada script" in warning and "models install kannada-small" in warning
    [romanized] = script_warnings(flag_segments([segment("Namaskara indu navu")], "kn"), "kn", "base", 1)
    assert "Latin letters, not Kannada" in romanized
    [empty] = script_warnings((), "kn", "base", 3)
    assert "wrote no Kannada text" in empty and "models install kannada-small" in empty
    assert script_warnings(flag_segments([segment(HINDI)], "hi"), "hi", "base", 1) == ()
    assert script_warnings((), "kn", "base", 0) == ()  # no speech heard: nothing to warn about


def test_warnings_and_flags_survive_json() -> None:
    transcript = Transcript((segment("நமஸ்காரம்", "kn"),), "kn", 1.0, 2.0, "base", warnings=("w",))
    again = Transcript.from_dict(json.loads(json.dumps(transcript.to_dict())))
    assert again.warnings == ("w",) and again.segments[0].language == "kn"


def test_foreign_script_tokens_of_the_multilingual_vocabulary(base: Transcriber) -> None:
    tokenizer = base.engine().model.hf_tokenizer
    kannada, hindi = foreign_script_tokens(tokenizer, "kn"), foreign_script_tokens(tokenizer, "hi")
    assert (
        foreign_script_tokens(tokenizer, "en") == frozenset() and foreign_script_tokens(tokenizer, None) == frozenset()
    )

    def ids(text: str) -> list[int]:
        return [i for i in tokenizer.encode(text, add_special_tokens=False).ids if i < 50257]

    assert set(ids("நமஸ்காரம்")) & kannada and set(ids("نمستے")) <= hindi  # Tamil for kn, Arabic for hi
    assert not set(ids(KANNADA)) & kannada and not set(ids(HINDI)) & hindi
    assert not set(ids(" the Upanishads and Vedanta")) & kannada
    assert token_scripts("ಕ".encode()[:2]) == {"Kannada"}  # a character cut after its second byte


@pytest.fixture(scope="module")
def espeak(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("espeak")
    for name, voice, text in (("kn.wav", "kn", KANNADA), ("hi.wav", "hi", HINDI)):
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(folder / name), text], check=True, timeout=60)
    return folder


@pytest.mark.base
def test_kannada_with_base_is_kannada_or_a_warning_naming_the_fix(espeak: Path, tmp_path: Path) -> None:
    result = run_cli(["transcribe", str(espeak / "kn.wav"), "--model", "base", "--language", "kn", "-f", "txt,json",
                      "--output-dir", str(tmp_path)], tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / "kn.json").read_text())
    kannada = count_script(data["text"], "kn")
    if kannada.letters == 0 or kannada.expected < 0.5 * kannada.letters:
        assert data["warnings"] and "models install kannada-small" in " ".join(result.stderr.split())
    assert not any(s["wrong_script"] for s in data["segments"]) or data["warnings"]


@pytest.mark.base
def test_hindi_comes_out_in_devanagari(espeak: Path, base: Transcriber) -> None:
    transcript = base.transcribe(espeak / "hi.wav", language="hi")
    counted = count_script(transcript.text, "hi")
    assert counted.letters and counted.foreign == 0 and counted.expected > 0.9 * counted.letters
    assert transcript.warnings == ()


def test_routes_parse_and_refuse() -> None:
    routes = parse_routes("kn=kannada-small, hi=hindi-small ,en=tiny.en,*=base")
    assert routes is not None and str(routes) == "kn=kannada-small,hi=hindi-small,en=tiny.en,*=base"
    assert routes.model_for("kn") == "kannada-small" and routes.model_for("de") == "base"
    assert routes.models == ("kannada-small", "hindi-small", "tiny.en", "base")
    assert parse_routes("base") is None
    for bad, message in (("kn=", "language=model"), ("xx=base", "not a Whisper language"), ("en=a,en=b", "twice")):
        with pytest.raises(InvalidOptionError, match=message):
            parse_routes(bad)
    with pytest.raises(InvalidOptionError, match="needs a multilingual model"):
        Transcriber("en=tiny.en").transcribe(JFK)


def mixed_recording() -> tuple[np.ndarray, str]:
    german = fleurs("de")[0]
    gap = np.zeros(16000, np.float32)
    return np.concatenate([decode_audio(JFK), gap, decode_audio(DATA / german["file"])]), german["reference"]


@pytest.mark.base
def test_each_window_goes_to_the_model_of_its_language() -> None:
    audio, _ = mixed_recording()
    transcript = Transcriber("en=tiny.en,*=base").transcribe(audio)
    by_language = {(s.language, s.model) for s in transcript.segments}
    assert by_language == {("en", "tiny.en"), ("de", "base")}
    assert transcript.model == "en=tiny.en,*=base" and transcript.language in ("en", "de")
    forced = Transcriber("en=tiny.en,*=base").transcribe(audio, language="de")
    assert {s.model for s in forced.segments} == {"base"}


@pytest.mark.base
def test_server_routes_by_language(tmp_path: Path) -> None:
    audio, _ = mixed_recording()
    from helpers_audio import write_wav16

    path = write_wav16(tmp_path / "mixed.wav", audio)
    with TestClient(create_app(ServerSettings(data_dir=tmp_path / "data"))) as http:  # type: ignore[call-arg]
        with path.open("rb") as handle:
            response = http.post(
                "/v1/audio/transcriptions",
                data={"model": "en=tiny.en,*=base", "response_format": "verbose_json"},
                files={"file": ("mixed.wav", handle, "audio/wav")},
            )
        assert response.status_code == 200, response.text
        assert "Hongkong" in response.json()["text"] or "Hong Kong" in response.json()["text"]
        refused = http.post(
            "/v1/audio/transcriptions", data={"model": "en=nope,*=base"}, files={"file": ("a.wav", b"x")}
        )
        assert refused.status_code == 400 and "nope" in refused.text


@pytest.mark.base
def test_batch_routes_each_file_by_language(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    german = fleurs("de")[0]
    for source in (JFK, DATA / german["file"]):
        (inputs / source.name).write_bytes(source.read_bytes())
    result = run_cli(["batch", str(inputs), "--model", "en=tiny.en,*=base", "--output-dir", str(tmp_path / "out"),
                      "-f", "json"], tmp_path, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    english = json.loads((tmp_path / "out" / "jfk.json").read_text())
    other = json.loads((tmp_path / "out" / f"{Path(german['file']).stem}.json").read_text())
    assert {s["model"] for s in english["segments"]} == {"tiny.en"} and english["language"] == "en"
    assert {s["model"] for s in other["segments"]} == {"base"} and other["language"] == "de"


def test_decodes_without_timestamps_split_at_sentence_ends(tiny: Transcriber) -> None:
    from dattavani_asr.engine.segments import sentences

    tokenizer = tiny.engine().model.tokenizer("transcribe", "en")
    tokens = tokenizer.encode(" Ask not what your country can do. Ask what you can do! Fine")
    pieces = [tokenizer.decode(piece).strip() for piece in sentences(tokens, tokenizer)]
    assert pieces == ["Ask not what your country can do.", "Ask what you can do!", "Fine"]


def test_indic_scores_keep_vowel_signs() -> None:
    from dattavani_asr.evaluation import character_error_rate, normalize, word_error_rate

    assert normalize("ಕನ್ನಡ, ಭಾಷೆ।", "kn") == "ಕನ್ನಡ ಭಾಷೆ" and normalize("नमस्ते।\u200d", "hi") == "नमस्ते"
    assert word_error_rate(["ಕನ್ನಡ ಭಾಷೆ"], ["ಕನನಡ ಭಾಷೆ"], "kn") == 0.5  # a lost virama is a wrong word
    assert 0 < character_error_rate(["ಕನ್ನಡ ಭಾಷೆ"], ["ಕನನಡ ಭಾಷೆ"], "kn") < 0.2


def test_a_live_stream_refuses_a_model_per_language(tmp_path: Path) -> None:
    from starlette.websockets import WebSocketDisconnect

    app = create_app(ServerSettings(data_dir=tmp_path / "data"))  # type: ignore[call-arg]
    with TestClient(app) as http, http.websocket_connect("/v1/stream?model=en%3Dtiny.en%2C%2A%3Dbase") as ws:
        event = ws.receive_json()
        assert event["type"] == "error" and "one model" in event["message"]
        with pytest.raises(WebSocketDisconnect):
            ws.receive_json()


def test_verbose_json_carries_the_warnings() -> None:
    from dattavani_asr.server.responses import verbose_json

    warned = Transcript((segment("நமஸ்காரம்", "kn"),), "kn", 1.0, 2.0, "base", warnings=("not in Kannada script",))
    assert verbose_json(warned, ["segment"])["warnings"] == ["not in Kannada script"]
    assert "warnings" not in verbose_json(Transcript((), "kn", 1.0, 2.0, "base"), ["segment"])
