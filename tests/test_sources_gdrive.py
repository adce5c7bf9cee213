"""Google Drive sources and sinks against a local stand-in of the Drive v3 API over loopback HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pytest

from conftest import DATA, JFK
from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.core.errors import UnreadablePathError
from dattavani_asr.io.sources import source_for
from dattavani_asr.io.sources.gdrive import DriveClient, DriveSink, DriveSource, drive_id
from dattavani_asr.io.sources.http import HttpSource
from fake_drive import FOLDER, FakeDrive, serve_drive

pytest.importorskip("requests")

FLEURS = DATA / "fleurs"


@dataclass
class Tree:
    drive: FakeDrive
    root: str
    sub: str
    old_output: str
    ids: dict[str, str]


@pytest.fixture
def tree(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Tree]:
    """Archive/ holds 3 audio files, a Google Doc, a PDF and `Session 2/` (2 audio files and an old
    `gen-transcript/`): 6 children, so 3 pages of 2."""
    for key in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_OAUTH_ACCESS_TOKEN", "GOOGLE_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    drive = FakeDrive(page_size=2)
    root = drive.add("Archive", None, FOLDER)
    ids = {
        "a.flac": drive.add("a.flac", root, "audio/flac", JFK.read_bytes()),
        "b.ogg": drive.add("b.ogg", root, "audio/ogg", (FLEURS / "fleurs-en-000.ogg").read_bytes()),
        "recording": drive.add("recording", root, "audio/ogg", (FLEURS / "fleurs-en-001.ogg").read_bytes()),
    }
    drive.add("Meeting notes", root, "application/vnd.google-apps.document")
    drive.add("notes.pdf", root, "application/pdf", b"%PDF-1.4")
    sub = drive.add("Session 2", root, FOLDER)
    ids["c.ogg"] = drive.add("c.ogg", sub, "audio/ogg", (FLEURS / "fleurs-fr-000.ogg").read_bytes())
    ids["d.mp3"] = drive.add("d.mp3", sub, "application/octet-stream", (DATA / "misc" / "hotwords.mp3").read_bytes())
    old_output = drive.add("gen-transcript", sub, FOLDER)
    drive.add("old.ogg", old_output, "audio/ogg", b"OggS")
    with serve_drive(drive):
        monkeypatch.setenv("GOOGLE_DRIVE_API_URL", drive.url)
        yield Tree(drive, root, sub, old_output, ids)


@pytest.mark.parametrize(
    "spec",
    [
        "https://drive.google.com/drive/folders/1AbC-d_E2",
        "https://drive.google.com/drive/u/0/folders/1AbC-d_E2",
        "https://drive.google.com/drive/u/1/folders/1AbC-d_E2?usp=sharing",
        "https://drive.google.com/drive/folders/1AbC-d_E2?usp=drive_link",
        "https://drive.google.com/file/d/1AbC-d_E2/view",
        "https://drive.google.com/file/d/1AbC-d_E2/view?usp=sharing",
        "https://drive.google.com/file/d/1AbC-d_E2",
        "https://drive.google.com/open?id=1AbC-d_E2",
        "gdrive://1AbC-d_E2",
        "gdrive://1AbC-d_E2/",
    ],
)
def test_url_forms_parse(spec: str) -> None:
    assert drive_id(spec) == "1AbC-d_E2"
    assert isinstance(source_for(spec), DriveSource)


@pytest.mark.parametrize(
    "spec",
    ["https://drive.google.com/", "https://docs.google.com/document/d/1AbC/edit", "https://example.com/folders/1AbC"],
)
def test_other_urls_are_not_drive(spec: str) -> None:
    assert drive_id(spec) is None
    assert isinstance(source_for(spec), HttpSource)


def test_expand_lists_every_audio_file_with_paging(tree: Tree) -> None:
    source = source_for(f"https://drive.google.com/drive/u/0/folders/{tree.root}?usp=sharing")
    items = list(source.expand(f"https://drive.google.com/drive/u/0/folders/{tree.root}?usp=sharing", None))
    assert [str(item.relative) for item in items] == [
        "a.flac",
        "b.ogg",
        "recording",
        "Session 2/c.ogg",
        "Session 2/d.mp3",
    ]
    assert [item.parent_id for item in items] == [tree.root] * 3 + [tree.sub] * 2
    assert [item.uri for item in items] == [f"gdrive://{tree.ids[PurePosixPath(i.name).name]}" for i in items]
    jfk = items[0]
    assert jfk.size == JFK.stat().st_size
    assert jfk.version == tree.drive.metadata(tree.ids["a.flac"])["md5Checksum"]
    lists = tree.drive.requests("GET", "/drive/v3/files")
    root_pages = [r for r in lists if r.path == "/drive/v3/files" and tree.root in r.query.get("q", "")]
    assert len(root_pages) == 3
    assert [r.query.get("pageToken") for r in root_pages] == [None, "2", "4"]
    assert all(r.query.get("supportsAllDrives") == "true" for r in tree.drive.log)
    assert all(r.query.get("includeItemsFromAllDrives") == "true" for r in root_pages)
    assert not any(tree.old_output in r.query.get("q", "") for r in lists)  # gen-transcript is never entered


def test_pattern_and_single_file(tree: Tree) -> None:
    source = DriveSource()
    assert [item.name for item in source.expand(f"gdrive://{tree.root}", "*.ogg")] == ["b.ogg", "c.ogg"]
    [single] = list(source.expand(f"https://drive.google.com/file/d/{tree.ids['c.ogg']}/view?usp=sharing", None))
    assert single.relative == PurePosixPath("c.ogg")
    assert single.parent_id == tree.sub


def test_missing_id_and_google_doc_are_unreadable(tree: Tree) -> None:
    with pytest.raises(UnreadablePathError, match="not found") as caught:
        list(DriveSource().expand("gdrive://doesNotExist123", None))
    assert "\n" not in str(caught.value)
    [doc] = tree.drive.named("Meeting notes")
    with pytest.raises(UnreadablePathError, match="Google Workspace"):
        list(DriveSource().expand(f"gdrive://{doc['id']}", None))


def test_open_streams_ranges_and_decodes(tree: Tree) -> None:
    source = DriveSource(block_size=64 * 1024)
    items = {item.name: item for item in source.expand(f"gdrive://{tree.root}", None)}
    with source.open(items["a.flac"]) as stream:
        assert stream.seekable()
        decoded = decode_audio(stream)
    assert len(decoded) / SAMPLE_RATE == pytest.approx(11.0)
    np.testing.assert_array_equal(decoded, decode_audio(JFK))
    media = [r for r in tree.drive.requests("GET") if r.query.get("alt") == "media"]
    assert len(media) > 1
    assert all(r.range is not None and r.status == 206 for r in media)
    assert max(r.body_bytes for r in media) <= 64 * 1024 < JFK.stat().st_size
    with source.open(items["recording"]) as stream:
        np.testing.assert_array_equal(decode_audio(stream), decode_audio(FLEURS / "fleurs-en-001.ogg"))


def test_random_access_reads(tree: Tree) -> None:
    source = DriveSource(block_size=4096)
    [item] = list(source.expand(f"gdrive://{tree.ids['a.flac']}", None))
    data = JFK.read_bytes()
    with source.open(item) as stream:
        stream.seek(-100, 2)
        assert stream.read() == data[-100:]
        stream.seek(10_000)
        assert stream.read(50_000) == data[10_000:60_000]
        stream.seek(0)
        assert stream.read(4) == b"fLaC"


def _folders(tree: Tree, parent: str) -> list[str]:
    return [f["id"] for f in tree.drive.named("gen-transcript", parent) if f["mimeType"] == FOLDER]


def test_sink_creates_gen_transcript_once_and_reuses_it(tree: Tree) -> None:
    source = DriveSource()
    items = {item.name: item for item in source.expand(f"gdrive://{tree.root}", None)}
    sink = source.default_sink()
    assert isinstance(sink, DriveSink) and source.default_sink() is sink
    where = sink.write(items["a.flac"], "a.txt", "Ask not what your country can do for you.\n")
    [folder] = _folders(tree, tree.root)
    [transcript] = tree.drive.named("a.txt", folder)
    assert where.endswith(f"/file/d/{transcript['id']}/view")
    assert transcript["content"] == b"Ask not what your country can do for you.\n"
    assert transcript["mimeType"] == "text/plain"
    sink.write(items["b.ogg"], "b.srt", "1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    sink.write(items["recording"], "recording.txt", "x\n")
    assert _folders(tree, tree.root) == [folder]
    assert {f["name"] for f in tree.drive.files.values() if folder in f["parents"]} == {
        "a.txt",
        "b.srt",
        "recording.txt",
    }
    assert len([r for r in tree.drive.requests("POST") if r.path == "/drive/v3/files"]) == 1
    # A new sink (a new run) finds the folder by name instead of creating another one.
    DriveSink(DriveClient()).write(items["b.ogg"], "b.txt", "b\n")
    assert _folders(tree, tree.root) == [folder]
    # Files in a subfolder go to that subfolder's existing gen-transcript.
    sink.write(items["c.ogg"], "c.txt", "c\n")
    assert _folders(tree, tree.sub) == [tree.old_output]
    assert tree.drive.named("c.txt", tree.old_output)[0]["content"] == b"c\n"
    # Transcripts never come back as inputs.
    assert len(list(source.expand(f"gdrive://{tree.root}", None))) == 5


def test_rewriting_a_transcript_updates_it(tree: Tree) -> None:
    source = DriveSource()
    [item] = list(source.expand(f"gdrive://{tree.ids['a.flac']}", None))
    first = source.default_sink().write(item, "a.txt", "first\n")
    second = DriveSink(DriveClient()).write(item, "a.txt", "second version\n")
    assert first == second
    [transcript] = tree.drive.named("a.txt")
    assert transcript["content"] == b"second version\n"
    assert transcript["version"] == 2
    assert len(tree.drive.requests("PATCH", "/upload/drive/v3/files/")) == 1


def test_dead_api_is_unreadable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_DRIVE_API_URL", "http://127.0.0.1:9")
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with pytest.raises(UnreadablePathError, match="unreachable"):
        list(DriveSource().expand("gdrive://someFolder", None))


def test_batch_over_a_drive_folder_uploads_into_gen_transcript(tree: Tree, tiny: Any, tmp_path: Path) -> None:
    from dattavani_asr import make_options
    from dattavani_asr.batch import BatchConfig, BatchRun
    from dattavani_asr.evaluation import normalize

    url = f"https://drive.google.com/drive/folders/{tree.root}?usp=sharing"
    config = BatchConfig(specs=[url], formats=["txt"], state_dir=tmp_path / "state")
    summary = BatchRun(config, tiny, make_options(language="en")).run()
    assert (summary.files, summary.done, summary.failed) == (5, 5, 0)
    jfk = tree.drive.named("a.txt")
    assert len(jfk) == 1 and "ask not what your country" in normalize(jfk[0]["content"].decode())
    for name, folder in (("a.txt", tree.root), ("c.txt", tree.sub)):
        (entry,) = tree.drive.named(name)
        (parent,) = entry["parents"]
        assert tree.drive.metadata(parent)["name"] == "gen-transcript"
        assert folder in tree.drive.metadata(parent)["parents"]
    assert parent == tree.old_output  # the existing gen-transcript folder in Session 2 is reused
    again = BatchRun(config, tiny, make_options(language="en")).run()
    assert again.done == 0 and again.skipped == 5


def test_output_dir_in_drive_mirrors_subfolders(tree: Tree, tmp_path: Path) -> None:
    from dattavani_asr.core.errors import InvalidOptionError
    from dattavani_asr.io.sources import SourceItem, output_sink
    from dattavani_asr.io.sources.gdrive import DriveTreeSink

    outputs = tree.drive.add("Transcripts", None, FOLDER)
    sink = output_sink(f"https://drive.google.com/drive/folders/{outputs}")
    assert isinstance(sink, DriveTreeSink)
    item = SourceItem("/x/day 1/talk.wav", "talk.wav", PurePosixPath("day 1/talk.wav"), 1, "1")
    assert sink.target(item, "talk.txt") == f"gdrive://{outputs}/day 1/talk.txt"
    sink.write(item, "talk.txt", "first\n")
    sink.write(item, "talk.srt", "1\n")
    [day] = [f for f in tree.drive.named("day 1", outputs) if f["mimeType"] == FOLDER]
    assert {f["name"] for f in tree.drive.files.values() if day["id"] in f["parents"]} == {"talk.txt", "talk.srt"}
    with pytest.raises(InvalidOptionError, match="not a Google Drive folder"):
        output_sink(f"gdrive://{tree.ids['a.flac']}")
