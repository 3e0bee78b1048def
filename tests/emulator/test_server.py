"""The command line: every option documented, bad input refused with exit code 2."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from emulator.app import DEFAULT_PRIVATE_KEY, DEFAULT_PUBLIC_KEY, FAULT_KINDS
from emulator.sample import SAMPLE_CATALOG_YAML, sample_catalog
from emulator.server import ENV_PRIVATE_KEY, ENV_PUBLIC_KEY, build_parser, config_from_args, main
from frigade.catalog import parse_catalog

ROOT = Path(__file__).resolve().parents[2]


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and a.dest != "help"]


def test_python_dash_m_emulator_help_documents_every_option() -> None:
    wide = {**os.environ, "COLUMNS": "200"}  # so that no hyphenated name is wrapped across lines
    out = subprocess.run(
        [sys.executable, "-m", "emulator", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=wide,
        cwd=ROOT,
    ).stdout
    expected = {
        "--host", "--port", "--fd", "--catalog", "--db", "--public-key", "--private-key", "--rate-limit",
        "--mau-cap", "--fault-rate", "--fault-kinds", "--fault-seed", "--latency-ms", "--latency-jitter-ms",
        "--log-level", "--exit-with-parent", "--rules", "--audience",
    }  # fmt: skip
    options = _options(build_parser())
    assert {s for a in options for s in a.option_strings} == expected
    for action in options:
        assert action.help, action.option_strings
        assert action.option_strings[0] in out
    for name in (ENV_PUBLIC_KEY, ENV_PRIVATE_KEY, *FAULT_KINDS):
        assert name in out


def test_defaults() -> None:
    args = build_parser().parse_args([])
    assert (args.host, args.db, args.rate_limit, args.mau_cap, args.fault_rate) == (
        "127.0.0.1",
        "emulator.db",
        None,
        None,
        0.0,
    )
    assert tuple(args.fault_kinds) == FAULT_KINDS


def test_keys_come_from_flags_over_environment_over_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    parser = build_parser()
    monkeypatch.delenv(ENV_PUBLIC_KEY, raising=False)
    monkeypatch.delenv(ENV_PRIVATE_KEY, raising=False)
    config = config_from_args(parser.parse_args([]))
    assert (config.public_key, config.private_key) == (DEFAULT_PUBLIC_KEY, DEFAULT_PRIVATE_KEY)
    monkeypatch.setenv(ENV_PUBLIC_KEY, "api_public_env")
    monkeypatch.setenv(ENV_PRIVATE_KEY, "api_private_env")
    assert config_from_args(parser.parse_args([])).public_key == "api_public_env"
    flagged = config_from_args(parser.parse_args(["--private-key", "api_private_flag"]))
    assert (flagged.public_key, flagged.private_key) == ("api_public_env", "api_private_flag")


def test_every_limit_is_settable_from_the_command_line(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("flows:\n  - slug: f\n    steps: [{id: a}, {id: b}]\n", encoding="utf-8")
    args = build_parser().parse_args(
        [
            "--catalog", str(catalog), "--db", str(tmp_path / "x.db"), "--rate-limit", "7", "--mau-cap", "9",
            "--fault-rate", "0.25", "--fault-kinds", "error-after,drop-after", "--fault-seed", "3",
            "--latency-ms", "5", "--latency-jitter-ms", "2.5",
        ]
    )  # fmt: skip
    config = config_from_args(args)
    assert [f.slug for f in config.catalog.flows] == ["f"]
    assert (config.rate_limit, config.mau_cap, config.fault_rate, config.fault_seed) == (7, 9, 0.25, 3)
    assert config.fault_kinds == ("error-after", "drop-after")
    assert (config.latency_ms, config.latency_jitter_ms) == (5.0, 2.5)


@pytest.mark.parametrize(
    "argv",
    [
        ["--rate-limit", "0"],
        ["--fault-rate", "2"],
        ["--fault-kinds", "explode"],
        ["--latency-ms", "-1"],
        ["--mau-cap", "x"],
    ],
)
def test_bad_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_an_unreadable_catalog_exits_2_with_a_plain_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--catalog", str(tmp_path / "missing.yaml"), "--db", str(tmp_path / "x.db")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("flows: 3\n", encoding="utf-8")
    assert main(["--catalog", str(bad), "--db", str(tmp_path / "x.db")]) == 2
    assert "'flows' must be a list" in capsys.readouterr().err


def test_help_returns_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "--rate-limit" in capsys.readouterr().out


def test_the_bundled_sample_catalog_is_the_repository_sample() -> None:
    on_disk = (ROOT / "data" / "catalog.yaml").read_text(encoding="utf-8")
    assert on_disk == SAMPLE_CATALOG_YAML
    assert sample_catalog() == parse_catalog(on_disk, "data/catalog.yaml")
