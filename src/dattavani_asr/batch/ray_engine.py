"""Engine replicas as Ray actors: `batch --ray ADDRESS` spreads engine batches over a cluster.

Only the engine moves: decoding, VAD, the state database and output writing stay on the driver,
so a Ray run writes the same outputs and resumes the same way as a local one. `RayEngine` has the
interface the pipeline uses from `WhisperEngine`; each batch is split into contiguous chunks, one
per replica, decoded concurrently, and put back together in order.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..core.errors import DattavaniError, InvalidOptionError
from ..core.options import DecodingOptions
from ..core.types import AudioWindow, WindowResult
from ..pipeline.transcriber import Transcriber

log = logging.getLogger(__name__)

DEFAULT_CPUS_PER_REPLICA = 2
CLIENT_CONNECT_TIMEOUT = 5.0  # seconds to reach a ray:// address before giving up
READY_TIMEOUT = 600.0  # seconds for every replica to be scheduled and load its model


class RayClusterError(InvalidOptionError):
    """The Ray cluster cannot be reached, or cannot host the engine replicas."""


class EngineReplica:
    """One engine inside a Ray actor. The model loads in `ready()`, on the worker, never on import."""

    def __init__(self, model: str, device: str, compute_type: str, cpu_threads: int, cache_dir: Path | None) -> None:
        self.transcriber = Transcriber(
            model, device=device, compute_type=compute_type, cpu_threads=cpu_threads, cache_dir=cache_dir
        )
        self.engine: Any = None

    def ready(self) -> tuple[str, bool]:
        self.engine = self.transcriber.engine()
        return str(self.engine.name), bool(self.engine.multilingual)

    def check_options(self, decoding: DecodingOptions) -> None:
        self.engine.check_options(decoding)

    def detect_languages(self, windows: list[AudioWindow]) -> list[tuple[str, float]]:
        return list(self.engine.detect_languages(windows))

    def transcribe_batch(
        self, windows: list[AudioWindow], decoding: DecodingOptions, language: str | None
    ) -> tuple[list[WindowResult], str, float]:
        results, detected, probability = self.engine.transcribe_batch(windows, decoding, language)
        return list(results), detected, probability


@dataclass(frozen=True)
class ReplicaPlan:
    replicas: int
    cpus: float
    gpus: float


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayClusterError("--ray needs Ray: pip install 'dattavani-asr[ray]'") from exc
    return ray


def _check_reachable(address: str) -> None:
    """Fail within seconds on a ray:// address nobody answers (Ray Client itself retries ~30 s)."""
    parts = urlsplit(address)
    host, port = parts.hostname or "", parts.port or 10001
    try:
        with socket.create_connection((host, port), timeout=CLIENT_CONNECT_TIMEOUT):
            pass
    except OSError as exc:
        raise RayClusterError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def connect(address: str) -> bool:
    """Connect to (or start) Ray; True when this call initialised it, so the caller shuts it down."""
    ray = _ray()
    if ray.is_initialized():
        return False
    quiet = {"logging_level": logging.WARNING, "log_to_driver": False}
    try:
        if address == "local":
            # A single-machine cluster talks over loopback only, not the machine's network address.
            ray.init(
                address="local",
                include_dashboard=False,
                num_cpus=os.cpu_count(),
                _node_ip_address="127.0.0.1",
                **quiet,
            )
        else:
            if address.startswith("ray://"):
                _check_reachable(address)
            ray.init(address=address, **quiet)
    except DattavaniError:
        raise
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if address.startswith("ray://"):
            message += " (if the cluster uses token authentication, set RAY_AUTH_MODE=token and its token)"
        raise RayClusterError(f"cannot connect to the Ray cluster at {address!r}: {message}") from None
    return True


def plan_replicas(
    resources: dict[str, float], device: str, replicas: int | None, cpus_per_replica: float | None
) -> ReplicaPlan:
    """How many replicas, with how many CPUs and GPUs each, for the cluster's total resources."""
    cpus = float(resources.get("CPU", 0.0))
    gpus = int(resources.get("GPU", 0.0))
    use_gpu = gpus > 0 and device in ("auto", "cuda")
    if device == "cuda" and gpus == 0:
        raise RayClusterError("--device cuda, but the Ray cluster has no GPUs")
    if replicas is None:
        by_cpu = max(1, int(cpus // (cpus_per_replica or DEFAULT_CPUS_PER_REPLICA)))
        replicas = gpus if use_gpu else by_cpu
    if replicas < 1:
        raise RayClusterError(f"--ray-replicas must be at least 1, not {replicas}")
    if cpus_per_replica is None:
        cpus_per_replica = max(1.0, float(int(cpus // replicas)))
    return ReplicaPlan(replicas, cpus_per_replica, 1.0 if use_gpu else 0.0)


def chunks(count: int, parts: int) -> list[range]:
    """Split range(count) into at most `parts` contiguous, non-empty ranges of near-equal size."""
    parts = max(1, min(parts, count))
    size, extra = divmod(count, parts)
    bounds: list[range] = []
    start = 0
    for index in range(parts):
        stop = start + size + (1 if index < extra else 0)
        bounds.append(range(start, stop))
        start = stop
    return [bound for bound in bounds if len(bound)]


class RayEngine:
    """The pipeline's engine, as `replicas` Ray actors each holding one model."""

    def __init__(
        self,
        transcriber: Transcriber,
        address: str,
        *,
        replicas: int | None = None,
        cpus_per_replica: float | None = None,
    ) -> None:
        self.address = address
        self._owns_ray = connect(address)
        self._actors: list[Any] = []
        try:
            self.plan = plan_replicas(self._ray.cluster_resources(), transcriber.device, replicas, cpus_per_replica)
            self._name, self._multilingual = self._start(transcriber)
        except BaseException:
            self.shutdown()
            raise

    @property
    def _ray(self) -> Any:
        return _ray()

    @property
    def name(self) -> str:
        return self._name

    @property
    def multilingual(self) -> bool:
        return self._multilingual

    def _start(self, transcriber: Transcriber) -> tuple[str, bool]:
        plan = self.plan
        threads = transcriber.cpu_threads or max(1, int(plan.cpus))
        actor_class = self._ray.remote(EngineReplica).options(num_cpus=plan.cpus, num_gpus=plan.gpus)
        args = (transcriber.model_name, transcriber.device, transcriber.compute_type, threads, transcriber.cache_dir)
        self._actors = [actor_class.remote(*args) for _ in range(plan.replicas)]
        log.info(
            "starting %d engine replicas (%g CPU, %g GPU each) on %s", plan.replicas, plan.cpus, plan.gpus, self.address
        )
        try:
            names = self._get([actor.ready.remote() for actor in self._actors], timeout=READY_TIMEOUT)
        except self._ray.exceptions.GetTimeoutError:
            raise RayClusterError(
                f"{plan.replicas} engine replicas of {plan.cpus:g} CPU and {plan.gpus:g} GPU did not start within "
                f"{READY_TIMEOUT:g} s: the cluster may lack those resources (see --ray-replicas)"
            ) from None
        name, multilingual = names[0]
        return str(name), bool(multilingual)

    def _get(self, refs: list[Any], timeout: float | None = None) -> list[Any]:
        """`ray.get`, re-raising this package's own errors from the actors as themselves."""
        try:
            return list(self._ray.get(refs, timeout=timeout))
        except self._ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, DattavaniError):
                raise exc.cause from None
            raise

    def check_options(self, decoding: DecodingOptions) -> None:
        self._get([self._actors[0].check_options.remote(decoding)])

    def detect_languages(self, windows: list[AudioWindow]) -> list[tuple[str, float]]:
        parts = chunks(len(windows), len(self._actors))
        refs = [actor.detect_languages.remote(windows[p.start : p.stop]) for actor, p in zip(self._actors, parts)]
        return [pair for part in self._get(refs) for pair in part]

    def transcribe_batch(
        self, windows: list[AudioWindow], decoding: DecodingOptions, language: str | None = None
    ) -> tuple[list[WindowResult], str, float]:
        """Decode contiguous chunks on the replicas at once; results come back in window order.

        Without a language, the whole batch goes to one replica so that the language is detected
        over all its windows, as a single engine would.
        """
        if not windows:
            return [], language or decoding.language or "en", 1.0
        replicas = len(self._actors) if (language or decoding.language) else 1
        parts = chunks(len(windows), replicas)
        refs = [
            actor.transcribe_batch.remote(windows[p.start : p.stop], decoding, language)
            for actor, p in zip(self._actors, parts)
        ]
        outputs = self._get(refs)
        results = [result for part_results, _, _ in outputs for result in part_results]
        _, detected, probability = outputs[0]
        return results, detected, probability

    def shutdown(self) -> None:
        """Stop the replicas, and Ray itself when this engine started or connected it."""
        for actor in self._actors:
            try:
                self._ray.kill(actor)
            except Exception:  # an actor already gone is fine
                log.debug("could not kill a replica", exc_info=True)
        self._actors = []
        if self._owns_ray:
            self._ray.shutdown()
            self._owns_ray = False
