"""The live session on the shared scheduler: which windows it decodes, how, and what a final waits for."""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Any

import numpy as np
import pytest

from conftest import DATA, JFK, JFK_PHRASE
from dattavani_asr import Transcriber
from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.core.options import DecodingOptions
from dattavani_asr.engine import AudioWindow
from dattavani_asr.evaluation import word_error_rate
from dattavani_asr.pipeline.live import NEW_UTTERANCE_GAP, StreamSession
from dattavani_asr.pipeline.scheduler import DynamicBatcher, Priority

ENGLISH = DecodingOptions(language="en")
HORIZON = "The horizon seems extremely distant."
JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


class GatedEngine:
    """The real engine behind two workers; each window waits for its gate, and the windows decoding at
    the same moment are recorded."""

    name = "gated"
    workers = 2

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.gates: defaultdict[float, threading.Event] = defaultdict(threading.Event)
        self.started: defaultdict[float, threading.Event] = defaultdict(threading.Event)
        self.running: list[float] = []
        self.sizes: list[int] = []
        self.lock = threading.Lock()

    def transcribe_batch(self, windows: list[AudioWindow], options: DecodingOptions, language: str | None) -> Any:
        offset = windows[0].offset
        with self.lock:
            self.sizes.append(len(windows))
            self.running.append(offset)
        self.started[offset].set()
        self.gates[offset].wait(30)
        try:
            return self.engine.transcribe_batch(windows, options, language)
        finally:
            with self.lock:
                self.running.remove(offset)


def test_on_a_cpu_a_final_never_waits_for_partials(tiny: Transcriber) -> None:
    """Two workers: partials may hold one of them, a final takes the other at once."""
    engine = GatedEngine(tiny.engine())
    batcher = DynamicBatcher(engine, batch_size=8, batch_wait_ms=500)
    audio = decode_audio(JFK)
    try:
        partials = [batcher.submit([AudioWindow(float(i), audio)], ENGLISH, Priority.PARTIAL)[0] for i in (1, 2)]
        assert engine.started[1.0].wait(10)
        assert not engine.started[2.0].wait(0.3)  # the second partial waits: one worker stays free
        [final] = batcher.submit([AudioWindow(10.0, audio)], ENGLISH, Priority.INTERACTIVE)
        assert engine.started[10.0].wait(0.3)  # no wait for the partial, nor for a batch to fill
        assert engine.running == [1.0, 10.0]
        engine.gates[10.0].set()
        assert JFK_PHRASE in final.result(30).decoded.text.lower().replace(",", "")
        engine.gates[1.0].set()
        assert engine.started[2.0].wait(10)
        engine.gates[2.0].set()
        texts = [future.result(30).decoded.text.lower().replace(",", "") for future in partials]
    finally:
        for gate in (1.0, 2.0, 10.0):
            engine.gates[gate].set()
        batcher.stop()
    assert all(JFK_PHRASE in text for text in texts)
    assert set(engine.sizes) == {1}  # one window per worker


class RecordingBatcher(DynamicBatcher):
    """Records the window span, priority and beam of every decode a session asks for."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self.decodes: list[tuple[float, float, int, int]] = []

    def submit(self, windows: list[AudioWindow], options: DecodingOptions, priority: int) -> Any:
        for window in windows:
            self.decodes.append((window.offset, window.offset + window.duration, priority, options.beam_size))
        return super().submit(windows, options, priority)


def _stream(session: StreamSession, audio: np.ndarray) -> list[dict[str, Any]]:
    events = []
    for start in range(0, audio.shape[0], SAMPLE_RATE // 10):
        session.feed(audio[start : start + SAMPLE_RATE // 10])
        events += session.update()
    return events + session.finish()


def test_new_speaker_after_a_pause_is_decoded_without_the_last_ones_audio(tiny: Transcriber) -> None:
    """Short clips of different speakers in a row: each is decoded on its own, like offline; partials
    are greedy, finals use the session's beam."""
    horizon = decode_audio(DATA / "misc" / "stereo_diarization.wav", channel=1)[: int(2.6 * SAMPLE_RATE)]
    jfk = decode_audio(JFK)  # speech from 0.3 s: 0.5 s of silence between the speakers in all
    gap = np.zeros(SAMPLE_RATE // 2, np.float32)
    batcher = RecordingBatcher(tiny.engine())
    try:
        session = StreamSession(batcher, DecodingOptions(language="en", beam_size=5))
        events = _stream(session, np.concatenate([horizon, gap, jfk, gap, gap]))
    finally:
        batcher.stop()
    finals = [event for event in events if event["type"] == "final"]
    assert word_error_rate([HORIZON], [finals[0]["text"]], "en") < 0.2
    first_end = finals[0]["end"]
    second_start = finals[1]["start"]
    assert second_start - first_end >= NEW_UTTERANCE_GAP
    later = [(start, end) for start, end, _, _ in batcher.decodes if end > second_start + 0.5]
    assert later and all(start > first_end for start, _ in later)  # none holds the first speaker's words
    done = events[-1]["text"]
    assert word_error_rate([f"{HORIZON} {JFK_TEXT}"], [done], "en") < 0.15
    beams = {priority: {beam for _, _, kind, beam in batcher.decodes if kind == priority} for priority in Priority}
    assert beams[Priority.PARTIAL] == {1} and beams[Priority.INTERACTIVE] == {5}


@pytest.mark.parametrize("beam", [1, 5])
def test_finals_reuse_the_decode_made_as_the_pause_began(tiny: Transcriber, beam: int) -> None:
    """The final costs no decode of its own: the update that emits it decodes nothing."""
    batcher = RecordingBatcher(tiny.engine())
    audio = np.concatenate([decode_audio(JFK), np.zeros(SAMPLE_RATE, np.float32)])
    free_finals = []
    try:
        session = StreamSession(batcher, DecodingOptions(language="en", beam_size=beam))
        for start in range(0, audio.shape[0], SAMPLE_RATE // 10):
            session.feed(audio[start : start + SAMPLE_RATE // 10])
            before = len(batcher.decodes)
            events = session.update()
            free_finals += [len(batcher.decodes) == before for event in events if event["type"] == "final"]
        text = session.finish()[-1]["text"]
    finally:
        batcher.stop()
    assert len(free_finals) >= 3 and sum(free_finals) >= len(free_finals) - 1
    assert word_error_rate([JFK_TEXT], [text], "en") < 0.15


def test_a_final_faster_than_speech_is_a_made_up_sentence() -> None:
    from dattavani_asr.core.transcript import Word
    from dattavani_asr.pipeline.live import _too_fast

    made_up = (
        "If you guys are on the top of the channel, don't forget to subscribe to my channel. "
        "If you guys are on the top comply."
    )
    said = "Many people don't think about them as dinosaurs because they have feathers and can fly."

    def timed(text: str) -> list[Word]:
        return [Word(0.0, 0.1, f" {word}", 0.9) for word in text.split()]

    assert _too_fast(timed(made_up), 3.7)
    assert not _too_fast(timed(said), 3.7)
    assert not _too_fast(timed("Ask not!"), 0.6)
