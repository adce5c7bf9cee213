"""HTTP(S) sources against a real loopback server: HEAD for identity, Range requests for streaming."""

from __future__ import annotations

import io
import socket
import wave
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from conftest import DATA, JFK
from dattavani_asr.audio import SAMPLE_RATE, decode_audio
from dattavani_asr.errors import InvalidOptionError, UnreadablePathError
from dattavani_asr.sources import source_for
from dattavani_asr.sources.http import DEFAULT_BLOCK_SIZE, HttpSource
from http_server import FileServer, serve_files

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")

FLEURS = DATA / "fleurs" / "fleurs-en-000.ogg"


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


def test_missing_url_is_unreadable(server: FileServer) -> None:
    with pytest.raises(UnreadablePathError, match="404") as caught:
        list(HttpSource().expand(f"{server.url}/audio/missing.mp3", None))
    assert "\n" not in str(caught.value)


def test_refused_connection_is_unreadable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(UnreadablePathError, match=f"127.0.0.1:{port}") as caught:
        list(HttpSource().expand(f"http://127.0.0.1:{port}/clip.mp3", None))
    assert "\n" not in str(caught.value)


def test_default_sink_asks_for_output_dir() -> None:
    with pytest.raises(InvalidOptionError, match="--output-dir"):
        HttpSource().default_sink()


def test_batch_over_urls_needs_and_uses_output_dir(server: FileServer, tmp_path: Path) -> None:
    from dattavani_asr import Transcriber, make_options
    from dattavani_asr.batch import BatchConfig, BatchRun
    from dattavani_asr.errors import InvalidOptionError
    from dattavani_asr.evaluation import normalize

    urls = [f"{server.url}/audio/jfk.flac"]
    with pytest.raises(InvalidOptionError, match="output-dir"):
        BatchRun(BatchConfig(specs=urls[:1], formats=["txt"]), Transcriber("tiny.en"), make_options()).run()
    manifest = tmp_path / "urls.txt"
    manifest.write_text(urls[0] + "\n")
    config = BatchConfig(specs=[str(manifest)], formats=["txt"], output_dir=tmp_path / "out")
    summary = BatchRun(config, Transcriber("tiny.en"), make_options()).run()
    assert (summary.done, summary.failed) == (1, 0)
    assert "ask not what your country" in normalize((tmp_path / "out" / "jfk.txt").read_text())
    assert all(r.status in (200, 206) for r in server.responses("/audio/jfk.flac"))
