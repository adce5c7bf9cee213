"""Load CTranslate2 Whisper models once per process and reuse them.

We call CTranslate2 directly rather than through `faster_whisper.WhisperModel.transcribe`: its
sequential loop decodes one 30-s window at a time, while we batch speech windows (from one file
now, from many files and requests later). We still reuse faster-whisper's well-tested pieces:
the numpy log-Mel `FeatureExtractor`, the `Tokenizer` and the bundled Silero VAD.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import InvalidOptionError, ModelError
from ..imported import ModelCard
from ..models import resolve
from .device import resolve_compute_type, resolve_device

log = logging.getLogger(__name__)
M_ARENA_MAX = -8  # glibc's mallopt parameter
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 16 << 20  # bytes: larger blocks are mapped for themselves and given back when freed


@dataclass
class LoadedModel:
    """A CTranslate2 Whisper model with its tokenizer and feature extractor."""

    name: str
    path: Path
    device: str
    compute_type: str
    whisper: Any
    hf_tokenizer: Any
    feature_extractor: Any
    load_seconds: float
    workers: int = 1  # windows decoded at the same time (CTranslate2 inter_threads)
    timestamps: bool = True  # False: a fine-tune that never learned timestamp tokens (see engine)
    _tokenizers: dict[tuple[str, str | None], Any] = field(default_factory=dict, repr=False)
    _executor: ThreadPoolExecutor | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _heavy: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def heavy_step(self) -> AbstractContextManager[Any]:
        """Held by a sampling fallback (five hypotheses over a whole window), so that two workers never
        run one at once: each needs ~90 MB with tiny for a moment, and the rare window where both
        workers fell back at once set the peak of a long recording.

        The encoder (~50 MB of attention over 30 s) is not held: holding it too flattened peaks by
        another ~20 MB but cost 5 % of the wall time on 2 hours of speech.
        """
        return self._heavy if self.workers > 1 else nullcontext()

    def executor(self) -> ThreadPoolExecutor:
        """The threads that hand windows to the model's workers, one window each (made on first use)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix=f"engine-{self.name}")
            return self._executor

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=False)
                self._executor = None

    @property
    def multilingual(self) -> bool:
        return bool(self.whisper.is_multilingual)

    def tokenizer(self, task: str, language: str | None) -> Any:
        """A faster-whisper Tokenizer for this task/language (cached)."""
        from faster_whisper.tokenizer import Tokenizer

        key = (task, language)
        if key not in self._tokenizers:
            if self.multilingual:
                self._tokenizers[key] = Tokenizer(self.hf_tokenizer, True, task=task, language=language or "en")
            else:
                self._tokenizers[key] = Tokenizer(self.hf_tokenizer, False, task="transcribe", language="en")
        return self._tokenizers[key]


_CACHE: dict[tuple[str, str, str, tuple[int, ...]], LoadedModel] = {}
_LOCK = threading.Lock()


def _n_mels(path: Path, default: int) -> int:
    config = path / "preprocessor_config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("feature_size", default))
    return default


def limit_heap_arenas(arenas: int = 2, mmap_threshold: int = MMAP_THRESHOLD) -> None:
    """Keep the C heap from holding on to freed decode buffers (glibc; a no-op elsewhere).

    Every worker thread frees megabytes of decode buffers per window. glibc makes a heap arena per
    thread (up to 8 per core): spread over many arenas the freed memory stays in the process, and the
    peak grew with the recording (10 min 524 MB, 30 min 583 MB with two workers; two arenas: 473 and
    490 MB at the same speed). And glibc raises its mmap threshold to the largest block freed (up to
    32 MB), so the big per-window blocks (a beam's copy of the encoder output for cross-attention:
    ~90 MB for five beams over 30 s with tiny) come from the heap and their pages are kept; fixed at
    16 MB they are mapped and unmapped: 60 min peaked at 484 MB instead of 536-571, at the same speed
    (4 MB: 452 MB but 7 % slower, from the page faults).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, arenas)
        libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold)
    except (OSError, AttributeError):
        log.debug("not glibc: heap arenas left as they are")


@functools.cache
def _glibc() -> Any:
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def release_heap() -> None:
    """Give the C heap's free pages back to the system (glibc's malloc_trim; a no-op elsewhere).

    Called after a window whose decode needed the temperature fallback: sampling up to 448 tokens
    leaves the heap fragmented, and after one such window the process kept ~100 MB it no longer used
    for the rest of the run (a 2-hour recording settled ~100 MB above a 10-minute one). Trimming after
    every window flattened that as well but cost 8 % of the wall time (pages given back, then faulted
    in again for the next window); after fallback windows only (about 1 in 100), it costs nothing.
    """
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def thread_layout(device: str, cpu_threads: int) -> tuple[int, int]:
    """(workers, threads per worker) for `cpu_threads` threads in all.

    On a CPU every thread is a worker of its own that decodes one window at a time: on this project's
    2-core machine two single-threaded workers decoded 16 speech windows of a long recording in 5.6 s,
    where one worker with both threads took 9.8-10.4 s in batches of 8 and 15.7 s one window at a time
    (CTranslate2's intra-op threads gain little on the small matrices of a decoder step). A GPU works
    best on whole batches: one worker.
    """
    return (cpu_threads, 1) if device == "cpu" else (1, cpu_threads)


def device_indices(spec: str | int | Sequence[int]) -> tuple[int, ...]:
    """GPU numbers from `0`, `0,1` or a sequence; refused (InvalidOptionError) when not numbers."""
    if isinstance(spec, int):
        return (spec,)
    parts = [part.strip() for part in spec.split(",")] if isinstance(spec, str) else [str(p) for p in spec]
    if not parts or not all(part.isdigit() for part in parts):
        raise InvalidOptionError(f"device index {spec!r}: give GPU numbers, e.g. 0 or 0,1")
    return tuple(dict.fromkeys(int(part) for part in parts))


def _load(
    name: str, path: Path, device: str, compute_type: str, cpu_threads: int, indices: tuple[int, ...] = (0,)
) -> LoadedModel:
    import ctranslate2
    import tokenizers
    from faster_whisper.feature_extractor import FeatureExtractor

    started = time.perf_counter()
    workers, intra = thread_layout(device, cpu_threads)
    if device != "cpu":  # CTranslate2 keeps a replica per GPU; a worker each runs their batches at once
        workers = len(indices)
    if workers > 1:
        limit_heap_arenas()
    try:
        whisper = ctranslate2.models.Whisper(
            str(path),
            device=device,
            device_index=list(indices) if device != "cpu" else 0,
            compute_type=compute_type,
            intra_threads=intra,
            inter_threads=workers,
        )
        hf_tokenizer = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
    except (RuntimeError, ValueError, OSError) as exc:
        raise ModelError(f"cannot load model {name} from {path}: {exc}") from exc
    extractor = FeatureExtractor(feature_size=_n_mels(path, whisper.n_mels))
    seconds = time.perf_counter() - started
    log.info("loaded model %s (%s, %s, %d workers) in %.2f s", name, device, whisper.compute_type, workers, seconds)
    card = ModelCard.read(path)
    timestamps = card.timestamps if card is not None else True
    return LoadedModel(
        name, path, device, whisper.compute_type, whisper, hf_tokenizer, extractor, seconds, workers, timestamps
    )


def load_model(
    name: str,
    *,
    device: str = "auto",
    compute_type: str = "auto",
    cpu_threads: int = 0,
    cache_dir: Path | None = None,
    device_index: str | int | Sequence[int] = 0,
) -> LoadedModel:
    """Return the process-wide model for (name, device, compute type, GPUs), loading it on first use."""
    device = resolve_device(device)
    compute_type = resolve_compute_type(compute_type, device)
    indices = device_indices(device_index) if device != "cpu" else (0,)
    key = (name, device, compute_type, indices)
    with _LOCK:
        if key not in _CACHE:
            path = resolve(name, cache_dir)
            threads = cpu_threads or os.cpu_count() or 1
            _CACHE[key] = _load(name, path, device, compute_type, threads, indices)
        return _CACHE[key]


def loaded_models() -> list[LoadedModel]:
    with _LOCK:
        return list(_CACHE.values())


def unload_all() -> None:
    with _LOCK:
        for model in _CACHE.values():
            model.close()
        _CACHE.clear()


def unload_model(model: LoadedModel) -> bool:
    """Drop `model` from the process cache (its memory is freed once no caller holds it)."""
    with _LOCK:
        for key, cached in list(_CACHE.items()):
            if cached is model:
                del _CACHE[key]
                model.close()
                return True
    return False
