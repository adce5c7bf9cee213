"""The script guard: a transcript is checked against the script of its language.

A model that cannot write a language well does not fail: it writes another script (base wrote
Kannada speech in Tamil letters, or in Latin transliteration) or nothing at all. Each segment in a
third script is flagged (`Segment.wrong_script`), and the transcript carries warnings that name
the fix, so that nobody archives an empty or unreadable file believing it is a transcript.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from functools import reduce

from ..core.scripts import LATIN_SCRIPT, ScriptCount, count_script, script_of
from ..core.transcript import Segment
from ..imported import CATALOG

ROMANIZED_SHARE = 0.1  # under this share of its own script, a transcript is a transliteration
LANGUAGE_NAMES = {
    "kn": "Kannada",
    "hi": "Hindi",
    "mr": "Marathi",
    "sa": "Sanskrit",
    "ne": "Nepali",
    "ta": "Tamil",
    "te": "Telugu",
    "ml": "Malayalam",
    "bn": "Bengali",
    "gu": "Gujarati",
    "pa": "Punjabi",
    "ur": "Urdu",
}


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


def fix_for(language: str) -> str:
    """What to do when a model cannot write `language`."""
    recommended = [entry.name for entry in CATALOG.values() if entry.language == language]
    if recommended:
        installs = " or ".join(f"`dattavani-asr models install {name}`" for name in recommended[:2])
        return f"use a {language_name(language)} model: {installs}, then --model {recommended[0]}"
    return "use a larger multilingual model (--model small, medium or large-v3) or a fine-tuned one (`models import`)"


def flag_segments(segments: Sequence[Segment], language: str) -> tuple[Segment, ...]:
    """Segments with `wrong_script` set from their own language (the transcript's when unknown)."""
    return tuple(replace(s, wrong_script=count_script(s.text, s.language or language).wrong) for s in segments)


def script_warnings(segments: Sequence[Segment], language: str, model: str, speech_windows: int) -> tuple[str, ...]:
    """Warnings for a transcript in `language` by `model`, from `speech_windows` windows that held speech."""
    name = language_name(language)
    if speech_windows and not any(s.text.strip() for s in segments):
        return (
            f"speech was heard ({speech_windows} windows) but model {model} wrote no {name} text: {fix_for(language)}",
        )
    warnings = []
    flagged = [s for s in segments if s.wrong_script]
    script = script_of(language)
    if flagged:
        warnings.append(
            f"{len(flagged)} of {len(segments)} segments are not in {script.name} script (language {language}, "
            f"model {model}): {fix_for(language)}"
        )
    own = [s for s in segments if (s.language or language) == language]
    counted = reduce(lambda a, b: a + b, (count_script(s.text, language) for s in own), ScriptCount())
    if script is not LATIN_SCRIPT and counted.letters and counted.expected < ROMANIZED_SHARE * counted.letters:
        warnings.append(f"the {name} text is in Latin letters, not {script.name} (model {model}): {fix_for(language)}")
    return tuple(warnings)
