"""Frozen option objects passed between stages."""

from __future__ import annotations

from dataclasses import dataclass, field

TASKS = ("transcribe", "translate")


@dataclass(frozen=True)
class VadOptions:
    """Silero VAD settings used to cut audio into speech windows."""

    threshold: float = 0.5
    min_speech_ms: int = 250
    min_silence_ms: int = 500
    speech_pad_ms: int = 300
    max_window_s: float = 30.0
    max_gap_s: float = 2.0
    # Silero's state after speech delays the onset of the next sentence by up to ~1 s, so
    # windows reach back into the preceding pause; Whisper itself skips the silence.
    lead_pad_s: float = 1.0
    tail_pad_s: float = 0.5
    equalize_speech: bool = True  # see loudness.py


@dataclass(frozen=True)
class DecodingOptions:
    """How Whisper decodes one window.

    Temperature fallback follows openai/whisper: decode greedily/beam at 0, and retry at the
    next temperature when the text is too repetitive (compression ratio) or too unlikely
    (average log probability), unless the window looks like non-speech.
    """

    task: str = "transcribe"
    language: str | None = None
    beam_size: int = 5
    best_of: int = 5
    patience: float = 1.0
    length_penalty: float = 1.0
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    initial_prompt: str | None = None
    hotwords: str | None = None
    word_timestamps: bool = False
    without_timestamps: bool = False
    max_initial_timestamp: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    suppress_blank: bool = True
    # Encode only the audio plus a margin instead of a full 30-s window (whisper.cpp's audio_ctx):
    # a 10-s window costs about half the encoder time; slightly less accurate on some languages.
    # None: the model's policy (pipeline.run.trims_encoder), decided before the engine sees it.
    trim_encoder: bool | None = None
    min_encoder_seconds: float = 0.0  # smallest trimmed context: windows of many lengths then share batches
    # Decode again the rest of a window after Whisper stopped early (see WhisperEngine.transcribe_batch).
    # Live streams turn it off: their windows end mid-speech by design.
    retry_tail: bool = True
    # Stop decoding a window after this many text tokens per second of its audio (None: Whisper's
    # 448 per window). A window that makes Whisper loop then costs a fraction of a full loop.
    max_tokens_per_second: float | None = None


@dataclass(frozen=True)
class TranscribeOptions:
    """Everything one transcription call needs beyond the model itself."""

    decoding: DecodingOptions = field(default_factory=DecodingOptions)
    vad: VadOptions | None = field(default_factory=VadOptions)
    batch_size: int = 8
    start: float | None = None
    end: float | None = None
    channel: int | None = None
    fallback_models: tuple[str, ...] = ()  # tried in turn on windows under min_confidence
    min_confidence: float = 0.6
