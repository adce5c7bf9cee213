"""Service settings: `DATTAVANI_SERVER_*` environment variables, a TOML file, or keyword arguments."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ..config import SERVER_TABLE, CommaListEnvSource, config_file, template_lines
from ..core.errors import ConfigError
from ..core.options import (
    BATCH_SIZE,
    BATCH_WAIT_MS,
    BEAM_SIZE,
    COMPUTE_TYPE,
    CPU_THREADS,
    DEVICE,
    DEVICE_INDEX,
    FALLBACK_MODEL,
    MIN_CONFIDENCE,
    MODEL,
    STREAM_BEAM_SIZE,
    TRIM_ENCODER,
)

ENV_PREFIX = "DATTAVANI_SERVER_"


class ServerSettings(BaseSettings):
    """Everything `create_app` needs; each field can be set by `DATTAVANI_SERVER_<FIELD>`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Field(Path("dattavani-data"), description="job database, uploads and results")
    default_model: str = MODEL.field()  # what 'whisper-1' (and no model) means
    preload: list[str] = Field(default_factory=list, description="models loaded at start-up")
    max_loaded_models: int = Field(2, ge=1)
    model_idle_seconds: float = Field(900.0, gt=0, description="unload a model unused this long")
    device: Literal["auto", "cpu", "cuda"] = DEVICE.field()
    compute_type: str = COMPUTE_TYPE.field()
    cpu_threads: int = CPU_THREADS.field()
    device_index: str = DEVICE_INDEX.field()
    cache_dir: Path | None = None
    beam_size: int = BEAM_SIZE.field()
    stream_beam_size: int = STREAM_BEAM_SIZE.field()
    trim_encoder: bool | None = TRIM_ENCODER.field()
    fallback_model: str | None = FALLBACK_MODEL.field()
    min_confidence: float = MIN_CONFIDENCE.field()
    batch_size: int = BATCH_SIZE.field()
    batch_wait_ms: float = BATCH_WAIT_MS.field()
    max_pending_requests: int = Field(16, ge=1, description="synchronous requests in flight before 429")
    request_workers: int = Field(16, ge=1, description="threads decoding audio of synchronous requests")
    job_workers: int = Field(
        2, ge=1, description="jobs transcribed at the same time (two: a short job runs beside a long one)"
    )
    max_queued_jobs: int = Field(1000, ge=1)
    max_upload_mb: float = Field(200.0, gt=0)
    request_timeout_seconds: float = Field(600.0, gt=0)
    api_keys: list[str] = Field(default_factory=list, description="Bearer keys; empty = no auth")
    rate_limit_per_minute: int = Field(0, ge=0, description="requests per key per minute; 0 = unlimited")
    metrics_token: str | None = Field(
        None, description="bearer token /metrics asks for (not an API key); unset = /metrics is open, for scrapers"
    )
    cors_origins: list[str] = Field(default_factory=list)
    allow_private_urls: bool = Field(False, description="let URL jobs and webhooks reach loopback/private hosts")
    allowed_url_hosts: list[str] = Field(
        default_factory=list, description="hosts (name or name:port) URL jobs and webhooks may reach even if private"
    )
    webhook_secret: str | None = Field(
        None, description="signs every webhook: X-Dattavani-Signature t=<unix>,v1=<HMAC-SHA256 of '<t>.<body>'>"
    )
    webhook_max_attempts: int = Field(5, ge=1)
    webhook_backoff_seconds: float = Field(1.0, gt=0)
    webhook_breaker_failures: int = Field(5, ge=1, description="consecutive failures that open a host's circuit")
    webhook_breaker_cooldown_seconds: float = Field(30.0, gt=0, description="open circuit waits this long")
    shutdown_grace_seconds: float = Field(20.0, ge=0)
    log_json: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("preload", "api_keys", "cors_origins", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.lstrip().startswith("["):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, CommaListEnvSource(settings_cls))

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)


def load_server_settings(config: Path | None = None, **overrides: Any) -> ServerSettings:
    """Merge the `[server]` table of the config file (`--config`, else ./dattavani-asr.toml), the
    environment, and explicit overrides (None ignored)."""
    path = config_file(config)
    file_values: dict[str, Any] = {}
    if path is not None:
        try:
            file_values = dict(tomllib.loads(path.read_text(encoding="utf-8")).get(SERVER_TABLE, {}))
        except (OSError, tomllib.TOMLDecodeError, TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read server settings ({exc})") from exc
    explicit = {key: value for key, value in overrides.items() if value is not None}
    from_env = {name for name in ServerSettings.model_fields if ENV_PREFIX + name.upper() in os.environ}
    layered = {key: value for key, value in file_values.items() if key not in from_env} | explicit
    try:
        return ServerSettings(**layered)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid server settings: {problems}") from exc


def template() -> str:
    """The `[server]` table of a config file: every service setting with its default."""
    return "\n".join([f"[{SERVER_TABLE}]", *template_lines(ServerSettings.model_fields)]) + "\n"
