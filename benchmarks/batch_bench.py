#!/usr/bin/env python3
"""Batch throughput of `dattavani-asr batch` next to faster-whisper (and openai-whisper's CLI if installed).

A folder is made of ``--copies`` copies of each selected clip (manifest entries in ``--languages`` with a
reference; entries with a ``channel`` skipped), hard-linked (or copied) under distinct names in a temp dir,
so there are enough short files for batching to matter. Names sort copy by copy, so neighbouring files are
different clips; ``--adjacent-copies`` sorts the copies of one clip side by side instead. Every system then
transcribes the whole folder in its own fresh process, and the wall time is taken from process launch to
exit, imports and model load included: that is what a user waits for. Each system also reports its
transcription-only time where it can be measured inside the process:

- ours: the command as users run it (packed; encoder trimmed for English-only models), and variants with
  the flags passed explicitly (``ours-full``: ``--pack --no-trim-encoder``; ``ours-no-pack``; ``ours-trim``:
  ``--no-pack --trim-encoder``): the real CLI entry point (``dattavani_asr.cli.main`` with
  ``batch FOLDER --output-dir TMP -f txt --model M --beam-size B``,
  plus ``--language L`` when one language is selected); the wrapper loads the model first (the
  CLI's process-wide cache then reuses it), so ``batch-summary.json``'s ``wall_seconds`` is the run without
  the model load;
- faster-whisper: one process, ``WhisperModel(..., compute_type="int8", cpu_threads=T)``, a loop of
  ``model.transcribe(path, beam_size=B, language=L)``; transcription = the loop;
- faster-whisper batched: the same with ``BatchedInferencePipeline(model).transcribe(..., batch_size=8)``;
- openai-whisper: its ``whisper`` CLI once per file (needs ``openai-whisper``, torch, ffmpeg and an openai
  checkpoint: by default the CTranslate2 weights converted with ``../shared/peers/ct2_to_openai.py`` into
  ``~/.cache/dattavani-bench/``). ``--openai-files K`` times only K files and extrapolates the rest from
  their mean per-file time (labelled as extrapolated).

``--repeat N`` runs every system N times (round-robin) and keeps its fastest run. WER is corpus WER after
Whisper's normalisation (``dattavani_asr.evaluation.word_error_rate``); peak RSS is the child's ru_maxrss.

    python benchmarks/batch_bench.py --languages en --copies 4 --markdown /tmp/batch_en.md --json /tmp/batch_en.json
    python benchmarks/batch_bench.py --systems ours,faster-whisper --copies 8 --repeat 3
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import util
from pathlib import Path
from typing import Any

from transcribe_bench import (
    BATCH_SIZE,
    REPO,
    Item,
    child_env,
    cpu_name,
    default_audio_dir,
    faster_whisper_model,
    joined,
    load_items,
    pct,
    split_list,
    timed_process,
    version_of,
    versions_text,
)

OURS = ("ours", "ours-full", "ours-no-pack", "ours-trim")
SYSTEMS = (*OURS, "faster-whisper", "faster-whisper-batched", "openai-whisper")
LABELS = {
    "ours": "Dattavani ASR `batch` (defaults)",
    "ours-full": "Dattavani ASR `batch --pack --no-trim-encoder`",
    "ours-no-pack": "Dattavani ASR `batch --no-pack --no-trim-encoder`",
    "ours-trim": "Dattavani ASR `batch --no-pack --trim-encoder`",
    "faster-whisper": "faster-whisper `WhisperModel` int8, loop",
    "faster-whisper-batched": f"faster-whisper `BatchedInferencePipeline` int8, batch {BATCH_SIZE}, loop",
    "openai-whisper": "openai-whisper CLI fp32, one process per file",
}
PEERS_DIR = REPO.parent / "shared" / "peers"
CACHE_DIR = Path.home() / ".cache" / "dattavani-bench"
OURS_WRAPPER = (
    "import json, sys, time\n"
    "started = time.perf_counter()\n"
    "result, model, cli = sys.argv[1], sys.argv[2], sys.argv[3:]\n"
    "from dattavani_asr.engine.loader import load_model, loaded_models\n"
    "load_model(model)\n"
    "info = {'load_s': time.perf_counter() - started}\n"
    "sys.argv = ['dattavani-asr', *cli]\n"
    "from dattavani_asr.cli import main\n"
    "try:\n"
    "    main()\n"
    "finally:\n"
    "    info['models_loaded'] = len(loaded_models())\n"
    "    open(result, 'w').write(json.dumps(info))\n"
)
LEGEND = (
    "wall = process launch to exit (imports, model load, decoding, writing); transcription = the in-process "
    "time after the model is loaded (ours: batch-summary.json wall_seconds; faster-whisper: the loop); "
    "startup = wall - transcription; RTF = wall / audio; throughput = audio hours per wall hour; "
    "WER = corpus WER after normalisation; peak RSS = the child's ru_maxrss (max over processes for the CLI); "
    "ours … / this = that run of ours' throughput over this system's (above 1 = ours faster)."
)


@dataclass(frozen=True)
class BatchFile:
    """One file of the batch folder: a copy of `clip` named `name`."""

    name: str
    path: str
    clip: str
    lang: str
    reference: str
    duration: float


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    doc = (__doc__ or "").split("\n\n")
    parser = argparse.ArgumentParser(
        description=doc[0], epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--audio", type=Path, default=None, help="audio folder (default ../shared/audio or tests/data)")
    parser.add_argument("--manifest", type=Path, default=None, help="default: AUDIO/manifest.jsonl")
    parser.add_argument("--languages", default="en", help="comma-separated language codes")
    parser.add_argument("--copies", type=int, default=4, help="copies of each selected clip in the batch folder")
    parser.add_argument(
        "--phrases",
        action="store_true",
        help="cut the clips at their pauses into short phrase clips (benchmarks/phrases.py); each copy in its own "
        "shuffled order, so neighbouring files are different phrases",
    )
    parser.add_argument("--min-pause", type=float, default=0.2, help="with --phrases: shortest pause cut at (s)")
    parser.add_argument(
        "--adjacent-copies", action="store_true", help="name copies so that copies of one clip sort side by side"
    )
    parser.add_argument("--model", default="tiny.en", help="registry name or CTranslate2 model dir")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for the peers (and OMP/MKL vars)")
    parser.add_argument("--repeat", type=int, default=1, help="run each system N times, keep the fastest")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"subset of {','.join(SYSTEMS)}")
    parser.add_argument("--openai-model", default=None, help="openai-whisper checkpoint (default: convert --model)")
    parser.add_argument("--openai-files", type=int, default=0, help="time only K files, extrapolate (0 = all)")
    parser.add_argument("--json", type=Path, default=None, help="write every measurement here")
    parser.add_argument("--markdown", type=Path, default=None, help="write the report here")
    parser.add_argument("--worker", choices=("faster-whisper", "faster-whisper-batched"), help=argparse.SUPPRESS)
    parser.add_argument("--files", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = sorted(set(split_list(args.systems)) - set(SYSTEMS))
    if unknown or args.copies < 1 or args.repeat < 1:
        parser.error(f"unknown system(s) {', '.join(unknown)}" if unknown else "--copies/--repeat must be >= 1")
    args.audio = (args.audio or default_audio_dir()).resolve()
    args.manifest = args.manifest or args.audio / "manifest.jsonl"
    return args


def select_clips(args: argparse.Namespace) -> list[Item]:
    """Manifest clips in --languages that have a reference (single-channel ones, unless cut into phrases)."""
    from dattavani_asr.models import resolve

    if not args.manifest.is_file():
        raise SystemExit(f"no manifest at {args.manifest}")
    args.model_dir = str(resolve(args.model))
    found = load_items(args.manifest, args.audio, split_list(args.languages))
    clips = [c for c in found if c.channel is None or args.phrases]
    if not clips:
        raise SystemExit(f"no single-channel clips with a reference for {args.languages} in {args.manifest}")
    return clips


def phrase_timing_model(args: argparse.Namespace) -> str:
    """The model whose word timestamps place reference words in phrases: base where installed (better timed)."""
    from dattavani_asr.models import resolve

    try:
        resolve("base")
    except Exception:
        return str(args.model)
    return "base"


def link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def make_folder(
    clips: list[Item], copies: int, folder: Path, adjacent: bool = False, shuffle: bool = False
) -> list[BatchFile]:
    """`copies` copies of each clip in `folder`, listed copy by copy (so the first files are distinct clips).

    Names sort the same way (``c0_00_…``, ``c0_01_…``), so neighbours in the folder are different clips, as in a
    real folder; with `adjacent` they sort clip by clip (``00_…_c0``, ``00_…_c1``), so packing puts identical
    clips side by side; with `shuffle` each copy lists the clips in its own (seeded) order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for copy in range(copies):
        order = random.Random(copy).sample(clips, len(clips)) if shuffle else clips
        for index, clip in enumerate(order):
            source = Path(clip.path)
            name = f"c{copy}_{index:02d}_{source.stem}{source.suffix}"
            name = f"{index:02d}_{source.stem}_c{copy}{source.suffix}" if adjacent else name
            link_or_copy(source, folder / name)
            files.append(BatchFile(name, str(folder / name), clip.id, clip.lang, clip.reference, clip.duration))
    return files


def warm_page_cache(paths: list[Path]) -> None:
    """Read the model and audio files once so that no system pays for a cold disk cache."""
    for path in paths:
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            file.read_bytes()


# --------------------------------------------------------------------------- worker side (faster-whisper)


def build_worker(args: argparse.Namespace) -> Callable[[BatchFile], str]:
    model = faster_whisper_model(args)
    if args.worker == "faster-whisper":

        def plain(file: BatchFile) -> str:
            segments, _ = model.transcribe(file.path, beam_size=args.beam_size, language=file.lang)
            return joined(segments)

        return plain
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(model)

    def batched(file: BatchFile) -> str:
        kwargs = {"beam_size": args.beam_size, "language": file.lang, "batch_size": BATCH_SIZE}
        segments, _ = pipeline.transcribe(file.path, **kwargs)
        return joined(segments)

    return batched


def worker_main(args: argparse.Namespace) -> int:
    files = [BatchFile(**raw) for raw in json.loads(args.files.read_text(encoding="utf-8"))]
    started = time.perf_counter()
    run = build_worker(args)
    loaded = time.perf_counter()
    texts = {file.name: run(file) for file in files}
    info = {"load_s": loaded - started, "transcribe_s": time.perf_counter() - loaded, "texts": texts}
    args.result.write_text(json.dumps(info), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------- parent side: one system, one run


def failure(system: str, process: dict[str, Any], detail: str = "") -> dict[str, Any]:
    message = detail or process["stderr"] or process["stdout"][-2000:] or f"exit code {process['rc']}"
    return {"system": system, "error": message.strip()}


def single_language(files: list[BatchFile]) -> str | None:
    languages = {file.lang for file in files}
    return languages.pop() if len(languages) == 1 else None


def ours_command(args: argparse.Namespace, folder: Path, out: Path, result: Path, system: str) -> list[str]:
    cli = ["batch", str(folder), "--output-dir", str(out), "-f", "txt", "--model", args.model]
    cli += ["--beam-size", str(args.beam_size)]
    cli += ["--language", args.language] if args.language else []
    flags = {  # "ours" is the command as users run it: packed, trimmed for English-only models
        "ours": [],
        "ours-full": ["--pack", "--no-trim-encoder"],
        "ours-no-pack": ["--no-pack", "--no-trim-encoder"],
        "ours-trim": ["--no-pack", "--trim-encoder"],
    }
    cli += flags[system]
    return [sys.executable, "-c", OURS_WRAPPER, str(result), args.model, *cli]


def run_ours(system: str, args: argparse.Namespace, files: list[BatchFile], folder: Path) -> dict[str, Any]:
    """`dattavani-asr batch` on the folder in a fresh process; texts read back from the output dir."""
    with tempfile.TemporaryDirectory(prefix="dattavani-batch-out-") as tmp:
        out, result_path = Path(tmp) / "out", Path(tmp) / "result.json"
        command = ours_command(args, folder, out, result_path, system)
        process = timed_process(command, child_env(args.threads))
        summary_path = out / "batch-summary.json"
        if process["rc"] != 0 or not result_path.is_file() or not summary_path.is_file():
            return failure(system, process)
        info = json.loads(result_path.read_text(encoding="utf-8"))
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        texts = {}
        for file in files:
            txt = out / Path(file.name).with_suffix(".txt")
            texts[file.name] = txt.read_text(encoding="utf-8").strip() if txt.is_file() else ""
    result = {"system": system, "wall_s": process["wall_s"], "transcribe_s": summary["wall_seconds"]}
    result.update(
        peak_rss_mb=process["rss_mb"], texts=texts, summary=summary, command=["dattavani-asr", *command[5:]], **info
    )
    if info.get("models_loaded") != 1:
        result["warning"] = f"{info.get('models_loaded')} models loaded: the preload missed the CLI's cache key"
    return result


def run_faster_whisper(system: str, args: argparse.Namespace, files: list[BatchFile]) -> dict[str, Any]:
    """One fresh process that loads faster-whisper and loops over the files."""
    with tempfile.TemporaryDirectory(prefix="dattavani-batch-fw-") as tmp:
        files_path, result_path = Path(tmp) / "files.json", Path(tmp) / "result.json"
        files_path.write_text(json.dumps([asdict(file) for file in files]), encoding="utf-8")
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", system, "--files", str(files_path)]
        command += ["--result", str(result_path), "--model", args.model, "--model-dir", args.model_dir]
        command += ["--beam-size", str(args.beam_size), "--threads", str(args.threads)]
        process = timed_process(command, child_env(args.threads))
        if process["rc"] != 0 or not result_path.is_file():
            return failure(system, process)
        info = json.loads(result_path.read_text(encoding="utf-8"))
    result = {"system": system, "wall_s": process["wall_s"], "peak_rss_mb": process["rss_mb"], **info}
    return result


def openai_checkpoint(args: argparse.Namespace) -> tuple[str | None, str]:
    """The openai-whisper checkpoint to use (converting the CTranslate2 model once), or None and why not."""
    missing = [name for name in ("whisper", "torch") if util.find_spec(name) is None]
    if missing or shutil.which("ffmpeg") is None:
        return None, f"skipped: {', '.join(missing) or 'ffmpeg'} not installed"
    if args.openai_model:
        return args.openai_model, ""
    checkpoint = CACHE_DIR / f"{Path(args.model).name}.pt"
    converter = PEERS_DIR / "ct2_to_openai.py"
    if not checkpoint.is_file() and converter.is_file():
        print(f"converting {args.model_dir} to {checkpoint} ...", file=sys.stderr)
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, str(converter), args.model_dir, "-o", str(checkpoint)]
        subprocess.run(command, check=False, capture_output=True)
    if not checkpoint.is_file():
        return None, f"skipped: no openai checkpoint (pass --openai-model; {converter} failed or is missing)"
    return str(checkpoint), ""


def openai_command(args: argparse.Namespace, checkpoint: str, file: BatchFile, out: Path) -> list[str]:
    exe = shutil.which("whisper") or str(Path(sys.executable).with_name("whisper"))
    command = [exe, file.path, "--model", checkpoint, "--language", file.lang, "--beam_size", str(args.beam_size)]
    command += ["--fp16", "False", "--output_format", "txt", "--output_dir", str(out)]
    return [*command, "--threads", str(args.threads)]


def run_openai(args: argparse.Namespace, files: list[BatchFile]) -> dict[str, Any]:
    """The `whisper` CLI once per file (only the first --openai-files files when given; the rest extrapolated)."""
    checkpoint, reason = openai_checkpoint(args)
    if checkpoint is None:
        return {"system": "openai-whisper", "skipped": reason}
    timed = files[: args.openai_files] if 0 < args.openai_files < len(files) else files
    walls, rss, texts = [], 0.0, {}
    with tempfile.TemporaryDirectory(prefix="dattavani-batch-openai-") as tmp:
        for file in timed:
            process = timed_process(openai_command(args, checkpoint, file, Path(tmp)), child_env(args.threads))
            txt = Path(tmp) / (Path(file.name).stem + ".txt")
            if process["rc"] != 0 or not txt.is_file():
                return failure("openai-whisper", process, process["stderr"][-1500:])
            walls.append(process["wall_s"])
            rss = max(rss, process["rss_mb"])
            texts[file.name] = " ".join(txt.read_text(encoding="utf-8").split())
    result = {"system": "openai-whisper", "wall_s": sum(walls) / len(walls) * len(files), "transcribe_s": None}
    result.update(peak_rss_mb=rss, texts=texts, timed_files=len(timed), measured_wall_s=sum(walls), runs_s=walls)
    result.update(extrapolated=len(timed) < len(files), checkpoint=checkpoint)
    return result


def run_once(system: str, args: argparse.Namespace, files: list[BatchFile], folder: Path) -> dict[str, Any]:
    if system in OURS:
        return run_ours(system, args, files, folder)
    if system == "openai-whisper":
        return run_openai(args, files)
    return run_faster_whisper(system, args, files)


# --------------------------------------------------------------------------- scoring


def reference_words(file: BatchFile) -> int:
    from dattavani_asr.evaluation import normalize

    return len(normalize(file.reference, file.lang).split())


def pooled_wer(files: list[BatchFile], texts: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Corpus WER per language over the files that have a text, and those pooled by reference words."""
    from dattavani_asr.evaluation import word_error_rate

    scored = [file for file in files if file.name in texts]
    by_lang, words = {}, {}
    for lang in sorted({file.lang for file in scored}):
        chosen = [file for file in scored if file.lang == lang]
        by_lang[lang] = word_error_rate([f.reference for f in chosen], [texts[f.name] for f in chosen], lang)
        words[lang] = sum(reference_words(file) for file in chosen)
    return sum(by_lang[lang] * words[lang] for lang in by_lang) / sum(words.values()), by_lang


def file_wers(files: list[BatchFile], texts: dict[str, str]) -> dict[str, float]:
    from dattavani_asr.evaluation import word_error_rate

    return {f.name: word_error_rate([f.reference], [texts[f.name]], f.lang) for f in files if f.name in texts}


def seam_leaks(files: list[BatchFile], texts: dict[str, str]) -> list[str]:
    """Words that crossed into a neighbouring file (in run order): a file's text opens with the previous file's
    last reference word (its own reference does not start with it), or ends with the next file's first one."""
    from dattavani_asr.evaluation import normalize

    ordered = sorted((file for file in files if file.name in texts), key=lambda file: file.name)
    leaks = []
    for a, b in itertools.pairwise(ordered):
        ref_a, ref_b = normalize(a.reference, a.lang).split(), normalize(b.reference, b.lang).split()
        hyp_a, hyp_b = normalize(texts[a.name], a.lang).split(), normalize(texts[b.name], b.lang).split()
        if ref_a and hyp_b and hyp_b[0] == ref_a[-1] and hyp_b[0] not in ref_b[:2]:
            leaks.append(f"'{hyp_b[0]}' of {a.name} opens {b.name}: {' '.join(hyp_b)}")
        if ref_b and hyp_a and hyp_a[-1] == ref_b[0] and hyp_a[-1] not in ref_a[-2:]:
            leaks.append(f"'{hyp_a[-1]}' of {b.name} ends {a.name}: {' '.join(hyp_a)}")
    return leaks


def score(result: dict[str, Any], files: list[BatchFile]) -> dict[str, Any]:
    """Add audio, RTF, throughput, WER and seam leaks to one system's successful result."""
    audio = sum(file.duration for file in files)
    result["leaks"] = seam_leaks(files, result["texts"])
    result["wer"], result["wer_by_lang"] = pooled_wer(files, result["texts"])
    result["file_wer"] = file_wers(files, result["texts"])
    result.update(files_n=len(files), audio_s=audio, rtf=result["wall_s"] / audio)
    result["throughput"] = audio / result["wall_s"]
    transcribe = result.get("transcribe_s")
    result["startup_s"] = None if transcribe is None else result["wall_s"] - transcribe
    return result


def measure(args: argparse.Namespace, files: list[BatchFile], folder: Path) -> list[dict[str, Any]]:
    """Every system --repeat times, round-robin; each keeps its fastest successful run (all walls recorded)."""
    systems = split_list(args.systems)
    runs: dict[str, list[dict[str, Any]]] = {system: [] for system in systems}
    for round_ in range(args.repeat):
        for system in systems:
            if runs[system] and ("skipped" in runs[system][0]):
                continue
            print(f"[{round_ + 1}/{args.repeat}] {system} on {len(files)} files ...", file=sys.stderr)
            result = run_once(system, args, files, folder)
            print(f"  {system}: {status(result)}", file=sys.stderr)
            runs[system].append(result)
    return [best_run(system_runs) for system_runs in runs.values()]


def best_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [run for run in runs if "wall_s" in run]
    if not ok:
        return runs[-1]
    best = dict(min(ok, key=lambda run: run["wall_s"]))
    best["runs_wall_s"] = [run["wall_s"] for run in ok]
    best["failed_runs"] = len(runs) - len(ok)
    return best


def status(result: dict[str, Any]) -> str:
    """A one-line outcome: the wall time, why it was skipped, or the last line of its error."""
    if "wall_s" in result:
        return f"{result['wall_s']:.1f} s"
    if "skipped" in result:
        return str(result["skipped"])
    lines = str(result.get("error", "")).strip().splitlines() or ["?"]
    return "error: " + lines[-1][:160]


# --------------------------------------------------------------------------- reporting


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def ratio(ours: dict[str, Any] | None, theirs: dict[str, Any]) -> str:
    """Ours' throughput over theirs (above 1 = ours gets through the folder faster)."""
    if ours is None or "throughput" not in ours:
        return "-"
    return f"{ours['throughput'] / theirs['throughput']:.2f}"


def files_cell(result: dict[str, Any]) -> str:
    if result.get("extrapolated"):
        return f"{result['files_n']} ({result['timed_files']} timed, extrapolated)"
    return str(result["files_n"])


def summary_table(results: list[dict[str, Any]]) -> list[str]:
    head = ["system", "files", "audio s", "wall s (process)", "transcription s", "startup s", "RTF"]
    head += ["throughput (audio h/h)", "WER %", "words in the wrong file", "peak RSS MB", "ours / this"]
    head += ["ours --no-pack / this"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    by_name = {r["system"]: r for r in results if "throughput" in r}
    for r in results:
        if "throughput" not in r:
            lines.append(f"| {LABELS[r['system']]} | {status(r)} |" + " |" * (len(head) - 2))
            continue
        wall = f"{r['wall_s']:.1f}" + (" (extrapolated)" if r.get("extrapolated") else "")
        cells = [LABELS[r["system"]], files_cell(r), f"{r['audio_s']:.1f}", wall, seconds(r.get("transcribe_s"))]
        wer = pct(r["wer"]) + (f" ({r['timed_files']} files)" if r.get("extrapolated") else "")
        cells += [seconds(r["startup_s"]), f"{r['rtf']:.3f}", f"{r['throughput']:.1f}", wer, str(len(r["leaks"]))]
        cells += [f"{r['peak_rss_mb']:.0f}", ratio(by_name.get("ours"), r), ratio(by_name.get("ours-no-pack"), r)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def ratio_lines(results: list[dict[str, Any]]) -> list[str]:
    by_name = {r["system"]: r for r in results if "throughput" in r}
    lines = []
    for mine in OURS:
        ours = by_name.get(mine)
        for name, theirs in by_name.items():
            if ours is None or name in OURS:
                continue
            x = ours["throughput"] / theirs["throughput"]
            words = f"{x:.2f}x the throughput" if x >= 1 else f"{1 / x:.2f}x slower"
            lines.append(f"- {LABELS[mine]} vs {LABELS[name]}: ours/theirs throughput **{x:.2f}** ({words}).")
    return lines


def setup_line(args: argparse.Namespace, clips: list[Item], files: list[BatchFile]) -> str:
    audio = sum(file.duration for file in files)
    return (
        f"Model `{args.model}`, languages {args.languages}: {len(clips)} clips x {args.copies} copies = "
        f"{len(files)} files, {audio:.1f} s of audio (clips {min(c.duration for c in clips):.1f}-"
        f"{max(c.duration for c in clips):.1f} s). CPU: {cpu_name()} ({os.cpu_count()} cores); beam "
        f"{args.beam_size}; peers {args.threads} threads; ours uses its defaults (`batch` has no thread option: "
        f"CTranslate2 threads = all {os.cpu_count()} cores, 2 decoder threads); fastest of {args.repeat} run(s) "
        f"per system. {versions_text()}, openai-whisper {version_of('openai-whisper')}, "
        f"torch {version_of('torch')}."
    )


def one_line(text: str) -> str:
    return " ".join(text.split())


def worse_files(results: list[dict[str, Any]], files: list[BatchFile], margin: float = 0.15) -> list[str]:
    """Files where a system's WER exceeds plain faster-whisper's by more than `margin`, with hypotheses."""
    by_name = {r["system"]: r for r in results if "throughput" in r}
    base = by_name.get("faster-whisper")
    if base is None:
        return []
    lines = []
    for name, r in by_name.items():
        bad = [
            f for f in files if f.name in r["file_wer"] and r["file_wer"][f.name] > base["file_wer"][f.name] + margin
        ]
        if not bad:
            continue
        lines.append(f"- {LABELS[name]}: {len(bad)} of {len(r['file_wer'])} files worse than faster-whisper by >")
        lines[-1] += f" {100 * margin:.0f} points, e.g.:"
        for file in bad[:3]:
            lines.append(f"  - {file.name}: {pct(r['file_wer'][file.name])} % vs {pct(base['file_wer'][file.name])} %")
            lines.append(f"    - reference: {file.reference}")
            lines.append(f"    - {name}: {one_line(r['texts'][file.name])}")
            lines.append(f"    - faster-whisper: {one_line(base['texts'][file.name])}")
    return lines


def copy_consistency(results: list[dict[str, Any]], files: list[BatchFile]) -> list[str]:
    """Per system: how many clips got different (normalised) texts in different copies."""
    from dattavani_asr.evaluation import normalize

    lines = []
    for r in (r for r in results if "throughput" in r):
        variants: dict[str, set[str]] = {}
        for file in files:
            if file.name in r["texts"]:
                variants.setdefault(file.clip, set()).add(normalize(r["texts"][file.name], file.lang))
        differing = sorted(clip for clip, texts in variants.items() if len(texts) > 1)
        if differing:
            lines.append(f"- {LABELS[r['system']]}: copies differ for {len(differing)} clip(s): {', '.join(differing)}")
    return lines


def checks(results: list[dict[str, Any]], files: list[BatchFile]) -> list[str]:
    """Anything that looks wrong: warnings, failed runs, ours' summary not matching the folder."""
    lines = [f"- {LABELS[r['system']]}: {r['warning']}" for r in results if r.get("warning")]
    lines += [f"- {LABELS[r['system']]}: {leak}" for r in results for leak in r.get("leaks", [])]
    lines += [f"- {LABELS[r['system']]}: {r['failed_runs']} failed run(s)" for r in results if r.get("failed_runs")]
    audio = sum(file.duration for file in files)
    for r in results:
        summary = r.get("summary")
        if summary and (summary["done"] != len(files) or summary["failed"] or summary["skipped"]):
            lines.append(f"- {LABELS[r['system']]}: batch summary {summary}")
        if summary and abs(summary["audio_seconds"] - audio) > 0.02 * audio:
            lines.append(f"- {LABELS[r['system']]}: summary audio {summary['audio_seconds']:.1f} s vs {audio:.1f} s")
    return lines


def render(args: argparse.Namespace, clips: list[Item], files: list[BatchFile], results: list[dict[str, Any]]) -> str:
    lines = [setup_line(args, clips, files), "", LEGEND, "", *summary_table(results), "", *ratio_lines(results)]
    notes = checks(results, files) + copy_consistency(results, files)
    if notes:
        lines += ["", "Checks:", "", *notes]
    worse = worse_files(results, files)
    if worse:
        lines += ["", "Files clearly worse than plain faster-whisper:", "", *worse]
    return "\n".join(lines) + "\n"


def write_outputs(args: argparse.Namespace, text: str, payload: dict[str, Any]) -> None:
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"settings": settings, **payload}, indent=1), encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    clips = select_clips(args)
    with tempfile.TemporaryDirectory(prefix="dattavani-batch-bench-") as tmp:
        folder = Path(tmp) / "batch"
        if args.phrases:
            from phrases import phrase_clips

            clips = phrase_clips(clips, Path(tmp) / "phrases", phrase_timing_model(args), args.min_pause)
        files = make_folder(clips, args.copies, folder, args.adjacent_copies, shuffle=args.phrases)
        args.language = single_language(files)
        warm_page_cache([Path(args.model_dir), folder])
        results = [score(r, files) if "wall_s" in r else r for r in measure(args, files, folder)]
    text = render(args, clips, files, results)
    print(text)
    write_outputs(
        args, text, {"clips": [asdict(c) for c in clips], "files": [asdict(f) for f in files], "systems": results}
    )
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
