"""Packed windows never move a word from one file into another (issue 13: 'ledger' opened the next file)."""

from __future__ import annotations

import random
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA
from dattavani_asr import Transcriber, make_options
from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio
from dattavani_asr.audio.windows import speech_windows
from dattavani_asr.batch.packing import build_pack, decode_packs, pack_limit, plan_packs, seam_doubts
from dattavani_asr.core.options import VadOptions
from dattavani_asr.core.transcript import Word
from dattavani_asr.core.types import AudioWindow, Decoded, RawSegment, WindowResult

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
