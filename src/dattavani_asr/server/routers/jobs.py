"""Durable jobs: `POST /v1/jobs` (multipart file or JSON url), status, result, cancel, list."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import FormData, UploadFile

from ...core.options import (
    DIARIZE,
    INITIAL_PROMPT,
    LANGUAGE,
    MAX_SPEAKERS,
    MIN_SPEAKERS,
    NUM_SPEAKERS,
    TASK,
    TEMPERATURE,
    WORD_TIMESTAMPS,
)
from ...pipeline.transcriber import fallback_chain
from ..errors import APIError
from ..jobs import STATUSES, JobManager
from ..responses import RESULT_FORMATS, result_response
from ..security import UrlGuard, check_url_target
from ..state import ServerState, authorized, get_state

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(authorized)])

MULTI_VALUED = {
    "timestamp_granularities[]": "timestamp_granularities",
    "timestamp_granularities": "timestamp_granularities",
}


class JobOptions(BaseModel):
    """What a job asks for: the same options as `/v1/audio/transcriptions`, plus `url` and `webhook_url`."""

    model_config = ConfigDict(extra="forbid")

    url: str | None = Field(None, description="fetch the audio from this http(s) URL (JSON or form)")
    model: str | None = Field(None, description="default: the server's default model")
    language: str | None = LANGUAGE.field()
    prompt: str | None = INITIAL_PROMPT.field()
    temperature: float = TEMPERATURE.field()
    task: Literal["transcribe", "translate"] = TASK.field()
    timestamp_granularities: list[Literal["word", "segment"]] = Field(default_factory=list)
    word_timestamps: bool = WORD_TIMESTAMPS.field()
    diarize: bool = DIARIZE.field()
    num_speakers: int | None = NUM_SPEAKERS.field()
    min_speakers: int | None = MIN_SPEAKERS.field()
    max_speakers: int | None = MAX_SPEAKERS.field()
    response_format: str = Field("json", description=f"default result format: {', '.join(RESULT_FORMATS)}")
    webhook_url: str | None = Field(None, description="POSTed the job summary when the job finishes")
    webhook_secret: str | None = Field(
        None, min_length=16, description="signs this job's webhook instead of the server's webhook_secret"
    )


_REQUEST_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        **JobOptions.model_json_schema()["properties"],
                    },
                }
            },
            "application/json": {"schema": JobOptions.model_json_schema()},
        },
    }
}


def _manager(state: ServerState) -> JobManager:
    manager: JobManager = state.jobs
    return manager


def parse_options(values: dict[str, Any]) -> JobOptions:
    try:
        options = JobOptions.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise APIError(400, f"{param}: {first['msg']}", code="invalid_parameter", param=param) from exc
    if options.response_format not in RESULT_FORMATS:
        raise APIError(
            400,
            f"response_format must be one of {', '.join(RESULT_FORMATS)}",
            code="invalid_parameter",
            param="response_format",
        )
    return options


def _form_values(form: FormData) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key == "file" or not isinstance(value, str):
            continue
        if key in MULTI_VALUED:
            values.setdefault(MULTI_VALUED[key], []).append(value)
        elif value != "":
            values[key] = value
    return values


def _stored_options(state: ServerState, options: JobOptions) -> dict[str, Any]:
    """What the job row keeps: the service request's fields and the default result format."""
    request = {
        "model": state.models.canonical(options.model),
        "task": options.task,
        "language": options.language or None,
        "prompt": options.prompt or None,
        "temperature": options.temperature,
        "word_timestamps": options.word_timestamps or "word" in options.timestamp_granularities,
        "beam_size": state.settings.beam_size,
        "trim_encoder": state.settings.trim_encoder,
        "fallback_models": list(fallback_chain(state.settings.fallback_model)),
        "min_confidence": state.settings.min_confidence,
        "diarize": options.diarize or options.response_format == "diarized_json",
        "num_speakers": options.num_speakers,
        "min_speakers": options.min_speakers,
        "max_speakers": options.max_speakers,
    }
    stored: dict[str, Any] = {"request": request, "response_format": options.response_format}
    if options.webhook_secret:  # kept with the job for its (re)deliveries; never shown in job views
        stored["webhook_secret"] = options.webhook_secret
    return stored


def _check_urls(state: ServerState, options: JobOptions) -> None:
    guard = UrlGuard.from_settings(state.settings)
    if options.url is not None:
        check_url_target(options.url, guard)
    if options.webhook_url is not None:
        try:
            check_url_target(options.webhook_url, guard)
        except APIError as error:
            raise APIError(error.status, error.message, code=error.code, param="webhook_url") from error


async def _submit(state: ServerState, options: JobOptions, upload: UploadFile | None) -> JSONResponse:
    manager = _manager(state)
    stored = _stored_options(state, options)
    await state.run(_check_urls, state, options)
    if upload is not None:
        if options.url is not None:
            raise APIError(400, "send either a file or a url, not both", code="invalid_parameter", param="url")
        name = upload.filename or "upload"
        job = await state.run(manager.submit_upload, upload.file, name, stored, options.webhook_url)
    elif options.url is not None:
        job = await state.run(manager.submit_url, options.url, stored, options.webhook_url)
    else:
        raise APIError(400, "a job needs a file (multipart) or a url", code="invalid_parameter", param="file")
    return JSONResponse(manager.view(job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


@router.post("", status_code=202, summary="Queue a transcription job (a file or a URL)", openapi_extra=_REQUEST_DOC)
async def create_job(request: Request) -> JSONResponse:
    state = get_state(request)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            body = await request.json()
        except ValueError as exc:
            raise APIError(400, "the body is not valid JSON", code="invalid_json") from exc
        if not isinstance(body, dict):
            raise APIError(400, "the JSON body must be an object", code="invalid_json")
        return await _submit(state, parse_options(body), None)
    if content_type in ("multipart/form-data", "application/x-www-form-urlencoded"):
        async with request.form(max_files=1, max_fields=64) as form:
            upload = form.get("file")
            options = parse_options(_form_values(form))
            if upload is not None and not isinstance(upload, UploadFile):
                raise APIError(400, "file must be an uploaded file", code="invalid_parameter", param="file")
            return await _submit(state, options, upload)
    raise APIError(415, "send multipart/form-data with a file, or JSON with a url", code="unsupported_media_type")


JobId = Annotated[str, Path(description="the job id", max_length=64)]


@router.get("", summary="List jobs, newest first")
async def list_jobs(
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    status: Annotated[str | None, Query(description=f"one of {', '.join(STATUSES)}")] = None,
    after: Annotated[str | None, Query(description="a job id: list the jobs older than it")] = None,
) -> dict[str, Any]:
    state = get_state(request)
    if status is not None and status not in STATUSES:
        raise APIError(400, f"status must be one of {', '.join(STATUSES)}", code="invalid_parameter", param="status")
    manager = _manager(state)
    jobs = await state.run(manager.recent, limit + 1, status, after)
    data = [manager.view(job) for job in jobs[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(jobs) > limit,
    }


@router.get("/{job_id}", summary="A job's status, progress and error")
async def get_job(request: Request, job_id: JobId) -> dict[str, Any]:
    state = get_state(request)
    manager = _manager(state)
    return manager.view(await state.run(manager.get, job_id))


@router.get("/{job_id}/result", summary="A finished job's transcript (409 until it has succeeded)")
async def get_result(
    request: Request,
    job_id: JobId,
    format: Annotated[str | None, Query(description=f"one of {', '.join(RESULT_FORMATS)}")] = None,
) -> Response:
    state = get_state(request)
    manager = _manager(state)
    if format is not None and format not in RESULT_FORMATS:
        raise APIError(
            400, f"format must be one of {', '.join(RESULT_FORMATS)}", code="invalid_parameter", param="format"
        )
    job = await state.run(manager.get, job_id)
    transcript = await state.run(manager.result, job_id)
    return result_response(transcript, format or str(job.options.get("response_format", "json")))


@router.delete("/{job_id}", summary="Cancel a job (a running job stops promptly)")
async def cancel_job(request: Request, job_id: JobId) -> JSONResponse:
    state = get_state(request)
    manager = _manager(state)
    job = await state.run(manager.cancel, job_id)
    if job.status in ("succeeded", "failed"):
        raise APIError(409, f"job {job_id} already {job.status}; nothing to cancel", code=f"job_{job.status}")
    return JSONResponse(manager.view(job))
