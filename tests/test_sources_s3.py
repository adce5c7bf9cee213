"""s3:// sources against moto in server mode over real loopback HTTP."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest

from conftest import DATA, JFK
from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.core.errors import UnreadablePathError
from dattavani_asr.io.sources import source_for
from dattavani_asr.io.sources.cloud import CloudSink, CloudSource

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

BUCKET = "archive"
FLEURS = DATA / "fleurs"
LAYOUT = {
    "talks/jfk.flac": JFK,
    "talks/en/fleurs-en-000.ogg": FLEURS / "fleurs-en-000.ogg",
    "talks/en/deeper/fleurs-en-001.ogg": FLEURS / "fleurs-en-001.ogg",
    "talks/fr/fleurs-fr-000.ogg": FLEURS / "fleurs-fr-000.ogg",
    "talks/gen-transcript/old.ogg": FLEURS / "fleurs-fr-001.ogg",  # our own output folder: skipped
    "other/fleurs-de-000.ogg": FLEURS / "fleurs-de-000.ogg",  # outside the prefix
}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A bucket holding LAYOUT (plus notes.txt), reachable through AWS_ENDPOINT_URL."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": moto_endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "FSSPEC_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    for key, path in LAYOUT.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
    client.put_object(Bucket=BUCKET, Key="talks/notes.txt", Body=b"not audio")
    yield client
    for entry in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=entry["Key"])
    client.delete_bucket(Bucket=BUCKET)


def test_expand_lists_the_prefix_recursively(s3: Any) -> None:
    source = source_for(f"s3://{BUCKET}/talks")
    assert isinstance(source, CloudSource)
    items = list(source.expand(f"s3://{BUCKET}/talks/", None))
    relatives = [str(item.relative) for item in items]
    assert relatives == ["en/deeper/fleurs-en-001.ogg", "en/fleurs-en-000.ogg", "fr/fleurs-fr-000.ogg", "jfk.flac"]
    by_name = {item.name: item for item in items}
    jfk = by_name["jfk.flac"]
    assert jfk.uri == f"s3://{BUCKET}/talks/jfk.flac"
    assert jfk.size == JFK.stat().st_size
    head = s3.head_object(Bucket=BUCKET, Key="talks/jfk.flac")
    assert jfk.version == head["ETag"].strip('"')
    assert all(item.size == LAYOUT[item.uri.split("/", 3)[3]].stat().st_size for item in items)


def test_pattern_filters_names(s3: Any) -> None:
    items = list(CloudSource("s3").expand(f"s3://{BUCKET}/talks", "fleurs-en-*"))
    assert [item.name for item in items] == ["fleurs-en-001.ogg", "fleurs-en-000.ogg"]


def test_single_object_and_whole_bucket(s3: Any) -> None:
    [item] = list(CloudSource("s3").expand(f"s3://{BUCKET}/talks/fr/fleurs-fr-000.ogg", None))
    assert item.relative == PurePosixPath("fleurs-fr-000.ogg")
    everything = list(CloudSource("s3").expand(f"s3://{BUCKET}", None))
    assert {str(entry.relative) for entry in everything} >= {"talks/jfk.flac", "other/fleurs-de-000.ogg"}


def test_missing_prefix_is_unreadable(s3: Any) -> None:
    with pytest.raises(UnreadablePathError, match="no such"):
        list(CloudSource("s3").expand(f"s3://{BUCKET}/nothing-here", None))
    with pytest.raises(UnreadablePathError):
        list(CloudSource("s3").expand("s3://no-such-bucket-xyz/a", None))


def test_open_streams_and_decodes(s3: Any) -> None:
    source = CloudSource("s3")
    [item] = list(source.expand(f"s3://{BUCKET}/talks/jfk.flac", None))
    with source.open(item) as stream:
        assert stream.seekable()
        decoded = decode_audio(stream)
    assert len(decoded) / SAMPLE_RATE == pytest.approx(11.0)
    np.testing.assert_array_equal(decoded, decode_audio(JFK))


def test_default_sink_writes_beside_each_object(s3: Any) -> None:
    source = CloudSource("s3")
    sink = source.default_sink()
    assert isinstance(sink, CloudSink)
    items = {item.name: item for item in source.expand(f"s3://{BUCKET}/talks", None)}
    where = sink.write(items["fleurs-en-000.ogg"], "fleurs-en-000.txt", "hello world\n")
    assert where == f"s3://{BUCKET}/talks/en/gen-transcript/fleurs-en-000.txt"
    body = s3.get_object(Bucket=BUCKET, Key="talks/en/gen-transcript/fleurs-en-000.txt")["Body"].read()
    assert body == b"hello world\n"
    sink.write(items["jfk.flac"], "jfk.srt", "1\n00:00:00,000 --> 00:00:01,000\nAsk not\n")
    key = "talks/gen-transcript/jfk.srt"
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode().endswith("Ask not\n")
    # Transcripts never come back as inputs.
    again = [str(item.relative) for item in source.expand(f"s3://{BUCKET}/talks", None)]
    assert not any("gen-transcript" in relative for relative in again)


def test_batch_over_an_s3_prefix_writes_beside_each_object(s3: Any, tmp_path: Path) -> None:
    from dattavani_asr import Transcriber, make_options
    from dattavani_asr.batch import BatchConfig, BatchRun
    from dattavani_asr.evaluation import normalize

    config = BatchConfig(specs=[f"s3://{BUCKET}/talks/en"], formats=["txt", "srt"], state_dir=tmp_path / "state")
    summary = BatchRun(config, Transcriber("tiny.en"), make_options()).run()
    assert (summary.files, summary.done, summary.failed) == (2, 2, 0)
    body = s3.get_object(Bucket=BUCKET, Key="talks/en/deeper/gen-transcript/fleurs-en-001.txt")["Body"].read()
    assert "capital letter" in normalize(body.decode())
    srt = s3.get_object(Bucket=BUCKET, Key="talks/en/gen-transcript/fleurs-en-000.srt")["Body"].read().decode()
    assert srt.startswith("1\n00:00:")


def test_batch_writes_through_an_s3_output_dir(s3: Any, tmp_path: Path) -> None:
    from dattavani_asr import Transcriber, make_options
    from dattavani_asr.batch import BatchConfig, BatchRun
    from dattavani_asr.core.errors import InvalidOptionError
    from dattavani_asr.evaluation import normalize

    folder = tmp_path / "local" / "day1"
    folder.mkdir(parents=True)
    (folder / "jfk.flac").write_bytes(JFK.read_bytes())
    specs = [str(tmp_path / "local"), f"s3://{BUCKET}/talks/en/fleurs-en-000.ogg"]
    config = BatchConfig(specs=specs, formats=["txt"], output_dir=f"s3://{BUCKET}/out", state_dir=tmp_path / "state")
    summary = BatchRun(config, Transcriber("tiny.en"), make_options()).run()
    assert (summary.done, summary.failed) == (2, 0)
    local = s3.get_object(Bucket=BUCKET, Key="out/day1/jfk.txt")["Body"].read().decode()
    assert "ask not what your country" in normalize(local)
    remote = s3.get_object(Bucket=BUCKET, Key=f"out/s3/{BUCKET}/talks/en/fleurs-en-000.txt")["Body"].read().decode()
    assert "communication channels" in normalize(remote)
    assert not (tmp_path / "s3:").exists() and not Path("s3:").exists()
    bad = BatchConfig(specs=specs, formats=["txt"], output_dir="ftp://host/out", state_dir=tmp_path / "state")
    with pytest.raises(InvalidOptionError, match="cannot write there"):
        BatchRun(bad, Transcriber("tiny.en"), make_options()).run()


def test_object_keys_that_climb_out_of_the_output_dir_write_nothing(s3: Any, tmp_path: Path) -> None:
    from dattavani_asr import Transcriber, make_options
    from dattavani_asr.batch import BatchConfig, BatchRun

    s3.put_object(Bucket=BUCKET, Key="talks/../../../escape.flac", Body=JFK.read_bytes())  # never listed
    s3.put_object(Bucket=BUCKET, Key="talks/..\\..\\escape.flac", Body=JFK.read_bytes())  # refused
    out = tmp_path / "deep" / "er" / "out"
    config = BatchConfig(specs=[f"s3://{BUCKET}/talks/"], formats=["txt"], output_dir=str(out), state_dir=out / ".st")
    summary = BatchRun(config, Transcriber("tiny.en"), make_options()).run()
    assert (summary.files, summary.done, summary.failed) == (5, 4, 1)
    written = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*.txt"))
    assert written == [
        f"deep/er/out/{name}.txt" for name in ("en/deeper/fleurs-en-001", "en/fleurs-en-000", "fr/fleurs-fr-000", "jfk")
    ]
