"""Shared fixtures: real recordings, their references, and one model load per test session."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from dattavani_asr import Transcriber

DATA = Path(__file__).parent / "data"
JFK = DATA / "misc" / "jfk.flac"
JFK_PHRASE = "ask not what your country can do for you"


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep tests away from the user's config; keep one shared model cache per session."""
    for key in [k for k in os.environ if k.startswith("DATTAVANI_") and k != "DATTAVANI_CACHE_DIR"]:
        del os.environ[key]


def load_manifest() -> list[dict[str, Any]]:
    with (DATA / "manifest.jsonl").open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def fleurs(language: str) -> list[dict[str, Any]]:
    return [item for item in load_manifest() if item["file"].startswith("fleurs/") and item["lang"] == language]


@pytest.fixture(scope="session")
def tiny() -> Transcriber:
    return Transcriber("tiny.en", device="cpu")


@pytest.fixture(scope="session")
def base() -> Transcriber:
    return Transcriber("base", device="cpu")


@pytest.fixture(scope="session")
def jfk_transcript(tiny: Transcriber) -> Any:
    return tiny.transcribe(JFK, word_timestamps=True)
