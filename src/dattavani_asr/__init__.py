"""Dattavani ASR: fast, robust speech-to-text with Whisper on CTranslate2.

    from dattavani_asr import Transcriber
    transcript = Transcriber(model="tiny.en").transcribe("talk.mp3")
    print(transcript.text)

Heavy libraries (CTranslate2, tokenizers, onnxruntime) load on first transcription, not here.
"""

from .core.errors import (
    ConfigError,
    DattavaniError,
    EmptyAudioError,
    InvalidOptionError,
    ModelError,
    NoAudioStreamError,
    OutputError,
    StreamError,
    UndecodableAudioError,
    UnreadablePathError,
)
from .core.options import DecodingOptions, TranscribeOptions, VadOptions
from .core.transcript import Segment, Timings, Transcript, Word
from .importing import import_model, install_checkpoint
from .pipeline.transcriber import Transcriber, make_options

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DattavaniError",
    "DecodingOptions",
    "EmptyAudioError",
    "InvalidOptionError",
    "ModelError",
    "NoAudioStreamError",
    "OutputError",
    "Segment",
    "StreamError",
    "Timings",
    "TranscribeOptions",
    "Transcriber",
    "Transcript",
    "UndecodableAudioError",
    "UnreadablePathError",
    "VadOptions",
    "Word",
    "__version__",
    "import_model",
    "install_checkpoint",
    "make_options",
]
