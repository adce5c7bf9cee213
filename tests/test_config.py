"""Settings: defaults < TOML file < DATTAVANI_* environment < explicit values, merged key by key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dattavani_asr.config import CONFIG_FILENAME, Settings, dump, load_settings, template
from dattavani_asr.core.errors import ConfigError
from helpers_audio import run_cli, start_cli

FILE = """\
model = "base"
beam_size = 3
language = "de"
formats = ["srt", "vtt"]
word_timestamps = true
"""


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No DATTAVANI_* variable from outside, and a working directory without a config file."""
    import os

    for key in [k for k in os.environ if k.startswith("DATTAVANI_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _write_config(folder: Path, text: str = FILE, name: str = CONFIG_FILENAME) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert settings == Settings()
    assert (settings.model, settings.device, settings.beam_size, settings.formats) == ("tiny.en", "auto", 5, ["txt"])
    assert settings.language is None and settings.vad is True


def test_file_in_working_directory(tmp_path: Path) -> None:
    _write_config(tmp_path)
    settings = load_settings()
    assert (settings.model, settings.beam_size, settings.language) == ("base", 3, "de")
    assert settings.formats == ["srt", "vtt"]
    assert settings.word_timestamps is True
    assert settings.batch_size == 8  # not in the file: default


def test_merge_key_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_config(tmp_path)
    monkeypatch.setenv("DATTAVANI_BEAM_SIZE", "7")
    monkeypatch.setenv("DATTAVANI_LANGUAGE", "fr")
    monkeypatch.setenv("DATTAVANI_BATCH_SIZE", "4")
    settings = load_settings(language="es", model=None, vad=False)
    assert settings.model == "base"  # file (explicit None is ignored)
    assert settings.beam_size == 7  # env beats file
    assert settings.language == "es"  # explicit beats env and file
    assert settings.batch_size == 4  # env beats default
    assert settings.formats == ["srt", "vtt"]  # file
    assert settings.vad is False  # explicit beats default
    assert settings.device == "auto"  # default


def test_env_beats_an_invalid_file_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_config(tmp_path, "beam_size = 0\n")
    monkeypatch.setenv("DATTAVANI_BEAM_SIZE", "2")
    assert load_settings().beam_size == 2


def test_explicit_config_path_replaces_the_working_directory_file(tmp_path: Path) -> None:
    _write_config(tmp_path)
    other = _write_config(tmp_path, 'model = "small"\n', name="other.toml")
    settings = load_settings(other)
    assert settings.model == "small"
    assert settings.beam_size == 5  # the working-directory file is not read as well


def test_missing_explicit_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml"):
        load_settings(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('modle = "base"\n', ["modle"]),
        ('model = "base"\nbeam = 3\nlangauge = "de"\n', ["beam", "langauge"]),
        ('[transcribe]\nmodel = "base"\n', ["transcribe"]),
    ],
)
def test_unknown_file_key(tmp_path: Path, text: str, names: list[str]) -> None:
    path = _write_config(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert str(path) in message
    assert all(name in message for name in names)


def test_unknown_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATTAVANI_MODLE", "base")
    with pytest.raises(ConfigError, match="DATTAVANI_MODLE"):
        load_settings()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("beam_size = 0\n", "beam_size"),
        ("beam_size = 17\n", "beam_size"),
        ('device = "tpu"\n', "device"),
        ("min_confidence = 1.5\n", "min_confidence"),
        ('task = "summarise"\n', "task"),
        ("cpu_threads = -1\n", "cpu_threads"),
        ('log_level = "loud"\n', "log_level"),
        ("model = \n", "invalid TOML"),
    ],
)
def test_invalid_file_values(tmp_path: Path, text: str, key: str) -> None:
    _write_config(tmp_path, text)
    with pytest.raises(ConfigError, match=key):
        load_settings()


@pytest.mark.parametrize(
    ("variable", "value", "key"),
    [
        ("DATTAVANI_BEAM_SIZE", "abc", "beam_size"),
        ("DATTAVANI_VAD", "maybe", "vad"),
        ("DATTAVANI_DEVICE", "gpu", "device"),
        ("DATTAVANI_MIN_CONFIDENCE", "2", "min_confidence"),
        ("DATTAVANI_FORMATS", "[not json", "formats"),
    ],
)
def test_invalid_environment_values(monkeypatch: pytest.MonkeyPatch, variable: str, value: str, key: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=key):
        load_settings()


def test_invalid_explicit_value() -> None:
    with pytest.raises(ConfigError, match="beam_size"):
        load_settings(beam_size=0)


@pytest.mark.parametrize(
    ("variable", "value", "field", "expected"),
    [
        ("DATTAVANI_FORMATS", "txt,srt", "formats", ["txt", "srt"]),
        ("DATTAVANI_FORMATS", " vtt , json ", "formats", ["vtt", "json"]),
        ("DATTAVANI_FORMATS", '["tsv", "txt"]', "formats", ["tsv", "txt"]),
        ("DATTAVANI_VAD", "false", "vad", False),
        ("DATTAVANI_WORD_TIMESTAMPS", "1", "word_timestamps", True),
        ("DATTAVANI_OUTPUT_DIR", "/srv/out", "output_dir", Path("/srv/out")),
        ("DATTAVANI_LANGUAGE", "", "language", None),
        ("DATTAVANI_OUTPUT_DIR", "", "output_dir", None),
        ("DATTAVANI_MIN_CONFIDENCE", "0.25", "min_confidence", 0.25),
    ],
)
def test_environment_values(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, field: str, expected: object
) -> None:
    monkeypatch.setenv(variable, value)
    assert getattr(load_settings(), field) == expected


def test_formats_as_a_string_in_the_file(tmp_path: Path) -> None:
    _write_config(tmp_path, 'formats = "txt, json"\n')
    assert load_settings().formats == ["txt", "json"]


def test_template_parses_back_to_the_defaults() -> None:
    text = template()
    data = tomllib.loads(text)
    assert set(data) <= set(Settings.model_fields)
    assert Settings(**data) == Settings()
    for name in Settings.model_fields:  # every key is documented, set or commented out
        assert f"{name} = " in text, name


def test_template_with_every_line_uncommented_is_still_the_defaults(tmp_path: Path) -> None:
    commented = tuple(f"# {name} = " for name in Settings.model_fields)
    lines = [line.removeprefix("# ") if line.startswith(commented) else line for line in template().splitlines()]
    data = tomllib.loads("\n".join(lines))
    assert set(data) == set(Settings.model_fields)
    _write_config(tmp_path, "\n".join(lines))
    assert load_settings() == Settings()


def test_template_as_config_file(tmp_path: Path) -> None:
    _write_config(tmp_path, template())
    assert load_settings() == Settings()


def test_dump_round_trips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_config(tmp_path)
    monkeypatch.setenv("DATTAVANI_OUTPUT_DIR", str(tmp_path / "out"))
    settings = load_settings(language="kn")
    data = tomllib.loads(dump(settings))
    assert data["output_dir"] == str(tmp_path / "out")
    assert Settings(**data) == settings


# --- the real CLI ------------------------------------------------------------------------------------


def test_config_show(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir()
    bad.mkdir()
    _write_config(good)
    bad_file = _write_config(bad, 'model = "base"\nbeamsize = 3\n')
    env = {"DATTAVANI_BEAM_SIZE": "9", "DATTAVANI_CACHE_DIR": str(tmp_path / "cache")}
    elsewhere = _write_config(tmp_path, 'model = "small"\nbeam_size = 2\n', name="elsewhere.toml")
    show = start_cli(["config", "show"], cwd=good, env=env)
    rejected = start_cli(["config", "show"], cwd=bad, env=env)
    explicit = start_cli(["config", "show", "--config", str(elsewhere)], cwd=good, env={})
    out, err = show.communicate(timeout=60)
    assert show.returncode == 0, err
    shown = tomllib.loads(out)
    assert shown["model"] == "base"
    assert shown["beam_size"] == 9
    assert shown["formats"] == ["srt", "vtt"]
    assert shown["cache_dir"] == str(tmp_path / "cache")
    out, err = rejected.communicate(timeout=60)
    assert rejected.returncode == ConfigError.exit_code
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    assert "beamsize" in lines[0] and bad_file.name in lines[0]
    assert "Traceback" not in err and out == ""
    out, err = explicit.communicate(timeout=60)
    assert explicit.returncode == 0, err
    shown = tomllib.loads(out)
    assert (shown["model"], shown["beam_size"], shown["formats"]) == ("small", 2, ["txt"])  # not ./dattavani-asr.toml


def test_config_show_rejects_unknown_environment_variable(tmp_path: Path) -> None:
    result = run_cli(["config", "show"], cwd=tmp_path, env={"DATTAVANI_BEEM_SIZE": "3"})
    assert result.returncode == ConfigError.exit_code
    assert result.stderr.startswith("error:") and "DATTAVANI_BEEM_SIZE" in result.stderr
    assert result.stdout == ""


def test_config_init(tmp_path: Path) -> None:
    target = tmp_path / CONFIG_FILENAME
    created = run_cli(["config", "init"], cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    written = target.read_text(encoding="utf-8")
    assert written.startswith(template()) and "\n[server]\n" in written
    _check_init_file(tmp_path)
    target.write_text('model = "base"\n', encoding="utf-8")

    refused = run_cli(["config", "init"], cwd=tmp_path)
    assert refused.returncode != 0
    assert refused.stderr.startswith("error:") and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert target.read_text(encoding="utf-8") == 'model = "base"\n'

    forced = run_cli(["config", "init", "--force"], cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert target.read_text(encoding="utf-8") == written
    assert sorted(p.name for p in tmp_path.iterdir()) == [CONFIG_FILENAME]


def _check_init_file(folder: Path) -> None:
    """The written file holds every setting of every command, at its default, and is read back as such."""
    from dattavani_asr.server.settings import ServerSettings, load_server_settings

    data = tomllib.loads((folder / CONFIG_FILENAME).read_text(encoding="utf-8"))
    assert set(data["server"]) <= set(ServerSettings.model_fields)
    assert folder == Path.cwd()  # the file is found without --config
    assert load_settings() == Settings()
    assert load_server_settings() == ServerSettings()


def test_server_table_is_read_by_serve_without_config_and_ignored_by_the_others(tmp_path: Path) -> None:
    from dattavani_asr.server.settings import load_server_settings

    _write_config(tmp_path, 'model = "base"\nbeam_size = 3\n[server]\nport = 9123\nbatch_size = 4\n')
    assert (load_settings().model, load_settings().beam_size) == ("base", 3)  # tmp_path is the working dir
    server = load_server_settings()
    assert (server.port, server.batch_size, server.default_model) == (9123, 4, "tiny.en")
    shown = run_cli(["config", "show"], cwd=tmp_path, env={})
    assert shown.returncode == 0, shown.stderr
    assert tomllib.loads(shown.stdout)["model"] == "base" and "server" not in tomllib.loads(shown.stdout)
    _write_config(tmp_path, "[server]\nprot = 9123\n")
    with pytest.raises(ConfigError, match="prot"):
        load_server_settings()


def test_trim_encoder_from_environment_reaches_the_decoder(monkeypatch: pytest.MonkeyPatch) -> None:
    from dattavani_asr.cli.transcribe_job import TranscribeJob

    monkeypatch.setenv("DATTAVANI_TRIM_ENCODER", "true")
    settings = load_settings()
    assert settings.trim_encoder is True
    job = TranscribeJob(settings, output=None, quiet=True, start=None, end=None, channel=None)
    assert job.options.decoding.trim_encoder is True
