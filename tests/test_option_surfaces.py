"""Every option is declared once (`dattavani_asr.core.options`): its CLI flags, settings, service settings, HTTP
form fields and stream parameters must agree with that declaration in name, default and range."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import typer
from fastapi.testclient import TestClient

from dattavani_asr.cli.app import app
from dattavani_asr.config import Settings
from dattavani_asr.core.options import OPTIONS, Option
from dattavani_asr.server import ServerSettings, create_app
from dattavani_asr.server.routers.jobs import JobOptions
from dattavani_asr.server.routers.stream import STREAM_OPTIONS

COMMANDS = ("transcribe", "batch")


def _declared(surface: str) -> list[Option]:
    return [option for option in OPTIONS.values() if surface in option.surfaces]


def _bounds(field: Any) -> tuple[float | None, float | None]:
    ge = next((m.ge for m in field.metadata if hasattr(m, "ge")), None)
    le = next((m.le for m in field.metadata if hasattr(m, "le")), None)
    return ge, le


@pytest.mark.parametrize(("surface", "model"), [("settings", Settings), ("server", ServerSettings)])
def test_settings_fields_match_the_declarations(surface: str, model: Any) -> None:
    for option in _declared(surface):
        field = model.model_fields[option.name_on(surface)]
        assert field.get_default(call_default_factory=True) == option.default, option.name
        assert _bounds(field) == (option.ge, option.le), option.name
        assert field.description == option.help, option.name
    undeclared = [name for name in model.model_fields if name in OPTIONS and surface not in OPTIONS[name].surfaces]
    assert not undeclared


def _command(name: str) -> Any:
    return typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]


def _range(param: Any) -> tuple[float | None, float | None]:
    return getattr(param, "min", None), getattr(param, "max", None)


@pytest.mark.parametrize("command", COMMANDS)
def test_cli_flags_match_the_declarations(command: str) -> None:
    params = {param.name: param for param in _command(command).params}
    for option in _declared(command):
        param = params[option.name]
        on, *off = option.flag.split("/")
        assert on in param.opts and off == list(param.secondary_opts), option.name
        if option.short:
            assert option.short in param.opts
        assert _range(param) == (option.ge, option.le), option.name
        assert param.default is None  # unset: the environment, the config file, then the declared default
        assert (param.help or "").startswith(option.help), option.name
    undeclared = [name for name in params if name in OPTIONS and command not in OPTIONS[name].surfaces]
    assert not undeclared, f"{command} has flags for options not declared on it: {undeclared}"


def test_http_form_fields_and_job_options_match_the_declarations(tmp_path: Path) -> None:
    schema = create_app(ServerSettings(data_dir=tmp_path)).openapi()
    body = schema["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]["content"]["multipart/form-data"]
    ref = body["schema"]["$ref"].split("/")[-1]
    fields = schema["components"]["schemas"][ref]["properties"]
    for option in _declared("http"):
        name = option.name_on("http")
        field = fields[name]
        # a request that leaves out an option the service also has a setting for gets that setting
        default = None if "server" in option.surfaces else option.default
        assert field.get("default") == default, name
        typed = next((t for t in field.get("anyOf", []) if t.get("type") != "null"), field)  # an optional number
        assert (typed.get("minimum"), typed.get("maximum")) == (option.ge, option.le), name
        if default == option.default:  # else it says whose default applies
            assert field.get("description") == option.help, name
        job_field = JobOptions.model_fields[name]
        assert job_field.get_default() == default and _bounds(job_field) == (option.ge, option.le), name


def test_stream_parameters_are_the_declared_ones_and_checked(tmp_path: Path) -> None:
    assert {option.name for option in STREAM_OPTIONS} == {option.name for option in _declared("stream")}
    client = TestClient(create_app(ServerSettings(data_dir=tmp_path)))
    with client, client.websocket_connect("/v1/stream?task=summarise") as socket:
        message = socket.receive_json()
    assert message["type"] == "error" and "task must be one of transcribe, translate" in message["message"]
