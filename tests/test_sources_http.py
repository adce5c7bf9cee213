"""HTTP(S) sources against a real loopback server: HEAD for identity, Range requests for streaming,
downloads when the server has no ranges, retries, the circuit breaker and the download cap."""

from __future__ import annotations

import io
import os
import socket
import tempfile
import time
import wave
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from conftest import DATA, JFK, JFK_PHRASE
from dattavani_asr import Transcriber
from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.core.errors import InvalidOptionError, UnreadablePathError
from dattavani_asr.evaluation import normalize
from dattavani_asr.io.retrying import BREAKER_FAILURES, RetryPolicy, retry_after_seconds
from dattavani_asr.io.sources import source_for
from dattavani_asr.io.sources.http import DEFAULT_BLOCK_SIZE, HttpSource
from http_server import FileServer, serve_files

FLEURS = DATA / "fleurs" / "fleurs-en-000.ogg"
FAST = RetryPolicy(attempts=4, backoff=0.01, max_backoff=0.05, max_retry_after=0.3)  # real retries, short waits


def _long_wav() -> bytes:
    """About 176 s of 16 kHz mono PCM (5.6 MB): JFK sixteen times over."""
    samples = np.tile(decode_audio(JFK), 16)
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


@pytest.fixture(scope="module")
def long_wav() -> bytes:
    return _long_wav()


@pytest.fixture
def server(long_wav: bytes) -> Iterator[FileServer]:
    files = {
        "/audio/jfk.flac": JFK.read_bytes(),
        "/audio/speech%20en.ogg": FLEURS.read_bytes(),
        "/audio/long.wav": long_wav,
    }
    with serve_files(files) as running:
        yield running


def _item(url: str) -> object:
    items = list(HttpSource().expand(url, None))
    assert len(items) == 1
    return items[0]


def test_url_is_claimed_by_http_source(server: FileServer) -> None:
    source = source_for(f"{server.url}/audio/jfk.flac")
    assert isinstance(source, HttpSource)


def test_expand_heads_for_size_and_version(server: FileServer) -> None:
    url = f"{server.url}/audio/jfk.flac"
    [item] = list(HttpSource().expand(url, "*.mp3"))  # an explicit URL ignores the pattern
    assert item.uri == url
    assert item.name == "jfk.flac"
    assert item.relative == PurePosixPath("jfk.flac")
    assert item.size == JFK.stat().st_size
    assert item.version and item.version == item.version.strip('"')
    assert item.local_path is None
    assert [entry.method for entry in server.log] == ["HEAD"]


def test_percent_encoded_name_is_decoded(server: FileServer) -> None:
    [item] = list(HttpSource().expand(f"{server.url}/audio/speech%20en.ogg", None))
    assert item.name == "speech en.ogg"
    assert item.stem == "speech en"


@pytest.mark.parametrize(("path", "local"), [("/audio/jfk.flac", JFK), ("/audio/speech%20en.ogg", FLEURS)])
def test_open_streams_and_decodes_like_the_local_file(server: FileServer, path: str, local: object) -> None:
    source = HttpSource()
    [item] = list(source.expand(server.url + path, None))
    with source.open(item) as stream:
        assert stream.seekable()
        decoded = decode_audio(stream)
    expected = decode_audio(local)  # type: ignore[arg-type]
    np.testing.assert_array_equal(decoded, expected)
    if path.endswith(".flac"):
        assert len(decoded) / SAMPLE_RATE == pytest.approx(11.0)
    gets = server.responses(path)
    assert gets and all(entry.range is not None and entry.status in (206, 416) for entry in gets)


def test_large_file_is_read_in_ranges_never_whole(server: FileServer, long_wav: bytes, tmp_path: object) -> None:
    source = HttpSource()
    [item] = list(source.expand(f"{server.url}/audio/long.wav", None))
    assert item.size == len(long_wav) > 5_000_000
    with source.open(item) as stream:
        decoded = decode_audio(stream)
    np.testing.assert_array_equal(decoded, decode_audio(long_wav))
    gets = server.responses("/audio/long.wav")
    assert len(gets) >= 5
    assert all(entry.range is not None for entry in gets)
    assert max(entry.body_bytes for entry in gets) <= 2 * DEFAULT_BLOCK_SIZE + 65536 < len(long_wav)
    assert sum(entry.body_bytes for entry in gets) < 1.5 * len(long_wav)


def _deleted_files() -> list[str]:
    """What this process's open descriptors point to that has no name any more (anonymous temp files)."""
    targets = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:  # closed between listing and reading
            continue
    return sorted(target for target in targets if target.endswith(" (deleted)"))


def _requests(server: FileServer) -> list[tuple[str, int]]:
    return [(entry.method, entry.status) for entry in server.log]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to see open descriptors")
def test_server_without_ranges_is_downloaded_to_an_anonymous_temp_file(tiny: Transcriber) -> None:
    url_path = "/talks/jfk.flac"
    temp_before = sorted(os.listdir(tempfile.gettempdir()))
    with serve_files({url_path: JFK.read_bytes()}, accept_ranges=False, honour_ranges=False) as server:
        source = HttpSource(policy=FAST)
        [item] = list(source.expand(server.url + url_path, None))
        before = _deleted_files()
        with source.open(item) as stream:
            assert stream.seekable()
            assert len(_deleted_files()) == len(before) + 1  # the download has no name: nothing to clean up
            transcript = tiny.transcribe(stream)
        assert _deleted_files() == before
    assert sorted(os.listdir(tempfile.gettempdir())) == temp_before
    assert JFK_PHRASE in normalize(transcript.text)
    assert transcript.source == server.url + url_path
    assert [(entry.method, entry.range, entry.status) for entry in server.log] == [
        ("HEAD", None, 200),
        ("GET", None, 200),
    ]


def test_range_request_answered_with_the_whole_file_falls_back_to_download(server: FileServer) -> None:
    server.honour_ranges = False  # says Accept-Ranges, then answers 200
    source = HttpSource(policy=FAST)
    [item] = list(source.expand(f"{server.url}/audio/jfk.flac", None))
    with source.open(item) as stream:
        np.testing.assert_array_equal(decode_audio(stream), decode_audio(JFK))
    gets = server.responses("/audio/jfk.flac")
    assert [(entry.range is not None, entry.status) for entry in gets] == [(True, 200)]


def test_head_refused_falls_back_to_a_get_whose_body_is_not_read(server: FileServer) -> None:
    server.head = False
    source = HttpSource(policy=FAST)
    [item] = list(source.expand(f"{server.url}/audio/jfk.flac", None))
    assert item.size == JFK.stat().st_size and item.version
    assert _requests(server) == [("HEAD", 405), ("GET", 200)]
    with source.open(item) as stream:
        np.testing.assert_array_equal(decode_audio(stream), decode_audio(JFK))


def test_redirects_are_followed(server: FileServer) -> None:
    server.redirects["/old/jfk.flac"] = "/audio/jfk.flac"
    source = HttpSource(policy=FAST)
    [item] = list(source.expand(f"{server.url}/old/jfk.flac", None))
    assert item.name == "jfk.flac" and item.size == JFK.stat().st_size
    with source.open(item) as stream:
        np.testing.assert_array_equal(decode_audio(stream), decode_audio(JFK))


def test_server_errors_are_retried_until_it_answers(server: FileServer) -> None:
    server.fail_first = 2
    source = HttpSource(policy=FAST)
    [item] = list(source.expand(f"{server.url}/audio/jfk.flac", None))
    with source.open(item) as stream:
        np.testing.assert_array_equal(decode_audio(stream), decode_audio(JFK))
    assert _requests(server)[:4] == [("HEAD", 503), ("HEAD", 503), ("HEAD", 200), ("GET", 206)]


def test_retry_after_is_honoured_up_to_the_cap(server: FileServer) -> None:
    server.fail_first, server.fail_status, server.retry_after = 1, 429, "30"
    started = time.monotonic()
    [item] = list(HttpSource(policy=FAST).expand(f"{server.url}/audio/jfk.flac", None))
    assert FAST.max_retry_after <= time.monotonic() - started < 5  # waited as asked, but no longer than the cap
    assert item.size == JFK.stat().st_size
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date already past: no wait
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds("soon") is None


@pytest.mark.parametrize(
    ("path", "status", "message", "requests"),
    [
        ("/audio/missing.mp3", 404, "not found (HTTP 404)", [("HEAD", 404)]),
        ("/audio/secret.mp3", 403, "cannot read (HTTP 403 Forbidden)", [("HEAD", 403), ("GET", 403)]),
    ],
)
def test_client_errors_fail_at_once(
    server: FileServer, path: str, status: int, message: str, requests: list[tuple[str, int]]
) -> None:
    server.statuses[path] = status
    with pytest.raises(UnreadablePathError) as caught:
        list(HttpSource(policy=FAST).expand(server.url + path, None))
    assert str(caught.value) == f"{server.url}{path}: {message}"
    assert _requests(server) == requests  # a 403 HEAD may be a URL signed for GET only: one GET to be sure


def test_breaker_opens_after_repeated_failures_and_then_fails_fast(server: FileServer) -> None:
    server.fail_first = 1000
    source = HttpSource(policy=RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05))
    url = f"{server.url}/audio/jfk.flac"
    host = url.split("/")[2]
    with pytest.raises(UnreadablePathError, match=r"HTTP 503 Service Unavailable, after 3 attempts"):
        list(source.expand(url, None))
    assert len(server.log) == 3
    with pytest.raises(UnreadablePathError, match=f"{host} failed repeatedly.*circuit open"):
        list(source.expand(url, None))
    assert len(server.log) == BREAKER_FAILURES  # opened at the 5th failure, mid-way through the retries
    started = time.monotonic()
    with pytest.raises(UnreadablePathError, match="circuit open") as caught:
        list(source.expand(url, None))
    assert time.monotonic() - started < 0.5 and len(server.log) == BREAKER_FAILURES  # nothing sent, no waiting
    assert "\n" not in str(caught.value)


def test_connection_dropped_mid_file_is_retried_from_where_it_stopped(server: FileServer, long_wav: bytes) -> None:
    server.cut = {4}  # HEAD, first block, second block, then the third block breaks off half-way
    source = HttpSource(policy=FAST)
    [item] = list(source.expand(f"{server.url}/audio/long.wav", None))
    with source.open(item) as stream:
        np.testing.assert_array_equal(decode_audio(stream), decode_audio(long_wav))
    broken, retried = server.log[3], server.log[4]
    assert broken.body_bytes == DEFAULT_BLOCK_SIZE // 2 and retried.range == broken.range
    assert retried.body_bytes == DEFAULT_BLOCK_SIZE


def test_download_cut_off_is_downloaded_again() -> None:
    with serve_files({"/jfk.flac": JFK.read_bytes()}, accept_ranges=False, honour_ranges=False, cut={2}) as server:
        source = HttpSource(policy=FAST)
        [item] = list(source.expand(f"{server.url}/jfk.flac", None))
        with source.open(item) as stream:
            np.testing.assert_array_equal(decode_audio(stream), decode_audio(JFK))
    assert [entry.body_bytes for entry in server.log] == [0, JFK.stat().st_size // 2, JFK.stat().st_size]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
def test_download_over_the_cap_is_refused(long_wav: bytes, monkeypatch: pytest.MonkeyPatch, declared: bool) -> None:
    monkeypatch.setenv("DATTAVANI_MAX_DOWNLOAD_MB", "1")
    files = {"/long.wav": long_wav}
    with serve_files(files, accept_ranges=False, honour_ranges=False, content_length=declared) as server:
        source = HttpSource(policy=FAST)
        [item] = list(source.expand(f"{server.url}/long.wav", None))
        before = _deleted_files()
        with pytest.raises(UnreadablePathError, match="larger than the 1 MB download limit") as caught:
            source.open(item)
        assert _deleted_files() == before
    assert "DATTAVANI_MAX_DOWNLOAD_MB" in str(caught.value) and "\n" not in str(caught.value)
    assert len(server.responses("/long.wav")) == 1  # not retried


def test_refused_connection_is_retried_then_unreadable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UnreadablePathError, match=f"127.0.0.1:{port}.*ConnectError.*after 4 attempts") as caught:
        list(HttpSource(policy=FAST).expand(f"http://127.0.0.1:{port}/clip.mp3", None))
    assert "\n" not in str(caught.value)


def test_default_sink_asks_for_output_dir() -> None:
    with pytest.raises(InvalidOptionError, match="--output-dir"):
        HttpSource().default_sink()


def test_batch_over_urls_needs_and_uses_output_dir(server: FileServer, tmp_path: Path) -> None:
    from dattavani_asr import Transcriber, make_options
    from dattavani_asr.batch import BatchConfig, BatchRun
    from dattavani_asr.core.errors import InvalidOptionError
    from dattavani_asr.evaluation import normalize

    urls = [f"{server.url}/audio/jfk.flac"]
    state = tmp_path / "state"
    alone = BatchRun(
        BatchConfig(specs=urls[:1], formats=["txt"], state_dir=state), Transcriber("tiny.en"), make_options()
    )
    refused = alone.run()  # a failed item (nothing to write beside a URL), not an exception: the run goes on
    assert (refused.files, refused.failed) == (1, 1)
    assert (
        refused.failures[0]["error"] == InvalidOptionError.__name__ and "output-dir" in refused.failures[0]["message"]
    )
    manifest = tmp_path / "urls.txt"
    manifest.write_text(urls[0] + "\n")
    config = BatchConfig(specs=[str(manifest)], formats=["txt"], output_dir=tmp_path / "out")
    summary = BatchRun(config, Transcriber("tiny.en"), make_options()).run()
    assert (summary.done, summary.failed) == (1, 0)
    assert "ask not what your country" in normalize((tmp_path / "out" / "jfk.txt").read_text())
    assert all(r.status in (200, 206) for r in server.responses("/audio/jfk.flac"))
