"""Speaker diarization: error (confusion, missed, false alarm) on conversations of real speakers, and its cost.

Conversations are built from the real clips of ``../shared/audio`` (or ``tests/data``): each clip
whose manifest names a distinct speaker is one voice (JFK, the stereo file's two channels, FLEURS
readers), cut into turns that alternate with 0.6-s gaps. Each conversation is transcribed with
tiny.en twice in one process, without and with ``diarize=True``; the diarization error is scored on
10-ms frames of the reference turns against the transcript's segments (split where the speaker changes), with the best
one-to-one mapping of labels to speakers (Hungarian), as pyannote's DER does (no collar).

    python benchmarks/diarize_bench.py                      # 2, 3 and 4 speakers
    python benchmarks/diarize_bench.py --long /tmp/long60/recording.wav   # + the time it adds on a long file
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FRAME = 0.01
VOICES = {  # a distinct real speaker each: (file, channel)
    "jfk": ("misc/jfk.flac", None),
    "fleurs-en-000": ("fleurs/fleurs-en-000.ogg", None),
    "fleurs-de-000": ("fleurs/fleurs-de-000.ogg", None),
    "fleurs-fr-001": ("fleurs/fleurs-fr-001.ogg", None),
    "fleurs-es-002": ("fleurs/fleurs-es-002.ogg", None),
}


def audio_dir(given: Path | None) -> Path:
    shared = REPO.parent / "shared" / "audio"
    return given or (shared if shared.is_dir() else REPO / "tests" / "data")


def conversation(folder: Path, names: list[str], turns: int) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """`turns` turns cycling through the voices, each voice's clip cut into consecutive pieces."""
    from dattavani_asr.audio.decode import decode_audio

    per_voice = -(-turns // len(names))
    pieces: dict[str, list[np.ndarray]] = {}
    for name in names:
        audio = decode_audio(folder / VOICES[name][0])
        size = audio.shape[0] // per_voice
        pieces[name] = [audio[i * size : (i + 1) * size] for i in range(per_voice)]
    gap = np.zeros(int(0.6 * 16000), np.float32)
    out, truth, at = [], [], 0.0
    for turn in range(turns):
        name = names[turn % len(names)]
        piece = pieces[name][turn // len(names)]
        truth.append((at, at + piece.shape[0] / 16000, name))
        out += [piece, gap]
        at += (piece.shape[0] + gap.shape[0]) / 16000
    return np.clip(np.concatenate(out), -1, 1), truth


def frames(spans: list[tuple[float, float, str]], total: float) -> list[str | None]:
    labels: list[str | None] = [None] * int(total / FRAME + 1)
    for start, end, name in spans:
        for index in range(int(start / FRAME), min(len(labels), int(end / FRAME))):
            labels[index] = name
    return labels


def der(
    truth: list[tuple[float, float, str]], hypothesis: list[tuple[float, float, str]], total: float
) -> dict[str, float]:
    """Missed, false alarm and confusion as shares of the reference speech time (no collar)."""
    from scipy.optimize import linear_sum_assignment

    ref, hyp = frames(truth, total), frames(hypothesis, total)
    refs, hyps = sorted({r for r in ref if r}), sorted({h for h in hyp if h})
    overlap = np.zeros((len(refs), max(1, len(hyps))))
    for r, h in zip(ref, hyp):
        if r and h:
            overlap[refs.index(r), hyps.index(h)] += 1
    rows, cols = linear_sum_assignment(-overlap)
    matched = overlap[rows, cols].sum()
    speech = sum(1 for r in ref if r)
    missed = sum(1 for r, h in zip(ref, hyp) if r and not h)
    false_alarm = sum(1 for r, h in zip(ref, hyp) if h and not r)
    confusion = speech - missed - matched
    return {"missed": missed / speech, "false_alarm": false_alarm / speech, "confusion": confusion / speech,
            "der": (missed + false_alarm + confusion) / speech}  # fmt: skip


def timed(transcriber: Any, audio: Any, **options: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    transcript = transcriber.transcribe(audio, **options)
    return transcript, time.perf_counter() - started


def measure(transcriber: Any, folder: Path, names: list[str], turns: int) -> dict[str, Any]:
    audio, truth = conversation(folder, names, turns)
    _, plain_s = timed(transcriber, audio)
    diarized, diarized_s = timed(transcriber, audio, diarize=True)
    turns_heard = [(s.start, s.end, s.speaker) for s in diarized.segments if s.speaker]
    scores = der(truth, turns_heard, audio.shape[0] / 16000)
    return {"speakers": len(names), "turns": turns, "audio_s": round(audio.shape[0] / 16000, 1),
            "found": len(diarized.speakers), "plain_s": round(plain_s, 2), "diarized_s": round(diarized_s, 2),
            **{key: round(value, 4) for key, value in scores.items()}}  # fmt: skip


def long_cost(transcriber: Any, path: Path) -> dict[str, Any]:
    """The time diarization adds on a long recording; with long_bench's utterances.json beside it (each
    clip one voice), its diarization error too."""
    _, plain_s = timed(transcriber, path)
    diarized, diarized_s = timed(transcriber, path, diarize=True)
    result = {"file": str(path), "plain_s": round(plain_s, 1), "diarized_s": round(diarized_s, 1),
              "added": round(diarized_s / plain_s - 1, 3), "speakers_found": len(diarized.speakers)}  # fmt: skip
    utterances = path.with_name("utterances.json")
    if utterances.is_file():
        truth = [(u["start"], u["end"], u["clip"]) for u in json.loads(utterances.read_text())]
        heard = [(s.start, s.end, s.speaker) for s in diarized.segments if s.speaker]
        result["voices"] = len({name for _, _, name in truth})
        result.update({key: round(value, 4) for key, value in der(truth, heard, diarized.duration).items()})
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--audio", type=Path, default=None, help="audio folder (default ../shared/audio or tests/data)")
    parser.add_argument("--long", type=Path, default=None, help="a long recording: the time diarization adds")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args()
    from dattavani_asr import Transcriber

    transcriber = Transcriber("tiny.en", device="cpu")
    folder = audio_dir(args.audio)
    transcriber.transcribe(folder / VOICES["jfk"][0], diarize=True)  # load and warm both models, untimed
    setups = [(["jfk", "fleurs-en-000"], 6), (["jfk", "fleurs-en-000", "fleurs-de-000"], 8),
              (["jfk", "fleurs-en-000", "fleurs-de-000", "fleurs-fr-001"], 10)]  # fmt: skip
    results: dict[str, Any] = {"conversations": [measure(transcriber, folder, names, turns) for names, turns in setups]}
    head = ["speakers", "turns", "audio s", "found", "missed %", "false alarm %", "confusion %", "DER %", "wall s"]
    print("| " + " | ".join([*head, "with speakers s"]) + " |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results["conversations"]:
        print(f"| {r['speakers']} | {r['turns']} | {r['audio_s']} | {r['found']} | {100 * r['missed']:.1f} | "
              f"{100 * r['false_alarm']:.1f} | {100 * r['confusion']:.1f} | {100 * r['der']:.1f} | {r['plain_s']} | "
              f"{r['diarized_s']} |")  # fmt: skip
    if args.long is not None:
        results["long"] = long_cost(transcriber, args.long)
        print(json.dumps(results["long"]))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
