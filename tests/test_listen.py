"""`ws /v1/listen`: a Deepgram-style client (the `websockets` package) against the real service."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from conftest import JFK, load_manifest
from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.evaluation import normalize, word_error_rate
from dattavani_asr.server import ServerSettings
from served_app import served_app

KEY = "listen-test-key"
JFK_REFERENCE = load_manifest()[0]["reference"]
QUERY = "encoding=linear16&sample_rate=16000&channels=1&model=nova-3&language=en-US"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real service on a free loopback port, in a background thread; keys required."""
    settings = ServerSettings(data_dir=tmp_path_factory.mktemp("listen"), api_keys=[KEY])  # type: ignore[call-arg]
    with served_app(settings) as url:
        yield url.replace("http://", "ws://") + "/v1/listen"


def jfk_pcm(silence: float = 2.0) -> bytes:
    audio = np.concatenate([decode_audio(JFK), np.zeros(round(silence * SAMPLE_RATE), np.float32)])
    return (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def run(
    ws: ClientConnection, pcm: bytes, pace: float = 4.0, before_close: list[str] | None = None
) -> list[dict[str, Any]]:
    """Send the audio in 100-ms frames at `pace` x real time from a thread, then the control messages and
    CloseStream; every message until the server closes."""

    def send() -> None:
        started = time.perf_counter()
        for offset in range(0, len(pcm), 3200):
            ws.send(pcm[offset : offset + 3200])
            time.sleep(max(0.0, (offset + 3200) / 32000 / pace - (time.perf_counter() - started)))
        for message in [*(before_close or []), json.dumps({"type": "CloseStream"})]:
            ws.send(message)

    sender = threading.Thread(target=send)
    sender.start()
    messages = [json.loads(message) for message in ws]  # until the server closes
    sender.join()
    return messages


def test_interim_and_final_results_speech_final_utterance_end_and_metadata(server: str) -> None:
    url = f"{server}?{QUERY}&interim_results=true&punctuate=true&vad_events=true&utterance_end_ms=1000"
    keep_alive = json.dumps({"type": "KeepAlive"})
    with connect(url, additional_headers={"Authorization": f"Token {KEY}"}) as ws:
        messages = run(ws, jfk_pcm(), before_close=[keep_alive])
    kinds = [m["type"] for m in messages]
    assert kinds[-1] == "Metadata" and kinds.count("Metadata") == 1
    assert "SpeechStarted" in kinds and "UtteranceEnd" in kinds
    assert kinds.index("SpeechStarted") < kinds.index("Results")
    results = [m for m in messages if m["type"] == "Results"]
    finals = [m for m in results if m["is_final"]]
    assert any(not m["is_final"] for m in results) and finals
    assert any(m["speech_final"] for m in finals)
    transcript = " ".join(m["channel"]["alternatives"][0]["transcript"] for m in finals)
    # Live, tiny.en sometimes hears JFK's first utterance as "and so am i fell in americans" (22 % WER;
    # issue 20's live accuracy): the rest must be word for word.
    assert "what your country can do for you ask what you can do for your country" in normalize(transcript)
    assert word_error_rate([JFK_REFERENCE], [transcript]) < 0.3, transcript
    for result in results:
        alternative = result["channel"]["alternatives"][0]
        assert result["channel_index"] == [0, 1] and result["metadata"]["request_id"] == messages[-1]["request_id"]
        assert 0.0 <= alternative["confidence"] <= 1.0 and result["duration"] >= 0
        for word in alternative["words"]:
            assert set(word) == {"word", "start", "end", "confidence", "punctuated_word"}
            assert result["start"] - 0.01 <= word["start"] <= word["end"] <= result["start"] + result["duration"] + 0.01
            assert word["word"] == word["word"].lower() and word["word"] in word["punctuated_word"].lower()
    assert finals[-1]["channel"]["alternatives"][0]["words"][-1]["punctuated_word"].startswith("country")
    utterance_end = [m for m in messages if m["type"] == "UtteranceEnd"][-1]  # one after each pause of 1 s
    assert utterance_end["last_word_end"] == pytest.approx(finals[-1]["start"] + finals[-1]["duration"], abs=0.01)
    metadata = messages[-1]
    assert metadata["channels"] == 1 and metadata["duration"] == pytest.approx(13.0, abs=0.1)
    assert metadata["models"] and metadata["model_info"][metadata["models"][0]]["name"] == "tiny.en"
    assert len(metadata["sha256"]) == 64 and metadata["created"].endswith("Z")


def test_finalize_flushes_and_plain_words_without_punctuate(server: str) -> None:
    """Audio cut mid-utterance, then Finalize: the rest comes at once, `from_finalize`; the stream goes on."""
    pcm = jfk_pcm(0.0)[: 32000 * 4]  # "And so my fellow Americans, ask not" ... cut
    with connect(f"{server}?{QUERY}", subprotocols=["token", KEY]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "token"
        messages = run(ws, pcm, pace=8.0, before_close=[json.dumps({"type": "Finalize"})])
    results = [m for m in messages if m["type"] == "Results"]
    assert all(m["is_final"] for m in results)  # interim_results defaults to false
    assert any(m["from_finalize"] for m in results)
    words = [w for m in results for w in m["channel"]["alternatives"][0]["words"]]
    assert words and all("punctuated_word" not in w for w in words)
    transcript = " ".join(m["channel"]["alternatives"][0]["transcript"] for m in results)
    assert "fellow americans" in transcript and "," not in transcript


@pytest.mark.parametrize(
    ("headers", "query", "status"),
    [
        ({"Authorization": "Token wrong"}, QUERY, 401),
        ({}, QUERY, 401),
        ({"Authorization": f"Token {KEY}"}, "encoding=opus", 400),
        ({"Authorization": f"Bearer {KEY}"}, "channels=2", 400),
    ],
)
def test_refused_at_the_handshake(server: str, headers: dict[str, str], query: str, status: int) -> None:
    with pytest.raises(InvalidStatus) as refused, connect(f"{server}?{query}", additional_headers=headers):
        pass
    assert refused.value.response.status_code == status
