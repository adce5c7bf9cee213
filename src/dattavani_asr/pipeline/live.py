"""One live transcription session: PCM in, partial and final events out (see docs/streaming.md).

The session keeps only the audio of the utterance being spoken. Silero VAD decides where
utterances end; an ended utterance becomes a `final` (never revised). While speech goes on the
buffer is decoded every step for a `partial`; when an utterance runs long, the words two
consecutive hypotheses agree on (LocalAgreement-2) and that end well before the newest audio are
committed as a `final` and their audio dropped, so each update costs the same however long the
stream runs. Every decode goes through the model's shared DynamicBatcher.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..audio.decode import SAMPLE_RATE
from ..audio.vad import StreamingVad, end_threshold
from ..core.errors import InvalidOptionError
from ..core.options import MIN_CONFIDENCE, DecodingOptions, VadOptions
from ..core.transcript import Word
from ..engine import AudioWindow, WindowResult, echoes
from .scheduler import DynamicBatcher, Priority

Event = dict[str, Any]
logger = logging.getLogger(__name__)
# A detected language is kept for the session once it is likely on enough speech; until then each
# decode detects again (Whisper's detection on a second or two of speech is often wrong).
LANGUAGE_CONFIDENCE = 0.8
MAX_WINDOW_SECONDS = 29.5
# Encoder context of windows up to 5 s (longer ones get their own bucket: duration + 5 s). The encoder
# is most of a live decode on a CPU and grows faster than its context (tiny.en, one thread: 10 s 69 ms,
# 15 s 144 ms, 30 s 0.6 s), and on the English clips and their phrases 10 s lost no words against 15 s
# (simulated sessions, 443 words: 12.2 against 14.2 % WER). Trimmed contexts of 10-12.5 s made tiny.en
# repeat sentences when the audio filled them; the 5-s margin keeps windows clear of that. The partials
# of an utterance's first second get 7.5 s; not finals: on 2.5-s windows of the shared clips 7.5 s gave
# other words in 17 of 46 ("However, however," for "However,").
STREAM_ENCODER_SECONDS = 10.0
SHORT_WINDOW_SECONDS = 2.5
# Speech Silero heard after a decode's last word: Whisper sometimes stops a word or two before the
# end ("recorded by a board" for "recorded by Lord Byron", "town of" for "town of Sintra and which
# was made famous"); the end is decoded again on its own. Otherwise Whisper's last word ended from
# 0.18 s after to 0.35 s before Silero's end on the English clips of ../shared/audio.
MISSED_SPEECH_SECONDS = 0.45
LONGEST_WORD_SECONDS = 1.2  # a last word aligned longer than this holds speech Whisper left out
REDECODED_WORDS = 3  # the last words are decoded again with the rest: they may be misheard ("a board")
# Speech that paused this long (or whose newest frames Silero scores this long as quiet) is decoded
# at once, so the final can reuse the decode if the pause lasts.
PAUSE_SECONDS = 0.05
QUIET_SECONDS = 0.06
HOLD_SECONDS = 0.1
# Silence that ends an utterance once the decode made as the pause began heard it to its end: that
# decode is the final's, so waiting the full `end_silence` only delays it (simulated sessions over the
# English clips and phrases: final p50 0.30 -> 0.27 s, same words).
DECODED_END_SILENCE = 0.1
MIN_HEARD_SPEECH_SECONDS = 0.4  # speech Whisper should have found a word in
ONSET_SECONDS = 1.0  # partials of an utterance's first second of speech are decoded without context
OWN_DECODE_SHARE = 1.25  # a session decodes at most 80 % of the time
PARTIAL_SHARE = 0.5  # of the engine's time, for the partials of all its live sessions together
MIN_LOOP_WORDS, LOOP_COPIES = 3, 3  # a phrase of 3+ words said 3 times back to back is a decoding loop
SQUEEZED_SHARE = 0.4  # a repeat timed in under 40 % of the first copy's time holds no speech of its own
MIN_ECHO_WORDS = 4  # a shorter run of words like the last final's end must repeat it exactly
MIN_COLLAPSED_WORDS = 3  # words a collapsed decode lost, at least
MAX_WORDS_PER_SECOND = 5.0
HEARD_PAUSE_SECONDS = 0.25  # silence after the last word that shows a decode heard an utterance end
AFTER_FALL_SECONDS = 0.06  # audio a decode must have past the fall of Silero's score (two frames)
LANGUAGE_MIN_SECONDS = 2.0
# Speech that starts this long after the last final is a new utterance, decoded without the audio before
# it (a new speaker, a new clip): given the previous speaker's words, Whisper mishears the onset ("Do do
# the slow" for "Due to the slow") or leaves out the first word. Short clips of the shared recordings
# in shuffled order (phrases of other speakers back to back): 16.9 % WER with that audio, 13.5 % without
# (offline, clip by clip: 11.5 %). Within a speaker's pauses the context still helps.
NEW_UTTERANCE_GAP = 0.6
# Text tokens per second of audio a decode may produce: English speech needs under 6 (FLEURS,
# LibriSpeech); scripts Whisper's tokenizer spells byte by byte (Kannada, Hindi) need several
# times more. Only a decode caught in a repetition loop reaches the limit, and it then ends early.
TOKENS_PER_SECOND = {"en": 12.0}
OTHER_TOKENS_PER_SECOND = 40.0
LANGUAGE_SECONDS = 10.0
ENCODINGS: dict[str, np.dtype[Any]] = {"pcm_s16le": np.dtype("<i2"), "pcm_f32le": np.dtype("<f4")}


@dataclass(frozen=True)
class StreamPolicy:
    """Timing of a session, in seconds."""

    check_interval: float = 0.1  # how often VAD looks for an utterance end
    step: float = 0.5  # new audio between partial decodes
    max_step: float = 3.0  # the step grows up to this when compute falls behind
    end_silence: float = 0.2  # silence after speech that ends an utterance
    max_utterance: float = 10.0  # beyond this, stable words are committed without a pause
    min_utterance: float = 1.5  # shorter speech waits for a longer pause before it is final
    short_utterance_silence: float = 0.3
    commit_margin: float = 1.0  # committed words end at least this long before the newest audio
    lead: float = 0.3  # audio kept before the speech onset
    context: float = 1.5  # committed audio decoded again before the next utterance
    tail: float = 0.15  # audio kept after the speech end when an utterance is finalised
    vad: VadOptions = field(default_factory=lambda: VadOptions(min_silence_ms=100, speech_pad_ms=50, min_speech_ms=150))


@dataclass(frozen=True)
class FallbackChain:
    """Models that decode again a final (or pause) decode under `min_confidence`, in turn; the most
    confident result is kept. Partials never wait for them. `detect` makes them detect the language
    themselves (after an English-only model that was given none: it would impose English)."""

    schedulers: tuple[DynamicBatcher, ...] = ()
    min_confidence: float = MIN_CONFIDENCE.default
    detect: bool = False

    def improve(self, result: WindowResult, options: DecodingOptions) -> WindowResult:
        retry = replace(options, language=None) if self.detect else options
        for scheduler in self.schedulers:
            if not result.segments or result.confidence >= self.min_confidence:
                break
            [future] = scheduler.submit([result.window], retry, Priority.INTERACTIVE)
            candidate = future.result(timeout=120)
            if candidate.confidence > result.confidence:
                result = candidate
        return result


class PcmDecoder:
    """Bytes of mono PCM at any rate → 16-kHz float32, keeping partial samples between frames."""

    def __init__(self, encoding: str, sample_rate: int) -> None:
        if encoding not in ENCODINGS:
            raise InvalidOptionError(f"encoding must be one of {', '.join(ENCODINGS)}")
        if not 8000 <= sample_rate <= 192000:
            raise InvalidOptionError("sample_rate must be between 8000 and 192000")
        self.dtype = ENCODINGS[encoding]
        self.sample_rate = sample_rate
        self._pending = b""
        self._resampler: Any = None

    def decode(self, data: bytes) -> np.ndarray:
        data = self._pending + data
        usable = len(data) - len(data) % self.dtype.itemsize
        self._pending = data[usable:]
        samples = np.frombuffer(data[:usable], dtype=self.dtype)
        audio = samples.astype(np.float32) / 32768.0 if self.dtype.kind == "i" else samples.astype(np.float32)
        if not np.all(np.isfinite(audio)):
            raise InvalidOptionError("audio frame holds NaN or infinite samples")
        return audio if self.sample_rate == SAMPLE_RATE else self._resample(np.clip(audio, -1.0, 1.0))

    def _resample(self, audio: np.ndarray) -> np.ndarray:
        import av

        if self._resampler is None:
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        frame = av.AudioFrame.from_ndarray(audio.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        pieces = [out.to_ndarray().reshape(-1) for out in self._resampler.resample(frame)]
        return np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)


def _norm(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def _same_word(heard: str, committed: str) -> bool:
    """Equal, or the same word cut short or run on (the context is re-heard as "america" for
    "Americans")."""
    if heard == committed:
        return True
    return min(len(heard), len(committed)) >= 4 and (heard.startswith(committed) or committed.startswith(heard))


def agreed_prefix(previous: list[Word], current: list[Word]) -> list[Word]:
    """The words of `current` that `previous` also had, from the start (LocalAgreement-2)."""
    count = 0
    for old, new in zip(previous, current):
        if _norm(old.word) != _norm(new.word):
            break
        count += 1
    return current[:count]


def _text(words: list[Word]) -> str:
    return "".join(word.word for word in words).strip()


def _word_event(word: Word) -> Event:
    return {"word": word.word.strip(), "start": word.start, "end": word.end, "probability": word.probability}


def _not_before(words: list[Word], onset: float) -> list[Word]:
    """Words moved to start no earlier than the speech onset VAD heard: after a pause Whisper's
    alignment often starts the first word well inside the silence (1.5 s early, at worst, on
    the shared clips), which would show as a late first partial and a wrong caption time."""
    return [replace(w, start=onset, end=max(w.end, onset)) if w.start < onset else w for w in words]


def _collapsed(words: list[Word], fullest: list[Word]) -> bool:
    """A decode that kept under 60 % of the words an earlier one heard in the same audio: greedy
    decoding sometimes stops after a word ("Cab" for "Cabbage juice changes color..."). A word or
    two fewer is a correction, not a collapse ("However," after a partial "I will.")."""
    return len(words) < 0.6 * len(fullest) and len(fullest) - len(words) >= MIN_COLLAPSED_WORDS


def _too_fast(words: list[Word], seconds: float) -> bool:
    """More words than anyone says in `seconds` of speech: a made-up sentence ("If you guys are on the
    top of the channel, don't forget to subscribe to my channel." for 3.7 s of "Many people don't think
    about them as dinosaurs": 25 words), not speech. Read English runs 2-4 words a second."""
    return len(words) > MAX_WORDS_PER_SECOND * seconds + 2


def _without_loops(words: list[Word]) -> list[Word]:
    """One copy of a phrase of 3+ words said three or more times back to back, and no trailing
    start of a further copy: a decoding loop ("And so my fellow Americans." three times and "And
    so my fellow", heard through Chromium's echo canceller), not speech."""
    norms = [_norm(word.word) for word in words]
    for size in range(MIN_LOOP_WORDS, len(words) // LOOP_COPIES + 1):
        for start in range(len(words) - LOOP_COPIES * size + 1):
            phrase = norms[start : start + size]
            copies = 1
            while norms[start + copies * size : start + (copies + 1) * size] == phrase:
                copies += 1
            if copies >= LOOP_COPIES:
                rest = start + copies * size
                rest += _common_prefix(norms[rest : rest + size], phrase)
                return _without_loops(words[: start + size] + words[rest:])
    return words


def _without_squeezed_repeat(words: list[Word]) -> list[Word]:
    """The words without a trailing copy of the words just before it that alignment squeezed into
    a fraction of their time: Whisper repeats the last words of a window cut mid-sentence ("von
    Kowloon von Kowloon." with the copy in 0.24 s for 1.6 s), while a repeat that is said takes about
    as long as the first time."""
    norms = [_norm(word.word) for word in words]
    for size in range(1, len(words) // 2 + 1):
        first, copy = words[-2 * size : -size], words[-size:]
        if norms[-2 * size : -size] != norms[-size:]:
            continue
        spoken = first[-1].end - first[0].start
        if copy[-1].end - copy[0].start < SQUEEZED_SHARE * spoken:
            return words[:-size]
    return words


def _common_prefix(first: list[str], second: list[str]) -> int:
    return next((i for i, (a, b) in enumerate(zip(first, second)) if a != b), min(len(first), len(second)))


def _words(result: WindowResult) -> list[Word]:
    return [word for segment in result.segments for word in segment.words]


@dataclass
class _Hypothesis:
    words: list[Word]
    covers_until: float  # absolute end of the audio it was decoded from
    partial_only: bool = False  # quick or greedy where finals get a beam: never reused for a final


class StreamSession:
    """Blocking session logic; the WebSocket router calls `feed` and `update` from a worker thread.

    All times are absolute seconds from the start of the stream. Everything before
    `committed_until` has been emitted as finals; the buffer keeps `policy.context` seconds before
    it, decoded again with the next utterance (so a short phrase is not decoded without context)
    and then left out of that utterance's words by their timestamps.
    """

    def __init__(
        self,
        batcher: DynamicBatcher,
        decoding: DecodingOptions,
        policy: StreamPolicy | None = None,
        fallback: FallbackChain | None = None,
    ):
        self.batcher = batcher
        self.fallback = fallback or FallbackChain()
        self.decoding = replace(
            decoding,
            word_timestamps=True,
            trim_encoder=True,
            min_encoder_seconds=STREAM_ENCODER_SECONDS,
            retry_tail=False,
            temperatures=(0.0, 0.4),
            initial_prompt=None,
        )
        self.policy = policy or StreamPolicy()
        self.session_id = uuid.uuid4().hex
        self.buffer = np.zeros(0, np.float32)
        self.buffer_start = 0.0
        self.vad = StreamingVad(self.policy.vad)
        self.received = 0
        self.committed_until = 0.0
        self.finals: list[str] = []
        self.step = self.policy.step
        self._last_decode_at = -1.0
        self._previous: _Hypothesis | None = None
        self._fullest: list[Word] = []  # the hypothesis of this utterance with the most words
        self._without_context = False  # this utterance is decoded without the committed audio before it
        self._decode_seconds = 0.0
        self.last_update_audio = 0.0  # audio_received when the last update started
        self.last_final_end = 0.0
        self.pending_errors: list[Event] = []
        self.speech_onset: float | None = None  # where the speech not yet final began, as of the last update

    @property
    def audio_received(self) -> float:
        return round(self.received / SAMPLE_RATE, 3)

    @property
    def buffer_end(self) -> float:
        return self.buffer_start + self.buffer.shape[0] / SAMPLE_RATE

    def feed(self, audio: np.ndarray) -> None:
        self.buffer = np.concatenate([self.buffer, audio]) if self.buffer.size else audio.copy()
        self.received += audio.shape[0]
        self.vad.feed(audio)

    def set_options(self, language: str | None = None, task: str | None = None) -> None:
        """Options for the following utterances; refused (InvalidOptionError) if the model cannot do them."""
        changed = replace(self.decoding, language=language or self.decoding.language, task=task or self.decoding.task)
        self.batcher.engine.check_options(changed)
        self.decoding = changed

    def set_policy(self, policy: StreamPolicy) -> None:
        """Timing and VAD settings for the audio that follows (a protocol's own turn detection)."""
        self.policy = policy
        self.vad.options = policy.vad
        self.vad.negative = end_threshold(policy.vad)

    def update(self, ending: bool = False) -> list[Event]:
        """Events for the audio received so far; `ending` finalises whatever speech is left."""
        self.last_update_audio = self.audio_received
        spans = self._speech()
        self.speech_onset = None
        if not spans:  # silence (or too little speech to tell yet): keep only the last second
            self._previous = None
            self.committed_until = max(self.committed_until, self.buffer_end - 1.0)
            self._trim(self.buffer_end)
            return []
        cut = self._utterance_end(spans, ending)
        if cut is not None:
            final = self._finalise(spans[0][0], cut)
            return [final] if final is not None else []
        self.speech_onset = spans[0][0]
        return self._ongoing(spans)

    def discard(self) -> None:
        """Drop the audio received and not yet final: no final will come for it (a client's `clear`)."""
        self.committed_until = max(self.committed_until, self.buffer_end)
        self.speech_onset = None
        self._previous = None
        self._fullest = []
        self._without_context = False
        self._trim(self.buffer_end)

    def _speech(self) -> list[tuple[float, float]]:
        """Absolute speech spans not yet committed."""
        found = self.vad.spans(since=round(self.buffer_start * SAMPLE_RATE))
        spans = [(s.start / SAMPLE_RATE, s.end / SAMPLE_RATE) for s in found]
        return [(max(start, self.committed_until), end) for start, end in spans if end > self.committed_until + 0.05]

    def _utterance_end(self, spans: list[tuple[float, float]], ending: bool) -> float | None:
        """Where the first finished utterance ends, if one has ended.

        A pause ends an utterance; a very short one (a lone word) waits for a longer pause, since a
        word decoded on its own is often misheard.
        """
        start = spans[0][0]
        for (_, end), (next_start, _) in itertools.pairwise(spans):
            if next_start - end >= self._silence_needed(end - start):
                return end + min(self.policy.tail, (next_start - end) / 2)
        last_end = spans[-1][1]
        cut = min(self.buffer_end, last_end + self.policy.tail)
        needed = self._silence_needed(last_end - start)
        if needed == self.policy.end_silence and self._decoded_end(cut):
            needed = min(needed, DECODED_END_SILENCE)
        return cut if ending or self.buffer_end - last_end >= needed else None

    def _decoded_end(self, cut: float) -> bool:
        """Whether the last decode (made as the pause began) heard the utterance to its end."""
        previous = self._previous
        return previous is not None and not previous.partial_only and self._heard_the_end(previous, cut)

    def _silence_needed(self, utterance_seconds: float) -> float:
        short = utterance_seconds < self.policy.min_utterance
        return self.policy.short_utterance_silence if short else self.policy.end_silence

    def _trim(self, utterance_start: float) -> None:
        """Drop audio older than the context kept before the current utterance."""
        keep_from = min(utterance_start - self.policy.lead, self.committed_until) - self.policy.context
        samples = round((keep_from - self.buffer_start) * SAMPLE_RATE)
        if samples > 0:
            self.buffer = self.buffer[samples:]
            self.buffer_start += samples / SAMPLE_RATE
            self.vad.forget_before(round(self.buffer_start * SAMPLE_RATE))

    def _decode_until(
        self,
        end: float,
        since: float | None = None,
        priority: int = Priority.INTERACTIVE,
        lead: float | None = None,
        quick: bool = False,
    ) -> list[Word]:
        """Words spoken after `since` (default: the committed point) and before `end`.

        Without `since`, the window starts with the kept context before the committed point; with
        it, `lead` (default `policy.lead`) before `since`. `quick` decodes a short window in a
        short encoder context (for a partial).
        """
        since = self.committed_until if since is None else since
        lead = self.policy.lead if lead is None else lead
        start = self.buffer_start if since == self.committed_until else max(self.buffer_start, since - lead)
        if end - start > MAX_WINDOW_SECONDS:  # far behind: drop the context, then the newest audio
            start = max(start, since - lead)
            end = min(end, start + MAX_WINDOW_SECONDS)
        first, last = (round((t - self.buffer_start) * SAMPLE_RATE) for t in (start, end))
        window = AudioWindow(start, self.buffer[first:last].copy())
        options = self._options_for(window, quick)
        if priority == Priority.PARTIAL:  # a beam's gain is in finals; partials stay cheap
            options = replace(options, beam_size=1)
        started = time.perf_counter()
        [future] = self.batcher.submit([window], options, priority)
        result = future.result(timeout=120)
        if priority == Priority.INTERACTIVE:
            result = self.fallback.improve(result, options)
        seconds = time.perf_counter() - started
        self._note_decode(seconds)
        logger.debug("decoded %.2f-%.2f s (priority %d) in %.3f s", start, end, priority, seconds)
        words = [w for w in _words(result) if (w.start + w.end) / 2 >= since and w.start < end]
        return _without_squeezed_repeat(_without_loops(self._without_repeated_tail(words)))

    def _note_decode(self, seconds: float) -> None:
        """Keep a smoothed decode time: one slow decode (a fallback, a busy moment) must not
        stretch the step of every following update."""
        first = self._decode_seconds == 0.0
        self._decode_seconds = seconds if first else 0.7 * self._decode_seconds + 0.3 * seconds

    def _final_words(self, onset: float, cut: float) -> list[Word]:
        speech = cut - self.policy.tail - onset
        return self._hypothesis_words(onset, speech, cut, Priority.INTERACTIVE, final=True)

    def _with_missed_speech(self, words: list[Word], cut: float) -> list[Word]:
        """The words, with the last REDECODED_WORDS decoded again on their own up to `cut` when
        Silero heard speech well after the last one (kept only if that decode heard more)."""
        if not words:
            return words
        last = words[-1]  # alignment stretches the last word over speech Whisper left out ("of" for 2 s)
        if self._silero_end(cut) - min(last.end, last.start + LONGEST_WORD_SECONDS) <= MISSED_SPEECH_SECONDS:
            return words
        keep = max(0, len(words) - REDECODED_WORDS)
        rest = self._decode_until(cut, since=words[keep].start)
        heard_more = bool(rest) and (keep + len(rest) > len(words) or rest[-1].end > last.end)
        return words[:keep] + rest if heard_more else words

    def _silero_end(self, cut: float) -> float:
        """Where Silero's speech probability fell, for an utterance cut at `cut`."""
        return cut - self.policy.tail - self.policy.vad.speech_pad_ms / 1000

    def _without_repeated_tail(self, words: list[Word]) -> list[Word]:
        """Drop leading words that repeat the end of the last final: the context timed a little
        late, or misheard into the new speech ("And all my fellow Americans." for "Ask not!")."""
        if not self.finals or not words or words[0].start - self.committed_until >= self.policy.context:
            return words
        tail = [_norm(word) for word in self.finals[-1].split()]
        for size in range(min(len(tail), len(words)), 0, -1):
            heard = [_norm(word.word) for word in words[:size]]
            same = all(map(_same_word, heard, tail[-size:]))
            if same or (size >= MIN_ECHO_WORDS and echoes(tail[-size:], heard)):
                return words[size:]
        return words

    def _options_for(self, window: AudioWindow, quick: bool = False) -> DecodingOptions:
        """Batches mix sessions, so the language is settled before decoding: detected on this window
        until the session has heard enough speech to keep a detection (short snippets mislead it)."""
        language = self.decoding.language
        if language is None:
            [(language, probability)] = self.batcher.engine.detect_languages([window])
            confident = probability >= LANGUAGE_CONFIDENCE and window.duration >= LANGUAGE_MIN_SECONDS
            if confident or window.duration >= LANGUAGE_SECONDS:
                self.decoding = replace(self.decoding, language=language)
        rate = TOKENS_PER_SECOND.get(language, OTHER_TOKENS_PER_SECOND)
        floor = 0.0 if quick and window.duration <= SHORT_WINDOW_SECONDS else STREAM_ENCODER_SECONDS
        return replace(self.decoding, language=language, max_tokens_per_second=rate, min_encoder_seconds=floor)

    def _finalise(self, utterance_start: float, cut: float) -> Event | None:
        previous = self._previous
        heard = [w for w in previous.words if w.start < cut] if previous is not None else []
        settled = self.decoding.language is not None
        covered = self._decoded_end(cut)
        # Reuse the last decode when it already heard it all; never lose words a partial showed.
        fullest = [w for w in self._fullest if w.start < cut]
        reusable = covered and heard and settled and not _collapsed(heard, fullest)
        words = heard if reusable else (self._final_words(utterance_start, cut) or heard)
        if _collapsed(words, fullest):  # never lose the words a partial of this utterance showed
            words = fullest
        seconds = cut - utterance_start
        if _too_fast(words, seconds) and fullest and not _too_fast(fullest, seconds):
            words = fullest
        words = self._with_missed_speech(words, cut)
        logger.debug("final: reused %s, %d words, fullest %d, cut %.2f", reusable, len(words), len(fullest), cut)
        words = _not_before(words, utterance_start)
        self.committed_until = cut
        self._previous = None
        self._fullest = []
        self._without_context = False
        self._trim(cut)
        return self._final_event(words)

    def _heard_the_end(self, hypothesis: _Hypothesis, cut: float) -> bool:
        """Whether a decode ending at `hypothesis.covers_until` already heard the whole utterance.

        It did if it reached two frames past the one where Silero's speech probability fell (the
        VAD end before its pad): a last consonant sounds on past the fall, and JFK's "Americans"
        cut at the fall is heard as "America". Silero also marks some
        ends late, after a breath or a click: a decode that stopped before the VAD end still heard
        it all when Whisper's last word ended well before the decode's end.
        """
        if not cut - self.policy.tail - 0.25 <= hypothesis.covers_until <= cut + 1.0:
            return False
        if hypothesis.covers_until >= self._silero_end(cut) + AFTER_FALL_SECONDS - 1e-3:
            return True
        words = hypothesis.words
        return bool(words) and hypothesis.covers_until - words[-1].end >= HEARD_PAUSE_SECONDS

    def _ongoing(self, spans: list[tuple[float, float]]) -> list[Event]:
        """Speech goes on: a partial every step (or as soon as speech pauses), committing stable words
        of a long utterance."""
        paused = self.buffer_end - spans[-1][1] >= PAUSE_SECONDS or self.vad.quiet_seconds() >= QUIET_SECONDS
        covered = self._previous is not None and self._previous.covers_until >= spans[-1][1]
        due = self.audio_received - self._last_decode_at >= self.step
        # Whisper finds no word in the first 0.2-0.3 s of speech: such a decode only delays the next.
        due = due and spans[-1][1] - spans[0][0] >= MIN_HEARD_SPEECH_SECONDS
        # A partial started as speech fades would make a pause decode wait for it: hold it briefly.
        held = self.vad.fading() and self.audio_received - self._last_decode_at < self.step + HOLD_SECONDS
        due = due and not held
        if not (due or (paused and not covered)):
            return []
        decoded_until = self.buffer_end
        self._last_decode_at = self.audio_received
        # A decode at a pause is likely the final's (reused if the pause lasts): it goes first.
        priority = Priority.INTERACTIVE if paused and not covered else Priority.PARTIAL
        onset, speech = spans[0][0], spans[-1][1] - spans[0][0]
        quick = self._onset_partial(onset, speech, priority)
        words = self._hypothesis_words(onset, speech, decoded_until, priority)
        words = _not_before(words, spans[0][0])
        self._adapt_step()
        if not words:  # too little speech for a word yet: look again sooner than a full step
            self._last_decode_at -= self.step / 2
        events = self._commit_stable(words, spans[0][0], decoded_until)
        if events:
            words = [w for w in words if (w.start + w.end) / 2 >= self.committed_until]
            self._fullest = [w for w in self._fullest if (w.start + w.end) / 2 >= self.committed_until]
        greedy = priority == Priority.PARTIAL and self.decoding.beam_size > 1
        self._previous = _Hypothesis(words, decoded_until, quick or greedy)
        if len(words) >= len(self._fullest):
            self._fullest = words
        self._trim(spans[0][0])
        if words:
            events.append(self._partial_event(words))
        return events

    def _hypothesis_words(
        self, onset: float, speech: float, end: float, priority: int, final: bool = False
    ) -> list[Word]:
        """The utterance's words up to `end`.

        The committed context helps Whisper with a short phrase, but given it Whisper often ends at
        the context's sentence end and hears none of a second of new speech (the retry without it
        made the first partial come 1.3-1.8 s after the onset). So the first partials of an
        utterance are decoded alone, and quickly (a final never reuses them). A new utterance (a
        pause of NEW_UTTERANCE_GAP) is decoded alone from `lead` before its onset: a second of
        silence before it made tiny.en hear "I'm not going to be able to do anything." (and call it
        no speech) for 2.8 s of "Many people don't think about them".
        """
        if self._onset_partial(onset, speech, priority):
            return self._decode_alone(onset, end, priority, quick=True)
        if onset - self.last_final_end >= NEW_UTTERANCE_GAP:
            return self._decode_alone(onset, end, priority)
        return self._utterance_words(end, priority, retry=final or speech >= MIN_HEARD_SPEECH_SECONDS)

    def _decode_alone(self, onset: float, end: float, priority: int, quick: bool = False) -> list[Word]:
        """The utterance decoded without the committed audio, from `lead` before its onset; every word
        of the window is new (Whisper may time the first one inside the lead)."""
        start = max(self.committed_until + 1e-3, onset - self.policy.lead)
        return self._decode_until(end, since=start, priority=priority, lead=0.0, quick=quick)

    def _onset_partial(self, onset: float, speech: float, priority: int) -> bool:
        """Whether a decode is a partial of an utterance's first second, after another utterance."""
        fresh = bool(self.finals) and onset > self.committed_until + 0.05
        return fresh and priority == Priority.PARTIAL and speech < ONSET_SECONDS

    def _utterance_words(self, end: float, priority: int, retry: bool) -> list[Word]:
        """The utterance's words up to `end`, decoded after the kept context. Given that context,
        Whisper sometimes stops at its sentence end and leaves the new speech out; then (`retry`)
        the utterance is decoded without it, and stays so until its final."""
        if not self._without_context:
            words = self._decode_until(end, priority=priority)
            if words or not retry:
                return words
            self._without_context = True
        return self._decode_until(end, since=self.committed_until + 1e-3, priority=priority)

    def _commit_stable(self, words: list[Word], utterance_start: float, decoded_until: float) -> list[Event]:
        """In a long utterance, the words two hypotheses agree on that end well before the newest audio."""
        if self._previous is None or decoded_until - utterance_start <= self.policy.max_utterance:
            return []
        limit = decoded_until - self.policy.commit_margin
        stable = [w for w in agreed_prefix(self._previous.words, words) if w.end <= limit]
        if not stable:
            return []
        final = self._final_event(stable)
        self.committed_until = stable[-1].end
        return [final] if final else []

    def _final_event(self, words: list[Word]) -> Event | None:
        text = _text(words)
        if not text:
            return None
        floor = self.last_final_end  # alignment may time a first word a little early: never overlap
        words = [replace(w, start=max(w.start, floor), end=max(w.end, floor)) for w in words]
        self.last_final_end = words[-1].end
        self.finals.append(text)
        return {
            "type": "final",
            "text": text,
            "start": words[0].start,
            "end": words[-1].end,
            "words": [_word_event(w) for w in words],
            "audio_received": self.audio_received,
        }

    def _partial_event(self, words: list[Word]) -> Event:
        return {
            "type": "partial",
            "text": _text(words),
            "start": words[0].start,
            "end": words[-1].end,
            "words": [_word_event(w) for w in words],
            "audio_received": self.audio_received,
        }

    @property
    def lagging(self) -> bool:
        """Decoding is slower than the base step: updates come less often than usual."""
        return self.step > 2 * self.policy.step

    def _adapt_step(self) -> None:
        """Decode less often when decoding takes most of the step, or when the partials of all the
        engine's live sessions would take more than PARTIAL_SHARE of it: the rest stays free for
        finals, which are what people wait for (and the stream never drifts behind)."""
        policy = self.policy
        streams = self.batcher.streams
        cost = self.batcher.window_seconds or self._decode_seconds
        shared = streams * cost / PARTIAL_SHARE if streams > 1 else 0.0  # alone, finals wait for no one
        wanted = max(policy.step, self._decode_seconds * OWN_DECODE_SHARE, shared)
        self.step = min(policy.max_step, wanted)

    def flush(self) -> list[Event]:
        """Finals for all the speech received so far, now (a client's commit); the session goes on."""
        events: list[Event] = []
        for _ in range(100):
            more = self.update(ending=True)
            events.extend(more)
            if not self._speech():
                break
        self.speech_onset = None
        return events

    def finish(self) -> list[Event]:
        """After the client's `end`: finals for all remaining speech, then `done`."""
        events = self.flush()
        events.append({"type": "done", "text": " ".join(self.finals), "audio_received": self.audio_received})
        return events
