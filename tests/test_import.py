"""`models import` and the recommended checkpoints: transformers Whisper folders to registered models.

Real weights: tiny.en written as a transformers folder by ../shared/peers/ct2_to_openai.py (when that
harness is beside the repository) must come back and transcribe JFK. A random multilingual Whisper
made with transformers' WhisperConfig (no download) tests conversion, the card, decoding without
timestamps and the hub path against the local fake hub.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import JFK, load_manifest
from dattavani_asr import Transcriber, models
from dattavani_asr.core.errors import ModelError
from dattavani_asr.evaluation import word_error_rate
from dattavani_asr.imported import CARD_FILE, CATALOG, ModelCard, imported_root
from dattavani_asr.importing import import_model
from fake_hub import FakeHub
from helpers_audio import run_cli
from test_models import clean_env

PEERS_CANDIDATES = [Path(__file__).resolve().parents[2] / "shared", Path("/work/shared")]  # ../shared, the usual place
PEERS = next((p for p in PEERS_CANDIDATES if p.is_dir()), PEERS_CANDIDATES[0]) / "peers" / "ct2_to_openai.py"
JFK_REFERENCE = load_manifest()[0]["reference"]


def random_whisper(folder: Path) -> Path:
    """A tiny multilingual Whisper with random weights and the real multilingual tokenizer."""
    import torch
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    config = WhisperConfig(
        vocab_size=51865, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=80,
    )  # fmt: skip
    torch.manual_seed(0)
    WhisperForConditionalGeneration(config).save_pretrained(folder)
    shutil.copy(models.resolve("base") / "tokenizer.json", folder / "tokenizer.json")
    WhisperFeatureExtractor().save_pretrained(folder)  # type: ignore[no-untyped-call]
    return folder


@pytest.fixture(scope="module")
def random_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_whisper(tmp_path_factory.mktemp("random-whisper"))


@pytest.fixture(scope="module")
def hf_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not PEERS.is_file():
        pytest.skip(f"{PEERS} (the shared peers harness) is not beside the repository")
    out = tmp_path_factory.mktemp("hf") / "tiny.en"
    command = [sys.executable, str(PEERS), str(models.resolve("tiny.en")), "--hf-out", str(out)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return out


def no_staging_left(cache: Path) -> None:
    root = imported_root(cache)
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")] if root.is_dir() else True


def test_round_trip_of_real_weights_through_the_cli(hf_tiny: Path, tmp_path: Path) -> None:
    env = {"DATTAVANI_CACHE_DIR": str(tmp_path / "cache")}
    imported = run_cli(
        ["models", "import", str(hf_tiny), "--name", "my-tiny", "--probe-audio", str(JFK)], tmp_path, env
    )
    assert imported.returncode == 0, imported.stderr
    card = ModelCard.read(tmp_path / "cache" / "models" / "imported" / "my-tiny")
    assert card is not None and card.timestamps and card.alignment_heads == "checkpoint" and not card.multilingual
    done = run_cli(["transcribe", str(JFK), "--model", "my-tiny", "--output-dir", str(tmp_path / "out")], tmp_path, env)
    assert done.returncode == 0, done.stderr
    assert word_error_rate([JFK_REFERENCE], [(tmp_path / "out" / "jfk.txt").read_text()]) < 0.1
    listed = run_cli(["models", "list"], tmp_path, env | {"COLUMNS": "200"})
    assert "my-tiny" in listed.stdout
    assert run_cli(["models", "verify", "my-tiny"], tmp_path, env).returncode == 0
    path = run_cli(["models", "path", "my-tiny"], tmp_path, env)
    assert Path(path.stdout.strip()) == tmp_path / "cache" / "models" / "imported" / "my-tiny"
    again = run_cli(["models", "import", str(hf_tiny), "--name", "my-tiny"], tmp_path, env)
    assert again.returncode != 0 and "already imported" in again.stderr and "Traceback" not in again.stderr


def test_decoding_without_timestamps_times_segments_by_words(hf_tiny: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    import_model(str(hf_tiny), "tiny-nots", cache=cache, timestamps="no")
    transcriber = Transcriber("tiny-nots", cache_dir=cache)
    assert transcriber.engine().model.timestamps is False
    transcript = transcriber.transcribe(JFK, word_timestamps=True)
    assert word_error_rate([JFK_REFERENCE], [transcript.text]) < 0.1
    for segment in transcript.segments:
        assert segment.words and segment.start == segment.words[0].start and segment.end == segment.words[-1].end
    assert 0.0 <= transcript.segments[0].start < 1.0 and 9.0 < transcript.segments[-1].end <= 11.1


def test_random_multilingual_checkpoint_imports_with_its_card(random_folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = import_model(str(random_folder), "random-ml", cache=cache)
    card = ModelCard.read(path)
    assert card is not None and card.multilingual and not card.timestamps  # not probed: per window, no timestamps
    assert card.alignment_heads.startswith("default")  # no OpenAI model has this shape
    assert {"model.bin", "tokenizer.json", "preprocessor_config.json", CARD_FILE} <= {p.name for p in path.iterdir()}
    assert models.resolve("random-ml", cache) == path
    transcript = Transcriber("random-ml", cache_dir=cache).transcribe(JFK, language="kn")  # runs, whatever it says
    assert transcript.model == "random-ml" and transcript.language == "kn"
    no_staging_left(cache)


def test_import_refuses_clearly_and_leaves_nothing(random_folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cases = {
        "tiny.en": "built-in model name",
        "../escape": "invalid model name",
        "a b": "invalid model name",
    }
    for name, message in cases.items():
        with pytest.raises(ModelError, match=message):
            import_model(str(random_folder), name, cache=cache)
    with pytest.raises(ModelError, match="neither a folder nor a hub repo id"):
        import_model(str(tmp_path / "missing" / "x" / "y"), "x", cache=cache)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    with pytest.raises(ModelError, match="no weights"):
        import_model(str(empty), "x", cache=cache)
    (empty / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="not a transformers Whisper checkpoint"):
        import_model(str(empty), "x", cache=cache)
    with pytest.raises(ModelError, match="quantization"):
        import_model(str(random_folder), "x", cache=cache, quantization="int3")
    no_staging_left(cache)


def test_import_without_the_convert_extra_names_it(random_folder: Path, tmp_path: Path) -> None:
    env = {
        "DATTAVANI_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "blocker"), os.environ.get("PYTHONPATH", "")]),
    }
    (tmp_path / "blocker").mkdir()
    (tmp_path / "blocker" / "transformers.py").write_text("raise ImportError('no transformers here')\n")
    result = run_cli(["models", "import", str(random_folder), "--name", "x"], tmp_path, env)
    assert result.returncode != 0 and "pip install 'dattavani-asr[convert]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_recommended_checkpoint_offline_says_what_to_do(tmp_path: Path) -> None:
    env = clean_env(DATTAVANI_CACHE_DIR=str(tmp_path / "cache"), HF_HUB_OFFLINE="1")
    installed = subprocess.run(
        [sys.executable, "-c", "from dattavani_asr.cli import main; main()", "models", "install", "kannada-small"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert installed.returncode != 0 and "Traceback" not in installed.stderr
    message = " ".join(installed.stderr.split())
    assert "hf download vasista22/whisper-kannada-small" in message
    assert "models import whisper-kannada-small --name kannada-small" in message
    with pytest.raises(ModelError, match="models install kannada-small"):
        models.resolve("kannada-small", tmp_path / "cache")


def test_recommended_checkpoint_installs_from_the_hub(random_folder: Path, tmp_path: Path) -> None:
    entry = CATALOG["kannada-small"]
    files: dict[str, Path | bytes] = {p.name: p for p in random_folder.iterdir()} | {"README.md": b"# card\n"}
    cache = tmp_path / "cache"
    with FakeHub({entry.repo_id: files}) as hub:
        env = clean_env(
            DATTAVANI_CACHE_DIR=str(cache), HF_ENDPOINT=hub.endpoint, HF_HOME=str(tmp_path / "hf-home"),
            HF_HUB_DISABLE_PROGRESS_BARS="1",
        )  # fmt: skip
        command = [sys.executable, "-c", "from dattavani_asr.cli import main; main()", "models", "install", entry.name]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    card = ModelCard.read(imported_root(cache) / entry.name)
    assert card is not None and card.source == entry.repo_id and not card.timestamps
    assert not any("README" in path for path in hub.paths())
