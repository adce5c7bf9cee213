"""Audio in: decoding any container to 16 kHz (decode), speech detection (vad), loudness levelling
(loudness) and the speech windows the engine decodes (windows)."""

from .decode import SAMPLE_RATE, AudioInfo, AudioSource, decode_audio, iter_audio, probe

__all__ = ["SAMPLE_RATE", "AudioInfo", "AudioSource", "decode_audio", "iter_audio", "probe"]
