"""`ws /v1/realtime`: OpenAI's official client (openai.realtime) against the real service, transcription sessions.

The service runs for real (uvicorn on a loopback port, API keys required); the client is the `openai`
package itself, unchanged, pointed at it with `base_url`. Every server event is validated against the
package's own pydantic types (openai/types/realtime/).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pydantic
import pytest
from openai import OpenAI
from openai.resources.realtime.realtime import RealtimeConnection
from openai.types.realtime import RealtimeServerEvent
from websockets.exceptions import InvalidStatus

from conftest import JFK, load_manifest
from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.evaluation import normalize, word_error_rate
from dattavani_asr.server import ServerSettings
from served_app import served_app

KEY = "realtime-test-key"
JFK_REFERENCE = load_manifest()[0]["reference"]
SERVER_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RealtimeServerEvent)
# openai's client under websockets 17 warns about its own use of `connect`
pytestmark = pytest.mark.filterwarnings("ignore:connect\\(\\) must be used as a context manager:DeprecationWarning")
COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real service on a free loopback port, in a background thread; keys required."""
    settings = ServerSettings(data_dir=tmp_path_factory.mktemp("realtime"), api_keys=[KEY])  # type: ignore[call-arg]
    with served_app(settings) as url:
        yield url


def jfk_24k(silence: float = 1.5) -> bytes:
    """JFK as OpenAI's audio/pcm: 24 kHz mono 16-bit little-endian, with silence after it."""
    audio = np.concatenate([decode_audio(JFK), np.zeros(round(silence * SAMPLE_RATE), np.float32)])
    times = np.arange(round(audio.shape[0] * 24000 / SAMPLE_RATE)) / 24000
    resampled = np.interp(times, np.arange(audio.shape[0]) / SAMPLE_RATE, audio)
    return (np.clip(resampled, -1.0, 1.0) * 32767).astype("<i2").tobytes()


class Recorder:
    """Reads the connection in a thread; every server event kept raw and validated against OpenAI's types."""

    def __init__(self, connection: RealtimeConnection) -> None:
        self.connection = connection
        self.events: list[dict[str, Any]] = []
        self.last = time.monotonic()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            while True:
                raw = json.loads(self.connection.recv_bytes())
                if not raw["type"].startswith("transcription_session."):  # the beta API's: not in the GA types
                    SERVER_EVENTS.validate_python(raw)  # raises in the thread: the test then misses the event
                self.events.append(raw)
                self.last = time.monotonic()
        except ConnectionClosed:
            return

    def wait_for(self, kind: str, count: int = 1, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while len(found := [e for e in self.events if e["type"] == kind]) < count:
            assert time.monotonic() < deadline and self.thread.is_alive(), (kind, self.events[-5:])
            time.sleep(0.02)
        return found[count - 1]

    def settle(self, quiet: float = 1.5, timeout: float = 60.0) -> None:
        """Until every item the server started is completed and nothing came for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            started = {e["item_id"] for e in self.events if e["type"] == "input_audio_buffer.speech_started"}
            completed = {e["item_id"] for e in self.events if e["type"] == COMPLETED}
            if started <= completed and completed and time.monotonic() - self.last >= quiet:
                return
            assert time.monotonic() < deadline, self.events[-5:]
            time.sleep(0.05)


def send_audio(connection: RealtimeConnection, pcm: bytes, pace: float = 4.0, chunk: int = 4800) -> None:
    """Base64 appends of 100 ms each, paced at `pace` x real time."""
    started = time.perf_counter()
    for offset in range(0, len(pcm), chunk):
        connection.input_audio_buffer.append(audio=base64.b64encode(pcm[offset : offset + chunk]).decode())
        time.sleep(max(0.0, (offset + chunk) / 48000 / pace - (time.perf_counter() - started)))


def transcription_session(turn_detection: dict[str, Any] | None, **extra: Any) -> Any:
    audio_input = {
        "format": {"type": "audio/pcm", "rate": 24000},
        "transcription": {"model": "gpt-4o-transcribe", "language": "en", "prompt": ""},
        "turn_detection": turn_detection,
    }
    return {"type": "transcription", "audio": {"input": audio_input}} | extra


def client(server: str, key: str = KEY) -> OpenAI:
    return OpenAI(api_key=key, base_url=f"{server}/v1")


def test_official_client_server_vad_deltas_and_completed(server: str) -> None:
    detection = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300, "silence_duration_ms": 200}
    with client(server).realtime.connect(model="gpt-realtime") as connection:
        recorder = Recorder(connection)
        created = recorder.wait_for("session.created")
        assert created["session"]["type"] == "transcription"
        session = transcription_session(detection, include=["item.input_audio_transcription.logprobs"])
        connection.session.update(session=session)
        updated = recorder.wait_for("session.updated")["session"]
        assert updated["audio"]["input"]["turn_detection"] == detection
        assert updated["include"] == ["item.input_audio_transcription.logprobs"]
        send_audio(connection, jfk_24k())
        recorder.settle()
    events = recorder.events
    completed = [e for e in events if e["type"] == COMPLETED]
    transcript = " ".join(e["transcript"] for e in completed if e["transcript"])
    # Live, tiny.en sometimes hears JFK's first utterance as "and so am i fell in americans" (22 % WER;
    # issue 20's live accuracy): the rest must be word for word.
    assert "what your country can do for you ask what you can do for your country" in normalize(transcript)
    assert word_error_rate([JFK_REFERENCE], [transcript]) < 0.3, transcript
    assert any(e["type"] == DELTA for e in events)
    revised = 0
    for item in completed:  # each item: started, stopped, committed, then completed; deltas only of its words
        kinds = [e["type"] for e in events if e.get("item_id") == item["item_id"]]
        assert kinds[0] == "input_audio_buffer.speech_started" and kinds[-1] == COMPLETED
        assert kinds.index("input_audio_buffer.speech_stopped") < kinds.index("input_audio_buffer.committed")
        deltas = "".join(e["delta"] for e in events if e["type"] == DELTA and e["item_id"] == item["item_id"])
        # Deltas come from greedy partials two hypotheses agreed on, the transcript from the beam final:
        # rarely, the final changes a word a delta showed (docs/streaming.md: the transcript is kept).
        revised += not item["transcript"].startswith(deltas)
        assert item["usage"]["type"] == "duration" and item["usage"]["seconds"] > 0
        if item["transcript"]:
            assert "".join(p["token"] for p in item["logprobs"]) == item["transcript"]
    assert len(completed) >= 3 and revised <= 1
    assert not any(e["type"] == "error" for e in events)


def test_manual_commits_and_errors_keep_the_session_going(server: str) -> None:
    """Turn detection off: one item per commit. Malformed events get OpenAI's error shape; the session goes on."""
    with client(server).realtime.connect() as connection:
        recorder = Recorder(connection)
        recorder.wait_for("session.created")
        connection.session.update(session=transcription_session(None))
        assert recorder.wait_for("session.updated")["session"]["audio"]["input"]["turn_detection"] is None
        bad = [
            ("not json", "invalid_json"),
            (
                json.dumps({"type": "input_audio_buffer.append", "audio": "%%%", "event_id": "bad-audio"}),
                "invalid_value",
            ),
            (json.dumps({"type": "response.create"}), "unsupported_event"),
            (json.dumps({"type": "no.such.event"}), "invalid_value"),
            (json.dumps({"type": "session.update", "session": {"type": "realtime"}}), "invalid_value"),
            (json.dumps({"type": "input_audio_buffer.commit"}), "input_audio_buffer_commit_empty"),
        ]
        for count, (raw, code) in enumerate(bad, start=1):
            connection.send_raw(raw)
            error = recorder.wait_for("error", count)
            assert error["error"]["code"] == code and error["error"]["type"] == "invalid_request_error", error
        assert recorder.wait_for("error", 2)["error"]["event_id"] == "bad-audio"
        send_audio(connection, jfk_24k(0.5), pace=8.0)
        connection.input_audio_buffer.commit()
        completed = recorder.wait_for(COMPLETED)
        connection.input_audio_buffer.append(audio=base64.b64encode(bytes(9600)).decode())
        connection.input_audio_buffer.clear()
        recorder.wait_for("input_audio_buffer.cleared")
    kinds = [e["type"] for e in recorder.events]
    assert "input_audio_buffer.speech_started" not in kinds  # no server VAD events with turn detection off
    committed = recorder.wait_for("input_audio_buffer.committed")
    assert committed["item_id"] == completed["item_id"] and committed["previous_item_id"] is None
    assert word_error_rate([JFK_REFERENCE], [completed["transcript"]]) < 0.15, completed["transcript"]
    deltas = [e for e in recorder.events if e["type"] == DELTA]
    assert "".join(e["delta"] for e in deltas) == completed["transcript"]


def test_wrong_key_is_refused(server: str) -> None:
    with pytest.raises(InvalidStatus) as refused, client(server, "wrong-key").realtime.connect():
        pass
    assert refused.value.response.status_code == 401
    assert b"invalid_api_key" in refused.value.response.body


def test_beta_transcription_session_update_and_g711(server: str) -> None:
    """The beta event (`transcription_session.update`, `input_audio_format`) answers in its own shape."""
    with client(server).realtime.connect(extra_query={"intent": "transcription"}) as connection:
        recorder = Recorder(connection)
        recorder.wait_for("session.created")
        update = {"input_audio_format": "g711_ulaw", "turn_detection": None, "input_audio_transcription": {}}
        connection.send_raw(json.dumps({"type": "transcription_session.update", "session": update}))
        updated = recorder.wait_for("transcription_session.updated")["session"]
        assert updated["input_audio_format"] == "g711_ulaw" and updated["turn_detection"] is None
        send_audio(connection, mulaw_8k(), pace=8.0, chunk=800)
        connection.input_audio_buffer.commit()
        completed = recorder.wait_for(COMPLETED)
    assert word_error_rate([JFK_REFERENCE], [completed["transcript"]]) < 0.25, completed["transcript"]


def mulaw_8k() -> bytes:
    """JFK as G.711 mu-law at 8 kHz (each sample: the code whose value is nearest)."""
    from dattavani_asr.server.live_driver import G711

    audio = np.concatenate([decode_audio(JFK), np.zeros(SAMPLE_RATE // 2, np.float32)])[::2]
    samples = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int32)
    order = np.argsort(G711["mulaw"])
    values = G711["mulaw"][order].astype(np.int32)
    index = np.clip(np.searchsorted(values, samples), 1, len(values) - 1)
    nearer = np.where(samples - values[index - 1] < values[index] - samples, index - 1, index)
    return order[nearer].astype(np.uint8).tobytes()
