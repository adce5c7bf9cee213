"""Even out the loudness of speech inside a window before Whisper hears it.

Whisper normalises log-Mel features to the loudest frame of each 30-s window and clamps
everything 80 dB below it. When one window holds a loud speaker and a quiet one (a far
microphone, an audience question, recordings joined together), the quiet speech sits near
that floor and the decoder skips it. Scaling each VAD speech span to the same level, with gains
ramping linearly through the pauses, fixes this and leaves evenly recorded windows unchanged up
to a global gain, which the normalisation ignores anyway.
"""

from __future__ import annotations

import numpy as np

from .vad import Span

TARGET_RMS_DBFS = -20.0
MAX_GAIN_DB = 40.0
MIN_GAIN_DB = -20.0
MIN_SPREAD_DB = 6.0  # spans within this range of each other are left alone


def span_gains(audio: np.ndarray, spans: list[Span]) -> np.ndarray:
    """Linear gain per span that brings its RMS to the target level, within limits."""
    levels = []
    for span in spans:
        piece = audio[span.start : span.end]
        rms = float(np.sqrt(np.mean(np.square(piece, dtype=np.float64)))) if piece.size else 0.0
        levels.append(20 * np.log10(max(rms, 1e-7)))
    gains_db = np.clip(TARGET_RMS_DBFS - np.array(levels), MIN_GAIN_DB, MAX_GAIN_DB)
    return np.asarray(10 ** (gains_db / 20), dtype=np.float64)


def equalize_speech(audio: np.ndarray, spans: list[Span]) -> np.ndarray:
    """A copy of `audio` with every speech span at the same RMS; pauses ramp between gains."""
    spans = [s for s in spans if s.end > s.start]
    if len(spans) < 2:
        return audio
    gains = span_gains(audio, spans)
    if 20 * np.log10(gains.max() / gains.min()) < MIN_SPREAD_DB:
        return audio
    anchors = np.array([edge for s in spans for edge in (s.start, s.end - 1)], dtype=np.float64)
    values = np.repeat(gains, 2)
    curve = np.interp(np.arange(audio.shape[0]), anchors, values)
    leveled: np.ndarray = (audio * curve).astype(np.float32)
    return leveled
