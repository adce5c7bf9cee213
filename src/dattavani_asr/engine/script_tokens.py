"""Tokens that write letters of another script than the language's, suppressed while decoding it.

Whisper's byte-level vocabulary lets a weak model spell a language in a neighbour's script: base
wrote espeak-ng Kannada in Tamil and Thai letters, and Hindi sometimes comes out in Urdu's Arabic
script. Suppressing the tokens of other non-Latin scripts leaves the model its language's script
and Latin (English words inside an Indian-language talk). A token that holds only part of a
character is judged by the bytes it has: a two-byte lead, or a three-byte lead with its second
byte, names the block (a few characters wide) the character falls in.
"""

from __future__ import annotations

import functools
import unicodedata
from typing import Any

from ..core.scripts import LATIN_SCRIPT, SCRIPTS, Script, script_of

# Scripts written together with others (Han with kana, Hangul with Han) are left alone.
UNGUARDED = {"zh", "ja", "ko"}
TEXT_TOKENS = 50257  # ids below this are text in every Whisper vocabulary


@functools.cache
def _byte_of_symbol() -> dict[str, int]:
    """The inverse of the byte-level BPE alphabet: each of the 256 symbols to its byte."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            table[chr(byte)] = byte
        else:
            table[chr(256 + shifted)] = byte
            shifted += 1
    return table


def _script_at(code_point: int) -> Script | None:
    if LATIN_SCRIPT.holds(chr(code_point)):
        return LATIN_SCRIPT
    return next((script for script in SCRIPTS.values() if script.holds(chr(code_point))), None)


def _block_script(first: int, last: int) -> str | None:
    """The script of a run of code points, if one script holds both ends."""
    start, end = _script_at(first), _script_at(last)
    return start.name if start is not None and end is not None and start.name == end.name else None


def _partial_scripts(raw: bytes) -> set[str]:
    """Scripts named by the partial characters at a token's edges."""
    found: set[str] = set()
    if raw and 0xC2 <= raw[-1] <= 0xDF:  # a two-byte lead: 64 code points
        base = (raw[-1] & 0x1F) << 6
        found.add(_block_script(base, base + 63) or "")
    second: int | None = None
    if len(raw) >= 2 and raw[-2] == 0xE0 and 0xA0 <= raw[-1] <= 0xBF:
        second = raw[-1]
    elif len(raw) >= 2 and 0xA0 <= raw[0] <= 0xBF and 0x80 <= raw[1] <= 0xBF:  # the tail of an E0-led character
        second = raw[0]
    if second is not None:
        base = (second & 0x3F) << 6
        found.add(_block_script(base, base + 63) or "")
    return found - {""}


def token_scripts(raw: bytes) -> set[str]:
    """The scripts whose letters (whole, or partial at the edges) a token's bytes hold."""
    found = {
        script.name
        for character in raw.decode("utf-8", errors="ignore")
        if character.isalpha() or unicodedata.category(character).startswith("M")
        if (script := _script_at(ord(character))) is not None
    }
    return found | _partial_scripts(raw)


@functools.lru_cache(maxsize=4)
def _scripted_tokens(hf_tokenizer: Any) -> tuple[tuple[int, frozenset[str]], ...]:
    """Every text token that holds letters of a script other than Latin, with those scripts (read once
    per tokenizer: about a second for Whisper's vocabulary)."""
    symbols = _byte_of_symbol()
    found = []
    for token_id in range(TEXT_TOKENS):
        symbol = hf_tokenizer.id_to_token(token_id)
        if symbol is None:
            continue
        scripts = token_scripts(bytes(symbols[c] for c in symbol if c in symbols)) - {LATIN_SCRIPT.name}
        if scripts:
            found.append((token_id, frozenset(scripts)))
    return tuple(found)


@functools.lru_cache(maxsize=64)
def foreign_script_tokens(hf_tokenizer: Any, language: str | None) -> frozenset[int]:
    """Text tokens holding letters of a script other than `language`'s and Latin (none for a
    language written in Latin, or in scripts used together)."""
    if language is None or language not in SCRIPTS or language in UNGUARDED:
        return frozenset()
    own = script_of(language).name
    return frozenset(token_id for token_id, scripts in _scripted_tokens(hf_tokenizer) if scripts - {own})
