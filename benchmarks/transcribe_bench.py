#!/usr/bin/env python3
"""Speed, memory and accuracy of Dattavani ASR next to faster-whisper (and openai-whisper if installed).

Every system runs in its own fresh Python process, so its model load time and peak RSS are its own.
Each file is transcribed ``--repeat`` times and the fastest wall time is kept (decoding included);
``--warmup`` first transcribes one file untimed. WER is scored after Whisper's text normalisation
(``dattavani_asr.evaluation``). A second section times the end-to-end command line on jfk.flac:
``dattavani-asr transcribe`` against a one-shot faster-whisper script, each a fresh process.

    python benchmarks/transcribe_bench.py --languages en --repeat 3 --warmup --markdown bench_en.md
    python benchmarks/transcribe_bench.py --model base --languages de,es,fr,pt --repeat 1

``--long-form`` builds one long recording per language instead: that language's clips (entries with a
``channel`` skipped) in manifest order, repeated ``--long-repeats`` times, 1.0 s of silence between clips,
written as 16 kHz mono FLAC (or mp3), with the clips' references joined as its reference. It compares ours
with faster-whisper's plain, ``vad_filter=True`` and ``BatchedInferencePipeline`` transcription of it.
Clips keep their own loudness (some FLEURS clips are 50 dB quieter than jfk.flac) unless ``--long-level``
scales each one to a common RMS level.

    python benchmarks/transcribe_bench.py --long-form --languages en --repeat 2 --markdown bench_long_en.md
    python benchmarks/transcribe_bench.py --long-form --model base --languages de,es,fr,pt --long-repeats 1 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata, util
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

REPO = Path(__file__).resolve().parents[1]
SYSTEMS = ("ours", "faster-whisper", "openai-whisper")
LONG_SYSTEMS = ("ours", "faster-whisper", "faster-whisper-vad", "faster-whisper-batched")
ALL_SYSTEMS = (*SYSTEMS, "faster-whisper-vad", "faster-whisper-batched")
BATCH_SIZE = 8  # faster-whisper's BatchedInferencePipeline default, and ours
LONG_GAP_S = 1.0
LONG_FORMATS = {"flac": ("flac", "flac", "s16"), "mp3": ("mp3", "libmp3lame", "fltp")}  # container, codec, format
LEGEND = (
    "load = imports + model load inside the process; cold start = process launch to model ready; "
    "1st call = the untimed warm-up transcription of the first clip; wall = sum over clips of the fastest run; "
    "CPU = user+sys time of those runs, all threads; RTF = wall / audio; peak RSS = the process's own ru_maxrss."
)
LONG_LEGEND = (
    "load = imports + model load inside the process; wall = fastest of --repeat transcriptions of each recording "
    "(decoding and any VAD included), summed over recordings; CPU = user+sys time of those runs, all threads; "
    "RTF = wall / audio; peak RSS = the process's own ru_maxrss; WER over each whole recording after "
    "normalisation, pooled over recordings; wall / ours and RSS / ours = this system's value over ours "
    "(above 1 = ours is faster / smaller); WER - ours = percentage points."
)
LABELS = {
    "ours": "Dattavani ASR (`Transcriber`)",
    "faster-whisper": "faster-whisper `WhisperModel` int8",
    "openai-whisper": "openai-whisper fp32",
    "faster-whisper-vad": "faster-whisper `WhisperModel` int8, `vad_filter=True`",
    "faster-whisper-batched": f"faster-whisper `BatchedInferencePipeline` int8, batch {BATCH_SIZE}",
}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
FW_ONE_SHOT = (
    "import sys\n"
    "from faster_whisper import WhisperModel\n"
    "model = WhisperModel(sys.argv[1], device='cpu', compute_type='int8', cpu_threads=int(sys.argv[4]))\n"
    "segments, _ = model.transcribe(sys.argv[2], beam_size=int(sys.argv[3]), language='en')\n"
    "print(' '.join(s.text.strip() for s in segments).strip())\n"
)

Transcribe = Callable[["Item"], str]


@dataclass(frozen=True)
class Item:
    """One scored transcription: a file (or one channel of it) with its reference."""

    id: str
    path: str
    lang: str
    channel: int | None
    reference: str
    duration: float


# --------------------------------------------------------------------------- command line


def default_audio_dir() -> Path:
    shared = REPO.parent / "shared" / "audio"
    return shared if (shared / "manifest.jsonl").is_file() else REPO / "tests" / "data"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    doc = (__doc__ or "").split("\n\n")
    parser = argparse.ArgumentParser(
        description=doc[0], epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--audio", type=Path, default=None, help="audio folder (default ../shared/audio or tests/data)")
    parser.add_argument("--manifest", type=Path, default=None, help="default: AUDIO/manifest.jsonl")
    parser.add_argument("--languages", default="en", help="comma-separated language codes to score")
    parser.add_argument(
        "--model", default="tiny.en", help="registry name or CTranslate2 model dir (multilingual for non-en)"
    )
    parser.add_argument("--openai-model", default=None, help="openai-whisper name or .pt checkpoint (default: --model)")
    parser.add_argument(
        "--systems",
        default=None,
        help=f"subset of {','.join(ALL_SYSTEMS)} (default: {','.join(SYSTEMS)}, "
        f"with --long-form {','.join(LONG_SYSTEMS)})",
    )
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument(
        "--trim-encoder",
        choices=("auto", "on", "off"),
        default="auto",
        help="ours: the model's policy (auto: trimmed for English-only models), or forced",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3, help="time each file N times, keep the fastest")
    parser.add_argument("--warmup", action="store_true", help="transcribe the first file once, untimed, first")
    parser.add_argument("--cli-runs", type=int, default=5, help="end-to-end CLI runs on jfk (0 = skip)")
    parser.add_argument("--json", type=Path, default=None, help="write every measurement here")
    parser.add_argument("--markdown", type=Path, default=None, help="write README-ready tables here")
    parser.add_argument("--long-form", action="store_true", help="time one long concatenated recording per language")
    parser.add_argument("--long-repeats", type=int, default=3, help="with --long-form: repeat the clip list N times")
    parser.add_argument("--long-format", choices=sorted(LONG_FORMATS), default="flac", help="long recording format")
    parser.add_argument(
        "--long-level", type=float, default=None, metavar="DBFS", help="scale each clip to this RMS level (e.g. -23)"
    )
    parser.add_argument("--worker", choices=ALL_SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--items", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.systems = args.systems or ",".join(LONG_SYSTEMS if args.long_form else SYSTEMS)
    unknown = sorted(set(split_list(args.systems)) - set(ALL_SYSTEMS))
    if unknown or args.long_repeats < 1:
        parser.error(f"unknown system(s) {', '.join(unknown)}" if unknown else "--long-repeats must be at least 1")
    args.audio = (args.audio or default_audio_dir()).resolve()
    args.manifest = args.manifest or args.audio / "manifest.jsonl"
    return args


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def load_items(manifest: Path, audio_dir: Path, languages: list[str]) -> list[Item]:
    """Manifest entries in `languages` that have a reference; stereo entries keep their channel."""
    items = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        entry = json.loads(line)
        if entry["lang"] not in languages or not entry.get("reference"):
            continue
        channel = entry.get("channel")
        suffix = "" if channel is None else f"#ch{channel}"
        path = (audio_dir / entry["file"]).resolve()
        items.append(
            Item(entry["file"] + suffix, str(path), entry["lang"], channel, entry["reference"], entry["duration_s"])
        )
    return items


def is_multilingual(model: str, model_dir: Path) -> bool:
    """51,864 tokens = English-only Whisper; 51,865 or more = multilingual."""
    from dattavani_asr.models import REGISTRY

    if model in REGISTRY:
        return REGISTRY[model].multilingual
    vocabulary = model_dir / "vocabulary.txt"
    if vocabulary.is_file():
        return len(vocabulary.read_text(encoding="utf-8").splitlines()) >= 51865
    return not model.endswith(".en")


# --------------------------------------------------------------------------- worker side (measured process)


def load_input(item: Item) -> Any:
    """The path, or for one channel of a stereo file the decoded 16 kHz channel (peers cannot pick one)."""
    if item.channel is None:
        return item.path
    from faster_whisper import decode_audio

    return decode_audio(item.path, split_stereo=True)[item.channel]


def build_ours(args: argparse.Namespace) -> Transcribe:
    from dattavani_asr import Transcriber

    transcriber = Transcriber(args.model, device="cpu", cpu_threads=args.threads)
    transcriber.engine()  # load now, so the load is not counted in the first file's time

    def run(item: Item) -> str:
        trim = {"auto": None, "on": True, "off": False}[args.trim_encoder]
        kwargs = {"beam_size": args.beam_size, "language": item.lang, "channel": item.channel, "trim_encoder": trim}
        return str(transcriber.transcribe(item.path, **kwargs).text)

    return run


def faster_whisper_model(args: argparse.Namespace) -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(args.model_dir, device="cpu", compute_type="int8", cpu_threads=args.threads)


def joined(segments: Iterable[Any]) -> str:
    """Consume faster-whisper's lazy segment generator (this is where the decoding happens) into one text."""
    return " ".join(segment.text.strip() for segment in segments).strip()


def build_faster_whisper(args: argparse.Namespace) -> Transcribe:
    model = faster_whisper_model(args)

    def run(item: Item) -> str:
        segments, _ = model.transcribe(load_input(item), beam_size=args.beam_size, language=item.lang)
        return joined(segments)

    return run


def build_faster_whisper_vad(args: argparse.Namespace) -> Transcribe:
    model = faster_whisper_model(args)

    def run(item: Item) -> str:
        kwargs = {"beam_size": args.beam_size, "language": item.lang, "vad_filter": True}
        segments, _ = model.transcribe(load_input(item), **kwargs)
        return joined(segments)

    return run


def build_faster_whisper_batched(args: argparse.Namespace) -> Transcribe:
    from faster_whisper import BatchedInferencePipeline

    pipeline = BatchedInferencePipeline(faster_whisper_model(args))

    def run(item: Item) -> str:
        kwargs = {"beam_size": args.beam_size, "language": item.lang, "batch_size": BATCH_SIZE}
        segments, _ = pipeline.transcribe(load_input(item), **kwargs)
        return joined(segments)

    return run


def build_openai_whisper(args: argparse.Namespace) -> Transcribe:
    import torch
    import whisper

    torch.set_num_threads(args.threads)
    model = whisper.load_model(args.openai_model or args.model, device="cpu")

    def run(item: Item) -> str:
        audio = load_input(item)
        result = model.transcribe(audio, language=item.lang, beam_size=args.beam_size, fp16=False, verbose=None)
        return str(result["text"]).strip()

    return run


BUILDERS: dict[str, Callable[[argparse.Namespace], Transcribe]] = {
    "ours": build_ours,
    "faster-whisper": build_faster_whisper,
    "openai-whisper": build_openai_whisper,
    "faster-whisper-vad": build_faster_whisper_vad,
    "faster-whisper-batched": build_faster_whisper_batched,
}


def time_items(run: Transcribe, items: list[Item], repeat: int) -> list[dict[str, Any]]:
    """Per item: the fastest wall time of `repeat` runs, and the CPU time (all threads) of that run."""
    files = []
    for item in items:
        runs: list[tuple[float, float]] = []
        text = ""
        for _ in range(max(1, repeat)):
            wall, cpu = time.perf_counter(), time.process_time()
            text = run(item)
            runs.append((time.perf_counter() - wall, time.process_time() - cpu))
        best = min(runs)
        files.append({"id": item.id, "wall_s": best[0], "cpu_s": best[1], "runs_s": [w for w, _ in runs], "text": text})
    return files


def worker_main(args: argparse.Namespace) -> int:
    items = [Item(**raw) for raw in json.loads(args.items.read_text(encoding="utf-8"))]
    started = time.perf_counter()
    run = BUILDERS[args.worker](args)
    info: dict[str, Any] = {"load_s": time.perf_counter() - started, "ready_wall": time.time()}
    if args.warmup and items:
        started = time.perf_counter()
        run(items[0])
        info["warmup_s"] = time.perf_counter() - started
    info["files"] = time_items(run, items, args.repeat)
    info["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    args.result.write_text(json.dumps(info), encoding="utf-8")
    return 0


# --------------------------------------------------------------------------- parent side


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(dict.fromkeys(THREAD_VARS, str(threads)))
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "DATTAVANI_CPU_THREADS": str(threads)})
    return env


def worker_command(system: str, items_path: Path, result_path: Path, args: argparse.Namespace) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", system, "--items", str(items_path)]
    command += ["--result", str(result_path), "--model", args.model, "--model-dir", str(args.model_dir)]
    command += ["--beam-size", str(args.beam_size), "--threads", str(args.threads), "--repeat", str(args.repeat)]
    command += ["--trim-encoder", args.trim_encoder]
    if args.openai_model:
        command += ["--openai-model", args.openai_model]
    return [*command, "--warmup"] if args.warmup else command


def run_system(system: str, items: list[Item], args: argparse.Namespace) -> dict[str, Any]:
    """Run one system in a fresh process; returns its raw measurements or an error."""
    with tempfile.TemporaryDirectory(prefix="dattavani-bench-") as tmp:
        items_path, result_path = Path(tmp) / "items.json", Path(tmp) / "result.json"
        items_path.write_text(json.dumps([asdict(item) for item in items]), encoding="utf-8")
        launched = time.time()
        done = subprocess.run(
            worker_command(system, items_path, result_path, args),
            env=child_env(args.threads),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not result_path.is_file():
            return {"system": system, "error": (done.stderr or done.stdout).strip()[-3000:]}
        result: dict[str, Any] = json.loads(result_path.read_text(encoding="utf-8"))
    result["cold_start_s"] = result.pop("ready_wall") - launched
    return {"system": system, **result}


def file_wer(reference: str, hypothesis: str, language: str) -> float:
    import jiwer

    from dattavani_asr.evaluation import normalize

    return float(jiwer.wer(normalize(reference, language), normalize(hypothesis, language) or "<empty>"))


def corpus_wer(items: list[Item], texts: dict[str, str]) -> float:
    """One WER over all items, each normalised for its own language."""
    import jiwer

    from dattavani_asr.evaluation import normalize

    refs = [normalize(item.reference, item.lang) for item in items]
    hyps = [normalize(texts[item.id], item.lang) or "<empty>" for item in items]
    return float(jiwer.wer(refs, hyps))


def corpus_cer(items: list[Item], texts: dict[str, str]) -> float:
    """Character error rate over the items of one language (scripts where a word is many letters)."""
    from dattavani_asr.evaluation import character_error_rate

    return character_error_rate([item.reference for item in items], [texts[item.id] or "<empty>" for item in items],
                                items[0].lang)  # fmt: skip


def summarise(result: dict[str, Any], items: list[Item]) -> dict[str, Any]:
    texts = {f["id"]: f["text"] for f in result["files"]}
    audio = sum(item.duration for item in items)
    wall = sum(f["wall_s"] for f in result["files"])
    result["cpu_s"] = sum(f["cpu_s"] for f in result["files"])
    for f, item in zip(result["files"], items, strict=True):
        f["wer"] = file_wer(item.reference, f["text"], item.lang)
    by_lang = {
        lang: corpus_wer([i for i in items if i.lang == lang], texts) for lang in sorted({i.lang for i in items})
    }
    result.update(files_n=len(items), audio_s=audio, wall_s=wall, rtf=wall / audio, wer=corpus_wer(items, texts))
    result["wer_by_lang"] = by_lang
    result["cer_by_lang"] = {
        lang: corpus_cer([i for i in items if i.lang == lang], texts) for lang in sorted({i.lang for i in items})
    }
    return result


def ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float]:
    """ours/theirs for each cost; `x_faster` = theirs_wall / ours_wall."""
    return {
        "wall_ours_over_theirs": ours["wall_s"] / theirs["wall_s"],
        "rtf_ours_over_theirs": ours["rtf"] / theirs["rtf"],
        "x_faster": theirs["wall_s"] / ours["wall_s"],
        "cpu_ours_over_theirs": ours["cpu_s"] / theirs["cpu_s"],
        "load_ours_over_theirs": ours["load_s"] / theirs["load_s"],
        "rss_ours_over_theirs": ours["peak_rss_mb"] / theirs["peak_rss_mb"],
    }


# --------------------------------------------------------------------------- end-to-end command line


def timed_process(command: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Wall time, peak RSS (from wait4) and stdout of one fresh process."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return {
            "wall_s": wall,
            "rss_mb": usage.ru_maxrss / 1024.0,
            "rc": process.returncode,
            "stdout": out.read().strip(),
            "stderr": err.read().strip()[-2000:],
        }


def cli_commands(args: argparse.Namespace, jfk: Path) -> dict[str, list[str]]:
    exe = shutil.which("dattavani-asr") or str(Path(sys.executable).with_name("dattavani-asr"))
    ours = [exe, "transcribe", str(jfk), "-o", "-", "-q", "--model", args.model, "--language", "en"]
    ours += ["--beam-size", str(args.beam_size), "--device", "cpu"]
    theirs = [sys.executable, "-c", FW_ONE_SHOT, str(args.model_dir), str(jfk), str(args.beam_size), str(args.threads)]
    return {"dattavani-asr CLI": ours, "faster-whisper one-shot script": theirs}


def cli_bench(args: argparse.Namespace, jfk: Path, reference: str) -> list[dict[str, Any]]:
    rows = []
    for name, command in cli_commands(args, jfk).items():
        print(f"timing {name} x{args.cli_runs} ...", file=sys.stderr)
        runs = [timed_process(command, child_env(args.threads)) for _ in range(args.cli_runs)]
        failed = [r for r in runs if r["rc"] != 0]
        row: dict[str, Any] = {"name": name, "command": command, "runs": runs}
        if failed:
            row["error"] = failed[0]["stderr"] or f"exit code {failed[0]['rc']}"
        else:
            walls = [r["wall_s"] for r in runs]
            row.update(min_s=min(walls), median_s=statistics.median(walls), rss_mb=max(r["rss_mb"] for r in runs))
            row["wer"] = file_wer(reference, runs[-1]["stdout"], "en")
            row["text"] = runs[-1]["stdout"]
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- reporting


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def cpu_name() -> str:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return cpu


def versions_text() -> str:
    return ", ".join(f"{p} {version_of(p)}" for p in ("dattavani-asr", "faster-whisper", "ctranslate2"))


def setup_line(args: argparse.Namespace, items: list[Item]) -> str:
    audio = sum(item.duration for item in items)
    return (
        f"Model `{args.model}`, languages {args.languages}: {len(items)} clips, {audio:.1f} s of audio. "
        f"CPU: {cpu_name()} ({os.cpu_count()} cores), {args.threads} threads, beam {args.beam_size}, "
        f"fastest of {args.repeat} run(s) per file{', after a warm-up' if args.warmup else ''}. {versions_text()}."
    )


def version_of(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def summary_table(results: list[dict[str, Any]], languages: list[str]) -> list[str]:
    lang_cols = [f"WER {lang} %" for lang in languages] if len(languages) > 1 else []
    lang_cols += [f"CER {lang} %" for lang in languages]  # the measure for scripts of long words (kn, hi)
    head = [
        "system",
        "files",
        "audio s",
        "load s",
        "cold start s",
        "1st call s",
        "wall s",
        "CPU s",
        "RTF",
        "peak RSS MB",
        "WER %",
    ]
    head += lang_cols
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in results:
        if "error" in r or "skipped" in r:
            reason = r.get("skipped") or "error: " + (r["error"].splitlines() or ["?"])[-1][:100]
            lines.append(f"| {LABELS[r['system']]} | {reason} |" + " |" * (len(head) - 2))
            continue
        per_lang = [pct(r["wer_by_lang"].get(lang)) for lang in languages] if len(languages) > 1 else []
        per_lang += [pct(r.get("cer_by_lang", {}).get(lang)) for lang in languages]
        cells = [LABELS[r["system"]], str(r["files_n"]), f"{r['audio_s']:.1f}", f"{r['load_s']:.2f}"]
        first = f"{r['warmup_s']:.2f}" if "warmup_s" in r else "-"
        cells += [
            f"{r['cold_start_s']:.2f}",
            first,
            f"{r['wall_s']:.2f}",
            f"{r['cpu_s']:.2f}",
            f"{r['rtf']:.3f}",
            f"{r['peak_rss_mb']:.0f}",
        ]
        lines.append("| " + " | ".join([*cells, pct(r["wer"]), *per_lang]) + " |")
    return lines


def speed_words(x_faster: float) -> str:
    return f"ours {x_faster:.2f}x faster" if x_faster >= 1 else f"ours {1 / x_faster:.2f}x slower"


def ratio_lines(comparisons: dict[str, dict[str, float]]) -> list[str]:
    lines = []
    for system, r in comparisons.items():
        lines.append(
            f"Ours vs {LABELS[system]}: speed-up theirs/ours **{r['x_faster']:.2f}x** ({speed_words(r['x_faster'])}; "
            f"wall ours/theirs {r['wall_ours_over_theirs']:.3f}, RTF ours/theirs {r['rtf_ours_over_theirs']:.3f}, "
            f"CPU ours/theirs {r['cpu_ours_over_theirs']:.3f}, load ours/theirs {r['load_ours_over_theirs']:.2f}, "
            f"peak RSS ours/theirs {r['rss_ours_over_theirs']:.2f})."
        )
    return lines


def cli_table(rows: list[dict[str, Any]], runs: int, jfk: str) -> list[str]:
    lines = [
        f"End to end, fresh process per run, `{jfk}` ({runs} run(s): launch, import, model load, decode, transcribe):",
        "",
        "| command | min s | median s | peak RSS MB | WER % |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | error: {r['error'].splitlines()[-1][:100]} | | | |")
            continue
        lines.append(f"| {r['name']} | {r['min_s']:.2f} | {r['median_s']:.2f} | {r['rss_mb']:.0f} | {pct(r['wer'])} |")
    return lines


def per_file_table(results: list[dict[str, Any]], items: list[Item]) -> list[str]:
    ok = [r for r in results if "files" in r and "error" not in r]
    head = ["clip", "lang", "audio s"] + [f"{r['system']} wall s / WER %" for r in ok]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for index, item in enumerate(items):
        cells = [f"{r['files'][index]['wall_s']:.2f} / {pct(r['files'][index]['wer'])}" for r in ok]
        lines.append("| " + " | ".join([item.id, item.lang, f"{item.duration:.1f}", *cells]) + " |")
    return lines


def worse_clips(results: list[dict[str, Any]], items: list[Item], margin: float = 0.1) -> list[str]:
    """Clips where our WER exceeds faster-whisper's by more than `margin`, with both hypotheses."""
    by_name = {r["system"]: r for r in results if "files" in r}
    ours, theirs = by_name.get("ours"), by_name.get("faster-whisper")
    if ours is None or theirs is None:
        return []
    lines = []
    for item, mine, peer in zip(items, ours["files"], theirs["files"], strict=True):
        if mine["wer"] > peer["wer"] + margin:
            lines += [f"- {item.id}: ours {pct(mine['wer'])} % vs faster-whisper {pct(peer['wer'])} %"]
            lines += [
                f"  - reference: {item.reference}",
                f"  - ours:      {mine['text']}",
                f"  - fw:        {peer['text']}",
            ]
    return lines


# --------------------------------------------------------------------------- long form


def leveled(samples: np.ndarray, dbfs: float | None) -> np.ndarray:
    """`samples` scaled to an RMS of `dbfs` (peak kept below 0.99), or unchanged when `dbfs` is None."""
    import numpy as np

    rms, peak = float(np.sqrt(np.mean(np.square(samples)))), float(np.max(np.abs(samples)))
    if dbfs is None or rms == 0.0:
        return samples
    return samples * np.float32(min(10 ** (dbfs / 20) / rms, 0.99 / peak))


def concatenate(paths: list[str], repeats: int, dbfs: float | None = None) -> np.ndarray:
    """The decoded clips in order, `repeats` times over, with LONG_GAP_S of silence between clips."""
    import numpy as np

    from dattavani_asr.audio.decode import SAMPLE_RATE, decode_audio

    clips = [leveled(decode_audio(path), dbfs) for path in paths]
    gap = np.zeros(round(LONG_GAP_S * SAMPLE_RATE), dtype=np.float32)
    pieces: list[np.ndarray] = []
    for clip in clips * repeats:
        pieces += [gap, clip] if pieces else [clip]
    return np.concatenate(pieces)


def long_recording(lang: str, clips: list[Item], args: argparse.Namespace, folder: Path) -> Item:
    """Write one language's long recording into `folder`; its reference is the clips' references joined."""
    from dattavani_asr.audio.decode import SAMPLE_RATE
    from dattavani_asr.audio.formats import FormatCase, encode_audio

    samples = concatenate([clip.path for clip in clips], args.long_repeats, args.long_level)
    container, codec, sample_format = LONG_FORMATS[args.long_format]
    case = FormatCase(f"{args.long_format} 16 kHz mono", container, codec, SAMPLE_RATE, sample_format)
    path = folder / f"long-{lang}.{args.long_format}"
    path.write_bytes(encode_audio(samples, SAMPLE_RATE, case))
    reference = " ".join([clip.reference for clip in clips] * args.long_repeats)
    return Item(path.name, str(path), lang, None, reference, samples.shape[0] / SAMPLE_RATE)


def reference_words(item: Item) -> int:
    from dattavani_asr.evaluation import normalize

    return len(normalize(item.reference, item.lang).split())


def summarise_long(result: dict[str, Any], items: list[Item]) -> dict[str, Any]:
    """Totals over the recordings; WER per recording, pooled by reference word count."""
    from dattavani_asr.evaluation import word_error_rate

    for f, item in zip(result["files"], items, strict=True):
        f["wer"] = word_error_rate([item.reference], [f["text"]], item.lang)
    words = [reference_words(item) for item in items]
    audio = sum(item.duration for item in items)
    wall = sum(f["wall_s"] for f in result["files"])
    result.update(files_n=len(items), audio_s=audio, wall_s=wall, rtf=wall / audio)
    result["cpu_s"] = sum(f["cpu_s"] for f in result["files"])
    result["wer"] = sum(f["wer"] * n for f, n in zip(result["files"], words, strict=True)) / sum(words)
    result["wer_by_lang"] = {item.lang: f["wer"] for f, item in zip(result["files"], items, strict=True)}
    return result


def long_setup_line(args: argparse.Namespace, clips: list[Item], recordings: list[Item]) -> str:
    audio = sum(item.duration for item in recordings)
    return (
        f"Long form, model `{args.model}`, languages {args.languages}: {len(recordings)} recording(s), "
        f"{audio:.1f} s of audio in all; each is one language's clips ({len(clips)} in all) "
        f"x {args.long_repeats} repeat(s), {LONG_GAP_S:.1f} s of silence between clips, 16 kHz mono "
        f"{args.long_format}, {level_words(args.long_level)}. "
        f"CPU: {cpu_name()} ({os.cpu_count()} cores), {args.threads} threads, "
        f"beam {args.beam_size}, fastest of {args.repeat} run(s) per recording"
        f"{', after a warm-up' if args.warmup else ''}. {versions_text()}."
    )


def level_words(dbfs: float | None) -> str:
    return "clips at their own level" if dbfs is None else f"each clip scaled to {dbfs:g} dBFS RMS (peak < 0.99)"


def versus_ours(result: dict[str, Any], ours: dict[str, Any] | None) -> list[str]:
    """wall / ours, peak RSS / ours and WER - ours (points) for one system's row."""
    if ours is None:
        return ["-", "-", "-"]
    return [
        f"{result['wall_s'] / ours['wall_s']:.2f}",
        f"{result['peak_rss_mb'] / ours['peak_rss_mb']:.2f}",
        f"{100 * (result['wer'] - ours['wer']):+.1f}",
    ]


def long_table(results: list[dict[str, Any]], languages: list[str]) -> list[str]:
    lang_cols = [f"WER {lang} %" for lang in languages] if len(languages) > 1 else []
    lang_cols += [f"CER {lang} %" for lang in languages]  # the measure for scripts of long words (kn, hi)
    head = ["system", "audio s", "load s", "wall s", "CPU s", "RTF", "peak RSS MB", "WER %", *lang_cols]
    head += ["wall / ours", "RSS / ours", "WER - ours"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    ours = next((r for r in results if r["system"] == "ours" and "files" in r), None)
    for r in results:
        if "files" not in r:
            reason = r.get("skipped") or "error: " + (r.get("error", "").splitlines() or ["?"])[-1][:100]
            lines.append(f"| {LABELS[r['system']]} | {reason} |" + " |" * (len(head) - 2))
            continue
        cells = [LABELS[r["system"]], f"{r['audio_s']:.1f}", f"{r['load_s']:.2f}", f"{r['wall_s']:.2f}"]
        cells += [f"{r['cpu_s']:.2f}", f"{r['rtf']:.3f}", f"{r['peak_rss_mb']:.0f}", pct(r["wer"])]
        cells += [pct(r["wer_by_lang"].get(lang)) for lang in languages] if lang_cols else []
        lines.append("| " + " | ".join([*cells, *versus_ours(r, ours)]) + " |")
    return lines


def render_long(args: argparse.Namespace, clips: list[Item], recordings: list[Item], report: dict[str, Any]) -> str:
    languages = [item.lang for item in recordings]
    lines = [long_setup_line(args, clips, recordings), "", LONG_LEGEND, ""]
    lines += [*long_table(report["systems"], languages), "", *ratio_lines(report["ratios"])]
    if len(recordings) > 1:
        lines += ["", "Per recording (fastest wall s / WER %):", "", *per_file_table(report["systems"], recordings)]
    return "\n".join(lines) + "\n"


def long_main(args: argparse.Namespace) -> int:
    """--long-form: build the recordings in a temp dir, time every system on them, report."""
    languages = split_list(args.languages)
    clips = [item for item in check_setup(args, languages) if item.channel is None]
    if not clips:
        raise SystemExit(f"no single-channel clips with a reference for languages {languages}")
    with tempfile.TemporaryDirectory(prefix="dattavani-long-") as tmp:
        recordings = []
        for lang in languages:
            chosen = [clip for clip in clips if clip.lang == lang]
            if chosen:
                recordings.append(long_recording(lang, chosen, args, Path(tmp)))
                print(f"long recording {recordings[-1].id}: {recordings[-1].duration:.1f} s", file=sys.stderr)
        results = measure_systems(args, recordings, summarise_long)
    report = {"systems": results, "ratios": compare(results)}
    text = render_long(args, clips, recordings, report)
    print(text)
    payload = {"clips": [asdict(i) for i in clips], "recordings": [asdict(i) for i in recordings], **report}
    write_outputs(args, text, payload)
    return 0 if all("error" not in r for r in results) else 1


# --------------------------------------------------------------------------- main


Summarise = Callable[[dict[str, Any], list[Item]], dict[str, Any]]


def measure_systems(
    args: argparse.Namespace, items: list[Item], summarise_one: Summarise = summarise
) -> list[dict[str, Any]]:
    results = []
    for system in split_list(args.systems):
        if system == "openai-whisper" and util.find_spec("whisper") is None:
            results.append({"system": system, "skipped": "skipped: openai-whisper is not installed"})
            print("openai-whisper is not installed: skipped", file=sys.stderr)
            continue
        print(f"running {system} on {len(items)} clips ...", file=sys.stderr)
        started = time.perf_counter()
        result = run_system(system, items, args)
        print(f"  {system}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
        if "error" in result:
            print(f"  {system} FAILED:\n{result['error']}", file=sys.stderr)
        results.append(summarise_one(result, items) if "files" in result else result)
    return results


def compare(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    ok = {r["system"]: r for r in results if "files" in r}
    if "ours" not in ok:
        return {}
    return {name: ratios(ok["ours"], r) for name, r in ok.items() if name != "ours"}


def find_jfk(args: argparse.Namespace) -> tuple[Path, str] | None:
    for line in args.manifest.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line) if line.strip() else {}
        if entry.get("file", "").endswith("jfk.flac") and entry.get("reference"):
            return (args.audio / entry["file"]).resolve(), entry["reference"]
    return None


def render(args: argparse.Namespace, items: list[Item], report: dict[str, Any]) -> str:
    languages = [lang for lang in args.languages.split(",") if lang]
    lines = [setup_line(args, items), "", LEGEND, "", *summary_table(report["systems"], languages), ""]
    lines += ratio_lines(report["ratios"])
    if report["cli"]:
        lines += ["", *cli_table(report["cli"], args.cli_runs, report["jfk"])]
    lines += ["", "Per clip (fastest wall s / WER %):", "", *per_file_table(report["systems"], items)]
    return "\n".join(lines) + "\n"


def check_setup(args: argparse.Namespace, languages: list[str]) -> list[Item]:
    from dattavani_asr.models import resolve

    if not args.manifest.is_file():
        raise SystemExit(f"no manifest at {args.manifest}")
    args.model_dir = resolve(args.model)
    if any(lang != "en" for lang in languages) and not is_multilingual(args.model, args.model_dir):
        raise SystemExit(f"model {args.model} is English-only: use a multilingual model (e.g. --model base)")
    items = load_items(args.manifest, args.audio, languages)
    if not items:
        raise SystemExit(f"no clips with a reference for languages {languages} in {args.manifest}")
    return items


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    if args.long_form:
        return long_main(args)
    items = check_setup(args, split_list(args.languages))
    results = measure_systems(args, items)
    jfk = find_jfk(args) if args.cli_runs > 0 else None
    cli = cli_bench(args, *jfk) if jfk else []
    report = {"systems": results, "ratios": compare(results), "cli": cli, "jfk": jfk[0].name if jfk else None}
    text = render(args, items, report)
    print(text)
    bad = worse_clips(results, items)
    if bad:
        print("Clips where ours is clearly worse than faster-whisper:\n" + "\n".join(bad))
    write_outputs(args, text, {"items": [asdict(i) for i in items], **report, "worse_clips": bad})
    return 0 if all("error" not in r for r in results) else 1


def write_outputs(args: argparse.Namespace, text: str, payload: dict[str, Any]) -> None:
    """The markdown text to --markdown, and the settings plus `payload` to --json, when given."""
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    if args.json:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"settings": settings, **payload}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
