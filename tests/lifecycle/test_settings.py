"""Settings precedence (flags over environment over config file over defaults, for every kind of
value), the one-line errors that name the setting and where it came from, failure limits, and the
key never showing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from lifecycle.settings import DEFAULT_CONFIG, Settings, failure_limit, load_config_file
from transforms.schema import InputError

KEY = "api_private_supersecret"


def config_file(tmp_path: Path, values: dict[str, Any], name: str = "cfg.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_flags_beat_environment_beat_config_file_beat_defaults(tmp_path: Path) -> None:
    config = config_file(tmp_path, {"rate": 5, "concurrency": 3, "mode": "history"})
    env = {"FRIGADE_MIGRATE_RATE": "7", "FRIGADE_MIGRATE_CONCURRENCY": "9"}
    s = Settings.resolve({"rate": 11.0, "concurrency": None}, config, env=env)
    assert s.rate == 11.0
    assert s.concurrency == 9
    assert s.mode == "history"
    assert s.max_failures == Settings.model_fields["max_failures"].default


#: setting -> (config file value, environment text, flag value, and what each resolves to)
LAYERS: dict[str, tuple[Any, str, Any, tuple[Any, Any, Any]]] = {
    "api_url": ("http://file", "http://env", "http://flag", ("http://file", "http://env", "http://flag")),
    "rate": (5, "7.5", 11.0, (5.0, 7.5, 11.0)),
    "concurrency": (3, "9", 12, (3, 9, 12)),
    "mode": ("history", "state", "history", ("history", "state", "history")),
    "catalog": ("file.yaml", "env.yaml", "api", ("file.yaml", "env.yaml", "api")),
    "preset": ("appcues", "pendo", "userflow", ("appcues", "pendo", "userflow")),
    "mapping": ("f.yaml", "e.yaml", "g.yaml", ("f.yaml", "e.yaml", "g.yaml")),
    "max_failures": ("3", "1%", "0.5%", ("3", "1%", "0.5%")),
    "max_quarantined": ("10", "2%", "0", ("10", "2%", "0")),
    "send_created_at": (False, "true", False, (False, True, False)),
    "rules": ("legacy", "sdk", "legacy", ("legacy", "sdk", "legacy")),
    "policy": ("overwrite", "merge", "overwrite", ("overwrite", "merge", "overwrite")),
    "outage_window_s": (0, "12.5", 60.0, (0.0, 12.5, 60.0)),
    "batch_requests": (10, "20", 30, (10, 20, 30)),
    "timeout": (1, "2.5", 3.0, (1.0, 2.5, 3.0)),
    "max_attempts": (2, "4", 5, (2, 4, 5)),
    "shards": (2, "8", 16, (2, 8, 16)),
    "workers": (2, "3", 4, (2, 3, 4)),
    "dask_address": ("tcp://a:8786", "tcp://b:8786", "tcp://c:8786", ("tcp://a:8786", "tcp://b:8786", "tcp://c:8786")),
    "progress_every_s": (5, "10", 1.5, (5.0, 10.0, 1.5)),
}


def test_every_setting_is_in_the_precedence_table() -> None:
    assert set(LAYERS) == set(Settings.model_fields) - {"api_key"}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_each_layer_beats_the_ones_below_it(name: str, tmp_path: Path) -> None:
    file_value, env_text, flag_value, (from_file, from_env, from_flag) = LAYERS[name]
    config = config_file(tmp_path, {name: file_value})
    env = {Settings.source(name).env: env_text}
    assert getattr(Settings.resolve({}, env={}), name) == Settings.model_fields[name].default
    assert getattr(Settings.resolve({}, config, env={}), name) == from_file
    assert getattr(Settings.resolve({}, config, env=env), name) == from_env
    assert getattr(Settings.resolve({name: flag_value}, config, env=env), name) == from_flag
    # None is "not given", so the layer below shows through
    assert getattr(Settings.resolve({name: None}, config, env=env), name) == from_env


def test_the_documented_environment_variables_keep_working() -> None:
    env = {
        "FRIGADE_API_URL": "http://127.0.0.1:1",
        "FRIGADE_API_KEY": KEY,
        "FRIGADE_MIGRATE_RATE": "3",
        "FRIGADE_MIGRATE_CONCURRENCY": "4",
        "FRIGADE_MIGRATE_CATALOG": "cat.yaml",
        "FRIGADE_MIGRATE_OUTAGE_WINDOW": "5",
    }
    s = Settings.resolve({}, env=env)
    assert (s.api_url, s.rate, s.concurrency, s.catalog, s.outage_window_s) == (
        "http://127.0.0.1:1",
        3,
        4,
        "cat.yaml",
        5,
    )
    assert s.api_key is not None
    assert s.api_key.reveal() == KEY


def test_an_empty_variable_is_not_set() -> None:
    assert Settings.resolve({}, env={"FRIGADE_API_URL": "", "FRIGADE_MIGRATE_RATE": ""}).embedded


def test_the_config_file_in_the_working_folder_is_read_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert Settings.resolve({}, env={}).rate == 20
    config_file(tmp_path, {"rate": 4}, name=DEFAULT_CONFIG)
    assert Settings.resolve({}, env={}).rate == 4


def test_no_url_and_no_key_means_the_embedded_emulator() -> None:
    assert Settings.resolve({}, env={}).embedded
    assert not Settings.resolve({}, env={"FRIGADE_API_KEY": "api_public_x"}).embedded
    assert not Settings.resolve({"api_url": "http://127.0.0.1:1"}, env={}).embedded


def test_the_key_is_masked_everywhere_settings_go() -> None:
    s = Settings.resolve({"api_key": KEY}, env={})
    assert "supersecret" not in repr(s)
    assert "supersecret" not in str(s)
    assert "supersecret" not in json.dumps(s.public())
    assert s.public()["api_key"] == "set"
    assert Settings.resolve({}, env={}).public()["api_key"] == "not set"
    assert s.api_key is not None
    assert s.api_key.reveal() == KEY


@pytest.mark.parametrize(
    ("given", "env", "words"),
    [
        ({"api_key": "api_private_super secret"}, {}, ["--api-key has spaces"]),
        ({}, {"FRIGADE_API_KEY": "api_private_super secret"}, ["FRIGADE_API_KEY", "has spaces"]),
        ({"api_key": KEY, "rate": 0}, {}, ["--rate must be above 0, not 0"]),
    ],
)
def test_an_error_never_shows_the_key(given: dict[str, Any], env: dict[str, str], words: list[str]) -> None:
    with pytest.raises(InputError) as caught:
        Settings.resolve(given, env=env)
    message = str(caught.value)
    assert "supersecret" not in message
    assert "super secret" not in message
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    for w in words:
        assert w in message, (w, message)


@pytest.mark.parametrize(
    ("spec", "users", "limit"), [("0", 100, 0), ("5", 100, 5), ("1%", 1000, 10), ("0.5%", 1000, 5)]
)
def test_failure_limit_is_a_count_or_a_share(spec: str, users: int, limit: int) -> None:
    assert failure_limit(spec, users) == limit


@pytest.mark.parametrize("bad", [{"mode": "fast"}, {"rate": 0}, {"concurrency": 0}, {"max_failures": "lots"}])
def test_bad_settings_are_input_errors(bad: dict[str, object]) -> None:
    with pytest.raises(InputError):
        Settings.resolve(bad, env={})


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"rate": 0}, "--rate must be above 0, not 0"),
        ({"rate": -1.5}, "--rate must be above 0, not -1.5"),
        ({"concurrency": 0}, "--concurrency must be at least 1, not 0"),
        ({"mode": "fast"}, "--mode must be 'state' or 'history', not 'fast'"),
        ({"max_failures": "lots"}, "--max-failures must be a count or a percentage like 0.5%, not 'lots'"),
        ({"max_quarantined": "some"}, "--max-quarantined must be a count or a percentage like 0.5%, not 'some'"),
        ({"rules": "sdkk"}, "--rules 'sdkk' is neither a profile (sdk, legacy) nor a file"),
        ({"outage_window_s": -1}, "--outage-window must be at least 0, not -1"),
        ({"shards": 0}, "--shards must be at least 1, not 0"),
        ({"workers": 100}, "--workers must be at most 64, not 100"),
    ],
)
def test_a_bad_flag_is_named_as_the_flag(given: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as caught:
        Settings.resolve(given, env={})
    assert str(caught.value) == message


def test_a_bad_flow_parameter_is_named_as_the_parameter() -> None:
    with pytest.raises(InputError) as caught:
        Settings.resolve({"outage_window_s": -1}, env={}, given_as="parameter")
    assert str(caught.value) == "parameter outage_window_s must be at least 0, not -1"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FRIGADE_MIGRATE_RATE": "fast"}, "rate (env FRIGADE_MIGRATE_RATE) must be a number, not 'fast'"),
        ({"FRIGADE_MIGRATE_RATE": "0"}, "rate (env FRIGADE_MIGRATE_RATE) must be above 0, not '0'"),
        (
            {"FRIGADE_MIGRATE_CONCURRENCY": "2.5"},
            "concurrency (env FRIGADE_MIGRATE_CONCURRENCY) must be a whole number, not '2.5'",
        ),
        (
            {"FRIGADE_MIGRATE_OUTAGE_WINDOW": "soon"},
            "outage_window_s (env FRIGADE_MIGRATE_OUTAGE_WINDOW) must be a number, not 'soon'",
        ),
        (
            {"FRIGADE_MIGRATE_SEND_CREATED_AT": "perhaps"},
            "send_created_at (env FRIGADE_MIGRATE_SEND_CREATED_AT) must be true or false, not 'perhaps'",
        ),
        ({"FRIGADE_MIGRATE_MODE": "fast"}, "mode (env FRIGADE_MIGRATE_MODE) must be 'state' or 'history', not 'fast'"),
    ],
)
def test_a_bad_environment_variable_is_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(InputError) as caught:
        Settings.resolve({}, env=env)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"rate": "fast"}, "rate must be a number, not 'fast'"),
        ({"concurrency": 2.5}, "concurrency must be a whole number, not 2.5"),
        ({"batch_requests": 0}, "batch_requests must be at least 1, not 0"),
        ({"timeout": "long"}, "timeout must be a number, not 'long'"),
        ({"send_created_at": "perhaps"}, "send_created_at must be true or false, not 'perhaps'"),
    ],
)
def test_a_bad_config_file_value_names_the_file(values: dict[str, Any], problem: str, tmp_path: Path) -> None:
    path = config_file(tmp_path, values)
    with pytest.raises(InputError) as caught:
        Settings.resolve({}, path, env={})
    assert str(caught.value) == f"file {path}: {problem}"


def test_the_layer_that_gave_the_bad_value_is_the_one_named(tmp_path: Path) -> None:
    path = config_file(tmp_path, {"rate": "fast"})
    # the environment's good value hides the file's bad one; a bad flag is named over both
    assert Settings.resolve({}, path, env={"FRIGADE_MIGRATE_RATE": "3"}).rate == 3
    with pytest.raises(InputError, match=r"^--rate must be above 0"):
        Settings.resolve({"rate": 0}, path, env={"FRIGADE_MIGRATE_RATE": "3"})


def test_config_file_must_not_hold_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "frigade-migrate.yaml"
    cfg.write_text("rate: 3\napi_key: api_private_x\n")
    with pytest.raises(InputError, match="keep the API key out"):
        load_config_file(str(cfg))
    with pytest.raises(InputError) as caught:
        Settings.resolve({}, str(cfg), env={})
    assert str(caught.value).startswith(f"file {cfg}: keep the API key out")
    assert "api_private_x" not in str(caught.value)
    cfg.write_text("rate: 3\nbogus: 1\n")
    with pytest.raises(InputError, match="unknown settings bogus"):
        load_config_file(str(cfg))
    with pytest.raises(InputError, match=f"file {cfg}: unknown settings bogus"):
        Settings.resolve({}, str(cfg), env={})


def test_a_config_file_named_but_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.yaml: config file not found"):
        Settings.resolve({}, str(tmp_path / "nope.yaml"), env={})


def test_help_comes_from_the_field_with_its_variable_and_default() -> None:
    assert Settings.help("rate") == (
        "requests per second, never exceeded in any one-second window [env FRIGADE_MIGRATE_RATE; default 20]"
    )
    assert Settings.help("send_created_at").startswith("do not send")
    for name in Settings.model_fields:
        assert Settings.model_fields[name].description, name


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "127.0.0.1:18788",
            "--api-url must start with http:// or https:// and name a host, not '127.0.0.1:18788': "
            "did you mean http://127.0.0.1:18788?",
        ),
        (
            "localhost:18788",
            "--api-url must start with http:// or https:// and name a host, not 'localhost:18788': "
            "did you mean http://localhost:18788?",
        ),
        (
            "api.frigade.co",
            "--api-url must start with http:// or https:// and name a host, not 'api.frigade.co': "
            "did you mean https://api.frigade.co?",
        ),
        (
            "http://127.0.0.1:18788/v1/",
            "--api-url must be the API base, without /v1, not 'http://127.0.0.1:18788/v1/': "
            "did you mean http://127.0.0.1:18788?",
        ),
        (
            "https://user:pw@api.frigade.com/v1",
            "--api-url must be the API base, without /v1, not 'https://api.frigade.com/v1': "
            "did you mean https://api.frigade.com?",
        ),
    ],
)
def test_an_api_url_that_is_not_an_api_base_is_refused_with_a_suggestion(url: str, message: str) -> None:
    with pytest.raises(InputError) as caught:
        Settings.resolve({"api_url": url}, env={})
    assert str(caught.value) == message


def test_an_api_url_from_the_environment_is_checked_too() -> None:
    with pytest.raises(InputError, match=r"^api_url \(env FRIGADE_API_URL\) must start with http:// or https://"):
        Settings.resolve({}, env={"FRIGADE_API_URL": "api.frigade.co"})
    assert Settings.resolve({}, env={"FRIGADE_API_URL": "http://127.0.0.1:9/"}).api_url == "http://127.0.0.1:9/"
