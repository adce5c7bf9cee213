"""The OpenAI-compatible audio API, driven in-process by the official `openai` client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import srt
from fastapi.testclient import TestClient
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from conftest import DATA, JFK, JFK_PHRASE, fleurs
from dattavani_asr.evaluation import word_error_rate
from dattavani_asr.server import ServerSettings, create_app

JFK_TEXT = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country."


def _app_client(tmp: Path, **settings: object) -> TestClient:
    return TestClient(create_app(ServerSettings(data_dir=tmp, **settings)))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def http(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with _app_client(tmp_path_factory.mktemp("serve")) as client:
        yield client


@pytest.fixture(scope="module")
def client(http: TestClient) -> OpenAI:
    return OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http, max_retries=0)


def _transcribe(client: OpenAI, path: Path = JFK, **kwargs: object) -> object:
    with path.open("rb") as handle:
        return client.audio.transcriptions.create(model="whisper-1", file=handle, **kwargs)  # type: ignore[call-overload]


def test_json_and_text_formats(client: OpenAI) -> None:
    result = _transcribe(client)
    assert word_error_rate([JFK_TEXT], [result.text]) < 0.1  # type: ignore[attr-defined]
    text = _transcribe(client, response_format="text")
    assert isinstance(text, str) and JFK_PHRASE in text.lower()


def test_subtitle_formats_parse(client: OpenAI) -> None:
    cues = list(srt.parse(str(_transcribe(client, response_format="srt"))))
    assert len(cues) >= 1 and cues[-1].end.total_seconds() <= 11.5
    assert JFK_PHRASE in " ".join(cue.content for cue in cues).lower()
    vtt = str(_transcribe(client, response_format="vtt"))
    assert vtt.startswith("WEBVTT") and "-->" in vtt


def test_verbose_json_has_segments_and_scores(client: OpenAI) -> None:
    result = _transcribe(client, response_format="verbose_json")
    assert result.language == "en" and 10.5 < result.duration < 11.5  # type: ignore[attr-defined]
    segments = result.segments  # type: ignore[attr-defined]
    assert segments and all(-1.0 < s.avg_logprob <= 0 and 0 <= s.no_speech_prob < 0.5 for s in segments)
    assert all(0.5 < s.compression_ratio < 2.4 for s in segments)
    assert [s.id for s in segments] == list(range(len(segments)))


def test_word_timestamps(client: OpenAI) -> None:
    result = _transcribe(client, response_format="verbose_json", timestamp_granularities=["word"])
    words = result.words  # type: ignore[attr-defined]
    assert [w.word for w in words[:3]] == ["And", "so", "my"]
    starts = [w.start for w in words]
    assert starts == sorted(starts) and all(w.end >= w.start for w in words) and words[-1].end <= 11.2
    country = [w for w in words if w.word.strip(",.").lower() == "country"]
    assert len(country) == 2 and 5.0 < country[0].start < 7.5  # JFK says the first "country" near 6 s


def test_logprobs_included(client: OpenAI) -> None:
    result = _transcribe(client, include=["logprobs"])
    logprobs = result.logprobs  # type: ignore[attr-defined]
    assert len(logprobs) >= 20 and all(item.logprob <= 0 for item in logprobs)


def test_sse_stream_deltas_join_to_done_text(client: OpenAI) -> None:
    with (DATA / "fleurs" / "fleurs-en-001.ogg").open("rb") as handle:
        stream = client.audio.transcriptions.create(model="whisper-1", file=handle, stream=True)
        events = list(stream)
    assert events[-1].type == "transcript.text.done"
    deltas = "".join(event.delta for event in events[:-1])  # type: ignore[union-attr]
    assert deltas and all(event.type == "transcript.text.delta" for event in events[:-1])
    assert deltas == events[-1].text  # type: ignore[union-attr]
    reference = fleurs("en")[1]["reference"]
    assert word_error_rate([reference], [deltas]) < 0.3


@pytest.mark.base
def test_translation_into_english_with_base(client: OpenAI) -> None:
    with (DATA / "fleurs" / "fleurs-de-000.ogg").open("rb") as handle:
        result = client.audio.translations.create(model="base", file=handle, response_format="verbose_json")
    english = {"the", "and", "of", "to", "in", "is", "a", "that"}
    words = {word.strip(",.").lower() for word in result.text.split()}
    assert result.task == "translate" and len(words & english) >= 2, result.text
    with (DATA / "fleurs" / "fleurs-de-000.ogg").open("rb") as handle:
        text = client.audio.translations.create(model="base", file=handle, response_format="text")
    assert isinstance(text, str) and len(text.split()) >= 5


def test_translation_refused_on_english_only_model(client: OpenAI) -> None:
    with JFK.open("rb") as handle, pytest.raises(openai.BadRequestError, match="English-only"):
        client.audio.translations.create(model="tiny.en", file=handle)


def test_models_list_and_get(client: OpenAI, http: TestClient) -> None:
    _transcribe(client)
    ids = [model.id for model in client.models.list()]
    assert {"whisper-1", "tiny.en", "base"} <= set(ids)
    assert http.get("/v1/models/tiny.en").json()["loaded"] is True
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [(b"", 400, "empty_audio"), (b"RIFF\x00\x00junk" * 200, 415, "unsupported_media")],
)
def test_bad_uploads_get_status_codes(http: TestClient, content: bytes, status: int, code: str) -> None:
    response = http.post("/v1/audio/transcriptions", files={"file": ("x.wav", content)}, data={"model": "whisper-1"})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_bad_parameters_are_400(http: TestClient) -> None:
    for data, param in [
        ({"response_format": "xml"}, "response_format"),
        ({"model": "gpt-4o"}, "model"),
        ({"language": "hi"}, "language"),
        ({"timestamp_granularities[]": "char"}, "timestamp_granularities"),
        ({"temperature": "2"}, "temperature"),
    ]:
        with JFK.open("rb") as handle:
            response = http.post("/v1/audio/transcriptions", files={"file": handle}, data=data)
        assert response.status_code == 400, (param, response.text)
        assert response.json()["error"]["type"] == "invalid_request_error"


def test_missing_file_is_400(http: TestClient) -> None:
    response = http.post("/v1/audio/transcriptions", data={"model": "whisper-1"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "file"


def _start_all(client: OpenAI, clips: list[Path]) -> tuple[list[threading.Thread], list[object]]:
    """Transcribe `clips` at once, a thread each; the list fills with each result or the error it raised."""
    outcomes: list[object] = [None] * len(clips)

    def call(index: int) -> None:
        try:
            outcomes[index] = _transcribe(client, clips[index])
        except Exception as exc:  # kept, to be reported by the test
            outcomes[index] = exc

    threads = [threading.Thread(target=call, args=(index,)) for index in range(len(clips))]
    for thread in threads:
        thread.start()
    return threads, outcomes


def _assert_all_transcribed(clips: list[Path], outcomes: list[object]) -> None:
    """Every request succeeded with its own clip's text (close to its reference, not another clip's)."""
    references = {Path(item["file"]).name: item["reference"] for item in fleurs("en")}
    texts = [getattr(outcome, "text", None) for outcome in outcomes]
    assert all(isinstance(text, str) for text in texts), outcomes  # not one failed
    assert len(texts) == len(clips)
    for clip, text in zip(clips, texts, strict=True):
        scores = {name: word_error_rate([reference], [str(text)]) for name, reference in references.items()}
        own = scores.pop(clip.name)
        assert own < 0.2 and own < min(scores.values()), (clip.name, text, own)


def test_health_answers_while_workers_are_busy(http: TestClient, client: OpenAI) -> None:
    clips = [DATA / "fleurs" / f"fleurs-en-00{i}.ogg" for i in (3, 4, 1)]
    threads, outcomes = _start_all(client, clips)
    time.sleep(0.3)
    assert any(thread.is_alive() for thread in threads)  # the health check comes while they run
    started = time.perf_counter()
    assert http.get("/health").json() == {"status": "ok"}
    assert time.perf_counter() - started < 0.25
    for thread in threads:
        thread.join()
    _assert_all_transcribed(clips, outcomes)


def test_concurrent_requests_share_the_engine(http: TestClient, client: OpenAI) -> None:
    """Four one-window requests at once: on one worker (a GPU) they share batches; on several
    single-threaded workers (a CPU) each worker decodes one window at a time, all workers busy."""

    def calls_and_windows() -> tuple[float, float]:
        families = {f.name: f for f in text_string_to_metric_families(http.get("/metrics").text)}
        samples = families["dattavani_batch_windows"].samples
        return tuple(sum(s.value for s in samples if s.name.endswith(end)) for end in ("_count", "_sum"))  # type: ignore[return-value]

    with http.app.state.server.models.use("tiny.en") as entry:  # type: ignore[attr-defined]
        slots = entry.batcher.slots
    calls, windows = calls_and_windows()
    # one window each, all of one encoder context (trimmed to 15 s): the windows may share a batch
    clips = [DATA / "fleurs" / f"fleurs-en-00{i}.ogg" for i in (0, 1, 0, 1)]
    threads, outcomes = _start_all(client, clips)
    for thread in threads:
        thread.join()
    _assert_all_transcribed(clips, outcomes)  # four answers, each with its own clip's text
    calls_after, windows_after = calls_and_windows()
    assert windows_after - windows == 4
    if slots == 1:
        assert 1 <= calls_after - calls < 4  # fewer engine calls than windows
    else:
        assert calls_after - calls == 4  # one window per call, the workers side by side


def test_metrics_parse_and_count(http: TestClient) -> None:
    families = {family.name: family for family in text_string_to_metric_families(http.get("/metrics").text)}
    for name in (
        "dattavani_http_requests",
        "dattavani_http_request_seconds",
        "dattavani_audio_seconds",
        "dattavani_realtime_factor",
        "dattavani_queue_windows",
        "dattavani_batch_windows",
        "dattavani_model_load_seconds",
        "dattavani_jobs",
    ):
        assert name in families, name
    statuses = {s.labels["status"] for s in families["dattavani_http_requests"].samples if s.labels}
    assert {"200", "400", "415"} <= statuses


def test_ready_after_test_decode(http: TestClient) -> None:
    response = http.get("/ready")
    assert response.status_code == 200 and "tiny.en" in response.json()["models"]


def test_request_id_echoed(http: TestClient) -> None:
    assert http.get("/health", headers={"X-Request-ID": "abc123"}).headers["x-request-id"] == "abc123"
    assert len(http.get("/health").headers["x-request-id"]) == 32


def test_api_keys_rate_limit_and_upload_limit(tmp_path: Path) -> None:
    settings = {"api_keys": ["sekret"], "rate_limit_per_minute": 3, "max_upload_mb": 0.05}
    with _app_client(tmp_path, **settings) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/v1/models").status_code == 401
        assert (
            http.get("/v1/models", headers={"Authorization": "Bearer wrong"}).json()["error"]["code"]
            == "invalid_api_key"
        )
        good = {"Authorization": "Bearer sekret"}
        with JFK.open("rb") as handle:
            response = http.post("/v1/audio/transcriptions", files={"file": handle}, headers=good)
        assert response.status_code == 413 and response.json()["error"]["code"] == "payload_too_large"
        statuses = [http.get("/v1/models", headers=good).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]  # the 413 was refused before any token was spent
        limited = http.get("/v1/models", headers=good)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["type"] == "rate_limit_error"
    state_files = ("jobs.sqlite3", "jobs.sqlite3-wal", "jobs.sqlite3-shm", ".lock")
    kept = [path for path in tmp_path.rglob("*") if path.is_file() and path.name not in state_files]
    assert kept == []  # nothing of the refused upload stayed behind


def test_streamed_body_over_limit_is_413(tmp_path: Path) -> None:
    """No Content-Length: the limit is enforced while the body streams in."""
    with _app_client(tmp_path, max_upload_mb=0.05) as http:
        body = JFK.read_bytes()
        boundary = "b0undary"
        payload = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="jfk.flac"\r\n\r\n'.encode()
            + body
            + f"\r\n--{boundary}--\r\n".encode()
        )

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(payload), 8192):
                yield payload[start : start + 8192]

        response = http.post(
            "/v1/audio/transcriptions",
            content=chunks(),
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
    assert response.status_code == 413


def test_busy_server_answers_429(tmp_path: Path) -> None:
    with _app_client(tmp_path, max_pending_requests=1) as http:
        client = OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)
        clips = [DATA / "fleurs" / "fleurs-en-003.ogg"] * 3
        threads, outcomes = _start_all(client, clips)
        for thread in threads:
            thread.join()
    refused = [outcome for outcome in outcomes if isinstance(outcome, openai.RateLimitError)]
    served = [(clip, outcome) for clip, outcome in zip(clips, outcomes, strict=True) if outcome not in refused]
    assert refused and served, outcomes  # one at a time: the others are refused, not failed
    assert all(int(error.response.headers["retry-after"]) >= 1 for error in refused)
    _assert_all_transcribed([clip for clip, _ in served], [outcome for _, outcome in served])


def test_cors_preflight_when_configured(tmp_path: Path) -> None:
    with _app_client(tmp_path, cors_origins=["http://captions.example"]) as http:
        response = http.options(
            "/v1/audio/transcriptions",
            headers={"Origin": "http://captions.example", "Access-Control-Request-Method": "POST"},
        )
        assert response.headers["access-control-allow-origin"] == "http://captions.example"
        other = http.get("/health", headers={"Origin": "http://elsewhere.example"})
        assert "access-control-allow-origin" not in other.headers


def test_unloadable_default_model_is_503(tmp_path: Path) -> None:
    with _app_client(tmp_path, default_model="no-such-model") as http:
        assert http.get("/health").status_code == 200
        ready = http.get("/ready")
        assert ready.status_code == 503 and "no-such-model" in ready.json()["error"]
        with JFK.open("rb") as handle:
            response = http.post("/v1/audio/transcriptions", files={"file": handle})
        assert response.status_code == 503 and response.json()["error"]["code"] == "model_unavailable"
