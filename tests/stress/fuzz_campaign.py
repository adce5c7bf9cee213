"""The full fuzz campaign (issue 19): N hostile inputs through `transcribe`, `batch`, HTTP uploads, jobs (upload
and URL) and live streams, against the real CLI and a real `dattavani-asr serve`; prints what happened to each
path and every broken promise (traceback, 5xx, input not accounted for, temp file, fd or thread left).

    python tests/stress/fuzz_campaign.py --inputs 1000            # ~25 min on 2 cores with tiny.en
    python tests/stress/fuzz_campaign.py --inputs 150 --bombs 1 --bomb-minutes 720   # with a 12-hour bomb

Exit status 1 when any promise broke.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hostile as hostile_module
from harness import (
    CLI,
    STREAM_CASES,
    Tally,
    check_batch,
    check_jobs,
    check_streams,
    check_uploads,
    leftovers,
    process_usage,
    serve,
    url_path,
)
from hostile import Hostile, make_inputs

from dattavani_asr.audio.decode import decode_audio
from http_server import serve_files


def check_transcribe(inputs: Sequence[Hostile], work: Path) -> Tally:
    """`dattavani-asr transcribe` on each input: exit 0 with a transcript, or its error's code and one line."""
    tally = Tally(len(inputs))
    tmpdir = work / "tmp-transcribe"
    tmpdir.mkdir(parents=True, exist_ok=True)
    for item in inputs:
        command = [*CLI, "transcribe", os.fsencode(item.path), "-o", "-"]
        env = os.environ | {"TMPDIR": str(tmpdir)}
        result = subprocess.run(command, check=False, env=env, capture_output=True, text=True, errors="replace")
        tally.outcomes[f"exit {result.returncode}"] += 1
        if "Traceback" in result.stderr or "internal error" in result.stderr or result.returncode == 1:
            tally.problems.append(f"transcribe {item.path.name}: exit {result.returncode} {result.stderr[-500:]}")
        elif result.returncode and not result.stderr.strip():
            tally.problems.append(f"transcribe {item.path.name}: exit {result.returncode} without a message")
    tally.problems += [f"temp file left: {path}" for path in leftovers(tmpdir)]
    return tally


def run_service(inputs: Sequence[Hostile], work: Path, streams: int) -> list[tuple[str, Tally]]:
    speech = decode_audio(hostile_module.REAL[0])
    results: list[tuple[str, Tally]] = []
    with serve(work, allow_private_urls="true", max_upload_mb="100") as (url, process):
        # Warm every path once (models loaded, thread pools grown to their size), then count from there.
        check_uploads(url, inputs[:5])
        check_jobs(url, inputs[:5], None)
        check_streams(url, speech, rounds=len(STREAM_CASES))
        time.sleep(15)
        baseline = process_usage(process.pid)
        results.append(("HTTP uploads", check_uploads(url, inputs)))
        with serve_files({url_path(item): item.path.read_bytes() for item in inputs}) as files:
            results.append(("jobs (upload + URL)", check_jobs(url, inputs, files.url)))
        results.append(("live streams", check_streams(url, speech, rounds=streams)))
        time.sleep(15)  # idle worker threads wind down
        after = process_usage(process.pid)
        health = Tally(1)
        health.outcomes[f"fds {baseline[0]}→{after[0]}, threads {baseline[1]}→{after[1]}"] += 1
        if after[0] > baseline[0] + 2 or after[1] > baseline[1] + 2:
            health.problems.append(f"descriptors/threads grew: {baseline} → {after}")
        health.problems += [f"temp file left: {path}" for path in leftovers(work / "tmp-serve")]
        log = (work / "serve.log").read_text(errors="replace")
        if "Traceback" in log or '"level": "error"' in log:
            health.problems.append("server log has errors or tracebacks")
        results.append(("server afterwards", health))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=1000, help="hostile files to make")
    parser.add_argument("--seed", type=int, default=20261206)
    parser.add_argument("--bombs", type=int, default=2, help="silence bombs among the inputs")
    parser.add_argument("--bomb-minutes", type=float, default=60.0, help="length each bomb decodes to")
    parser.add_argument("--transcribe-every", type=int, default=10, help="run `transcribe` on every Nth input")
    parser.add_argument("--service-inputs", type=int, default=300, help="inputs sent to the service")
    parser.add_argument("--streams", type=int, default=44, help="hostile live sessions")
    parser.add_argument("--parts", default="batch,transcribe,service", help="which paths to drive")
    parser.add_argument("--work", type=Path, default=None, help="folder to work in (default: a temp folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="dattavani-fuzz-"))
    started = time.monotonic()
    original = hostile_module.silence_bomb
    hostile_module.KINDS["silence-bomb"] = lambda rng: original(rng, minutes=args.bomb_minutes)
    inputs = make_inputs(work / "inputs", args.inputs, seed=args.seed, bombs=args.bombs)
    parts = set(args.parts.split(","))
    results = [("batch", check_batch(inputs, work / "batch"))] if "batch" in parts else []
    if "transcribe" in parts:
        results.append(("transcribe", check_transcribe(inputs[:: args.transcribe_every], work)))
    if "service" in parts:
        results += run_service(inputs[: args.service_inputs], work / "service", args.streams)
    problems = [problem for _, tally in results for problem in tally.problems]
    print(
        f"fuzz campaign: {len(inputs)} hostile inputs, seed {args.seed}, {time.monotonic() - started:.0f} s, in {work}"
    )
    for name, tally in results:
        print("  " + tally.line(name))
    for problem in problems[:50]:
        print("  PROBLEM", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
