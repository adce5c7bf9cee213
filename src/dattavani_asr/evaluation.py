"""Word error rate after Whisper-style text normalisation (needs the `test` or `bench` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=2)
def _normalizer(english: bool) -> Any:
    if english:
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer()
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def normalize(text: str, language: str = "en") -> str:
    """openai/whisper's English normaliser for English, its basic one for other languages."""
    return " ".join(_normalizer(language == "en")(text).split())


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str], language: str = "en") -> float:
    """Corpus WER (0–1+) of hypotheses against references, both normalised the same way."""
    import jiwer

    pairs = [(normalize(r, language), normalize(h, language)) for r, h in zip(references, hypotheses, strict=True)]
    kept = [(r, h) for r, h in pairs if r]
    if not kept:
        raise ValueError("no non-empty reference to score against")
    return float(jiwer.wer([r for r, _ in kept], [h for _, h in kept]))
