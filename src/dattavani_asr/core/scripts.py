"""Which writing system a language is written in, and whether a text is written in it.

Whisper writes some languages in another script when its model knows them poorly: base given
Kannada speech wrote Tamil and Arabic letters; Hindi sometimes comes out in Urdu's Arabic script.
Latin letters are always allowed (English words and names inside an Indian-language talk), so a
segment is flagged only when letters of a third script make up a real part of it.
"""

from __future__ import annotations

from dataclasses import dataclass

Ranges = tuple[tuple[int, int], ...]

LATIN: Ranges = ((0x0041, 0x024F), (0x1E00, 0x1EFF))
DEVANAGARI: Ranges = ((0x0900, 0x097F), (0xA8E0, 0xA8FF))
BENGALI: Ranges = ((0x0980, 0x09FF),)
ARABIC: Ranges = ((0x0600, 0x06FF), (0x0750, 0x077F), (0xFB50, 0xFDFF), (0xFE70, 0xFEFF))
CYRILLIC: Ranges = ((0x0400, 0x04FF),)
CJK: Ranges = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF))


@dataclass(frozen=True)
class Script:
    name: str
    ranges: Ranges

    def holds(self, character: str) -> bool:
        point = ord(character)
        return any(low <= point <= high for low, high in self.ranges)


SCRIPTS: dict[str, Script] = {
    **{code: Script("Devanagari", DEVANAGARI) for code in ("hi", "mr", "ne", "sa")},
    "kn": Script("Kannada", ((0x0C80, 0x0CFF),)),
    "ta": Script("Tamil", ((0x0B80, 0x0BFF),)),
    "te": Script("Telugu", ((0x0C00, 0x0C7F),)),
    "ml": Script("Malayalam", ((0x0D00, 0x0D7F),)),
    "gu": Script("Gujarati", ((0x0A80, 0x0AFF),)),
    "pa": Script("Gurmukhi", ((0x0A00, 0x0A7F),)),
    "or": Script("Odia", ((0x0B00, 0x0B7F),)),
    "si": Script("Sinhala", ((0x0D80, 0x0DFF),)),
    **{code: Script("Bengali", BENGALI) for code in ("bn", "as")},
    **{code: Script("Arabic", ARABIC) for code in ("ur", "ar", "fa", "ps", "sd")},
    **{code: Script("Cyrillic", CYRILLIC) for code in ("ru", "uk", "bg", "be", "mk", "kk", "mn", "tg")},
    "el": Script("Greek", ((0x0370, 0x03FF),)),
    "he": Script("Hebrew", ((0x0590, 0x05FF),)),
    "th": Script("Thai", ((0x0E00, 0x0E7F),)),
    "zh": Script("Han", CJK),
    "ja": Script("Japanese", (*CJK, (0x3040, 0x30FF))),
    "ko": Script("Hangul", ((0xAC00, 0xD7AF), (0x1100, 0x11FF), (0x3130, 0x318F))),
    "ka": Script("Georgian", ((0x10A0, 0x10FF),)),
    "hy": Script("Armenian", ((0x0530, 0x058F),)),
    "am": Script("Ethiopic", ((0x1200, 0x137F),)),
    "my": Script("Myanmar", ((0x1000, 0x109F),)),
    "km": Script("Khmer", ((0x1780, 0x17FF),)),
}
LATIN_SCRIPT = Script("Latin", LATIN)
FOREIGN_SHARE = 0.2  # letters of a third script above this share flag a segment


def script_of(language: str | None) -> Script:
    """The script `language` is written in (Latin for the languages not listed)."""
    return SCRIPTS.get(language or "en", LATIN_SCRIPT)


@dataclass(frozen=True)
class ScriptCount:
    """Letters of a text: in the language's script, in Latin, in any other script."""

    expected: int = 0
    latin: int = 0
    foreign: int = 0

    @property
    def letters(self) -> int:
        return self.expected + self.latin + self.foreign

    @property
    def wrong(self) -> bool:
        return self.letters > 0 and self.foreign > FOREIGN_SHARE * self.letters

    def __add__(self, other: ScriptCount) -> ScriptCount:
        return ScriptCount(self.expected + other.expected, self.latin + other.latin, self.foreign + other.foreign)


def count_script(text: str, language: str | None) -> ScriptCount:
    """Count the letters of `text` (combining vowel signs count with their script)."""
    script = script_of(language)
    expected = latin = foreign = 0
    for character in text:
        if not (character.isalpha() or _is_mark(character)):
            continue
        if script.holds(character):
            expected += 1
        elif LATIN_SCRIPT.holds(character):
            latin += 1
        else:
            foreign += 1
    return ScriptCount(expected, latin, foreign)


def _is_mark(character: str) -> bool:
    import unicodedata

    return unicodedata.category(character).startswith("M")


def wrong_script(text: str, language: str | None) -> bool:
    """Whether `text` is written largely in a script that is neither its language's nor Latin."""
    return count_script(text, language).wrong
