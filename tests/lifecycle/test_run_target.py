"""A run folder and a state folder belong to one API: a resume elsewhere is refused, the printed resume
command names the API, and a state folder's path however written is one folder with one rule."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import polars as pl
import pytest

from cli.run import resume_words
from frigade.secret import ApiKey
from lifecycle import interrupts
from lifecycle.record import RunRecord
from lifecycle.runfolder import RunFolder, check_run_target, key_check, recorded_settings, recorded_target
from lifecycle.settings import DEFAULT_API_URL, EMBEDDED_TARGET, Settings
from lifecycle.statedir import StateDir, target_folder
from transforms.schema import InputError
from transforms.snapshot import SNAPSHOT_SCHEMA

STAGING = "https://staging.example"


def planned_for(root: Path, **given: str) -> RunFolder:
    """A run folder as a planned run leaves it: run.json with the run's public settings."""
    folder = RunFolder(root)
    folder.root.mkdir(parents=True)
    settings = Settings.resolve(given, env={})
    folder.write_record(RunRecord(run_id=root.name, settings=settings.public(), key_check=key_check(settings.api_key)))
    return folder


def test_the_target_a_run_was_made_for_is_read_from_its_recorded_settings() -> None:
    assert recorded_target(None) is None
    assert recorded_target({"api_url": None, "api_key": "not set"}) == EMBEDDED_TARGET
    assert recorded_target({"api_url": None, "api_key": "set"}) == DEFAULT_API_URL
    assert recorded_target({"api_url": STAGING, "api_key": "set"}) == STAGING


def test_a_resume_on_another_api_or_none_is_refused_naming_the_one_it_was_made_for(tmp_path: Path) -> None:
    folder = planned_for(tmp_path / "run", api_url=STAGING, api_key="api_public_SECRET1")
    key = ApiKey("api_public_SECRET1")
    check_run_target(folder.root, STAGING + "/", key)  # the same API, written another way
    with pytest.raises(InputError, match="no API is configured") as none:
        check_run_target(folder.root, EMBEDDED_TARGET, None)
    assert f"--api-url {STAGING}" in str(none.value)
    with pytest.raises(InputError, match=f"not {DEFAULT_API_URL}") as other:
        check_run_target(folder.root, DEFAULT_API_URL, key)
    assert f"--api-url {STAGING}" in str(other.value)
    assert "SECRET1" not in str(none.value) + str(other.value)
    # a folder not planned yet binds nothing
    check_run_target(tmp_path / "new", DEFAULT_API_URL, key)


def test_a_run_on_the_embedded_emulator_is_resumed_only_there(tmp_path: Path) -> None:
    folder = planned_for(tmp_path / "run")
    check_run_target(folder.root, EMBEDDED_TARGET, None)
    assert RunFolder(folder.root).read_record().key_check is None
    with pytest.raises(InputError, match="made for the embedded emulator"):
        check_run_target(folder.root, STAGING, ApiKey("api_public_x"))


def test_a_resume_with_another_key_on_the_same_api_is_refused_and_the_key_is_kept_only_as_a_salted_hmac(
    tmp_path: Path,
) -> None:
    folder = planned_for(tmp_path / "run", api_key="api_private_ACCOUNT_A_SECRET")
    check_run_target(folder.root, DEFAULT_API_URL, ApiKey("api_private_ACCOUNT_A_SECRET"))
    for other in (ApiKey("api_private_ACCOUNT_B_SECRET"), None):
        with pytest.raises(InputError, match="made with another API key") as refused:
            check_run_target(folder.root, DEFAULT_API_URL, other)
        assert "set FRIGADE_API_KEY to the key it was made with, or start a new run folder" in str(refused.value)
        assert "SECRET" not in str(refused.value)
    text = (folder.root / "run.json").read_text()
    assert "SECRET" not in text
    made_with = RunFolder(folder.root).read_record().key_check
    assert made_with is not None
    assert len(made_with["salt"]) == 32
    # salted per run: the same key in another run folder is another fingerprint, never its plain hash
    again = planned_for(tmp_path / "again", api_key="api_private_ACCOUNT_A_SECRET").read_record().key_check
    assert again is not None
    assert again["hmac"] != made_with["hmac"]
    assert hashlib.sha256(b"api_private_ACCOUNT_A_SECRET").hexdigest() not in text
    # a run.json of an earlier version has none, and binds the URL only
    RunFolder(tmp_path / "old").root.mkdir()
    RunFolder(tmp_path / "old").write_json({"settings": {"api_url": None, "api_key": "set"}})
    check_run_target(tmp_path / "old", DEFAULT_API_URL, ApiKey("api_private_any"))


def test_a_state_folder_named_by_a_url_written_another_way_is_the_same_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = StateDir.for_target(None, "https://User:pw@API.frigade.com/?token=pw")
    first.record(pl.DataFrame(schema=SNAPSHOT_SCHEMA), "r1", "https://User:pw@API.frigade.com/?token=pw")
    last_run = (first.root / "last_run.json").read_text()
    assert json.loads(last_run)["api_url"] == DEFAULT_API_URL
    assert "pw" not in last_run
    again = StateDir.for_target(None, DEFAULT_API_URL)
    assert again.root == first.root
    again.check_target(DEFAULT_API_URL)
    again.check_target(DEFAULT_API_URL + "/")
    # run.json names the URL as compared too
    given = Settings.resolve({"api_url": "https://u:pw@Staging.example/?k=pw", "api_key": "api_public_k"}, env={})
    assert recorded_settings(given)["api_url"] == STAGING
    # an older folder that recorded the URL as given is still the same API
    (first.root / "last_run.json").write_text(json.dumps({"last_run": "r0", "api_url": DEFAULT_API_URL + "/"}))
    again.check_target(DEFAULT_API_URL)
    with pytest.raises(InputError, match=f"remembers {DEFAULT_API_URL}, not {STAGING};"):
        again.check_target(STAGING + "/")


def test_the_resume_command_names_the_api_and_never_the_key(tmp_path: Path) -> None:
    env = {"FRIGADE_API_URL": STAGING + "/", "FRIGADE_API_KEY": "api_public_SECRET2"}
    settings = Settings.resolve({}, env=env)
    words = resume_words(["backfill", "export.csv", "--rate", "50"], settings)
    with interrupts.handle_signals(words):
        command = interrupts.resume_command(tmp_path / "run")
    assert command is not None
    assert command.endswith(f"--rate 50 --api-url {STAGING} --run-dir {tmp_path / 'run'}")
    assert "SECRET2" not in command
    # given on the command line, the URL is repeated as given, and the key by its variable
    given = ["backfill", "x.csv", "--api-url", STAGING, "--api-key", "api_public_SECRET2"]
    with interrupts.handle_signals(resume_words(given, settings)):
        command = interrupts.resume_command(tmp_path / "run")
    assert command is not None
    assert command.count("--api-url") == 1
    assert '--api-key "$FRIGADE_API_KEY"' in command
    assert "SECRET2" not in command
    # the embedded emulator needs neither
    assert resume_words(["backfill", "x.csv"], Settings.resolve({}, env={})) == ["backfill", "x.csv"]


def test_a_state_folder_written_three_ways_is_one_folder_with_one_sub_folder_per_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    os.symlink(tmp_path / "data", tmp_path / "link")
    spellings = ["data", "./data/", str(tmp_path / "data"), "link", str(tmp_path / "link") + "/"]
    roots = {StateDir.for_target(given, STAGING).root for given in spellings}
    assert roots == {Path("data") / target_folder(STAGING)}
    # the default too has one sub-folder per API, as any named folder now has
    assert StateDir.for_target(None, STAGING).root == Path("state") / target_folder(STAGING)
    # naming an API's sub-folder itself uses it as it is
    sub = str(tmp_path / "data" / target_folder(STAGING))
    assert StateDir.for_target(sub, STAGING).root == Path("data") / target_folder(STAGING)
    # outside the project folder the path is absolute
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    monkeypatch.chdir(tmp_path / "data")
    assert StateDir.for_target(str(elsewhere), STAGING).root == elsewhere.resolve() / target_folder(STAGING)
