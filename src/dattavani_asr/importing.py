"""`models import`: a transformers Whisper checkpoint (a folder, or a hub id) to a registered CTranslate2 model.

The conversion is CTranslate2's own (`TransformersConverter`), which needs transformers and torch:
the `convert` extra. The converted directory keeps the tokenizer and the preprocessor config, gets
alignment heads (the checkpoint's own, else those of the OpenAI model of the same shape), is
loaded and decoded once, and only then is registered under its name (renamed into place, the card
last), so a failed import leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .core.errors import DattavaniError, ModelError
from .imported import CARD_FILE, CATALOG, ModelCard, check_name, imported_root, locate_imported
from .models import REGISTRY, hub_snapshot

log = logging.getLogger(__name__)

CONVERT_HINT = "pip install 'dattavani-asr[convert]'"
SOURCE_PATTERNS = ["*.json", "*.safetensors", "*.txt", "pytorch_model*.bin"]
COPIED_FILES = ("tokenizer.json", "preprocessor_config.json")
QUANTIZATIONS = ("float16", "float32", "int8", "int8_float16", "int8_float32", "bfloat16", "int16")
# The OpenAI model a checkpoint was fine-tuned from, by (d_model, decoder layers, vocabulary size).
OPENAI_SHAPES = {
    (384, 4, 51864): "openai/whisper-tiny.en",
    (384, 4, 51865): "openai/whisper-tiny",
    (512, 6, 51864): "openai/whisper-base.en",
    (512, 6, 51865): "openai/whisper-base",
    (768, 12, 51864): "openai/whisper-small.en",
    (768, 12, 51865): "openai/whisper-small",
    (1024, 24, 51864): "openai/whisper-medium.en",
    (1024, 24, 51865): "openai/whisper-medium",
    (1280, 32, 51865): "openai/whisper-large-v2",
    (1280, 32, 51866): "openai/whisper-large-v3",
}
PROBE_SECONDS = 30.0


def _require_converter() -> Any:
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
        from ctranslate2.converters import TransformersConverter
    except ImportError as exc:
        raise ModelError(f"importing a transformers checkpoint needs the convert extra: {CONVERT_HINT}") from exc
    return TransformersConverter


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def source_folder(source: str, cache: Path, allow_download: bool = True) -> Path:
    """The transformers Whisper folder named by `source`: a local folder, or a hub repo id (downloaded)."""
    path = Path(source).expanduser()
    if not path.exists():
        if source.count("/") != 1:
            raise ModelError(f"{source!r} is neither a folder nor a hub repo id (owner/name)")
        path = hub_snapshot(source, cache, SOURCE_PATTERNS, allow_download=allow_download)
    if not path.is_dir() or _read_json(path / "config.json").get("model_type") != "whisper":
        raise ModelError(f"{source}: not a transformers Whisper checkpoint (needs config.json with model_type whisper)")
    if not any(path.glob("*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        raise ModelError(f"{source}: no weights (model.safetensors or pytorch_model.bin)")
    return path


def _convert(folder: Path, target: Path, quantization: str) -> None:
    converter_class = _require_converter()
    copied = [name for name in COPIED_FILES if (folder / name).is_file()]
    converter = converter_class(str(folder), copy_files=copied, low_cpu_mem_usage=True)
    try:
        converter.convert(str(target), quantization=quantization, force=True)
    except (ValueError, RuntimeError, OSError, KeyError) as exc:
        raise ModelError(f"cannot convert {folder}: {exc}") from exc
    if "tokenizer.json" not in copied:  # older checkpoints ship vocab.json + merges.txt only
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(str(folder)).backend_tokenizer.save(str(target / "tokenizer.json"))
    if "preprocessor_config.json" not in copied:
        from transformers import WhisperFeatureExtractor

        config = _read_json(folder / "config.json")
        extractor = WhisperFeatureExtractor(feature_size=int(config.get("num_mel_bins", 80)))
        extractor.save_pretrained(str(target))


def openai_origin(config: dict[str, Any]) -> str | None:
    """The OpenAI model a checkpoint has the shape of (and was most likely fine-tuned from)."""
    shape = (config.get("d_model"), config.get("decoder_layers"), config.get("vocab_size"))
    return OPENAI_SHAPES.get(shape)  # type: ignore[arg-type]


def _alignment_heads(folder: Path, target: Path) -> str:
    """Record where the converted model's alignment heads come from, filling them in when known.

    The converter takes the checkpoint's own heads (generation_config.json) and otherwise falls back
    to every head of the last half of the layers, which times words poorly; a fine-tune keeps the
    attention of the model it came from, so that model's published heads are used instead.
    """
    if "alignment_heads" in _read_json(folder / "generation_config.json"):
        return "checkpoint"
    from ctranslate2.converters import transformers as converters

    origin = openai_origin(_read_json(folder / "config.json"))
    heads = getattr(converters, "_WHISPER_ALIGNMENT_HEADS", {}).get(origin)
    if origin is None or heads is None:
        return "default (last half of the layers)"
    config = _read_json(target / "config.json")
    config["alignment_heads"] = [list(head) for head in heads]
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return f"{origin} (same shape)"


def _loaded(target: Path) -> tuple[Any, Any, Any]:
    import ctranslate2
    import tokenizers
    from faster_whisper.feature_extractor import FeatureExtractor

    try:
        whisper = ctranslate2.models.Whisper(str(target), device="cpu", compute_type="int8")
        tokenizer = tokenizers.Tokenizer.from_file(str(target / "tokenizer.json"))
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"the converted model does not load: {exc}") from exc
    mels = int(_read_json(target / "preprocessor_config.json").get("feature_size", whisper.n_mels))
    return whisper, tokenizer, FeatureExtractor(feature_size=mels)


def _decode_tokens(target: Path, audio: np.ndarray, language: str | None) -> tuple[list[int], Any]:
    """Tokens of one greedy decode of `audio` (≤ 30 s) with timestamps allowed, and the tokenizer."""
    import ctranslate2
    from faster_whisper.tokenizer import Tokenizer

    whisper, hf_tokenizer, extractor = _loaded(target)
    tokenizer = Tokenizer(hf_tokenizer, whisper.is_multilingual, task="transcribe", language=language or "en")
    prompt = list(tokenizer.sot_sequence)
    features = extractor(np.pad(audio, (0, max(0, 30 * 16000 - audio.shape[0]))))[:, :3000]
    encoded = whisper.encode(ctranslate2.StorageView.from_array(features[None].astype(np.float32)))
    [result] = whisper.generate(encoded, [prompt], beam_size=1, max_length=224)
    return list(result.sequences_ids[0]), tokenizer


def verify_decodes(target: Path) -> bool:
    """Load the converted model and decode a second of faint noise: it must run, whatever it says.
    Whether the model is multilingual."""
    noise = (np.random.default_rng(0).standard_normal(16000) * 1e-3).astype(np.float32)
    try:
        _, tokenizer = _decode_tokens(target, noise, None)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"the converted model does not decode: {exc}") from exc
    return tokenizer.task is not None


def probe_timestamps(target: Path, probe_audio: str, language: str | None) -> bool:
    """Whether the model closes a segment with a timestamp token on real speech (a model fine-tuned
    without timestamps writes text straight to the end)."""
    from .audio.decode import decode_audio

    audio = decode_audio(probe_audio)[: round(PROBE_SECONDS * 16000)]
    tokens, tokenizer = _decode_tokens(target, audio, language)
    text_seen = False
    for token in tokens:
        if token >= tokenizer.timestamp_begin and text_seen:
            return True
        text_seen = text_seen or token < tokenizer.eot
    return False


def _timestamps(
    target: Path, source: str, mode: str, probe_audio: str | None, language: str | None
) -> tuple[bool, str]:
    if mode in ("yes", "no"):
        return mode == "yes", "given (--timestamps)"
    if probe_audio is not None:
        found = probe_timestamps(target, probe_audio, language)
        return found, f"probed on {Path(probe_audio).name}: {'timestamp tokens' if found else 'none'}"
    if source.startswith("openai/whisper-"):
        return True, "an OpenAI checkpoint"
    return False, "not probed (no --probe-audio): decoded per window without timestamps, safe for any fine-tune"


def _card(
    name: str, source: str, quantization: str, timing: tuple[bool, str], heads: str, multilingual: bool
) -> ModelCard:
    return ModelCard(
        name=name,
        source=source,
        timestamps=timing[0],
        timestamps_checked=timing[1],
        alignment_heads=heads,
        quantization=quantization,
        multilingual=multilingual,
        imported_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def _place(staging: Path, target: Path, force: bool) -> None:
    """Move a finished import into place (replacing an older one only with `force`)."""
    if target.exists():
        if not force:
            raise ModelError(f"a model named {target.name} is already imported: use --force to replace it")
        retired = target.with_name(f".{target.name}.old-{time.time_ns()}")
        target.rename(retired)
        staging.rename(target)
        shutil.rmtree(retired, ignore_errors=True)
        return
    staging.rename(target)


def import_model(
    source: str,
    name: str,
    *,
    cache: Path,
    quantization: str = "float16",
    timestamps: str = "auto",
    probe_audio: str | None = None,
    language: str | None = None,
    force: bool = False,
    allow_download: bool = True,
) -> Path:
    """Convert a transformers Whisper checkpoint and register it as `name`; its directory."""
    check_name(name, tuple(REGISTRY))
    if quantization not in QUANTIZATIONS:
        raise ModelError(f"unknown quantization {quantization!r}: use one of {', '.join(QUANTIZATIONS)}")
    if timestamps not in ("auto", "yes", "no"):
        raise ModelError("--timestamps must be auto, yes or no")
    _require_converter()
    if locate_imported(name, cache) is not None and not force:
        raise ModelError(f"a model named {name} is already imported: use --force to replace it")
    folder = source_folder(source, cache, allow_download)
    root = imported_root(cache)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{name}.import-"))
    try:
        _convert(folder, staging, quantization)
        heads = _alignment_heads(folder, staging)
        multilingual = verify_decodes(staging)
        timing = _timestamps(staging, source, timestamps, probe_audio, language)
        origin = str(Path(source).expanduser().resolve()) if Path(source).expanduser().exists() else source
        card = _card(name, origin, quantization, timing, heads, multilingual)
        (staging / CARD_FILE).write_text(card.to_json(), encoding="utf-8")
        _place(staging, root / name, force)
    except DattavaniError:
        raise
    except Exception as exc:  # a converter's own error on a broken checkpoint: a clear message, nothing left
        raise ModelError(f"cannot import {source}: {type(exc).__name__}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("imported %s as %s (%s)", source, name, card.timestamps_checked)
    return root / name


def install_checkpoint(name: str, cache: Path, *, allow_download: bool = True) -> Path:
    """A recommended checkpoint, imported on first use (needs a network and the convert extra)."""
    located = locate_imported(name, cache)
    if located is not None:
        return located
    entry = CATALOG[name]
    _require_converter()
    try:
        source_folder(entry.repo_id, cache, allow_download)
    except ModelError as exc:
        raise ModelError(f"{entry.offline_hint()} ({exc})") from exc
    return import_model(entry.repo_id, name, cache=cache, language=entry.language, allow_download=allow_download)
