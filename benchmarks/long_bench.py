#!/usr/bin/env python3
"""Hour-long recordings: ours next to faster-whisper (batched and sequential) on one long file.

The recording is built from the real clips of ``../shared/audio`` that have a reference (English by
default): clips of many speakers in a shuffled order, each at its own level (``--levels``, dBFS RMS),
0.4-1.5 s apart, a 20-s pause every 5 minutes, over a faint noise floor (no digital silence: a room
is never silent), until ``--minutes`` of audio. Every system transcribes it in a fresh process;
the wall time runs from launch to exit (imports and model load included), CPU % is the process's
user+system time over its wall time (200 % = both cores of this machine busy), peak RSS its
ru_maxrss. WER is split into substitutions, deletions and insertions, and every utterance (one
placed clip) is checked: "lost" when at most half of its reference words were recognised.

    python benchmarks/long_bench.py --minutes 60 --markdown /tmp/long.md --json /tmp/long.json
    python benchmarks/long_bench.py --minutes 10 --systems ours
    python benchmarks/long_bench.py --minutes 720 --sparse 60 --systems ours   # 12 hours, a clip a minute
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from transcribe_bench import BATCH_SIZE, Item, child_env, cpu_name, default_audio_dir, load_items, versions_text

SYSTEMS = ("ours", "faster-whisper-batched", "faster-whisper-vad")
LABELS = {
    "ours": "Dattavani ASR `transcribe` (CLI)",
    "faster-whisper-batched": f"faster-whisper `BatchedInferencePipeline` int8, batch {BATCH_SIZE}",
    "faster-whisper-vad": "faster-whisper `WhisperModel` int8, `vad_filter=True`",
}
NOISE_DBFS = -65.0
PAUSE_EVERY_S = 300.0
PAUSE_S = 20.0


@dataclass(frozen=True)
class Utterance:
    clip: str
    start: float
    end: float
    level_dbfs: float
    reference: str


# --------------------------------------------------------------------------- the recording


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    doc = (__doc__ or "").split("\n\n")
    parser = argparse.ArgumentParser(description=doc[0], epilog="\n\n".join(doc[1:]))
    parser.add_argument("--audio", type=Path, default=None, help="audio folder (default ../shared/audio or tests/data)")
    parser.add_argument("--languages", default="en")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--levels", default="-16,-22,-28,-34,-40", help="speaker levels to draw from, dBFS RMS")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--sparse",
        type=float,
        metavar="SECONDS",
        help="one clip every SECONDS of faint noise instead of continuous talk, written as it is built "
        "(a 12-hour recording in bounded memory: --minutes 720 --sparse 60 --systems ours)",
    )
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="faster-whisper's cpu_threads")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--ours-args", default="", help="extra arguments for `dattavani-asr transcribe`")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--keep", type=Path, help="also write the recording and its utterance list here")
    parser.add_argument("--worker", choices=SYSTEMS[1:], help=argparse.SUPPRESS)
    parser.add_argument("--build-into", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.audio = (args.audio or default_audio_dir()).resolve()
    return args


def _level(samples: Any, dbfs: float) -> Any:
    import numpy as np

    rms = float(np.sqrt(np.mean(np.square(samples)))) or 1.0
    peak = float(np.max(np.abs(samples))) or 1.0
    return samples * np.float32(min(10 ** (dbfs / 20) / rms, 0.99 / peak))


def clips_of(args: argparse.Namespace) -> list[tuple[Item, Any]]:
    from dattavani_asr.audio import decode_audio

    items = load_items(args.audio / "manifest.jsonl", args.audio, args.languages.split(","))
    return [(item, decode_audio(item.path, channel=item.channel)) for item in items]


def build(args: argparse.Namespace) -> tuple[Any, list[Utterance]]:
    """The samples of the recording and where each utterance lies in it."""
    import numpy as np

    from dattavani_asr.audio import SAMPLE_RATE

    rng = random.Random(args.seed)
    clips = clips_of(args)
    levels = [float(level) for level in args.levels.split(",")]
    speaker_level = {item.id: rng.choice(levels) for item, _ in clips}  # a clip's speaker keeps one level
    pieces: list[Any] = []
    utterances: list[Utterance] = []
    position = 0.0
    next_pause = PAUSE_EVERY_S
    order: list[tuple[Item, Any]] = []
    while position < args.minutes * 60:
        if not order:
            order = rng.sample(clips, len(clips))
        item, audio = order.pop()
        gap = PAUSE_S if position >= next_pause else rng.uniform(0.4, 1.5)
        next_pause += PAUSE_EVERY_S if position >= next_pause else 0.0
        pieces.append(np.zeros(round(gap * SAMPLE_RATE), np.float32))
        position += gap
        level = speaker_level[item.id] + rng.uniform(-3.0, 3.0)
        pieces.append(_level(audio, level))
        utterances.append(Utterance(item.id, position, position + len(audio) / SAMPLE_RATE, level, item.reference))
        position += len(audio) / SAMPLE_RATE
    samples = np.concatenate(pieces)
    noise = np.random.default_rng(args.seed).standard_normal(samples.shape[0]).astype(np.float32)
    return samples + noise * np.float32(10 ** (NOISE_DBFS / 20)), utterances


def write_recording(samples: Any, folder: Path) -> Path:
    from dattavani_asr.audio import SAMPLE_RATE
    from dattavani_asr.audio.formats import FormatCase, encode_audio

    path = folder / "long.flac"
    path.write_bytes(encode_audio(samples, SAMPLE_RATE, FormatCase("flac 16 kHz mono", "flac", "flac", SAMPLE_RATE)))
    return path


# --------------------------------------------------------------------------- the systems


def worker_main(args: argparse.Namespace) -> int:
    from faster_whisper import BatchedInferencePipeline, WhisperModel

    model = WhisperModel(args.model_dir, device="cpu", compute_type="int8", cpu_threads=args.threads)
    language = args.languages.split(",")[0]
    if args.worker == "faster-whisper-batched":
        pipeline = BatchedInferencePipeline(model)
        segments, _ = pipeline.transcribe(
            str(args.input), batch_size=BATCH_SIZE, beam_size=args.beam_size, language=language
        )
    else:
        segments, _ = model.transcribe(str(args.input), beam_size=args.beam_size, language=language, vad_filter=True)
    text = " ".join(segment.text.strip() for segment in segments)
    args.result.write_text(json.dumps({"text": text}), encoding="utf-8")
    return 0


def timed(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Wall time, CPU time and peak RSS of one fresh process (and its children), and its output."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return {
            "wall_s": wall,
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "rss_mb": usage.ru_maxrss / 1024.0,
            "rc": os.waitstatus_to_exitcode(status),
            "stdout": out.read(),
            "stderr": err.read()[-3000:],
        }


def run_system(system: str, args: argparse.Namespace, path: Path, folder: Path) -> dict[str, Any]:
    env = child_env(args.threads)
    if system == "ours":
        command = [sys.executable, "-c", "from dattavani_asr.cli import main; main()", "transcribe", str(path)]
        command += ["--model", args.model, "--beam-size", str(args.beam_size), "-o", "-", "-f", "json", "-q"]
        command += args.ours_args.split()
        outcome = timed(command, env)
        text = json.loads(outcome["stdout"])["text"] if outcome["rc"] == 0 else ""
    else:
        result = folder / f"{system}.json"
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", system, "--input", str(path)]
        command += ["--result", str(result), "--model-dir", args.model_dir, "--languages", args.languages]
        command += ["--beam-size", str(args.beam_size), "--threads", str(args.threads)]
        outcome = timed(command, env)
        text = json.loads(result.read_text())["text"] if outcome["rc"] == 0 else ""
    outcome.pop("stdout")
    return {"system": system, **outcome, "text": text}


# --------------------------------------------------------------------------- scoring


def score(result: dict[str, Any], utterances: list[Utterance], language: str) -> dict[str, Any]:
    """WER split by kind, and the utterances that were lost (at most half their words recognised)."""
    import jiwer

    from dattavani_asr.evaluation import normalize

    words = [(index, word) for index, u in enumerate(utterances) for word in normalize(u.reference, language).split()]
    hypothesis = normalize(result["text"], language) or "-"
    output = jiwer.process_words(" ".join(word for _, word in words), hypothesis)
    hits = [0] * len(utterances)
    for chunk in output.alignments[0]:
        if chunk.type == "equal":
            for ref in range(chunk.ref_start_idx, chunk.ref_end_idx):
                hits[words[ref][0]] += 1
    sizes = [0] * len(utterances)
    for index, _ in words:
        sizes[index] += 1
    lost = [i for i, (hit, size) in enumerate(zip(hits, sizes)) if size and hit <= size / 2]
    total = len(words)
    result.update(
        wer=output.wer,
        substitutions=output.substitutions / total,
        deletions=output.deletions / total,
        insertions=output.insertions / total,
        lost=len(lost),
        lost_examples=[asdict(utterances[i]) | {"recognised": hits[i], "words": sizes[i]} for i in lost[:8]],
        cpu_percent=100 * result["cpu_s"] / result["wall_s"],
    )
    return result


def table(results: list[dict[str, Any]], audio_s: float, utterances: int) -> list[str]:
    head = "| system | wall s | RTF | CPU % | peak RSS MB | WER % | subs % | deletions % | insertions % | "
    head += "utterances lost |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ours = next((r for r in results if r["system"] == "ours" and r["rc"] == 0), None)
    for r in results:
        if r["rc"] != 0:
            lines.append(f"| {LABELS[r['system']]} | failed: {r['stderr'][-200:]!r} |" + " |" * 8)
            continue
        cells = [LABELS[r["system"]], f"{r['wall_s']:.1f}", f"{r['wall_s'] / audio_s:.3f}", f"{r['cpu_percent']:.0f}"]
        cells += [f"{r['rss_mb']:.0f}", f"{100 * r['wer']:.1f}", f"{100 * r['substitutions']:.1f}"]
        cells += [f"{100 * r['deletions']:.1f}", f"{100 * r['insertions']:.1f}", f"{r['lost']} of {utterances}"]
        lines.append("| " + " | ".join(cells) + " |")
    if ours is not None:
        for r in results:
            if r is not ours and r["rc"] == 0:
                lines.append(f"\n{LABELS['ours']} vs {LABELS[r['system']]}: {r['wall_s'] / ours['wall_s']:.2f}x speed")
    return lines


def build_sparse(args: argparse.Namespace, path: Path) -> list[Utterance]:
    """A clip every `args.sparse` seconds over faint noise, written to a 16-bit WAV slot by slot."""
    import wave

    import numpy as np

    from dattavani_asr.audio import SAMPLE_RATE

    rng = random.Random(args.seed)
    noise = np.random.default_rng(args.seed)
    clips = clips_of(args)
    levels = [float(level) for level in args.levels.split(",")]
    utterances: list[Utterance] = []
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        for slot in range(int(args.minutes * 60 // args.sparse)):
            item, audio = rng.choice(clips)
            level = rng.choice(levels) + rng.uniform(-3.0, 3.0)
            lead = rng.uniform(1.0, max(1.0, args.sparse - audio.shape[0] / SAMPLE_RATE - 1.0))
            samples = np.zeros(round(args.sparse * SAMPLE_RATE), np.float32)
            at = round(lead * SAMPLE_RATE)
            placed = _level(audio, level)[: samples.shape[0] - at]
            samples[at : at + placed.shape[0]] = placed
            samples += noise.standard_normal(samples.shape[0]).astype(np.float32) * np.float32(10 ** (NOISE_DBFS / 20))
            out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
            start = slot * args.sparse + lead
            utterances.append(Utterance(item.id, start, start + placed.shape[0] / SAMPLE_RATE, level, item.reference))
    return utterances


def build_into(args: argparse.Namespace, folder: Path) -> int:
    """Child process: write the recording and its utterance list into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    if args.sparse:
        utterances = build_sparse(args, folder / "long.wav")
    else:
        samples, utterances = build(args)
        write_recording(samples, folder)
    (folder / "utterances.json").write_text(json.dumps([asdict(u) for u in utterances], indent=0))
    return 0


def recording(args: argparse.Namespace, folder: Path) -> tuple[Path, list[Utterance], float]:
    """The recording, built in a child process: a child's peak RSS starts at its parent's, so the
    parent must never hold the hour of samples the systems are measured on."""
    command = [sys.executable, str(Path(__file__).resolve()), "--build-into", str(folder)]
    command += ["--minutes", str(args.minutes), f"--levels={args.levels}", "--seed", str(args.seed)]
    command += ["--languages", args.languages, "--audio", str(args.audio)]
    command += ["--sparse", str(args.sparse)] if args.sparse else []
    subprocess.run(command, check=True)
    utterances = [Utterance(**item) for item in json.loads((folder / "utterances.json").read_text())]
    path = folder / ("long.wav" if args.sparse else "long.flac")
    return path, utterances, args.minutes * 60 if args.sparse else max(u.end for u in utterances)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    if args.build_into:
        return build_into(args, args.build_into)
    from dattavani_asr.models import resolve

    args.model_dir = str(resolve(args.model))
    with tempfile.TemporaryDirectory(prefix="dattavani-long-") as tmp:
        folder = Path(args.keep or tmp)
        path, utterances, audio_s = recording(args, folder)
        results = []
        for system in args.systems.split(","):
            print(f"{system} on {audio_s / 60:.1f} min ...", file=sys.stderr)
            result = run_system(system, args, path, folder)
            results.append(score(result, utterances, args.languages.split(",")[0]) if result["rc"] == 0 else result)
            print(f"  {result['wall_s']:.1f} s, rc {result['rc']}", file=sys.stderr)
    spacing = (
        f"one clip every {args.sparse:g} s"
        if args.sparse
        else f"gaps 0.4-1.5 s, {PAUSE_S:.0f} s pause every {PAUSE_EVERY_S / 60:.0f} min"
    )
    setup = (
        f"{audio_s / 60:.1f} min of audio: {len(utterances)} utterances of the {args.languages} clips of "
        f"{args.audio} (levels {args.levels} dBFS ± 3, {spacing}, noise floor {NOISE_DBFS:.0f} dBFS), "
        f"model {args.model}, beam {args.beam_size}. "
        f"CPU: {cpu_name()} ({os.cpu_count()} cores). {versions_text()}."
    )
    text = "\n".join([setup, "", *table(results, audio_s, len(utterances))]) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"setup": setup, "results": results}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
