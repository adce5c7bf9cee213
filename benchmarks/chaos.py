#!/usr/bin/env python3
"""Chaos: SIGKILL batch runs and the job server at random moments; nothing lost, nothing done twice.

Inputs: real clips of ``../shared/audio`` (``misc/*`` and the FLEURS clips of ``--languages``) plus
``--long`` recordings of ``--long-minutes`` each built from the English clips (``long_bench.build``),
so the per-window checkpoints of recordings past 60 s are exercised.

Batch: two uninterrupted ``dattavani-asr batch`` runs (each into its own folder) are compared with each
other; then one output folder is run again and again, each run's whole process group SIGKILLed after a
random delay, ``--batch-kills`` times, and a last run lets it finish. Jobs: ``dattavani-asr serve`` with
every input submitted as an upload job (with a webhook to a receiver in this script) — two uninterrupted
servers, then one whose process group is SIGKILLed ``--job-kills`` times and restarted on the same data
dir until every job has finished.

Figures (per mode): kills, lost (an input without exactly one complete output / a job missing or not
succeeded), done twice (a file recorded done by one run and re-run by a later one; a job with two
succeeded runs; a result replaced after it was complete; a webhook delivered twice), rewritten before
commit (a file whose outputs were all written, then written again because the kill came before the run
state recorded it), leftovers (``*.part`` files, uploads, stored windows), and how many inputs' outputs
are byte-identical to the first reference (the ``json`` outputs' ``timings`` — wall times — excluded).
An input that differs is "sampled" when a segment of it, in either run, came from the temperature
fallback (CTranslate2 seeds its sampler once per thread, so a sampled draw depends on what that thread
drew before); any other difference is "unexplained".

    python benchmarks/chaos.py                                  # 10 batch kills + 10 job-server kills
    python benchmarks/chaos.py --modes batch --batch-kills 5 --languages en
    python benchmarks/chaos.py --json /tmp/chaos.json --markdown /tmp/chaos.md --keep /tmp/chaos
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from transcribe_bench import child_env, default_audio_dir

CLI = [sys.executable, "-c", "from dattavani_asr.cli import main; main()"]
BATCH_FORMATS = ("txt", "srt", "json")
JOB_FORMATS = ("txt", "srt", "json")
STATE_FILES = (".dattavani-batch.sqlite3", "batch-summary.json")
Snapshot = dict[str, tuple[int, int]]  # relative path -> (inode, size)


# --------------------------------------------------------------------------- command line and inputs


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    doc = (__doc__ or "").split("\n\n")
    parser = argparse.ArgumentParser(
        description=doc[0], epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--audio", type=Path, default=None, help="audio folder (default ../shared/audio or tests/data)")
    parser.add_argument("--languages", default="en,de", help="FLEURS clips of these languages (misc/* always)")
    parser.add_argument("--long", type=int, default=2, help="long recordings built from the English clips")
    parser.add_argument("--long-minutes", type=float, default=3.0)
    parser.add_argument("--modes", default="batch,jobs")
    parser.add_argument("--batch-kills", type=int, default=10)
    parser.add_argument("--job-kills", type=int, default=10)
    parser.add_argument("--min-delay", type=float, default=0.5, help="shortest wait before a kill, seconds")
    parser.add_argument(
        "--max-delay", type=float, default=None, help="longest wait before a kill (default: see kill_wait)"
    )
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    args.audio = (args.audio or default_audio_dir()).resolve()
    return args


def build_inputs(args: argparse.Namespace, folder: Path) -> list[Path]:
    """Copies of the clips, and the long recordings, under `folder`."""
    import long_bench

    wanted = set(args.languages.split(","))
    seen: set[str] = set()
    for line in (args.audio / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        entry = json.loads(line) if line.strip() else {}
        name = entry.get("file", "")
        if name in seen or not (name.startswith("misc/") or entry.get("lang") in wanted):
            continue
        seen.add(name)
        target = folder / "clips" / Path(name).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.audio / name, target)
    for index in range(args.long):
        spec = argparse.Namespace(
            audio=args.audio, languages="en", minutes=args.long_minutes, levels="-16,-22,-28", seed=args.seed + index
        )
        samples, _ = long_bench.build(spec)
        (folder / "long").mkdir(exist_ok=True)
        long_bench.write_recording(samples, folder / "long").rename(folder / "long" / f"long-{index}.flac")
    return sorted(path for path in folder.rglob("*") if path.is_file())


def duration_of(path: Path) -> float:
    from dattavani_asr.audio.decode import probe

    return float(probe(path).duration or 0.0)


# --------------------------------------------------------------------------- comparing outputs


def canonical(path: Path) -> bytes:
    """A file's bytes; a JSON transcript without its wall-time `timings`."""
    data = path.read_bytes()
    if path.suffix != ".json":
        return data
    loaded = json.loads(data)
    if isinstance(loaded, dict):
        loaded.pop("timings", None)
    return json.dumps(loaded, sort_keys=True, ensure_ascii=False).encode()


def sampled(path: Path) -> bool:
    """A segment of this JSON transcript came from the temperature fallback."""
    if not path.exists():
        return False
    segments = json.loads(path.read_text(encoding="utf-8")).get("segments", [])
    return any((segment.get("temperature") or 0.0) > 0 for segment in segments)


@dataclass
class Comparison:
    inputs: int = 0
    identical: int = 0
    raw_identical_files: int = 0  # whole files, json timings included
    files: int = 0
    sampled: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)  # resumed inside after a kill: the VAD restarted there
    resumed_same_text: int = 0
    unexplained: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def compare(
    reference: dict[str, list[Path]], other: dict[str, list[Path]], resumed: frozenset[str] = frozenset()
) -> Comparison:
    """Per input: are all its outputs the same as the reference's (json without timings)? Why not, if not."""
    result = Comparison(inputs=len(reference))
    for name, ref_paths in sorted(reference.items()):
        paths = other.get(name, [])
        if len(paths) != len(ref_paths) or not all(path.exists() for path in paths):
            result.missing.append(name)
            continue
        result.files += len(paths)
        result.raw_identical_files += sum(a.read_bytes() == b.read_bytes() for a, b in zip(ref_paths, paths))
        if all(canonical(a) == canonical(b) for a, b in zip(ref_paths, paths)):
            result.identical += 1
        elif any(sampled(path) for path in (*ref_paths, *paths) if path.suffix == ".json"):
            result.sampled.append(name)
        elif name in resumed:
            result.resumed.append(name)
            result.resumed_same_text += all(
                a.read_bytes() == b.read_bytes() for a, b in zip(ref_paths, paths) if a.suffix == ".txt"
            )
        else:
            result.unexplained.append(name)
    return result


def snapshot(folder: Path, skip: Callable[[Path], bool] = lambda path: False) -> Snapshot:
    """Every file under `folder` (inode, size): a rename onto a path gives it a new inode."""
    found: Snapshot = {}
    for path in folder.rglob("*"):
        if path.is_file() and not skip(path):
            stat = path.stat()
            found[str(path.relative_to(folder))] = (stat.st_ino, stat.st_size)
    return found


def replaced(before: Snapshot, after: Snapshot, complete: set[str]) -> list[str]:
    """Paths among `complete` that a later run wrote again."""
    return sorted(path for path in complete if path in before and path in after and before[path] != after[path])


def unexpected(out: Path, outputs: dict[str, list[Path]]) -> list[str]:
    """Files in a batch output folder that are neither outputs nor the run's state and summary."""
    known = {path for paths in outputs.values() for path in paths} | {out / name for name in STATE_FILES}
    return sorted(str(path.relative_to(out)) for path in out.rglob("*") if path.is_file() and path not in known)


def leftovers(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*.part"))


# --------------------------------------------------------------------------- processes


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A child in a session (process group) of its own, its output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the child's whole process group (the decoder threads die with it), and reap it."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def kill_wait(args: argparse.Namespace, restart: float, remaining: float, kills_left: int, rng: random.Random) -> float:
    """A random wait before the next kill: one in five during start-up (imports, model load, planning,
    recovery); the others start-up plus a share of the work still to do, so that the kills fall over the
    whole run (work is committed per engine batch or window: a kill sooner than that loses what it did)."""
    if args.max_delay is not None:
        return float(rng.uniform(args.min_delay, args.max_delay))
    if rng.random() < 0.2:
        return float(rng.uniform(args.min_delay, max(args.min_delay, restart)))
    return float(restart + rng.uniform(0.2, 1.0) * 2.0 * max(remaining, 1.0) / (kills_left + 1))


def first_file(folder: Path, suffix: str) -> bool:
    return folder.is_dir() and any(folder.rglob(f"*{suffix}"))


def timed_reference(command: list[str], env: dict[str, str], log: Path, ready: Callable[[], bool]) -> dict[str, float]:
    """Run a command to its end: its wall time, and when `ready()` first held (its first result)."""
    started = time.monotonic()
    process = spawn(command, env, log)
    first = None
    while process.poll() is None:
        if first is None and ready():
            first = time.monotonic() - started
        time.sleep(0.1)
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[3:])} failed ({process.returncode}); see {log}")
    return {"wall_s": round(wall, 2), "first_result_s": round(first if first is not None else wall, 2)}


# --------------------------------------------------------------------------- batch


def batch_command(args: argparse.Namespace, inputs: Path, out: Path) -> list[str]:
    return [*CLI, "batch", str(inputs), "-d", str(out), "-f", ",".join(BATCH_FORMATS), "--model", args.model]


def batch_outputs(inputs: Path, files: list[Path], out: Path) -> dict[str, list[Path]]:
    """Each input's outputs (mirrored under `out`), by the input's path relative to `inputs`."""
    return {
        str(path.relative_to(inputs)): [out / path.relative_to(inputs).with_suffix(f".{fmt}") for fmt in BATCH_FORMATS]
        for path in files
    }


def batch_state(out: Path) -> tuple[dict[str, str], int]:
    """The run state's status of every file (by URI) and how many finished windows are stored."""
    path = out / STATE_FILES[0]
    if not path.exists():
        return {}, 0
    db = sqlite3.connect(path, timeout=30)
    try:
        statuses = dict(db.execute("SELECT uri, status FROM files").fetchall())
        (windows,) = db.execute("SELECT COUNT(*) FROM finished_windows").fetchone()
    finally:
        db.close()
    return statuses, int(windows)


@dataclass
class BatchTracker:
    """What the runs of one output folder did, attempt after attempt."""

    outputs: dict[str, list[Path]]
    out: Path
    uris: dict[str, str]  # input name -> its URI in the run state
    done_at: dict[str, int] = field(default_factory=dict)  # input -> the attempt after which it was recorded done
    done_twice: list[str] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)  # all outputs written, not recorded done, written again
    before: Snapshot = field(default_factory=dict)
    complete: dict[str, bool] = field(default_factory=dict)  # input -> recorded done (True) or only written

    def observe(self, attempt: int) -> dict[str, int]:
        now = snapshot(self.out, skip=lambda path: path.name.startswith((*STATE_FILES, ".")))
        statuses, windows = batch_state(self.out)
        for name, was_done in self.complete.items():
            paths = {str(path.relative_to(self.out)) for path in self.outputs[name]}
            if replaced(self.before, now, paths) or (was_done and statuses.get(self.uris[name]) != "done"):
                (self.done_twice if was_done else self.rewritten).append(f"{name} (attempt {attempt})")
        self.complete = {}
        for name, paths in self.outputs.items():
            if statuses.get(self.uris[name]) == "done":
                self.done_at.setdefault(name, attempt)
                self.complete[name] = True
            elif all(path.exists() for path in paths):
                self.complete[name] = False
        self.before = now
        return {"done": sum(status == "done" for status in statuses.values()), "stored_windows": windows}


def resumed_lines(log: Path) -> list[str]:
    return [line.strip() for line in log.read_text(errors="replace").splitlines() if line.startswith("resuming ")]


def batch_attempt(
    command: list[str], env: dict[str, str], log: Path, delay: float | None
) -> tuple[bool, float, int | None]:
    """One run: killed after `delay` seconds (None: left to finish). (killed, seconds, exit code)."""
    started = time.monotonic()
    process = spawn(command, env, log)
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        kill_group(process)
        return True, time.monotonic() - started, None
    return False, time.monotonic() - started, process.returncode


def chaos_batch(args: argparse.Namespace, root: Path, files: list[Path], reference: dict[str, float]) -> dict[str, Any]:
    """Kill one batch run again and again until it completes; what each attempt left behind."""
    inputs, out = root / "inputs", root / "batch-chaos"
    rng = random.Random(args.seed)
    restart = reference["noop_s"] + 1.0  # imports and planning (the no-op run), the model load
    remaining = reference["wall_s"] - restart
    tracker = BatchTracker(batch_outputs(inputs, files, out), out, {str(p.relative_to(inputs)): str(p) for p in files})
    attempts: list[dict[str, Any]] = []
    env = child_env(args.threads)
    for index in range(args.batch_kills + 1):
        delay = (
            None if index == args.batch_kills else kill_wait(args, restart, remaining, args.batch_kills - index, rng)
        )
        remaining -= max(0.0, (delay or 0.0) - restart)
        log = root / "logs" / f"batch-chaos-{index:02d}.log"
        killed, seconds, code = batch_attempt(batch_command(args, inputs, out), env, log, delay)
        seen = tracker.observe(index)
        attempts.append(
            {"attempt": index, "killed": killed, "at_s": round(seconds, 2), "exit": code}
            | seen
            | {"resumed": resumed_lines(log)}
        )
        print(f"  batch attempt {index}: {'killed' if killed else f'exit {code}'} at {seconds:.1f} s, {seen}")
        if not killed and delay is not None:  # it finished before its kill: the remaining kills would hit no-op runs
            break
    summary = json.loads((out / STATE_FILES[1]).read_text())
    return {"attempts": attempts, "tracker": tracker, "summary": summary, "out": out}


def resumed_inputs(attempts: list[dict[str, Any]], files: list[Path], inputs: Path) -> frozenset[str]:
    """Inputs some run resumed inside (after their stored windows)."""
    lines = [line for attempt in attempts for line in attempt["resumed"]]
    return frozenset(str(p.relative_to(inputs)) for p in files if any(f"resuming {p} " in line for line in lines))


def rerun_finished(args: argparse.Namespace, root: Path, env: dict[str, str]) -> tuple[float, list[str]]:
    """The same command again on the finished first reference: its wall time (start-up, planning, nothing to
    decode) and the files it wrote again (none should be)."""
    out = root / "batch-ref-1"
    before = snapshot(out, skip=lambda path: path.name.startswith("."))
    started = time.monotonic()
    process = spawn(batch_command(args, root / "inputs", out), env, root / "logs" / "batch-ref-1-rerun.log")
    process.wait()
    seconds = round(time.monotonic() - started, 2)
    after = snapshot(out, skip=lambda path: path.name.startswith("."))
    return seconds, replaced(before, after, set(before))


def batch_report(args: argparse.Namespace, root: Path, files: list[Path]) -> dict[str, Any]:
    inputs = root / "inputs"
    env = child_env(args.threads)
    refs = []
    for name in ("batch-ref-1", "batch-ref-2"):
        out = root / name
        print(f"batch: uninterrupted run {name} …")
        refs.append(
            timed_reference(
                batch_command(args, inputs, out),
                env,
                root / "logs" / f"{name}.log",
                lambda o=out: first_file(o, ".txt"),
            )
        )
    ref1, ref2 = (batch_outputs(inputs, files, root / name) for name in ("batch-ref-1", "batch-ref-2"))
    refs[0]["noop_s"], rerun_rewrote = rerun_finished(args, root, env)
    print(f"batch: {args.batch_kills} kills …")
    chaos = chaos_batch(args, root, files, refs[0])
    tracker: BatchTracker = chaos["tracker"]
    statuses, windows = batch_state(chaos["out"])
    outputs = batch_outputs(inputs, files, chaos["out"])
    summary = chaos["summary"]
    lost = [name for name, paths in outputs.items() if not all(path.exists() for path in paths)]
    lost += [name for name in outputs if statuses.get(tracker.uris[name]) != "done" and name not in lost]
    counted = summary["files"] == len(files) and summary["done"] + summary["skipped"] == len(files)
    return {
        "inputs": len(files),
        "references": refs,
        "ref_vs_ref": asdict(compare(ref1, ref2)),
        "chaos_vs_ref": asdict(compare(ref1, outputs, resumed_inputs(chaos["attempts"], files, inputs))),
        "kills": sum(attempt["killed"] for attempt in chaos["attempts"]),
        "attempts": chaos["attempts"],
        "lost": lost,
        "done_twice": tracker.done_twice,
        "rewritten_before_commit": tracker.rewritten,
        "rerun_of_finished_folder_rewrote": rerun_rewrote,
        "summary": summary,
        "summary_counts_right": counted and summary["failed"] == 0,
        "leftovers": leftovers(chaos["out"])
        + unexpected(chaos["out"], outputs)
        + ([f"{windows} stored windows"] if windows else []),
        "resumed_inside_files": sum(len(attempt["resumed"]) for attempt in chaos["attempts"]),
    }


# --------------------------------------------------------------------------- jobs


class Receiver(BaseHTTPRequestHandler):
    """A webhook receiver that counts deliveries per job (the X-Dattavani-Delivery key)."""

    deliveries: list[tuple[str, str]]  # (key, event type), set on the server's handler class

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        event = json.loads(body or b"{}").get("type", "")
        self.deliveries.append((self.headers.get("X-Dattavani-Delivery", ""), event))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def receiver() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    deliveries: list[tuple[str, str]] = []
    handler = type("Handler", (Receiver,), {"deliveries": deliveries})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", deliveries
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """`dattavani-asr serve` on one data dir; started again after each kill."""

    args: argparse.Namespace
    data: Path
    logs: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        import httpx

        command = [*CLI, "serve", "--port", str(self.port), "--data-dir", str(self.data), "--model", self.args.model]
        env = child_env(self.args.threads) | {"DATTAVANI_SERVER_ALLOW_PRIVATE_URLS": "true"}
        self.process = spawn(command, env, self.logs / f"{self.data.name}-{self.starts:02d}.log")
        self.starts += 1
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise SystemExit(f"the server did not start; see {self.logs}")

    def kill(self) -> None:
        assert self.process is not None
        kill_group(self.process)

    def stop(self) -> None:
        """SIGTERM: a graceful stop, so the final database is closed cleanly."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(90)


def submit_all(server: Server, files: list[Path], hook: str) -> dict[str, str]:
    """Every input as an upload job; job id by input name."""
    import httpx

    ids = {}
    for path in files:
        with path.open("rb") as handle:
            response = httpx.post(
                f"{server.url}/v1/jobs",
                files={"file": (path.name, handle, "application/octet-stream")},
                data={"webhook_url": hook, "response_format": "json"},
                timeout=120,
            )
        response.raise_for_status()
        ids[path.name] = response.json()["id"]
    return ids


def job_statuses(server: Server, ids: dict[str, str]) -> dict[str, str]:
    import httpx

    return {name: httpx.get(f"{server.url}/v1/jobs/{job}", timeout=30).json()["status"] for name, job in ids.items()}


def wait_finished(server: Server, ids: dict[str, str], timeout: float = 1800) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(status in ("succeeded", "failed", "cancelled") for status in job_statuses(server, ids).values()):
            return
        time.sleep(0.5)
    raise SystemExit("jobs did not finish")


def fetch_results(server: Server, ids: dict[str, str], folder: Path) -> dict[str, list[Path]]:
    """Each job's result in every format, saved as `<input name>.<fmt>`."""
    import httpx

    folder.mkdir(parents=True, exist_ok=True)
    saved: dict[str, list[Path]] = {}
    for name, job in ids.items():
        saved[name] = []
        for fmt in JOB_FORMATS:
            response = httpx.get(f"{server.url}/v1/jobs/{job}/result", params={"format": fmt}, timeout=60)
            target = folder / f"{name}.{fmt}"
            if response.status_code == 200:
                target.write_bytes(response.content)
            saved[name].append(target)
    return saved


def jobs_db(data: Path) -> tuple[dict[str, str], dict[str, list[str | None]], int]:
    """Each job's status, the outcomes of its runs, and how many finished windows are stored."""
    db = sqlite3.connect(data / "jobs.sqlite3", timeout=30)
    try:
        statuses = dict(db.execute("SELECT id, status FROM jobs").fetchall())
        runs: dict[str, list[str | None]] = {}
        for job, outcome in db.execute("SELECT job_id, outcome FROM runs ORDER BY job_id, attempt"):
            runs.setdefault(job, []).append(outcome)
        (windows,) = db.execute("SELECT COUNT(*) FROM finished_windows").fetchone()
    finally:
        db.close()
    return statuses, runs, int(windows)


@dataclass
class JobTracker:
    data: Path
    succeeded: set[str] = field(default_factory=set)
    done_twice: list[str] = field(default_factory=list)
    before: Snapshot = field(default_factory=dict)

    def observe(self, attempt: int) -> dict[str, int]:
        now = snapshot(self.data / "results", skip=lambda path: path.name.startswith("."))
        statuses, _, windows = jobs_db(self.data)
        for job in sorted(self.succeeded):
            if statuses.get(job) != "succeeded" or replaced(self.before, now, {f"{job}.json"}):
                self.done_twice.append(f"{job} (after kill {attempt})")
        self.succeeded = {job for job, status in statuses.items() if status == "succeeded"}
        self.before = now
        return {"succeeded": len(self.succeeded), "stored_windows": windows}


def job_reference(args: argparse.Namespace, root: Path, files: list[Path], name: str) -> dict[str, Any]:
    """One uninterrupted server: every job submitted, run to its end; wall time and results."""
    with receiver() as (hook, _):
        server = Server(args, root / name, root / "logs")
        server.start()
        started = time.monotonic()
        ids = submit_all(server, files, hook)
        first = None
        while True:
            statuses = job_statuses(server, ids)
            if first is None and "succeeded" in statuses.values():
                first = time.monotonic() - started
            if all(status in ("succeeded", "failed", "cancelled") for status in statuses.values()):
                break
            time.sleep(0.3)
        wall = time.monotonic() - started
        results = fetch_results(server, ids, root / f"{name}-results")
        server.stop()
    timing = {"wall_s": round(wall, 2), "first_result_s": round(first or wall, 2)}
    return {"timing": timing, "results": results}


def wait_webhooks(deliveries: list[tuple[str, str]], ids: dict[str, str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not set(ids.values()) <= {key for key, _ in deliveries}:
        time.sleep(0.2)
    time.sleep(1.0)  # a late duplicate would arrive now


def chaos_jobs(args: argparse.Namespace, root: Path, files: list[Path], timing: dict[str, float]) -> dict[str, Any]:
    rng = random.Random(args.seed + 1)
    restart = 1.5  # from /health answering: the model load, recovery
    remaining = timing["wall_s"] - restart
    server = Server(args, root / "jobs-chaos", root / "logs")
    tracker = JobTracker(server.data)
    attempts: list[dict[str, Any]] = []
    with receiver() as (hook, deliveries):
        server.start()
        ids = submit_all(server, files, hook)
        for index in range(args.job_kills):
            delay = kill_wait(args, restart, remaining, args.job_kills - index, rng)
            remaining -= max(0.0, delay - restart)
            time.sleep(delay)
            server.kill()
            seen = tracker.observe(index)
            attempts.append({"kill": index, "after_s": round(delay, 2)} | seen)
            print(f"  server kill {index} after {delay:.1f} s: {seen}")
            server.start()
            if seen["succeeded"] == len(ids):
                break  # every job is done: later kills would hit an idle server
        wait_finished(server, ids)
        results = fetch_results(server, ids, root / "jobs-chaos-results")
        wait_webhooks(deliveries, ids)
        server.stop()
        tracker.observe(len(attempts))
        copied = list(deliveries)
    return {"ids": ids, "attempts": attempts, "results": results, "tracker": tracker, "deliveries": copied}


def jobs_report(args: argparse.Namespace, root: Path, files: list[Path]) -> dict[str, Any]:
    refs = []
    for name in ("jobs-ref-1", "jobs-ref-2"):
        print(f"jobs: uninterrupted server {name} …")
        refs.append(job_reference(args, root, files, name))
    print(f"jobs: {args.job_kills} server kills …")
    chaos = chaos_jobs(args, root, files, refs[0]["timing"])
    data = root / "jobs-chaos"
    statuses, runs, windows = jobs_db(data)
    ids: dict[str, str] = chaos["ids"]
    lost = [name for name, job in ids.items() if statuses.get(job) != "succeeded"]
    lost += [
        name for name, paths in chaos["results"].items() if not all(p.exists() for p in paths) and name not in lost
    ]
    twice = list(chaos["tracker"].done_twice)
    twice += [
        f"{job}: {outcomes.count('succeeded')} succeeded runs"
        for job, outcomes in runs.items()
        if outcomes.count("succeeded") > 1
    ]
    per_key: dict[str, int] = {}
    for key, _ in chaos["deliveries"]:
        per_key[key] = per_key.get(key, 0) + 1
    said = "\n".join(log.read_text(errors="replace") for log in (root / "logs").glob("jobs-chaos-*.log"))
    resumes = said.count(" resumes at ")
    resumed = frozenset(name for name, job in ids.items() if f"job {job} resumes at" in said)
    return {
        "inputs": len(files),
        "references": [ref["timing"] for ref in refs],
        "ref_vs_ref": asdict(compare(refs[0]["results"], refs[1]["results"])),
        "chaos_vs_ref": asdict(compare(refs[0]["results"], chaos["results"], resumed)),
        "kills": len(chaos["attempts"]),
        "attempts": chaos["attempts"],
        "lost": lost,
        "done_twice": twice,
        "runs_total": sum(len(outcomes) for outcomes in runs.values()),
        "runs_interrupted": sum(outcome == "interrupted" for outcomes in runs.values() for outcome in outcomes),
        "resumed_inside_jobs": resumes,
        "webhooks_duplicated": sorted(key for key, count in per_key.items() if count > 1),
        "webhooks_missing": sorted(job for job in ids.values() if job not in per_key),
        "leftovers": leftovers(data)
        + [f"uploads/{path.name}" for path in (data / "uploads").iterdir()]
        + ([f"{windows} stored windows"] if windows else []),
    }


# --------------------------------------------------------------------------- report


def table(title: str, report: dict[str, Any]) -> list[str]:
    same, chaos = report["ref_vs_ref"], report["chaos_vs_ref"]

    def identical(c: dict[str, Any]) -> str:
        why = f"sampled {len(c['sampled'])}, resumed {len(c['resumed'])} (same text {c['resumed_same_text']})"
        return f"{c['identical']}/{c['inputs']} ({why}, unexplained {len(c['unexplained'])})"

    rows = [
        ("inputs", str(report["inputs"])),
        ("uninterrupted runs, wall s", ", ".join(str(ref["wall_s"]) for ref in report["references"])),
        ("ref 1 vs ref 2: identical inputs", identical(same)),
        ("SIGKILLs", str(report["kills"])),
        ("lost", str(len(report["lost"]))),
        ("done twice", str(len(report["done_twice"]))),
        ("killed run vs ref 1: identical inputs", identical(chaos)),
        ("leftovers", str(len(report["leftovers"]))),
    ]
    rows += [(key.replace("_", " "), str(value)) for key, value in report.items() if key in EXTRA_ROWS]
    width = max(len(name) for name, _ in rows)
    return [f"## {title}", "", "| figure | value |", "|---|---|"] + [f"| {n:<{width}} | {v} |" for n, v in rows] + [""]


EXTRA_ROWS = (
    "rewritten_before_commit",
    "rerun_of_finished_folder_rewrote",
    "summary_counts_right",
    "resumed_inside_files",
    "runs_total",
    "runs_interrupted",
    "resumed_inside_jobs",
    "webhooks_duplicated",
    "webhooks_missing",
)


def details(report: dict[str, Any]) -> list[str]:
    lines = []
    for key in ("lost", "done_twice", "leftovers", "rewritten_before_commit", "webhooks_duplicated"):
        if report.get(key):
            lines.append(f"- {key}: {', '.join(map(str, report[key]))}")
    for key in ("ref_vs_ref", "chaos_vs_ref"):
        for kind in ("sampled", "resumed", "unexplained", "missing"):
            if report[key][kind]:
                lines.append(f"- {key} {kind}: {', '.join(report[key][kind])}")
    return [*lines, ""] if lines else []


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.keep or Path(tempfile.mkdtemp(prefix="dattavani-chaos-"))
    (root / "logs").mkdir(parents=True, exist_ok=True)
    files = build_inputs(args, root / "inputs")
    audio = sum(duration_of(path) for path in files)
    print(f"{len(files)} inputs, {audio:.0f} s of audio, in {root}")
    reports: dict[str, Any] = {"inputs": [str(p.relative_to(root / "inputs")) for p in files], "audio_s": audio}
    modes = args.modes.split(",")
    if "batch" in modes:
        reports["batch"] = batch_report(args, root, files)
    if "jobs" in modes:
        reports["jobs"] = jobs_report(args, root, files)
    text = []
    for mode in ("batch", "jobs"):
        if mode in reports:
            text += table(f"{mode}: {reports[mode]['kills']} SIGKILLs", reports[mode]) + details(reports[mode])
    print("\n".join(text))
    if args.markdown:
        args.markdown.write_text("\n".join(text), encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(reports, indent=2, default=str), encoding="utf-8")
    if args.keep is None:
        shutil.rmtree(root, ignore_errors=True)
    failed = any(
        reports[m]["lost"] or reports[m]["done_twice"] or reports[m]["leftovers"] for m in modes if m in reports
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
