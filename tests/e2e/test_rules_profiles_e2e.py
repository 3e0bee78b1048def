"""The job under each rules profile the emulator plays, against a profile it was not told, after a
probe, and on a flow whose visibility is targeting: all over real HTTP to real emulator processes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from emulator.embedded import EmbeddedEmulator
from frigade.catalog import parse_catalog
from frigade.models import UserFlowStates, flow_state_from_wire
from frigade.rules import PROFILES, Rules, initial_state, load_rules
from lifecycle.exports import plan_exports
from samples.exports import SAMPLES, Sample, expected_under, state_dict
from tests.e2e.servers import ROOT, cli
from tests.e2e.test_backfill_e2e import CATALOG_PATH, assert_state, catalog, write_sample
from transforms.presets import resolve_mapping

pytestmark = pytest.mark.slow
DATA = ROOT / "data"
#: every setting away from the sdk default at once, played from a rules file
OTHER = replace(
    PROFILES["sdk"],
    name="custom",
    not_started_index=0,
    nss_clears_last_action=False,
    honours_created_at=False,
    last_step_completes_flow=True,
)


def _rules_file(tmp_path: Path, rules: Rules) -> str:
    if rules.name in PROFILES:
        return rules.name
    path = tmp_path / f"{rules.name}.json"
    path.write_text(rules.to_json(), encoding="utf-8")
    return str(path)


def _backfill(  # type: ignore[no-untyped-def]
    emu: EmbeddedEmulator, env: dict[str, str], cwd: Path, *args: str, catalog_path: Path = CATALOG_PATH
):
    return cli(
        ["backfill", *args, "--catalog", str(catalog_path), "--api-url", emu.url, "--rate", "500"],
        {**env, "FRIGADE_API_KEY": emu.public_key},
        cwd,
    )


def _run_json(run_dir: Path) -> dict[str, object]:
    doc: dict[str, object] = json.loads((run_dir / "run.json").read_text())
    return doc


@pytest.mark.parametrize("rules", [PROFILES["legacy"], OTHER], ids=["legacy", "custom"])
@pytest.mark.parametrize("sample", SAMPLES, ids=[s.folder for s in SAMPLES])
def test_bundled_samples_land_exactly_under_each_profile(
    rules: Rules, sample: Sample, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    """(The sdk default is test_presets_e2e.) Told the profile the emulator plays, the job lands every
    user exactly, sends no write that changes nothing, and reconciles clean."""
    spec = _rules_file(tmp_path, rules)
    catalog_path = sample.catalog_path(DATA)
    with EmbeddedEmulator(catalog=catalog_path, rules=spec) as emu:
        args = [str(sample.path(DATA)), "--preset", sample.preset, "--run-dir", str(tmp_path / "run"), "--rules", spec]
        mapping = sample.mapping_path(DATA)
        if mapping is not None:
            args += ["--mapping", str(mapping)]
        res = _backfill(emu, prefect_env, tmp_path, *args, catalog_path=catalog_path)
        # a sample with progress that cannot be migrated ends exit 1 (test_presets_e2e)
        counts = _run_json(tmp_path / "run")["counts"]
        assert isinstance(counts, dict)
        lost = counts["rows_not_migrated"]
        assert res.returncode == (1 if lost else 0), res.stdout + res.stderr
        expected = expected_under(sample, rules)
        cat = parse_catalog(catalog_path.read_text(), str(catalog_path))
        with emu.client() as client:
            for user, flows in sorted(expected["users"].items()):
                answer = client.get("/v1/public/flowStates", params={"userId": user})
                got = UserFlowStates.model_validate(answer.raise_for_status().json())
                for flow in cat.active:
                    wire = got.flow(flow.slug)
                    assert wire is not None
                    want = flows.get(flow.slug, state_dict(initial_state(flow.step_ids, rules)))
                    assert state_dict(flow_state_from_wire(wire)) == want, (user, flow.slug)
        assert emu.stats()["writes_unchanged"] == 0, "a request was sent that changed nothing"
        run = _run_json(tmp_path / "run")
        assert run["mismatches"] == 0
        assert run["rules"] == json.loads(rules.to_json())


@pytest.mark.parametrize(
    ("server", "told", "setting", "concurrency"),
    [("sdk", "legacy", "start_next_step", "32"), ("legacy", "sdk", "start_next_step", "2")],
)
def test_a_profile_the_job_was_not_told_stops_it_early_and_probe_then_resume_lands_everyone(
    server: str, told: str, setting: str, concurrency: str, prefect_env: dict[str, str], tmp_path: Path
) -> None:
    """With few senders, most users were never handed to one before the stop: the resume reads back
    only the others (a read would count a user as active) and plans the rest from the initial state."""
    export = tmp_path / "events.csv"
    server_rules = PROFILES[server]
    expected = write_sample(export, users=40, seed=5, rules=server_rules)
    run_dir = tmp_path / "run"
    with EmbeddedEmulator(catalog=CATALOG_PATH, rules=server) as emu:
        common = [str(export), "--run-dir", str(run_dir), "--concurrency", concurrency]
        first = _backfill(emu, prefect_env, tmp_path, *common, "--rules", told)
        assert first.returncode == 3, first.stdout + first.stderr
        said = first.stdout + first.stderr
        assert setting in said, said
        assert "probe" in said, said
        stats = emu.stats()
        assert stats["writes_unchanged"] == 0, "a request was sent that changed nothing"
        run = _run_json(run_dir)
        assert run["status"] == "stopped"
        # stopped early: most of the plan was never sent
        assert stats["writes_accepted"] < run["counts"]["requests_planned"] // 2  # type: ignore[index]

        env = {**prefect_env, "FRIGADE_API_KEY": emu.public_key}
        out = tmp_path / "rules.json"
        probed = cli(
            ["probe", "--flow", "flow_onboarding", "--yes", "--out", str(out), "--api-url", emu.url], env, tmp_path
        )
        assert probed.returncode == 0, probed.stdout + probed.stderr
        assert "frigade-migrate-probe-" in probed.stdout
        assert load_rules(str(out)).settings() == server_rules.settings()
        assert load_rules(str(out)).name == server

        before = emu.stats()
        again = _backfill(emu, prefect_env, tmp_path, *common, "--rules", str(out))
        assert again.returncode == 0, again.stdout + again.stderr
        if concurrency == "2":
            assert emu.stats()["reads"] - before["reads"] < 15
        assert_state(emu, expected, server_rules)
        assert emu.stats()["writes_unchanged"] == before["writes_unchanged"] == 0
        run = _run_json(run_dir)
        assert run["mismatches"] == 0
        assert len(run["superseded"]) == 1  # type: ignore[arg-type]


def test_a_flow_whose_visibility_is_targeting_reconciles_clean(prefect_env: dict[str, str], tmp_path: Path) -> None:
    export = tmp_path / "events.csv"
    expected = write_sample(export, users=20, seed=9)
    audience = {"flow_onboarding": ("user-000*",)}
    with EmbeddedEmulator(catalog=CATALOG_PATH, audiences=audience) as emu:
        res = _backfill(emu, prefect_env, tmp_path, str(export), "--run-dir", str(tmp_path / "run"))
        assert res.returncode == 0, res.stdout + res.stderr
        assert_state(emu, expected)
        run = _run_json(tmp_path / "run")
        assert run["mismatches"] == 0
        targeting = run["targeting"]
        assert isinstance(targeting, dict)
        assert targeting["hidden_by_targeting"] > 0
        # outside the audience the flow is present but not visible, whatever its state
        with emu.client() as client:
            got = UserFlowStates.model_validate(
                client.get("/v1/public/flowStates", params={"userId": "user-0015"}).raise_for_status().json()
            )
        wire = got.flow("flow_onboarding")
        assert wire is not None
        assert wire.state.visible is False


def test_probe_refuses_without_yes_in_one_line(prefect_env: dict[str, str], tmp_path: Path) -> None:
    res = cli(["probe", "--flow", "flow_onboarding", "--api-url", "http://127.0.0.1:9"], prefect_env, tmp_path)
    assert res.returncode == 2
    assert res.stdout == ""
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "1 monthly active user" in res.stderr
    assert "webhooks" in res.stderr
    assert "--yes" in res.stderr


def test_plan_says_what_the_migration_costs(prefect_env: dict[str, str], tmp_path: Path) -> None:
    export = tmp_path / "events.csv"
    write_sample(export, users=10, seed=3)
    res = cli(["plan", str(export), "--catalog", str(CATALOG_PATH)], prefect_env, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    for line in ("requests planned", "distinct users", "webhook deliveries", "webhooks: step completed"):
        assert line in res.stdout, res.stdout


def test_probe_user_is_left_reset(tmp_path: Path) -> None:
    with EmbeddedEmulator(catalog=CATALOG_PATH) as emu:
        res = cli(
            [
                "probe",
                "--flow",
                "flow_onboarding",
                "--yes",
                "--user-id",
                "frigade-migrate-probe-x",
                "--api-url",
                emu.url,
            ],
            {"FRIGADE_API_KEY": emu.public_key},
            tmp_path,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        r = httpx.get(
            f"{emu.url}/v1/public/flowStates",
            params={"userId": "frigade-migrate-probe-x"},
            headers=emu.headers(private=False),
        )
        wire = UserFlowStates.model_validate(r.raise_for_status().json()).flow("flow_onboarding")
        assert wire is not None
        assert not (wire.state.started)
        assert not (wire.state.completed)
        assert not (wire.state.skipped)
        assert [h["actionType"] for h in emu.history("frigade-migrate-probe-x")][-1] == "NOT_STARTED_FLOW"


def test_past_the_first_users_an_unpredicted_state_holds_that_user_and_fails_the_run(
    prefect_env: dict[str, str], tmp_path: Path
) -> None:
    """Users whose requests the two profiles agree on, and one, dispatched well after the first ten,
    that they do not: that user is held (not the run), counted among the users with failures, and
    nothing that changes nothing is sent."""
    export = tmp_path / "events.csv"
    header = "user_id,flow_slug,step_id,action,created_at\n"
    users = [f"a-{i:02d}" for i in range(30)]
    export.write_text(header + "".join(f"{u},flow_onboarding,,STARTED_FLOW,2024-03-01T00:00:00Z\n" for u in users))
    # users are dispatched in plan order (by a hash of the id): pick the one at place 20
    order = plan_exports([export], resolve_mapping(None), catalog()).plan["user_id"].to_list()
    odd = order[20]
    rows = [f"{u},flow_onboarding,,STARTED_FLOW,2024-03-01T00:00:00Z\n" for u in users if u != odd]
    rows += [
        f"{odd},flow_onboarding,connect-data,COMPLETED_STEP,2024-03-02T00:00:00Z\n",
        f"{odd},flow_onboarding,invite-team,COMPLETED_STEP,2024-03-02T00:00:01Z\n",
    ]
    export.write_text(header + "".join(rows))
    run_dir = tmp_path / "run"
    with EmbeddedEmulator(catalog=CATALOG_PATH) as emu:
        res = _backfill(
            emu,
            prefect_env,
            tmp_path,
            str(export),
            "--run-dir",
            str(run_dir),
            "--rules",
            "legacy",
            "--concurrency",
            "1",
        )
        assert res.returncode == 1, res.stdout + res.stderr
        run = _run_json(run_dir)
        assert run["status"] == "failed"
        assert run["outcomes"] == {"held_unpredicted": 1, "sent": 30}
        assert run["failed_users"] == 1
        assert run["unexplained_mismatches"] == 0
        assert emu.stats()["writes_unchanged"] == 0
