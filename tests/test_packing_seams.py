"""Packed windows never move a word from one file into another (issue 13: 'ledger' opened the next file)."""

from __future__ import annotations

import random
import re
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA
from dattavani_asr import Transcriber, make_options
from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.audio.windows import speech_windows
from dattavani_asr.batch.packing import Part, build_pack, decode_packs, pack_limit, plan_packs, seam_doubts, unpack
from dattavani_asr.core.options import VadOptions
from dattavani_asr.core.transcript import Word
from dattavani_asr.core.types import AudioWindow, Decoded, RawSegment, WindowResult
from dattavani_asr.evaluation import normalize, word_error_rate

# English speech of the test set, in the order the clips are cut: (file, channel, end).
SOURCES = [
    ("misc/jfk.flac", None, None),
    ("misc/stereo_diarization.wav", 0, None),
    ("misc/stereo_diarization.wav", 1, None),
    ("misc/hotwords.mp3", None, None),
    ("misc/multilingual.mp3", None, 31.0),  # the English half
    *((f"fleurs/fleurs-en-00{i}.ogg", None, None) for i in range(5)),
]


def _window(seconds: float) -> AudioWindow:
    return AudioWindow(0.0, np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32))


def _packed_result(words: list[Word]) -> tuple[object, WindowResult]:
    pack = build_pack([_window(3.0), _window(3.0)], [0, 1], gap=1.0)  # parts 0-3 s and 4-7 s, gap 3-4 s
    decoded = Decoded((), "", -0.2, 0.01, 1.2, 0.0)
    segment = RawSegment(words[0].start, words[-1].end, (), "".join(w.word for w in words), tuple(words))
    return pack, WindowResult(pack.window, decoded, (segment,), "en", "tiny.en", 0.8)


@pytest.mark.parametrize(
    ("word", "doubtful"),
    [
        (Word(3.6, 3.6, " and,", 0.5), True),  # timed inside the silence: either file's
        (Word(3.2, 4.4, " not", 0.5), True),  # starts right after the first file, runs into the second
        (Word(2.7, 4.2, " to", 0.5), True),  # stretched over the whole gap
        (Word(3.7, 4.3, " they", 0.5), False),  # the second file's first word, timed early
        (Word(2.5, 3.8, " left.", 0.5), False),  # the first file's last word, stretched into the gap
    ],
)
def test_a_word_timed_in_the_silence_between_files_puts_both_in_doubt(word: Word, doubtful: bool) -> None:
    words = [Word(0.5, 1.0, " one", 0.9), word, Word(5.0, 5.5, " two", 0.9)]
    pack, result = _packed_result(words)
    assert seam_doubts(pack, result) == ({0, 1} if doubtful else set())  # type: ignore[arg-type]


def _phrase_clips(seed: int = 3, keep: float = 0.04) -> list[np.ndarray]:
    """The English recordings cut inside their pauses into clips of 1-3 phrases with only 20-60 ms of
    silence at each edge (as in segmented speech corpora): tight seams once packed."""
    rng = random.Random(seed)
    clips: list[np.ndarray] = []
    for name, channel, end in SOURCES:
        clips += _cut(decode_audio(DATA / name, channel=channel, end=end), rng, keep)
    return clips


def _cut(audio: np.ndarray, rng: random.Random, keep: float) -> list[np.ndarray]:
    from faster_whisper.vad import VadOptions as SileroOptions
    from faster_whisper.vad import get_speech_timestamps

    silero = SileroOptions(min_silence_duration_ms=80, speech_pad_ms=0, min_speech_duration_ms=100)
    spans = get_speech_timestamps(audio, silero, sampling_rate=SAMPLE_RATE)
    clips, index = [], 0
    while index < len(spans):
        group = spans[index : index + rng.randint(1, 3)]
        index += len(group)
        start = max(0, group[0]["start"] - int(keep * SAMPLE_RATE * rng.uniform(0.5, 1.5)))
        end = min(len(audio), group[-1]["end"] + int(keep * SAMPLE_RATE * rng.uniform(0.5, 1.5)))
        if end - start >= 0.7 * SAMPLE_RATE:
            clips.append(audio[start:end])
    return clips


def _words(results: list[WindowResult]) -> list[str]:
    text = " ".join(segment.text for result in results for segment in result.segments)
    return re.sub(r"[^a-z' ]", " ", text.lower()).split()


@pytest.mark.slow
def test_packed_clips_keep_every_word_in_its_own_file(tiny: Transcriber) -> None:
    """Tight real clips packed as a batch run packs them: each file's words are the ones it gets alone,
    give or take a misheard word, and never its neighbour's edge word."""
    options = make_options(trim_encoder=True)
    vad = VadOptions()
    files = [list(speech_windows([clip], vad)) for clip in _phrase_clips()]
    windows = [window for file_windows in files for window in file_windows]
    owner = [number for number, file_windows in enumerate(files) for _ in file_windows]
    engine = tiny.engine()
    decoding = replace(options.decoding, language="en")
    packs = [build_pack(windows, group) for group in plan_packs(windows, pack_limit(True))]
    packed = [part for parts in decode_packs(engine, packs, decoding, "en") for part in parts]
    alone = engine.transcribe_batch(windows, decoding, "en")[0]
    by_file = {
        n: ([p for p, o in zip(packed, owner) if o == n], [a for a, o in zip(alone, owner) if o == n])
        for n in set(owner)
    }
    leaks = []
    for number in sorted(by_file)[1:]:
        before, after = _words(by_file[number - 1][1]), _words(by_file[number][1])
        packed_after = _words(by_file[number][0])
        packed_before = _words(by_file[number - 1][0])
        if before and packed_after and packed_after[0] == before[-1] and packed_after[0] not in after[:2]:
            leaks.append((number, packed_before, packed_after))
        if after and packed_before and packed_before[-1] == after[0] and after[0] not in before[-2:]:
            leaks.append((number, packed_before, packed_after))
    assert len(files) >= 15
    assert not leaks


def _phrases(name: str) -> list[np.ndarray]:
    """A recording cut at its pauses as the batch benchmark's --phrases does."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from phrases import pause_cuts

    audio = decode_audio(DATA / name)
    return [audio[start:end] for start, end in pause_cuts(audio, 0.2)]


@pytest.mark.slow
def test_a_word_stretched_over_a_seam_stays_in_its_file(tiny: Transcriber) -> None:
    """Packed, '... in the middle of a sentence' + 'to the north ...' was aligned with 'to' over the whole
    gap, mostly inside the first file: 'to' closed the first file's transcript and left the second's."""
    first = _phrases("fleurs/fleurs-en-001.ogg")[-1]
    second = _phrases("fleurs/fleurs-en-002.ogg")[0]
    third = _phrases("misc/jfk.flac")[1]
    vad = VadOptions()
    windows = [window for clip in (first, second, third) for window in speech_windows([clip], vad)]
    assert len(windows) == 3
    decoding = replace(make_options(trim_encoder=True).decoding, language="en")
    [parts] = decode_packs(tiny.engine(), [build_pack(windows, [0, 1, 2])], decoding, "en")
    texts = [_words([part]) for part in parts]
    assert texts[0][-1] in ("sentence", "sentences") and texts[1][:3] == ["to", "the", "north"]


# Recordings cut at their pauses (seconds), with each piece's reference: sentences that run on across
# files, so the packed decoding gives segments that span several files and the word split decides.
PHRASE_FILES = [
    ("misc/jfk.flac", 0.19, 2.37, "and so my fellow americans"),
    ("misc/jfk.flac", 3.23, 4.48, "ask not"),
    ("misc/jfk.flac", 5.31, 7.75, "what your country can do for you"),
    ("misc/jfk.flac", 8.09, 10.63, "ask what you can do for your country"),
    ("fleurs/fleurs-en-001.ogg", 0.48, 3.49, "all nouns alongside the word sie for you"),
    ("fleurs/fleurs-en-001.ogg", 3.55, 5.92, "always begin with a capital letter"),
    ("fleurs/fleurs-en-001.ogg", 6.08, 8.10, "even in the middle of a sentence"),
    (
        "fleurs/fleurs-en-002.ogg",
        0.29,
        6.37,
        "to the north and within easy reach is the romantic and fascinating town of sintra and which was made famous",
    ),
    (
        "fleurs/fleurs-en-002.ogg",
        6.53,
        11.01,
        "to foreigners after a glowing account of its splendours recorded by lord byron",
    ),
]


def _phrase_windows() -> list[AudioWindow]:
    """One window per phrase file (each file's VAD gives one: checked)."""
    windows = []
    for name, start, end, _ in PHRASE_FILES:
        audio = decode_audio(DATA / name)[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)]
        [window] = speech_windows([audio], VadOptions())
        windows.append(window)
    return windows


def assert_transcript_is_its_own(name: str, text: str, own: str, others: Sequence[str]) -> None:
    """`text` matches its file's reference `own` better than any of `others`, and its edge words are its own:
    it neither opens with another file's last words nor ends with another file's first words (a word
    moved across a seam)."""
    said, expected = normalize(text).split(), own.split()
    assert said, (name, text)
    ends = {word for other in others for word in other.split()[-2:]}
    starts = {word for other in others for word in other.split()[:2]}
    assert said[0] in expected[:2] or said[0] not in ends, (name, text, "opens with another file's last word")
    assert said[-1] in expected[-2:] or said[-1] not in starts, (name, text, "ends with another file's first word")
    score, scores = word_error_rate([own], [text]), [word_error_rate([other], [text]) for other in others]
    assert score <= 0.5 and score < min(scores), (name, text, score, scores)


def _assert_each_file_has_its_own_words(parts: list[WindowResult]) -> None:
    """Each file's transcript is its own (`assert_transcript_is_its_own`), every word timed inside the file."""
    references = [reference for *_, reference in PHRASE_FILES]
    texts = ["".join(segment.text for segment in part.segments) for part in parts]
    for number, (part, text, reference) in enumerate(zip(parts, texts, references, strict=True)):
        assert_transcript_is_its_own(str(number), text, reference, references[:number] + references[number + 1 :])
        window = part.window
        words = [word for segment in part.segments for word in segment.words]
        assert all(window.offset <= w.start <= w.end <= window.end for w in words), (number, words)
    assert word_error_rate(references, texts) < 0.12


def test_packed_segments_are_split_between_files_word_by_word(tiny: Transcriber) -> None:
    """Real packed decoding as a batch run does it (trimmed packs, one pass with word timestamps): a
    sentence that runs on from file to file comes back as one segment over several files, and its words
    go each to the file whose audio holds it, timed in that file's own timeline."""
    windows = _phrase_windows()
    decoding = replace(make_options(trim_encoder=True).decoding, language="en")
    groups = plan_packs(windows, pack_limit(True))
    assert groups == [[0, 1, 2, 3], [4, 5, 6], [7, 8]]
    packs = [build_pack(windows, group) for group in groups]
    once = replace(decoding, word_timestamps=True, temperatures=decoding.temperatures[:1])
    results = tiny.engine().transcribe_batch([pack.window for pack in packs], once, "en")[0]
    split: list[WindowResult] = []
    spanning = 0
    for pack, result in zip(packs, results, strict=True):
        parts = unpack(pack, result)
        spanning += sum(sum(s.start < p.end and s.end > p.start for p in pack.parts) > 1 for s in result.segments)
        packed = iter(word for segment in result.segments for word in segment.words)
        for position, (part, piece) in enumerate(zip(pack.parts, parts, strict=True)):
            before = pack.parts[position - 1].end if position else -1.0
            after = pack.parts[position + 1].start if position + 1 < len(pack.parts) else 1e9
            for word in (w for segment in piece.segments for w in segment.words):
                timed = next(packed)  # every packed word, in order, in exactly one file
                assert word.word == timed.word and (word.start, word.end) == _at(timed, part), (word, timed)
                assert before < timed.end and timed.start < after, (timed, "is timed inside another file")
        assert next(packed, None) is None, "a word of the packed result is in no file"
        split += parts
    assert spanning >= 2  # segments ran across files: the word split, not the segment owner, decided
    _assert_each_file_has_its_own_words(split)
    # the production path (doubtful parts decoded again alone) keeps every word in its file too
    produced = [
        part
        for parts in decode_packs(tiny.engine(), packs, replace(decoding, word_timestamps=True), "en")
        for part in parts
    ]
    _assert_each_file_has_its_own_words(produced)


def _at(word: Word, part: Part) -> tuple[float, float]:
    """A packed word's times in the file of `part` (clamped to the file, as a split word is)."""

    def local(seconds: float) -> float:
        return round(part.window.offset + min(max(seconds - part.start, 0.0), part.window.duration), 3)

    return local(word.start), local(word.end)
