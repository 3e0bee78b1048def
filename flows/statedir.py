"""The sync state folder: the state Frigade returned for every user the syncs touched, so the next
sync plans only what changed. Updated only by a run that finished; a stopped run leaves a marker so
that no new sync re-plans from a state that run may already have changed (resume it instead)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from flows.runfolder import RunFolder
from transforms.schema import InputError
from transforms.state import FLOW_KEY
from transforms.sync import REMEMBERED_FLOW_SCHEMA, REMEMBERED_STEP_SCHEMA, from_snapshot, merge


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._folder = RunFolder(root)

    def load(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        flows, steps = self.root / "flows.parquet", self.root / "steps.parquet"
        if not flows.exists():
            return pl.DataFrame(schema=REMEMBERED_FLOW_SCHEMA), pl.DataFrame(schema=REMEMBERED_STEP_SCHEMA)
        return pl.read_parquet(flows), pl.read_parquet(steps)

    def check_no_unfinished_run(self, this_run: Path) -> None:
        marker = self._folder.read_json("unfinished.json")
        if marker and Path(marker["run_dir"]).resolve() != this_run.resolve():
            raise InputError(
                f"the sync in {marker['run_dir']} did not finish; resume it with --run-dir {marker['run_dir']} "
                "(or use --from-current to plan against the state Frigade has now)",
                file=str(self.root / "unfinished.json"),
            )

    def mark_unfinished(self, run_dir: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._folder.write_json({"run_dir": str(run_dir)}, "unfinished.json")

    def record(self, snapshot: pl.DataFrame, run_id: str) -> None:
        """Fold the returned state of this run's users into the remembered state."""
        self.root.mkdir(parents=True, exist_ok=True)
        old_flows, old_steps = self.load()
        new_flows, new_steps = from_snapshot(snapshot)
        self._folder.write_parquet("flows.parquet", merge(old_flows, new_flows, FLOW_KEY))
        self._folder.write_parquet("steps.parquet", merge(old_steps, new_steps, [*FLOW_KEY, "step_id"]))
        self._folder.write_json({"last_run": run_id, "users": new_flows["user_id"].n_unique()}, "last_run.json")
        (self.root / "unfinished.json").unlink(missing_ok=True)
