"""Short real clips for batch benchmarks: the shared recordings cut at their pauses, with references.

Archives of short recordings (voice notes, segmented corpora) hold clips of a few words with little
silence around them, the case where packed windows put files side by side with tight seams. Each
recording is cut in the middle of every pause Silero VAD finds (at least `min_pause` s), leaving
about 0.1 s of silence at each edge. Its reference words go to the piece that holds them: the
reference is aligned word by word (jiwer) to a word-timestamped transcript of the whole recording,
and a word's time is its aligned word's middle (a deleted word takes its neighbour's), so only a
word misheard across a pause of 0.3 s or more could land in the wrong piece.
"""

from __future__ import annotations

import itertools
import random
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

EDGE_SECONDS = 0.1
MIN_PIECE_SECONDS = 0.8


@dataclass(frozen=True)
class Piece:
    """One phrase clip: where it was cut from, its audio span and its reference words."""

    source_id: str
    start: float
    end: float
    reference: str


def pause_cuts(audio: np.ndarray, min_pause: float) -> list[tuple[int, int]]:
    """Sample ranges of the pieces: cut in the middle of each pause of at least `min_pause` s."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    from dattavani_asr.audio.decode import SAMPLE_RATE

    options = VadOptions(min_silence_duration_ms=int(min_pause * 1000), speech_pad_ms=30)
    spans = get_speech_timestamps(audio, options, sampling_rate=SAMPLE_RATE)
    edge = int(EDGE_SECONDS * SAMPLE_RATE)
    pieces = []
    for index, span in enumerate(spans):
        start = max(0, span["start"] - edge, spans[index - 1]["end"] if index else 0)
        end = min(len(audio), span["end"] + edge, spans[index + 1]["start"] if index + 1 < len(spans) else len(audio))
        if end - start >= MIN_PIECE_SECONDS * SAMPLE_RATE:
            pieces.append((start, end))
    return pieces


def reference_times(reference: list[str], timed: list[tuple[str, float]]) -> list[float]:
    """A time for each reference word, from the timed hypothesis words aligned to it."""
    import jiwer

    if not timed:
        return [0.0] * len(reference)
    output = jiwer.process_words(" ".join(reference), " ".join(word for word, _ in timed) or "-")
    times: list[float | None] = [None] * len(reference)
    for chunk in output.alignments[0]:
        if chunk.type in ("equal", "substitute"):
            for offset in range(chunk.ref_end_idx - chunk.ref_start_idx):
                hyp = min(chunk.hyp_start_idx + offset, len(timed) - 1)
                times[chunk.ref_start_idx + offset] = timed[hyp][1]
    known = 0.0
    for index, time in enumerate(times):  # a deleted word goes with the word before it
        known = time if time is not None else known
        times[index] = known
    return [float(t or 0.0) for t in times]


def timed_words(transcriber: Any, audio: np.ndarray, language: str) -> list[tuple[str, float]]:
    from dattavani_asr import make_options
    from dattavani_asr.evaluation import normalize

    options = make_options(language=language, word_timestamps=True)
    words = [w for s in transcriber.transcribe(audio, options).segments for w in s.words]
    timed = []
    for word in words:
        for part in normalize(word.word, language).split():
            timed.append((part, (word.start + word.end) / 2))
    return timed


def split_reference(reference: str, language: str, timed: list[tuple[str, float]], bounds: list[float]) -> list[str]:
    """The normalised reference words that fall in each piece (`bounds`: piece boundaries in seconds)."""
    from dattavani_asr.evaluation import normalize

    words = normalize(reference, language).split()
    pieces: list[list[str]] = [[] for _ in range(len(bounds) - 1)]
    for word, time in zip(words, reference_times(words, timed)):
        index = max(0, min(len(pieces) - 1, int(np.searchsorted(bounds, time, side="right")) - 1))
        pieces[index].append(word)
    return [" ".join(piece) for piece in pieces]


def write_wav(path: Path, audio: np.ndarray) -> None:
    from dattavani_asr.audio.decode import SAMPLE_RATE

    pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(pcm.tobytes())


def cut_clip(clip: Any, transcriber: Any, folder: Path, min_pause: float) -> list[tuple[Path, str, float]]:
    """(wav path, reference, seconds) of each phrase of one manifest clip."""
    from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio

    audio = decode_audio(clip.path, channel=clip.channel)
    cuts = pause_cuts(audio, min_pause)
    if not cuts:
        return []
    middles = [(a_end + b_start) / 2 / SAMPLE_RATE for (_, a_end), (b_start, _) in itertools.pairwise(cuts)]
    bounds = [0.0, *middles, 1e9]
    references = split_reference(clip.reference, clip.lang, timed_words(transcriber, audio, clip.lang), bounds)
    stem = Path(clip.path).stem + ("" if clip.channel is None else f"-ch{clip.channel}")
    pieces = []
    for number, ((start, end), reference) in enumerate(zip(cuts, references)):
        if reference:
            path = folder / f"{stem}-p{number:02d}.wav"
            write_wav(path, audio[start:end])
            pieces.append((path, reference, (end - start) / SAMPLE_RATE))
    return pieces


def phrase_clips(clips: list[Any], folder: Path, model: str, min_pause: float = 0.3, seed: int = 0) -> list[Any]:
    """The clips cut into phrase clips (same item type, mono WAV), shuffled so neighbours differ."""
    from dataclasses import replace

    from dattavani_asr import Transcriber

    folder.mkdir(parents=True, exist_ok=True)
    transcriber = Transcriber(model)
    phrases = []
    for clip in clips:
        for path, reference, seconds in cut_clip(clip, transcriber, folder, min_pause):
            phrase = replace(clip, id=path.name, path=str(path), channel=None, reference=reference, duration=seconds)
            phrases.append(phrase)
    random.Random(seed).shuffle(phrases)
    return phrases
