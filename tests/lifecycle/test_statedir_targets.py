"""Remembered state per target API: folder names, the default folder's layout, an older flat one."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from lifecycle.settings import EMBEDDED_TARGET
from lifecycle.statedir import DEFAULT_STATE_DIR, StateDir, target_folder
from transforms.schema import InputError
from transforms.snapshot import SNAPSHOT_SCHEMA


def test_each_api_has_its_own_readable_folder_that_never_holds_credentials() -> None:
    prod = target_folder("https://api.frigade.com")
    assert prod.startswith("api.frigade.com-")
    assert target_folder("https://API.frigade.com/") == prod
    assert target_folder("https://staging.frigade.com") != prod
    assert target_folder("http://127.0.0.1:8080") != target_folder("http://127.0.0.1:8081")
    assert target_folder("http://127.0.0.1:8080").startswith("127.0.0.1_8080-")
    odd = target_folder("https://user:s3cret@api.frigade.com/?token=s3cret")
    assert "s3cret" not in odd
    assert odd == prod
    assert target_folder(EMBEDDED_TARGET) == "embedded-emulator"


def test_every_state_folder_keeps_one_sub_folder_per_api_and_a_named_sub_folder_is_bound_to_its_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    a = StateDir.for_target(None, "https://a.example")
    b = StateDir.for_target(DEFAULT_STATE_DIR, "https://b.example")
    assert a.root.parent == b.root.parent == Path(DEFAULT_STATE_DIR)
    assert a.root != b.root
    named = StateDir.for_target(str(tmp_path / "mine"), "https://a.example")
    assert named.root == Path("mine") / target_folder("https://a.example")
    empty = pl.DataFrame(schema=SNAPSHOT_SCHEMA)
    named.record(empty, "r1", "https://a.example")
    # an API's sub-folder named itself stays bound to its API: another one is refused before anything is planned
    with pytest.raises(InputError, match="one sub-folder per API"):
        StateDir.for_target(str(named.root), "https://b.example").check_target("https://b.example")


def test_a_flat_default_folder_of_an_older_version_moves_into_its_apis_sub_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    flat = StateDir(Path(DEFAULT_STATE_DIR))
    flat.record(pl.DataFrame(schema=SNAPSHOT_SCHEMA), "r1", "https://staging.example")
    assert (tmp_path / "state" / "flows.parquet").exists()
    prod = StateDir.for_target(None, "https://api.frigade.com")
    assert not (tmp_path / "state" / "flows.parquet").exists()
    staging = tmp_path / "state" / target_folder("https://staging.example")
    assert json.loads((staging / "last_run.json").read_text())["last_run"] == "r1"
    assert (staging / "flows.parquet").exists()
    assert not (prod.root / "flows.parquet").exists()
    prod.check_target("https://api.frigade.com")
    StateDir.for_target(None, "https://staging.example").check_target("https://staging.example")
