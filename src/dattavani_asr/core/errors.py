"""Typed errors. Each carries the process exit code the CLI uses for it."""

from __future__ import annotations


def printable(text: str) -> str:
    """`text` safe to store, print or send: bytes of a file name that are not UTF-8 (kept by Python as
    lone surrogates) written as `\\xe9`, so a Latin-1 name in an old archive never breaks a log line,
    a database row or a JSON answer."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class DattavaniError(Exception):
    """Base class of every error this package raises on purpose. Its message is always `printable`."""

    exit_code: int = 1

    def __init__(self, *args: object) -> None:
        super().__init__(*(printable(arg) if isinstance(arg, str) else arg for arg in args))


class UnreadablePathError(DattavaniError):
    """The input path does not exist, is a directory, or cannot be read."""

    exit_code = 3


class UndecodableAudioError(DattavaniError):
    """The data is not a container/codec FFmpeg can decode."""

    exit_code = 4


class NoAudioStreamError(DattavaniError):
    """The container decodes but holds no audio stream (e.g. a silent video)."""

    exit_code = 5


class EmptyAudioError(DattavaniError):
    """The input holds no samples, or only digital silence."""

    exit_code = 6


class ModelError(DattavaniError):
    """A model cannot be found, installed, verified or loaded."""

    exit_code = 7


class InvalidOptionError(DattavaniError):
    """An option value is not usable (e.g. Hindi on an English-only model)."""

    exit_code = 8


class ConfigError(DattavaniError):
    """The configuration file or environment holds an invalid or unknown key."""

    exit_code = 9


class OutputError(DattavaniError):
    """A transcript could not be written."""

    exit_code = 10


class StreamError(DattavaniError):
    """A live stream could not be opened or was refused (dead URL, wrong key, bad parameters)."""

    exit_code = 11
