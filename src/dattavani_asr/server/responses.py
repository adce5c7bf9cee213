"""Render a Transcript the way OpenAI's audio API answers: json, text, srt, vtt, verbose_json."""

from __future__ import annotations

import math
from typing import Any

from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ..core.errors import InvalidOptionError
from ..core.transcript import Transcript
from ..io.writers import WRITERS, render

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json", "diarized_json")
GRANULARITIES = ("word", "segment")
MEDIA_TYPES = {"srt": "application/x-subrip", "vtt": "text/vtt", "tsv": "text/tab-separated-values"}


def check_response_format(value: str) -> str:
    if value not in RESPONSE_FORMATS:
        raise InvalidOptionError(f"response_format must be one of {', '.join(RESPONSE_FORMATS)}")
    return value


def check_granularities(values: list[str]) -> list[str]:
    unknown = [value for value in values if value not in GRANULARITIES]
    if unknown:
        raise InvalidOptionError(f"timestamp_granularities: unknown {', '.join(unknown)}; use word or segment")
    return values


def usage(transcript: Transcript) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(transcript.duration)}


def logprobs(transcript: Transcript) -> list[dict[str, Any]]:
    """Per-word log probabilities (from word alignment); OpenAI gives per token, words are our tokens."""
    return [
        {
            "token": word.word,
            "logprob": round(math.log(max(word.probability, 1e-12)), 4),
            "bytes": list(word.word.encode()),
        }
        for word in transcript.words
    ]


def verbose_json(transcript: Transcript, granularities: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "task": transcript.task,
        "language": transcript.language,
        "duration": transcript.duration,
        "text": transcript.text,
        "usage": usage(transcript),
    }
    if "segment" in granularities or not granularities or "word" not in granularities:
        body["segments"] = [
            {
                "id": segment.id,
                "seek": round(segment.start * 100),
                "start": segment.start,
                "end": segment.end,
                "text": segment.text,
                "tokens": list(segment.tokens),
                "temperature": segment.temperature,
                "avg_logprob": segment.avg_logprob,
                "compression_ratio": segment.compression_ratio,
                "no_speech_prob": segment.no_speech_prob,
                **({"speaker": segment.speaker} if segment.speaker else {}),
            }
            for segment in transcript.segments
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w.word.strip(), "start": w.start, "end": w.end, **({"speaker": w.speaker} if w.speaker else {})}
            for w in transcript.words
        ]
    if transcript.warnings:  # the script guard: wrong script, no text from speech (clients ignore extra keys)
        body["warnings"] = list(transcript.warnings)
    return body


def speaker_letter(name: str | None, order: list[str]) -> str:
    """OpenAI's diarized labels: A, B, … in order of first appearance (AA, AB, … past Z)."""
    index = order.index(name) if name in order else 0
    letters = ""
    while True:
        letters = chr(ord("A") + index % 26) + letters
        index = index // 26 - 1
        if index < 0:
            return letters


def diarized_json(transcript: Transcript) -> dict[str, Any]:
    """The shape of OpenAI's diarizing model: segments with speaker, start, end and text."""
    order = transcript.speakers
    segments = [
        {
            "type": "transcript.text.segment",
            "id": f"seg_{segment.id}",
            "start": segment.start,
            "end": segment.end,
            "text": segment.text.strip(),
            "speaker": speaker_letter(segment.speaker, order),
        }
        for segment in transcript.segments
        if segment.text.strip()
    ]
    return {
        "task": "transcribe",
        "duration": transcript.duration,
        "text": transcript.text,
        "segments": segments,
        "usage": usage(transcript),
    }


def openai_response(
    transcript: Transcript, response_format: str, granularities: list[str], include_logprobs: bool
) -> Response:
    if response_format == "verbose_json":
        return JSONResponse(verbose_json(transcript, granularities))
    if response_format == "diarized_json":
        return JSONResponse(diarized_json(transcript))
    if response_format == "json":
        body: dict[str, Any] = {"text": transcript.text, "usage": usage(transcript)}
        if include_logprobs:
            body["logprobs"] = logprobs(transcript)
        return JSONResponse(body)
    if response_format == "text":
        return PlainTextResponse(transcript.text + "\n")
    return PlainTextResponse(render(transcript, response_format), media_type=MEDIA_TYPES[response_format])


RESULT_FORMATS = (*WRITERS, "text", "verbose_json", "diarized_json")


def result_response(transcript: Transcript, fmt: str) -> Response:
    """A job result in any of our writer formats (txt, srt, vtt, json, tsv) or OpenAI's text/verbose_json."""
    if fmt == "verbose_json":
        return JSONResponse(verbose_json(transcript, ["segment", "word"]))
    if fmt == "diarized_json":
        return JSONResponse(diarized_json(transcript))
    if fmt == "json":
        return JSONResponse(transcript.to_dict())
    if fmt == "text" or (fmt == "txt" and not transcript.speakers):  # with speakers, txt has their labels
        return PlainTextResponse(transcript.text + "\n")
    if fmt in WRITERS:
        return PlainTextResponse(render(transcript, fmt), media_type=MEDIA_TYPES.get(fmt, "text/plain"))
    raise InvalidOptionError(f"format must be one of {', '.join(RESULT_FORMATS)}")
