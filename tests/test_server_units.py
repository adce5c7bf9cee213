"""Scheduler, model manager and guard behaviour of the service, on the real tiny.en/base engines."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, JFK, JFK_PHRASE
from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.core.options import DecodingOptions
from dattavani_asr.engine import AudioWindow
from dattavani_asr.pipeline.scheduler import DynamicBatcher, Priority
from dattavani_asr.server.errors import APIError
from dattavani_asr.server.model_manager import ModelManager, ModelNotFoundError
from dattavani_asr.server.security import RateLimiter, UrlGuard, check_url_target
from dattavani_asr.server.settings import ServerSettings, load_server_settings

ENGLISH = DecodingOptions(language="en")


class RecordingEngine:
    """Wraps the real engine and records the windows of each batch it decodes."""

    def __init__(self, engine: object) -> None:
        self.engine = engine
        self.name = "recording"
        self.batches: list[list[float]] = []
        self.gate = threading.Event()

    def transcribe_batch(self, windows: list[AudioWindow], options: DecodingOptions, language: str | None) -> object:
        self.gate.wait(30)
        self.batches.append([window.offset for window in windows])
        return self.engine.transcribe_batch(windows, options, language)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def manager(tmp_path_factory: pytest.TempPathFactory) -> ModelManager:
    settings = ServerSettings(data_dir=tmp_path_factory.mktemp("units"), max_loaded_models=1)  # type: ignore[call-arg]
    return ModelManager(settings)


def test_interactive_windows_run_before_job_windows(manager: ModelManager, monkeypatch: pytest.MonkeyPatch) -> None:
    from dattavani_asr.pipeline import scheduler

    monkeypatch.setattr(scheduler, "JOB_AGING_SECONDS", 600.0)  # however slow the blocker decodes here
    with manager.use("tiny.en") as entry:
        recording = RecordingEngine(entry.engine)
        batcher = DynamicBatcher(recording, batch_size=2, batch_wait_ms=0)
        audio = decode_audio(JFK)
        blocker = batcher.submit([AudioWindow(99.0, audio)], ENGLISH, Priority.JOB)  # holds the engine
        time.sleep(0.1)
        jobs = batcher.submit([AudioWindow(float(i), audio) for i in range(1, 4)], ENGLISH, Priority.JOB)
        interactive = batcher.submit([AudioWindow(10.0, audio)], ENGLISH, Priority.INTERACTIVE)
        recording.gate.set()
        results = [future.result(60) for future in [*blocker, *jobs, *interactive]]
        batcher.stop()
    assert recording.batches[0] == [99.0]
    assert recording.batches[1][0] == 10.0  # the interactive window jumped the queue of job windows
    assert all(JFK_PHRASE in result.decoded.text.lower().replace(",", "") for result in results)


def test_job_windows_that_waited_long_rank_with_interactive_ones(
    manager: ModelManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A steady stream of requests cannot starve a job: its windows age into the interactive rank."""
    from dattavani_asr.pipeline import scheduler

    monkeypatch.setattr(scheduler, "JOB_AGING_SECONDS", 0.3)
    with manager.use("tiny.en") as entry:
        recording = RecordingEngine(entry.engine)
        batcher = DynamicBatcher(recording, batch_size=2, batch_wait_ms=0)
        audio = decode_audio(JFK)
        blocker = batcher.submit([AudioWindow(99.0, audio)], ENGLISH, Priority.INTERACTIVE)  # holds the engine
        time.sleep(0.1)
        jobs = batcher.submit([AudioWindow(float(i), audio) for i in range(1, 4)], ENGLISH, Priority.JOB)
        time.sleep(0.4)
        interactive = batcher.submit([AudioWindow(10.0, audio)], ENGLISH, Priority.INTERACTIVE)
        recording.gate.set()
        results = [future.result(60) for future in [*blocker, *jobs, *interactive]]
        batcher.stop()
    assert recording.batches == [[99.0], [1.0, 2.0], [3.0, 10.0]]
    assert all(JFK_PHRASE in result.decoded.text.lower().replace(",", "") for result in results)


def test_windows_with_different_options_never_share_a_batch(manager: ModelManager) -> None:
    with manager.use("tiny.en") as entry:
        recording = RecordingEngine(entry.engine)
        recording.gate.set()
        batcher = DynamicBatcher(recording, batch_size=8, batch_wait_ms=200)
        audio = decode_audio(JFK)
        greedy = DecodingOptions(language="en", beam_size=1)
        futures = batcher.submit([AudioWindow(1.0, audio)], ENGLISH, 0) + batcher.submit(
            [AudioWindow(2.0, audio)], greedy, 0
        )
        for future in futures:
            future.result(60)
        batcher.stop()
    assert sorted(recording.batches) == [[1.0], [2.0]]


def test_partial_batches_stay_small_while_finals_batch_fully(manager: ModelManager) -> None:
    """A final waits for the running batch: partial batches are capped so that wait stays short."""
    with manager.use("tiny.en") as entry:
        recording = RecordingEngine(entry.engine)
        batcher = DynamicBatcher(recording, batch_size=8, batch_wait_ms=0)
        audio = decode_audio(JFK)[: 4 * SAMPLE_RATE]
        blocker = batcher.submit([AudioWindow(99.0, audio)], ENGLISH, Priority.JOB)  # holds the engine
        time.sleep(0.1)
        partials = batcher.submit([AudioWindow(float(i), audio) for i in range(4)], ENGLISH, Priority.PARTIAL)
        finals = batcher.submit([AudioWindow(10.0 + i, audio) for i in range(3)], ENGLISH, Priority.INTERACTIVE)
        assert batcher.window_seconds is None
        recording.gate.set()
        results = [future.result(60) for future in [*blocker, *partials, *finals]]
        batcher.stop()
    assert recording.batches[1] == [10.0, 11.0, 12.0]
    assert recording.batches[2:] == [[0.0], [1.0], [2.0], [3.0]]
    assert all("fellow americans" in result.decoded.text.lower() for result in results)
    assert batcher.window_seconds is not None and 0.01 < batcher.window_seconds < 30


def test_a_lone_partial_is_decoded_without_waiting_for_a_batch(manager: ModelManager) -> None:
    """Partials are decoded one at a time, so waiting `batch_wait_ms` for companions only delays them;
    an interactive window still waits for windows that could share its batch."""
    with manager.use("tiny.en") as entry:
        recording = RecordingEngine(entry.engine)
        recording.gate.set()
        batcher = DynamicBatcher(recording, batch_size=8, batch_wait_ms=1000)
        audio = decode_audio(JFK)[: 2 * SAMPLE_RATE]
        started = time.perf_counter()
        batcher.submit([AudioWindow(1.0, audio)], ENGLISH, Priority.PARTIAL)[0].result(60)
        partial_seconds = time.perf_counter() - started
        started = time.perf_counter()
        batcher.submit([AudioWindow(2.0, audio)], ENGLISH, Priority.INTERACTIVE)[0].result(60)
        interactive_seconds = time.perf_counter() - started
        batcher.stop()
    assert partial_seconds < 0.9 < interactive_seconds


def test_batcher_counts_live_streams(manager: ModelManager) -> None:
    with manager.use("tiny.en") as entry:
        batcher = DynamicBatcher(entry.engine)
        batcher.stream_opened()
        batcher.stream_opened()
        batcher.stream_closed()
        assert batcher.streams == 1
        batcher.stream_closed()
        batcher.stream_closed()
        assert batcher.streams == 0
        batcher.stop()


def test_stopped_batcher_fails_pending_and_new_work(manager: ModelManager) -> None:
    with manager.use("tiny.en") as entry:
        batcher = DynamicBatcher(entry.engine)
    batcher.stop()
    with pytest.raises(RuntimeError, match="not serving"):
        batcher.submit([AudioWindow(0.0, decode_audio(JFK))], ENGLISH, 0)


@pytest.mark.base
def test_model_manager_caps_loaded_models_and_unloads_idle(manager: ModelManager) -> None:
    with manager.use("tiny.en"):
        pass
    assert list(manager.loaded()) == ["tiny.en"]
    with manager.use("whisper-1") as entry:
        assert entry.name == "tiny.en"
    with manager.use("base"):
        pass
    assert list(manager.loaded()) == ["base"]  # max_loaded_models=1 evicted the idle tiny.en
    assert manager.unload_idle(now=time.monotonic() + 10_000) == ["base"]
    assert manager.loaded() == {}
    with pytest.raises(ModelNotFoundError):
        manager.canonical("/etc")  # a path is never loaded on a client's say-so


def test_url_guard_refuses_private_targets() -> None:
    for url in ("http://127.0.0.1/x.wav", "http://localhost:8000/a", "http://10.1.2.3/a", "http://169.254.169.254/"):
        with pytest.raises(APIError, match="non-public"):
            check_url_target(url, UrlGuard())
    with pytest.raises(APIError, match="http"):
        check_url_target("file:///etc/passwd", UrlGuard(allow_private=True))
    assert check_url_target("http://127.0.0.1/x.wav", UrlGuard(allow_private=True)).url == "http://127.0.0.1/x.wav"


def test_rate_limiter_refills() -> None:
    limiter = RateLimiter(per_minute=120)  # two per second
    for _ in range(120):
        limiter.check("k")
    with pytest.raises(APIError) as refused:
        limiter.check("k")
    assert refused.value.status == 429
    time.sleep(0.6)
    limiter.check("k")
    limiter.check("other")


def test_settings_from_environment_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "server.toml"
    config.write_text('[server]\nport = 9001\napi_keys = ["a"]\nbatch_size = 4\n')
    monkeypatch.setenv("DATTAVANI_SERVER_API_KEYS", "k1,k2")
    settings = load_server_settings(config, batch_size=6)
    assert (settings.port, settings.api_keys, settings.batch_size) == (9001, ["k1", "k2"], 6)
    monkeypatch.setenv("DATTAVANI_SERVER_PORT", "not-a-port")
    with pytest.raises(Exception, match="port"):
        load_server_settings()


def test_fleurs_clip_through_service(manager: ModelManager) -> None:
    from dattavani_asr.server.service import TranscriptionRequest, TranscriptionService

    seen: list[float] = []
    transcript = TranscriptionService(manager).transcribe(
        DATA / "fleurs" / "fleurs-en-000.ogg",
        TranscriptionRequest(trim_encoder=True),
        progress=seen.append,
        duration=10.56,
    )
    assert "communication" in transcript.text and transcript.duration == pytest.approx(10.56, abs=0.1)
    assert seen and seen[-1] > 0.8


def test_trimmed_window_text_does_not_depend_on_batch_partners(manager: ModelManager) -> None:
    trim = DecodingOptions(language="en", trim_encoder=True)
    clip = decode_audio(DATA / "fleurs" / "fleurs-en-001.ogg")
    longer = decode_audio(DATA / "fleurs" / "fleurs-en-002.ogg")
    with manager.use("tiny.en") as entry:
        recording = RecordingEngine(entry.engine)
        recording.gate.set()
        batcher = DynamicBatcher(recording, batch_size=8, batch_wait_ms=300)
        [alone] = batcher.submit([AudioWindow(0.0, clip)], trim, 0)
        alone_text = alone.result(60).decoded.text
        futures = batcher.submit([AudioWindow(0.0, clip), AudioWindow(1.0, np.concatenate([longer, longer]))], trim, 0)
        together_text = futures[0].result(60).decoded.text
        futures[1].result(60)
        batcher.stop()
    assert together_text == alone_text
    assert [0.0] in recording.batches and [1.0] in recording.batches  # different contexts, different batches
