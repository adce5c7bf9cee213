"""Which models are loaded: load on first use, preload, unload when idle, cap how many stay loaded."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import InvalidOptionError, ModelError
from ..imported import imported_models
from ..models import HUB_ALIASES, REGISTRY, default_cache_dir, resolve
from ..pipeline.routing import Routes, parse_routes
from ..pipeline.scheduler import BatchObserver, DynamicBatcher
from .settings import ServerSettings

log = logging.getLogger(__name__)
OPENAI_ALIASES = ("whisper-1",)
LoadObserver = Callable[[str, float], None]


HUB_CACHE_SECONDS = 30.0


def _in_hub_cache(name: str, cache: Path) -> bool:
    """Whether a hub model's files are already in the local cache (no network is asked)."""
    try:
        resolve(name, cache, allow_download=False)
    except ModelError:
        return False
    return True


class ModelNotFoundError(InvalidOptionError):
    """The requested model is not one this server offers."""


@dataclass
class LoadedEntry:
    name: str
    engine: Any
    batcher: DynamicBatcher
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)
    users: int = 0


class ModelManager:
    """Engines and their batchers by model name, shared by every request and job."""

    def __init__(
        self,
        settings: ServerSettings,
        on_load: LoadObserver | None = None,
        on_batch: Callable[[str], BatchObserver] | None = None,
    ) -> None:
        self.settings = settings
        self.on_load = on_load
        self.on_batch = on_batch
        self._entries: dict[str, LoadedEntry] = {}
        self._lock = threading.Lock()
        self._load_locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_idle, name="model-reaper", daemon=True)
        self._reaper.start()

    def canonical(self, requested: str | None) -> str:
        """The model a request means: `whisper-1` and no model mean the default; others must be offered.
        A model per language (`kn=kannada-small,*=base`) is checked model by model."""
        if not requested or requested in OPENAI_ALIASES:
            return self.settings.default_model
        routes = parse_routes(requested)
        if routes is not None:
            return str(Routes(tuple((language, self.canonical(model)) for language, model in routes.by_language)))
        if requested not in self.available():
            raise ModelNotFoundError(f"model {requested!r} not found; available: {', '.join(self.available())}")
        return requested

    def _downloaded_hub_models(self, cache: Path) -> list[str]:
        """Hub sizes in the local cache, looked up at most every HUB_CACHE_SECONDS (0.2 s a look)."""
        now = time.monotonic()
        stamp, names = getattr(self, "_hub_seen", (-HUB_CACHE_SECONDS, []))
        if now - stamp >= HUB_CACHE_SECONDS:
            names = [name for name in HUB_ALIASES if _in_hub_cache(name, cache)]
            self._hub_seen = (now, names)
        return list(names)

    def available(self) -> list[str]:
        """Models a request may name: the configured ones, the registry, imported models, and hub models
        already downloaded. A hub size not downloaded (large-v3 on an offline machine) is not offered: it
        would fail at load; preload it (DATTAVANI_SERVER_PRELOAD) to download it at start-up."""
        cache = self.settings.cache_dir or default_cache_dir()
        imported = [card.name for card, _ in imported_models(cache)]
        downloaded = self._downloaded_hub_models(cache)
        names = [self.settings.default_model, *self.settings.preload, *REGISTRY, *imported, *downloaded]
        return list(dict.fromkeys(names))

    def loaded(self) -> dict[str, LoadedEntry]:
        with self._lock:
            return dict(self._entries)

    def preload(self) -> None:
        for name in self.settings.preload:
            with self.use(name):
                pass

    @contextmanager
    def use(self, name: str) -> Iterator[LoadedEntry]:
        """The loaded entry for `name`, loading it first if needed; kept loaded while in use."""
        if parse_routes(name) is not None:  # files route through pipeline.routing; a live session has one model
            raise InvalidOptionError(
                f"{name!r}: a model per language is for files and jobs; a live stream takes one model"
            )
        entry = self._get_or_load(self.canonical(name))
        try:
            yield entry
        finally:
            with self._lock:
                entry.users -= 1
                entry.last_used = time.monotonic()

    def _get_or_load(self, name: str) -> LoadedEntry:
        with self._lock:
            lock = self._load_locks.setdefault(name, threading.Lock())
        with lock:
            with self._lock:
                entry = self._entries.get(name)
                if entry is not None:
                    entry.users += 1
                    entry.last_used = time.monotonic()
                    return entry
            entry = self._load(name)
            with self._lock:
                entry.users += 1
                self._entries[name] = entry
                evicted = self._over_capacity()
        for old in evicted:
            self._unload(old)
        return entry

    def _load(self, name: str) -> LoadedEntry:
        from ..engine import WhisperEngine, load_model

        started = time.perf_counter()
        settings = self.settings
        loaded = load_model(
            name,
            device=settings.device,
            compute_type=settings.compute_type,
            cpu_threads=settings.cpu_threads,
            device_index=settings.device_index,
            cache_dir=settings.cache_dir,
        )
        engine = WhisperEngine(loaded)
        observer = self.on_batch(name) if self.on_batch else None
        batcher = DynamicBatcher(engine, settings.batch_size, settings.batch_wait_ms, observer)
        if self.on_load is not None:
            self.on_load(name, time.perf_counter() - started)
        return LoadedEntry(name, engine, batcher)

    def _over_capacity(self) -> list[LoadedEntry]:
        """Least recently used idle models beyond max_loaded_models (caller holds the lock)."""
        idle = sorted((e for e in self._entries.values() if e.users == 0), key=lambda e: e.last_used)
        extra = max(0, len(self._entries) - self.settings.max_loaded_models)
        evicted = idle[:extra]
        for entry in evicted:
            del self._entries[entry.name]
        return evicted

    def _unload(self, entry: LoadedEntry) -> None:
        from ..engine import unload_model

        entry.batcher.stop()
        unload_model(entry.engine.model)
        log.info("unloaded model %s", entry.name)

    def unload_idle(self, now: float | None = None) -> list[str]:
        now = time.monotonic() if now is None else now
        with self._lock:
            expired = [
                e
                for e in self._entries.values()
                if e.users == 0 and now - e.last_used > self.settings.model_idle_seconds
            ]
            for entry in expired:
                del self._entries[entry.name]
        for entry in expired:
            self._unload(entry)
        return [entry.name for entry in expired]

    def _reap_idle(self) -> None:
        interval = min(30.0, self.settings.model_idle_seconds / 4)
        while not self._stop.wait(interval):
            self.unload_idle()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            self._unload(entry)
