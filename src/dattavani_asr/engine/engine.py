"""Decode batches of speech windows with one loaded Whisper model."""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from ..audio.decode import SAMPLE_RATE
from ..core.errors import InvalidOptionError
from ..core.options import TASKS, DecodingOptions
from ..core.types import AudioWindow, RawSegment, WindowResult
from .alignment import add_words, align_text, with_confidences
from .decoding import (
    build_prompt,
    confidence,
    decode_with_fallback,
    encode,
    encoder_seconds,
    is_silence,
    token_limit,
    trimmed,
    window_features,
)
from .loader import LoadedModel, release_heap
from .segments import split_segments

MAX_TAIL_ROUNDS = 2
TAIL_RETRY_SECONDS = 2.0


def untranscribed_tail(result: WindowResult) -> AudioWindow | None:
    """The part of a window after its last segment, when that part is long enough to hold speech.

    Windows end at most half a second after the speech VAD heard, so seconds of audio left after
    the last segment mean the decoder stopped early.
    """
    if not result.segments:
        return None
    window = result.window
    covered = result.segments[-1].end - window.offset
    if window.duration - covered < TAIL_RETRY_SECONDS:
        return None
    start = round(covered * SAMPLE_RATE)
    return AudioWindow(window.offset + covered, window.audio[start:], speech_start=0.0)


def _settle(futures: list[Future[WindowResult]], batch: Future[tuple[list[WindowResult], str, float]]) -> None:
    """Hand each window's result (or the batch's error) to its own future."""
    error = batch.exception()
    if error is not None:
        for future in futures:
            future.set_exception(error)
        return
    for future, result in zip(futures, batch.result()[0]):
        future.set_result(result)


def supported_languages() -> tuple[str, ...]:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return tuple(_LANGUAGE_CODES)


class WhisperEngine:
    """Batched transcription of speech windows on one CTranslate2 Whisper model."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def multilingual(self) -> bool:
        return self.model.multilingual

    @property
    def workers(self) -> int:
        """Windows decoded at the same time (a CPU: one per single-threaded worker)."""
        return self.model.workers

    def check_options(self, options: DecodingOptions) -> None:
        """Refuse what this model cannot do, before any audio is decoded."""
        if options.task not in TASKS:
            raise InvalidOptionError(f"unknown task {options.task!r}: use transcribe or translate")
        if options.beam_size < 1:
            raise InvalidOptionError("beam size must be at least 1")
        language = options.language
        if language is not None and language not in supported_languages():
            raise InvalidOptionError(f"unknown language code {language!r} (use an ISO 639-1 code such as en, hi, kn)")
        if not self.model.multilingual:
            if language not in (None, "en"):
                raise InvalidOptionError(
                    f"model {self.name} is English-only and cannot transcribe {language!r}: "
                    "use a multilingual model (e.g. --model base)"
                )
            if options.task == "translate":
                raise InvalidOptionError(f"model {self.name} is English-only and cannot translate: use --model base")

    def detect_language(self, encoded: Any, windows: list[AudioWindow]) -> tuple[str, float]:
        """Language with the highest duration-weighted probability over the windows."""
        if not self.model.multilingual:
            return "en", 1.0
        scores: dict[str, float] = defaultdict(float)
        total = 0.0
        for window, ranking in zip(windows, self.model.whisper.detect_language(encoded)):
            weight = max(window.duration, 0.1)
            total += weight
            for token, probability in ranking:
                scores[token[2:-2]] += probability * weight
        language = max(scores, key=scores.__getitem__)
        return language, round(scores[language] / total, 4)

    def detect_languages(self, windows: list[AudioWindow]) -> list[tuple[str, float]]:
        """Language and probability of each window on its own.

        Each window is encoded with a context trimmed to its audio plus a margin: on the 30
        FLEURS/LibriSpeech clips of ../shared/audio this detected the same language as the full
        30-s context, with probabilities within 0.04, at 2.4x less encoder time.
        """
        if not self.model.multilingual:
            return [("en", 1.0)] * len(windows)
        features = window_features(self.model, windows)
        detected = []
        for row, window in enumerate(windows):
            encoded = encode(self.model, trimmed(features[row : row + 1], [window]))
            [ranking] = self.model.whisper.detect_language(encoded)
            detected.append((ranking[0][0][2:-2], round(ranking[0][1], 4)))
        return detected

    def transcribe_batch(
        self, windows: list[AudioWindow], options: DecodingOptions, language: str | None = None
    ) -> tuple[list[WindowResult], str, float]:
        """Decode windows; detect the language first when none is given.

        With several workers (a CPU), the windows are decoded one each, at the same time; results
        come back in window order, and a window's text never depends on what else was decoded.
        """
        if self.model.workers == 1 or len(windows) < 2:
            return self._transcribe(windows, options, language)
        parts = list(self.model.executor().map(lambda window: self._transcribe([window], options, language), windows))
        _, detected, probability = parts[0]
        return [result for part, _, _ in parts for result in part], detected, probability

    def submit(self, windows: list[AudioWindow], options: DecodingOptions) -> list[Future[WindowResult]]:
        """Start decoding windows on the model's workers (`options.language` set); one future per window.

        With several workers each window is a task of its own; with one (a GPU) the windows are one
        batched task.
        """
        executor = self.model.executor()
        if self.model.workers > 1:
            return [executor.submit(self._one, window, options) for window in windows]
        batch = executor.submit(self._transcribe, windows, options, options.language)
        futures: list[Future[WindowResult]] = [Future() for _ in windows]
        batch.add_done_callback(lambda done: _settle(futures, done))
        return futures

    def _one(self, window: AudioWindow, options: DecodingOptions) -> WindowResult:
        [result], _, _ = self._transcribe([window], options, options.language)
        if result.decoded.temperature > 0:  # a long sampled decode fragments the heap (see release_heap)
            release_heap()
        return result

    def _transcribe(
        self, windows: list[AudioWindow], options: DecodingOptions, language: str | None
    ) -> tuple[list[WindowResult], str, float]:
        """Decode windows together; detect the language first when none is given.

        Whisper sometimes stops well before the end of a window's speech (an utterance cut by
        the window edge, a quiet final sentence). Like openai/whisper's seek, the untranscribed
        rest of such windows is decoded again, in one batch per round.
        """
        if not self.model.timestamps:  # a fine-tune that never learned them: each window decoded whole
            options = replace(options, without_timestamps=True, retry_tail=False)
        results, language, probability = self._decode(windows, options, language)
        active = list(range(len(results)))
        for _ in range(MAX_TAIL_ROUNDS if options.retry_tail else 0):
            tails = {index: tail for index in active if (tail := untranscribed_tail(results[index])) is not None}
            if not tails:
                break
            extra, _, _ = self._decode(list(tails.values()), options, language)
            active = []
            for index, addition in zip(tails, extra):
                if addition.segments:
                    # a tail's segments keep their own decode's confidence, not their window's
                    own = tuple(
                        replace(s, confidence=addition.confidence) if s.confidence is None else s
                        for s in addition.segments
                    )
                    results[index] = replace(results[index], segments=results[index].segments + own)
                    active.append(index)
        return results, language, probability

    def _decode(
        self, windows: list[AudioWindow], options: DecodingOptions, language: str | None
    ) -> tuple[list[WindowResult], str, float]:
        """Trimmed windows are decoded in groups of equal encoder context, so a window's text never
        depends on which other windows share its batch."""
        if not options.trim_encoder:
            return self._decode_group(windows, options, language)
        groups: dict[float, list[int]] = defaultdict(list)
        for index, window in enumerate(windows):
            groups[encoder_seconds(window, options.min_encoder_seconds)].append(index)
        results: list[WindowResult | None] = [None] * len(windows)
        probability = 1.0
        for indices in groups.values():
            group, language, probability = self._decode_group([windows[i] for i in indices], options, language)
            for index, result in zip(indices, group):
                results[index] = result
        return [result for result in results if result is not None], language or "en", probability

    def _aligned(
        self,
        encoded: Any,
        windows: list[AudioWindow],
        segments: list[list[RawSegment]],
        decoded: list[Any],
        tokenizer: Any,
        words: bool,
    ) -> list[list[RawSegment]]:
        """Segments with their own confidences (and words, when asked), from one alignment pass.

        The alignment is skipped when no word is wanted and no window holds more than one segment:
        a lone segment's confidence is its window's.
        """
        if not (words and any(segments)) and all(len(window_segments) < 2 for window_segments in segments):
            return segments
        aligned = align_text(self.model, encoded, windows, segments, tokenizer)
        out = []
        for window, window_segments, result, item in zip(windows, segments, aligned, decoded):
            scored = with_confidences(window_segments, result, item.no_speech_prob) if window_segments else []
            out.append(add_words(window, scored, result, tokenizer) if words and scored else scored)
        return out

    def _decode_group(
        self, windows: list[AudioWindow], options: DecodingOptions, language: str | None
    ) -> tuple[list[WindowResult], str, float]:
        features = window_features(self.model, windows)
        if options.trim_encoder:
            features = trimmed(features, windows, options.min_encoder_seconds)
        encoded = encode(self.model, features)
        probability = 1.0
        language = language or options.language
        if language is None:
            language, probability = self.detect_language(encoded, windows)
        tokenizer = self.model.tokenizer(options.task, language)
        prompts = [build_prompt(tokenizer, options)] * len(windows)
        limit = token_limit(windows, options, len(prompts[0]))
        decoded = decode_with_fallback(self.model, features, encoded, prompts, tokenizer, options, limit)
        segments: list[list[RawSegment]] = [
            [] if is_silence(item, options) else split_segments(item.tokens, window, tokenizer)
            for item, window in zip(decoded, windows)
        ]
        # without timestamps, the segments' times come from their words
        timed_by_words = options.word_timestamps or options.without_timestamps
        segments = self._aligned(encoded, windows, segments, decoded, tokenizer, timed_by_words)
        if timed_by_words and not options.word_timestamps:
            segments = [[replace(s, words=()) for s in window_segments] for window_segments in segments]
        results = [
            WindowResult(
                window=window,
                decoded=item,
                segments=tuple(window_segments),
                language=language,
                model=self.name,
                confidence=confidence(item.avg_logprob, item.no_speech_prob),
            )
            for window, item, window_segments in zip(windows, decoded, segments)
        ]
        return results, language, probability
