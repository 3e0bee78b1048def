"""The command tree: every option has help, no option is taken by a prefix of it, a typo is answered
with the subcommand's own usage and the option meant, the top-level help lists every command with
its whole line, ``--version``, and the options of each command are the settings' own."""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import Any

import pytest
import typer

from cli.app import app, main
from emulator.server import build_parser
from lifecycle.settings import Settings
from tests.e2e.servers import ROOT

GOOD = str(ROOT / "data" / "long" / "events.csv")
TREE: Any = typer.main.get_command(app)
COMMANDS = sorted(TREE.commands)
#: options only a run that sends uses: a dry run has no use for them
PUSH_ONLY = ["--concurrency", "--max-failures", "--no-created-at", "--outage-window", "--state-dir"]


def options(command: Any) -> dict[str, Any]:
    return {opt: p for p in command.params if p.param_type_name == "option" for opt in p.opts}


def flat(text: str) -> str:
    return " ".join(text.split())


def test_every_command_is_there() -> None:
    assert sorted(["backfill", "sync", "plan", "audit", "inspect", "emulator", "probe"]) == COMMANDS


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_and_argument_of_every_command_has_help(name: str) -> None:
    command = TREE.commands[name]
    assert command.help, name
    for param in command.params:
        assert (param.help or "").strip(), (name, param.name)
    if name == "emulator":
        # its options are the emulator's own parser's, which it hands every word to
        assert command.params == []
        assert all(a.help for a in build_parser("frigade-migrate emulator")._actions)


@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "emulator"])
def test_every_command_has_debug(name: str) -> None:
    assert "--debug" in options(TREE.commands[name])


def test_the_top_level_options_have_help() -> None:
    for param in TREE.params:
        assert (param.help or "").strip(), param.name


def test_top_level_help_lists_every_command_with_its_whole_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = flat(capsys.readouterr().out)
    for name in COMMANDS:
        line = TREE.commands[name].short_help
        assert line, name
        assert f"{name} {line}" in text, (name, line)
    assert "Exit codes: 0 success" in text


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"frigade-migrate {version('frigade-migrate')}\n"


@pytest.mark.parametrize("name", ["backfill", "sync", "plan"])
def test_a_mistyped_option_shows_the_subcommands_usage_and_the_option_meant(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([name, GOOD, "--rat", "50"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: unrecognized arguments: --rat 50 (did you mean --rate?) ")
    assert f"(usage: frigade-migrate {name} [OPTIONS] " in line
    assert line.endswith(f"`frigade-migrate {name} --help` lists every option)")


def test_a_mistyped_flag_does_not_take_the_next_word_with_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sync", "--ful", GOOD]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: unrecognized arguments: --ful (did you mean --full?) (usage: frigade-migrate sync")


def test_a_mistyped_command_is_answered_in_one_line_with_the_top_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["backfil", GOOD]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "'backfill'" in line
    assert "(usage: frigade-migrate [OPTIONS] COMMAND" in line
    assert line.endswith("lists every command)")


def test_a_missing_argument_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: Missing argument 'EXPORT' (usage: frigade-migrate plan ")


@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "emulator"])
def test_no_option_is_taken_by_a_prefix_of_it(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    known = options(TREE.commands[name])
    for opt in sorted(o for o in known if o.startswith("--")):
        prefix = opt[:-1]
        if prefix in known or len(prefix) < 3:
            continue
        # a missing export: were the prefix taken, the run would stop on the file instead
        assert main([name, "missing.csv", "missing.csv", prefix, "1"]) == 2, (name, prefix)
        assert f"unrecognized arguments: {prefix}" in capsys.readouterr().err, (name, prefix)


def test_plan_takes_a_backfills_push_options_without_listing_them() -> None:
    """README lists them as common options of backfill, sync and plan: a backfill's command line
    works as a dry run's unchanged."""
    known = options(TREE.commands["plan"])
    for opt in ["--concurrency", "--max-failures", "--no-created-at", "--outage-window"]:
        assert known[opt].hidden, opt


def test_plan_help_lists_only_the_options_plan_uses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--help"]) == 0
    text = capsys.readouterr().out
    for opt in [*PUSH_ONLY, "--full", "--from-current"]:
        assert not re.search(rf"{opt}\b", text), opt
    for opt in ["--preset", "--mapping", "--catalog", "--rate", "--mode", "--rules", "--config", "--user-col"]:
        assert opt in text, opt


@pytest.mark.parametrize("name", ["backfill", "sync", "plan"])
def test_the_setting_options_are_the_settings_own_flags_and_help(name: str) -> None:
    known = options(TREE.commands[name])
    flags = {flag: s for s in Settings.model_fields if (flag := Settings.source(s).flag) is not None}
    expected = set(flags)
    assert expected <= set(known)
    for flag in expected:
        assert known[flag].help == Settings.help(flags[flag]), flag


@pytest.mark.parametrize("name", ["backfill", "sync"])
def test_the_runs_keep_every_documented_option(name: str) -> None:
    documented = [
        "--preset", "--mapping", "--catalog", "--api-url", "--api-key", "--rate", "--concurrency", "--mode",
        "--run-dir", "--max-failures", "--rules", "--debug", "--user-col", "--group-col", "--flow-col",
        "--step-col", "--action-col", "--time-col", "--data-col", "--event-id-col", "--timezone",
        "--time-format", "--state-dir", "--no-created-at", "--outage-window", "--config",
    ]  # fmt: skip
    if name == "sync":
        documented += ["--full", "--from-current"]
    assert set(documented) <= set(options(TREE.commands[name]))


def test_the_emulator_gets_every_word_after_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulator", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: frigade-migrate emulator")
    assert main(["emulator", "--port", "not-a-port"]) == 2
    assert "--port" in capsys.readouterr().err
