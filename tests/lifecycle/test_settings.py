"""Settings precedence, failure limits, and the key never showing."""

from __future__ import annotations

from pathlib import Path

import pytest

from lifecycle.settings import Settings, failure_limit, load_config_file, resolve
from transforms.schema import InputError


def test_flags_beat_environment_beat_config_file_beat_defaults() -> None:
    config = {"rate": 5, "concurrency": 3, "mode": "history"}
    env = {"FRIGADE_MIGRATE_RATE": "7", "FRIGADE_MIGRATE_CONCURRENCY": "9"}
    s = resolve({"rate": 11.0, "concurrency": None}, env=env, config=config)
    assert s.rate == 11.0
    assert s.concurrency == 9
    assert s.mode == "history"
    assert s.max_failures == Settings().max_failures


def test_no_url_and_no_key_means_the_embedded_emulator() -> None:
    assert resolve({}, env={}).embedded
    assert not resolve({}, env={"FRIGADE_API_KEY": "api_public_x"}).embedded
    assert not resolve({"api_url": "http://127.0.0.1:1"}, env={}).embedded


def test_the_key_is_masked_everywhere_settings_go() -> None:
    s = resolve({"api_key": "api_private_supersecret"}, env={})
    assert "supersecret" not in repr(s)
    assert "supersecret" not in str(s.public())
    assert s.public()["api_key"] == "set"
    assert s.api_key is not None
    assert s.api_key.reveal() == "api_private_supersecret"


@pytest.mark.parametrize(
    ("spec", "users", "limit"), [("0", 100, 0), ("5", 100, 5), ("1%", 1000, 10), ("0.5%", 1000, 5)]
)
def test_failure_limit_is_a_count_or_a_share(spec: str, users: int, limit: int) -> None:
    assert failure_limit(spec, users) == limit


@pytest.mark.parametrize("bad", [{"mode": "fast"}, {"rate": 0}, {"concurrency": 0}, {"max_failures": "lots"}])
def test_bad_settings_are_input_errors(bad: dict[str, object]) -> None:
    with pytest.raises(InputError):
        resolve(bad, env={})


def test_config_file_must_not_hold_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "frigade-migrate.yaml"
    cfg.write_text("rate: 3\napi_key: api_private_x\n")
    with pytest.raises(InputError, match="keep the API key out"):
        load_config_file(str(cfg))
    cfg.write_text("rate: 3\nbogus: 1\n")
    with pytest.raises(InputError, match="unknown settings bogus"):
        load_config_file(str(cfg))
