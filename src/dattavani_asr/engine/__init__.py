"""Whisper on CTranslate2: model loading, batched decoding, word alignment."""

from .engine import WhisperEngine, supported_languages
from .loader import LoadedModel, load_model, loaded_models, unload_all
from .windows import AudioWindow, Decoded, RawSegment, WindowResult

__all__ = [
    "AudioWindow",
    "Decoded",
    "LoadedModel",
    "RawSegment",
    "WhisperEngine",
    "WindowResult",
    "load_model",
    "loaded_models",
    "supported_languages",
    "unload_all",
]
