"""Whisper on CTranslate2: model loading, batched decoding, word alignment."""

from ..core.types import AudioWindow, Decoded, RawSegment, WindowResult
from .decoding import compression_ratio, confidence, encoder_seconds, is_silence, needs_fallback
from .engine import WhisperEngine, supported_languages
from .loader import LoadedModel, load_model, loaded_models, unload_all, unload_model
from .segments import echoes

__all__ = [
    "AudioWindow",
    "Decoded",
    "LoadedModel",
    "RawSegment",
    "WhisperEngine",
    "WindowResult",
    "compression_ratio",
    "confidence",
    "echoes",
    "encoder_seconds",
    "is_silence",
    "load_model",
    "loaded_models",
    "needs_fallback",
    "supported_languages",
    "unload_all",
    "unload_model",
]
