"""Word and character error rates after text normalisation (needs the `test` or `bench` extra).

openai/whisper's basic normaliser drops every combining mark, and with them the vowel signs and
viramas of Indian scripts ("ಕನ್ನಡ" becomes "ಕನನಡ"): scored that way a Kannada or Hindi transcript
that writes the wrong vowels looks right. Indian languages get their own normaliser, which keeps
marks and removes only punctuation (the danda included), joiners and case.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

INDIC = {"as", "bn", "gu", "hi", "kn", "ml", "mr", "ne", "or", "pa", "sa", "si", "ta", "te"}
JOINERS = re.compile("[\u200b-\u200d\u2060\ufeff]")


@lru_cache(maxsize=2)
def _normalizer(english: bool) -> Any:
    if english:
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer()
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def normalize_indic(text: str) -> str:
    """NFC, no joiners, punctuation and symbols as spaces, lower case; vowel signs and viramas kept."""
    text = JOINERS.sub("", unicodedata.normalize("NFC", text)).lower()
    kept = (" " if unicodedata.category(c)[0] in "PSZ" else c for c in text)
    return " ".join("".join(kept).split())


def normalize(text: str, language: str = "en") -> str:
    """openai/whisper's English normaliser for English, the Indic one for Indian languages, its basic one
    for the others."""
    if language in INDIC:
        return normalize_indic(text)
    return " ".join(_normalizer(language == "en")(text).split())


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str], language: str = "en") -> float:
    """Corpus WER (0–1+) of hypotheses against references, both normalised the same way."""
    import jiwer

    pairs = [(normalize(r, language), normalize(h, language)) for r, h in zip(references, hypotheses, strict=True)]
    kept = [(r, h) for r, h in pairs if r]
    if not kept:
        raise ValueError("no non-empty reference to score against")
    return float(jiwer.wer([r for r, _ in kept], [h for _, h in kept]))


def character_error_rate(references: Sequence[str], hypotheses: Sequence[str], language: str = "en") -> float:
    """Corpus CER (0–1+): the measure for scripts where a word is many letters (Kannada's agglutinated
    words make one wrong vowel sign a whole wrong word)."""
    import jiwer

    pairs = [(normalize(r, language), normalize(h, language)) for r, h in zip(references, hypotheses, strict=True)]
    kept = [(r, h) for r, h in pairs if r]
    if not kept:
        raise ValueError("no non-empty reference to score against")
    return float(jiwer.cer([r for r, _ in kept], [h for _, h in kept]))
