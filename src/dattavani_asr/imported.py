"""Models brought in by `models import` (or `models install` of a recommended checkpoint).

Each lives in `<cache>/models/imported/<name>/` as a CTranslate2 Whisper directory with a
`dattavani-model.json` card: where it came from and what it can do (whether it learned timestamp
tokens, where its alignment heads came from). The card is written last, so a directory without
one is an import that did not finish.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from .core.errors import ModelError

CARD_FILE = "dattavani-model.json"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class ModelCard:
    """What an imported model is and how it decodes."""

    name: str
    source: str
    timestamps: bool  # False: never learned timestamp tokens, decoded per window without them
    timestamps_checked: str  # how `timestamps` was decided
    alignment_heads: str  # "checkpoint", "openai/whisper-small (same shape)" or "default (last half of layers)"
    quantization: str
    multilingual: bool
    imported_at: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def read(cls, directory: Path) -> ModelCard | None:
        """The card of a model directory, or None when it has none (or an unreadable one)."""
        try:
            data = json.loads((directory / CARD_FILE).read_text(encoding="utf-8"))
            known = {f.name for f in fields(cls)}
            return cls(**{key: value for key, value in data.items() if key in known})
        except (OSError, ValueError, TypeError):
            return None


def imported_root(cache: Path) -> Path:
    return cache / "models" / "imported"


def check_name(name: str, reserved: tuple[str, ...]) -> str:
    """`name` if it can name an imported model: a plain word (letters, digits, . _ -), not a registry name."""
    if not NAME_PATTERN.fullmatch(name):
        raise ModelError(f"invalid model name {name!r}: use letters, digits, '.', '_' or '-' (at most 64)")
    if name in reserved:
        raise ModelError(f"{name!r} is a built-in model name: choose another --name")
    return name


def locate_imported(name: str, cache: Path) -> Path | None:
    """The directory of an imported model, if one of that name finished importing."""
    if not NAME_PATTERN.fullmatch(name):
        return None
    directory = imported_root(cache) / name
    return directory if ModelCard.read(directory) is not None else None


def imported_models(cache: Path) -> list[tuple[ModelCard, Path]]:
    """Every imported model, by name."""
    root = imported_root(cache)
    found = []
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        card = ModelCard.read(directory)
        if card is not None and directory.name == card.name:
            found.append((card, directory))
    return found


@dataclass(frozen=True)
class Checkpoint:
    """A recommended fine-tuned checkpoint: downloaded from the hub and imported on request."""

    name: str
    repo_id: str
    language: str
    licence: str
    published: str  # accuracy as its authors published it (not measured here)

    def offline_hint(self) -> str:
        folder = self.repo_id.split("/")[-1]
        return (
            f"model {self.name} is converted from {self.repo_id} on the Hugging Face hub, which cannot be reached "
            f"from here. On a machine with a network run `dattavani-asr models install {self.name}` (needs the "
            f"convert extra: pip install 'dattavani-asr[convert]'), or download the folder there "
            f"(`hf download {self.repo_id} --local-dir {folder}`), copy it here and run "
            f"`dattavani-asr models import {folder} --name {self.name}`"
        )


CATALOG: dict[str, Checkpoint] = {
    entry.name: entry
    for entry in (
        Checkpoint("kannada-small", "vasista22/whisper-kannada-small", "kn", "Apache-2.0", "FLEURS kn test WER 8.61"),
        Checkpoint("kannada-medium", "vasista22/whisper-kannada-medium", "kn", "Apache-2.0", "FLEURS kn test WER 7.65"),
        Checkpoint("kannada-tiny", "vasista22/whisper-kannada-tiny", "kn", "Apache-2.0", "FLEURS kn test WER 13.38"),
        Checkpoint("hindi-small", "vasista22/whisper-hindi-small", "hi", "Apache-2.0", ""),
        Checkpoint("hindi-medium", "vasista22/whisper-hindi-medium", "hi", "Apache-2.0", ""),
    )
}
