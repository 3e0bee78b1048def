"""prefect.yaml deploys against a real Prefect server, a broken one fails, and the nightly-sync
deployment really runs on a process worker and writes to the emulator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from emulator.embedded import EmbeddedEmulator
from tests.e2e.servers import ROOT, stop_group
from tests.e2e.test_backfill_e2e import CATALOG_PATH, write_sample

pytestmark = pytest.mark.slow
POOL = "frigade-migrate"


def prefect(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env={**os.environ, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def project_copy(tmp: Path, edit: dict[str, object] | None = None) -> Path:
    """The project's deployable files in a folder of their own (optionally with one deployment edited)."""
    dest = tmp / "project"
    for package in ("flows", "lifecycle", "cli"):
        shutil.copytree(ROOT / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data", dest / "data")
    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    if edit:
        doc["deployments"][1].update(edit)
    (dest / "prefect.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return dest


@pytest.fixture(scope="module")
def pool(prefect_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    res = prefect(
        ["work-pool", "create", POOL, "--type", "process", "--overwrite"], prefect_env, tmp_path_factory.mktemp("pool")
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return POOL


def test_prefect_yaml_deploys_every_deployment(pool: str, prefect_env: dict[str, str], tmp_path: Path) -> None:
    res = prefect(["--no-prompt", "deploy", "--all"], prefect_env, project_copy(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    names = httpx.post(f"{prefect_env['PREFECT_API_URL']}/deployments/filter", json={}).json()
    assert {"backfill", "nightly-sync", "audit"} <= {d["name"] for d in names}
    nightly = next(d for d in names if d["name"] == "nightly-sync")
    assert nightly["schedules"][0]["schedule"]["cron"] == "0 2 * * *"
    assert "api_key" not in str(nightly["parameters"]).replace("api_key_block", "")


@pytest.mark.parametrize(
    "edit",
    [
        {"entrypoint": "flows/backfill.py:no_such_flow"},
        {"parameters": {"params": {"exports": ["x.csv"], "no_such_parameter": 1}}},
        {"parameters": {"params": {"exports": "not-a-list", "rate": "fast"}}},
        {"parameters": {"exports": ["x.csv"], "rate": 20}},
        {"parameters": {"params": {"exports": ["x.csv"], "mode": "history"}}},
        {"schedules": [{"cron": "61 25 * * *"}]},
    ],
    ids=[
        "bad-entrypoint",
        "unknown-parameter",
        "bad-parameter-types",
        "not-under-params",
        "sync-in-history-mode",
        "bad-cron",
    ],
)
def test_a_broken_deployment_fails_the_ci_check(
    edit: dict[str, object], pool: str, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    """CI runs `python -m flows.deployments` and then `prefect --no-prompt deploy --all`: one must fail."""
    project = project_copy(tmp_path, edit)
    check = subprocess.run(
        [sys.executable, "-m", "flows.deployments", "prefect.yaml"],
        cwd=project,
        env={**os.environ, **prefect_env, "PYTHONPATH": str(project)},
        capture_output=True,
        text=True,
    )
    deploy = prefect(["--no-prompt", "deploy", "--all"], prefect_env, project)
    assert check.returncode != 0 or deploy.returncode != 0, check.stderr + deploy.stdout


def test_the_deployment_check_passes_on_prefect_yaml() -> None:
    from flows.deployments import problems

    assert problems(ROOT / "prefect.yaml") == []


def test_nightly_sync_deployment_runs_on_a_worker(pool: str, prefect_env: dict[str, str], tmp_path: Path) -> None:
    project = project_copy(tmp_path)
    export = project / "exports" / "latest.csv"
    export.parent.mkdir()
    expected = write_sample(export, users=8, seed=41)
    with EmbeddedEmulator(catalog=CATALOG_PATH) as emu:
        # The key reaches the block through the environment, never a command line.
        save = subprocess.run(
            [
                sys.executable,
                "-c",
                "import os; from prefect.blocks.system import Secret; "
                "Secret(value=os.environ['KEY']).save('frigade-api-key', overwrite=True)",
            ],
            env={**os.environ, **prefect_env, "KEY": emu.public_key},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert save.returncode == 0, save.stderr
        res = prefect(["--no-prompt", "deploy", "--name", "nightly-sync"], prefect_env, project)
        assert res.returncode == 0, res.stdout + res.stderr
        worker_log = (tmp_path / "worker.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"],
            # a worker's own log level (INFO, Prefect's default): the flow run's progress lines show there
            env={**os.environ, **prefect_env, "PYTHONPATH": str(ROOT), "PREFECT_LOGGING_LEVEL": "INFO"},
            cwd=project,
            stdout=worker_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        nightly = yaml.safe_load((project / "prefect.yaml").read_text())["deployments"][1]["parameters"]["params"]
        overrides = {
            "api_url": emu.url,
            "catalog": str(CATALOG_PATH),
            "run_dir": str(tmp_path / "run"),
            "state_dir": str(tmp_path / "state"),
            "rate": 200,
        }
        try:
            res = prefect(
                [
                    "deployment",
                    "run",
                    "frigade-migrate-sync/nightly-sync",
                    "--watch",
                    "--watch-timeout",
                    "240",
                    # a run's parameters replace the deployment's whole model: the rest is restated
                    "--params",
                    json.dumps({"params": nightly | overrides}),
                ],
                prefect_env,
                project,
                timeout=300,
            )
            assert res.returncode == 0, res.stdout + res.stderr + (tmp_path / "worker.log").read_text(errors="replace")
            deadline = time.monotonic() + 30
            while not (tmp_path / "run" / "report.md").exists() and time.monotonic() < deadline:
                time.sleep(0.5)
            stats = emu.stats()
            assert stats["writes_accepted"] > 0
            assert stats["distinct_users"] == len({u for u, _ in expected})
            # one sub-folder per API, a named state folder too
            assert len(list((tmp_path / "state").glob("*/flows.parquet"))) == 1
            # the worker's log is not a terminal: the run's stages and progress are lines in it
            log = (tmp_path / "worker.log").read_text(errors="replace")
            for line in ("plan: analysing", "requests planned for ", " - push: 0/", "finish: the run succeeded"):
                assert line in log, log
        finally:
            stop_group(worker)
            worker_log.close()
