"""Settings from `DATTAVANI_*` environment variables and a TOML file, merged key by key.

Precedence, highest first: explicit values (CLI flags), environment, the TOML file
(`dattavani-asr.toml` in the working directory, or the file given with `--config`), defaults.
Unknown keys in the file are rejected with a message naming them.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from .core.errors import ConfigError
from .core.options import (
    BATCH_SIZE,
    BEAM_SIZE,
    CHANNELS_AS_SPEAKERS,
    COMPUTE_TYPE,
    CPU_THREADS,
    DEVICE,
    DEVICE_INDEX,
    DIARIZE,
    FALLBACK_MODEL,
    HOTWORDS,
    INITIAL_PROMPT,
    LANGUAGE,
    MAX_SPEAKERS,
    MIN_CONFIDENCE,
    MIN_SPEAKERS,
    MODEL,
    NUM_SPEAKERS,
    TASK,
    TRIM_ENCODER,
    VAD,
    WORD_TIMESTAMPS,
)

CONFIG_FILENAME = "dattavani-asr.toml"
SERVER_TABLE = "server"
ENV_PREFIX = "DATTAVANI_"
OPTIONAL_FIELDS = (
    "cache_dir", "language", "output_dir", "initial_prompt", "hotwords", "fallback_model", "trim_encoder",
    "num_speakers", "min_speakers", "max_speakers",
)  # fmt: skip


class CommaListEnvSource(EnvSettingsSource):
    """Reads `DATTAVANI_*`; list values may be a comma list (`txt,srt`) as well as JSON (`["txt"]`)."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        if isinstance(value, str) and not value.lstrip().startswith(("[", "{")):
            return value
        return super().decode_complex_value(field_name, field, value)


class Settings(BaseSettings):
    """Defaults for every command; each can be overridden by a CLI flag."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    model: str = MODEL.field()
    device: Literal["auto", "cpu", "cuda"] = DEVICE.field()
    compute_type: str = COMPUTE_TYPE.field()
    cpu_threads: int = CPU_THREADS.field()
    device_index: str = DEVICE_INDEX.field()
    cache_dir: Path | None = Field(None, description="where assembled/downloaded models live")
    language: str | None = LANGUAGE.field()
    task: Literal["transcribe", "translate"] = TASK.field()
    beam_size: int = BEAM_SIZE.field()
    batch_size: int = BATCH_SIZE.field()
    formats: list[str] = Field(default_factory=lambda: ["txt"])
    output_dir: Path | str | None = Field(
        None, description="a folder, or for batch runs s3://bucket/prefix, gs://bucket/prefix or a Drive folder"
    )
    word_timestamps: bool = WORD_TIMESTAMPS.field()
    trim_encoder: bool | None = TRIM_ENCODER.field()
    vad: bool = VAD.field()
    initial_prompt: str | None = INITIAL_PROMPT.field()
    hotwords: str | None = HOTWORDS.field()
    fallback_model: str | None = FALLBACK_MODEL.field()
    min_confidence: float = MIN_CONFIDENCE.field()
    diarize: bool = DIARIZE.field()
    num_speakers: int | None = NUM_SPEAKERS.field()
    min_speakers: int | None = MIN_SPEAKERS.field()
    max_speakers: int | None = MAX_SPEAKERS.field()
    channels_as_speakers: bool = CHANNELS_AS_SPEAKERS.field()
    max_download_mb: int = Field(
        4096, ge=1, description="the most downloaded from an http(s) server that cannot serve byte ranges"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "warning"

    @field_validator("formats", mode="before")
    @classmethod
    def _split_formats(cls, value: Any) -> Any:
        return [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value

    @field_validator(*OPTIONAL_FIELDS, mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        """`language = ""` (as the template shows unset keys) or `DATTAVANI_LANGUAGE=` mean: not set."""
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("output_dir", mode="after")
    @classmethod
    def _local_output_is_a_path(cls, value: Path | str | None) -> Path | str | None:
        """A URI (`s3://…`) stays a string: as a Path it would lose a slash (`s3:/…`)."""
        return Path(value) if isinstance(value, str) and "://" not in value else value

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


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
    server = data.pop(SERVER_TABLE, {})  # `serve`'s settings (server.settings): not ours
    if not isinstance(server, dict):
        raise ConfigError(f"{path}: '{SERVER_TABLE}' must be a table ([{SERVER_TABLE}])")
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        known = ", ".join(Settings.model_fields)
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; known keys: {known}")
    return data


def _unknown_env() -> list[str]:
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    return sorted(key for key in os.environ if key.startswith(ENV_PREFIX) and key not in known)


def config_file(explicit: Path | None = None) -> Path | None:
    if explicit is not None:
        if not explicit.is_file():
            raise ConfigError(f"{explicit}: config file not found")
        return explicit
    default = Path.cwd() / CONFIG_FILENAME
    return default if default.is_file() else None


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Merge file, environment and explicit overrides (None values are ignored)."""
    path = config_file(config)
    file_values = _read_toml(path) if path else {}
    unknown_env = _unknown_env()
    if unknown_env:
        raise ConfigError(f"unknown environment variable(s) {', '.join(unknown_env)}")
    explicit = {key: value for key, value in overrides.items() if value is not None}
    env_keys = {name for name in Settings.model_fields if ENV_PREFIX + name.upper() in os.environ}
    layered = {k: v for k, v in file_values.items() if k not in env_keys} | explicit
    try:
        return Settings(**layered)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, path)) from exc
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration (environment {ENV_PREFIX}*): {exc}") from exc


def _describe(error: ValidationError, path: Path | None) -> str:
    where = f" (file {path}, environment {ENV_PREFIX}*)" if path else f" (environment {ENV_PREFIX}*)"
    problems = "; ".join(f"{'.'.join(str(p) for p in item['loc'])}: {item['msg']}" for item in error.errors())
    return f"invalid configuration{where}: {problems}"


def template() -> str:
    """A commented TOML file listing every key with its default."""
    lines = ["# Dattavani ASR configuration. Environment variables DATTAVANI_<KEY> override these.", ""]
    return "\n".join(lines + template_lines(Settings.model_fields)) + "\n"


def template_lines(fields: dict[str, FieldInfo]) -> list[str]:
    """`key = default` lines, each after its description; unset keys commented out."""
    lines = []
    for name, field in fields.items():
        if field.description:
            lines.append(f"# {field.description}")
        default = field.get_default(call_default_factory=True)
        lines.append(f"# {name} = {_toml_value(default)}" if default is None else f"{name} = {_toml_value(default)}")
    return lines


def _toml_value(value: Any) -> str:
    import tomli_w

    if value is None:
        return '""'
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def dump(settings: Settings) -> str:
    import tomli_w

    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.model_dump().items() if v is not None}
    return tomli_w.dumps(data)
