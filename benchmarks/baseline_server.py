#!/usr/bin/env python3
"""A lock-per-request faster-whisper server: the baseline that ``benchmarks/serve_bench.py`` measures against.

This is the common design of peer servers (speaches-like): a FastAPI app under uvicorn with the OpenAI
endpoint ``POST /v1/audio/transcriptions`` (multipart ``file``; ``model``, ``language``, ``prompt``,
``response_format`` = json | text accepted), one faster-whisper ``WhisperModel(MODEL_DIR, device="cpu",
compute_type="int8")`` loaded at start-up, and ``model.transcribe(file, beam_size=B)`` run in FastAPI's
thread pool behind one ``threading.Lock``, so requests are transcribed one at a time, each on its own.
The answer is ``{"text": <segments joined>}``. ``GET /health`` and ``GET /ready`` answer 200 once the
model is loaded. Nothing here is tuned: it is faster-whisper used the usual way.

    python benchmarks/baseline_server.py --model-dir "$(dattavani-asr models path tiny.en)" --port 8100
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import PlainTextResponse


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    doc = (__doc__ or "").split("\n\n")
    parser = argparse.ArgumentParser(
        description=doc[0], epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", required=True, help="CTranslate2 Whisper model directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--cpu-threads", type=int, default=0, help="0 = faster-whisper's default")
    return parser.parse_args(argv)


def joined(segments: Any) -> str:
    """Consume faster-whisper's lazy segment generator (the decoding happens here) into one text."""
    return " ".join(segment.text.strip() for segment in segments).strip()


def create_app(model_dir: str, beam_size: int = 5, cpu_threads: int = 0) -> FastAPI:
    """The baseline app: one model, one lock, one request transcribed at a time."""
    from faster_whisper import WhisperModel

    model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=cpu_threads)
    lock = threading.Lock()
    app = FastAPI(title="faster-whisper lock-per-request baseline")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/audio/transcriptions", response_model=None)
    def transcriptions(
        file: Annotated[UploadFile, File()],
        model_name: Annotated[str, Form(alias="model")] = "whisper-1",
        language: Annotated[str | None, Form()] = None,
        prompt: Annotated[str | None, Form()] = None,
        response_format: Annotated[str, Form()] = "json",
    ) -> dict[str, str] | PlainTextResponse:
        if response_format not in ("json", "text"):
            raise HTTPException(400, f"response_format {response_format!r} is not supported by the baseline")
        with lock:
            try:
                segments, _ = model.transcribe(file.file, beam_size=beam_size, language=language, initial_prompt=prompt)
                text = joined(segments)
            except Exception as exc:  # an undecodable upload is the client's fault, as in peer servers
                raise HTTPException(415, f"cannot transcribe: {exc}") from exc
        if response_format == "text":
            return PlainTextResponse(text)
        return {"text": text}

    return app


def main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    args = parse_args(argv)
    app = create_app(args.model_dir, args.beam_size, args.cpu_threads)
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
