"""Every user-facing option, declared once; and the frozen option objects passed between stages.

An `Option` holds a name, default, range and help, and the surfaces it appears on. The CLI flags
(`cli.options`), the TOML/env settings (`config.Settings`), the service's settings
(`server.settings.ServerSettings`), the HTTP form fields (`server.routers.audio`) and the live
stream's query parameters (`server.routers.stream`) are made from these declarations, and
`tests/test_option_surfaces.py` fails if one disagrees with them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

TASKS = ("transcribe", "translate")
DEVICES = ("auto", "cpu", "cuda")
Surface = str  # "transcribe", "batch" (CLI commands), "settings", "server", "http", "stream"


@dataclass(frozen=True)
class Option:
    """One option: name, default, range and help, and where it appears (under another name there, if given)."""

    name: str
    default: Any
    help: str
    surfaces: frozenset[Surface]
    ge: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | None = None
    short: str | None = None  # a one-letter CLI flag, e.g. -m
    switch: bool = False  # an on/off option whose default is None (unset: a policy decides)
    names: tuple[tuple[Surface, str], ...] = ()  # a surface that calls it otherwise (OpenAI's `prompt`)

    def name_on(self, surface: Surface) -> str:
        return dict(self.names).get(surface, self.name)

    @property
    def flag(self) -> str:
        dashed = self.name.replace("_", "-")
        on_off = isinstance(self.default, bool) or self.switch
        return f"--{dashed}/--no-{dashed}" if on_off else f"--{dashed}"

    def field(self) -> Any:
        """A pydantic field with this default, range and help (for settings classes)."""
        return Field(self.default, ge=self.ge, le=self.le, description=self.help)


def _surfaces(*names: Surface) -> frozenset[Surface]:
    return frozenset(names)


CLI_AND_SETTINGS = _surfaces("transcribe", "batch", "settings")
CLI_SETTINGS_HTTP = _surfaces("transcribe", "batch", "settings", "http")
ENGINE = _surfaces("transcribe", "batch", "settings", "server")
MODEL = Option(
    "model",
    "tiny.en",
    "registry name (tiny.en, base), model directory or hub repo id",
    _surfaces("transcribe", "batch", "settings", "server", "http", "stream"),
    short="-m",
    names=(("server", "default_model"),),
)
LANGUAGE = Option("language", None, "ISO 639-1 code; none = detect", CLI_SETTINGS_HTTP | {"stream"}, short="-l")
TASK = Option(
    "task", "transcribe", "transcribe, or translate into English", CLI_AND_SETTINGS | {"stream"}, choices=TASKS
)
BEAM_SIZE = Option("beam_size", 5, "beam search width (1 = greedy)", ENGINE, ge=1, le=16)
STREAM_BEAM_SIZE = Option(
    "stream_beam_size", 5, "beam size of live finals (partials are greedy)", _surfaces("server"), ge=1, le=16
)
BATCH_SIZE = Option("batch_size", 8, "speech windows decoded together in one engine call", ENGINE, ge=1, le=64)
BATCH_WAIT_MS = Option(
    "batch_wait_ms",
    15.0,
    "how long a batch waits for windows of other callers (ms)",
    _surfaces("server"),
    ge=0,
    le=1000,
)
WORD_TIMESTAMPS = Option("word_timestamps", False, "time every word", CLI_AND_SETTINGS)
INITIAL_PROMPT = Option(
    "initial_prompt", None, "text that primes vocabulary and style", CLI_SETTINGS_HTTP, names=(("http", "prompt"),)
)
HOTWORDS = Option("hotwords", None, "words or names to favour", CLI_AND_SETTINGS)
TEMPERATURE = Option(
    "temperature", 0.0, "sampling temperature; 0 = openai/whisper's fallback", _surfaces("http"), ge=0, le=1
)
VAD = Option("vad", True, "Silero VAD speech chunking", CLI_AND_SETTINGS)
TRIM_ENCODER = Option(
    "trim_encoder",
    None,
    "encode short windows without padding them to 30 s (faster); unset: English-only models only",
    ENGINE,
    switch=True,
)
FALLBACK_MODEL = Option(
    "fallback_model", None, "models tried in turn on low-confidence windows (comma list, e.g. base,small)", ENGINE
)
MIN_CONFIDENCE = Option(
    "min_confidence", 0.6, "windows under this confidence go down the fallback chain", ENGINE, ge=0, le=1
)
DEVICE = Option("device", "auto", "auto, cpu or cuda", ENGINE, choices=DEVICES)
COMPUTE_TYPE = Option("compute_type", "auto", "auto = int8 on CPU, float16 on GPU", ENGINE)
CPU_THREADS = Option("cpu_threads", 0, "CPU threads of the engine; 0 = all cores", ENGINE, ge=0)
DEVICE_INDEX = Option(
    "device_index", "0", "GPU number(s): 0,1 loads the model on each and spreads batches across them", ENGINE
)

SPEAKERS = _surfaces("transcribe", "batch", "settings", "http")
DIARIZE = Option("diarize", False, "label who speaks when (speaker diarization; the diarize extra)", SPEAKERS)
NUM_SPEAKERS = Option(
    "num_speakers", None, "number of speakers, when known (turns on --diarize)", SPEAKERS, ge=1, le=64
)
MIN_SPEAKERS = Option("min_speakers", None, "at least this many speakers (turns on --diarize)", SPEAKERS, ge=1, le=64)
MAX_SPEAKERS = Option("max_speakers", None, "at most this many speakers (turns on --diarize)", SPEAKERS, ge=1, le=64)
CHANNELS_AS_SPEAKERS = Option(
    "channels_as_speakers",
    False,
    "a stereo call: each channel transcribed as its own speaker",
    _surfaces("transcribe", "settings"),
)

OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        MODEL, LANGUAGE, TASK, BEAM_SIZE, STREAM_BEAM_SIZE, BATCH_SIZE, BATCH_WAIT_MS, WORD_TIMESTAMPS, INITIAL_PROMPT,
        HOTWORDS, TEMPERATURE, VAD, TRIM_ENCODER, FALLBACK_MODEL, MIN_CONFIDENCE, DEVICE, COMPUTE_TYPE, CPU_THREADS,
        DEVICE_INDEX, DIARIZE, NUM_SPEAKERS, MIN_SPEAKERS, MAX_SPEAKERS, CHANNELS_AS_SPEAKERS,
    )
}  # fmt: skip


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

    task: str = TASK.default
    language: str | None = LANGUAGE.default
    beam_size: int = BEAM_SIZE.default
    best_of: int = 5
    patience: float = 1.0
    length_penalty: float = 1.0
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float = 2.4
    log_prob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    initial_prompt: str | None = INITIAL_PROMPT.default
    hotwords: str | None = HOTWORDS.default
    word_timestamps: bool = WORD_TIMESTAMPS.default
    without_timestamps: bool = False
    max_initial_timestamp: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    suppress_blank: bool = True
    # Encode only the audio plus a margin instead of a full 30-s window (whisper.cpp's audio_ctx):
    # a 10-s window costs about half the encoder time; slightly less accurate on some languages.
    # None: the model's policy (pipeline.run.trims_encoder), decided before the engine sees it.
    trim_encoder: bool | None = TRIM_ENCODER.default
    min_encoder_seconds: float = 0.0  # smallest trimmed context: windows of many lengths then share batches
    # Decode again the rest of a window after Whisper stopped early (see WhisperEngine.transcribe_batch).
    # Live streams turn it off: their windows end mid-speech by design.
    retry_tail: bool = True
    # Stop decoding a window after this many text tokens per second of its audio (None: Whisper's
    # 448 per window). A window that makes Whisper loop then costs a fraction of a full loop.
    max_tokens_per_second: float | None = None


@dataclass(frozen=True)
class SpeakerOptions:
    """Speaker diarization: how many speakers, if known (pipeline.speakers)."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None

    def bounds(self) -> tuple[int, int]:
        """(fewest, most) speakers to find."""
        if self.num_speakers is not None:
            return self.num_speakers, self.num_speakers
        return self.min_speakers or 1, self.max_speakers or 64


@dataclass(frozen=True)
class TranscribeOptions:
    """Everything one transcription call needs beyond the model itself."""

    decoding: DecodingOptions = field(default_factory=DecodingOptions)
    vad: VadOptions | None = field(default_factory=VadOptions)
    batch_size: int = BATCH_SIZE.default
    start: float | None = None
    end: float | None = None
    channel: int | None = None
    fallback_models: tuple[str, ...] = ()  # tried in turn on windows under min_confidence
    min_confidence: float = MIN_CONFIDENCE.default
    speakers: SpeakerOptions | None = None  # None: no diarization
    channels_as_speakers: bool = False
