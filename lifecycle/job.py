"""A run: its parameters, settings, folder, state folder, attempt and typed record (run.json)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frigade.catalog import Catalog
from frigade.documents import DocumentError, load_mapping
from frigade.rules import Rules
from lifecycle.catalogs import CatalogSource, catalog_of_record, catalog_source
from lifecycle.params import BackfillParams, Kind, SyncParams
from lifecycle.record import RunRecord
from lifecycle.runfolder import RunFolder, new_run_id
from lifecycle.settings import Settings
from lifecycle.statedir import StateDir
from transforms.presets import resolve_mapping
from transforms.schema import InputError, input_error
from transforms.spec import SourceMapping

#: a sharded run's shard folders, and the export's events cut into shards
SHARDS_DIR = "shards"
SPLIT_DIR = "split"


@dataclass
class Job:
    """One run: its inputs, settings, folder and attempt number."""

    exports: list[Path]
    settings: Settings
    folder: RunFolder
    kind: Kind = "backfill"
    mapping_overrides: dict[str, Any] = field(default_factory=dict)
    #: the remembered state, for a sync (and a backfill that leaves state for later syncs)
    state_dir: StateDir | None = None
    #: sync only: plan every user as a backfill (``full``), or against the state read back
    full: bool = False
    from_current: bool = False
    attempt: int = 1
    run: RunRecord = field(default_factory=RunRecord)
    #: a resume whose rules profile differs from the one the plan was made with: plan again
    replan: bool = False
    #: a shard of a sharded run: its index (its events are in its run's ``SPLIT_DIR``)
    shard: int | None = None
    #: a shard's count of shards in its run
    run_shards: int = 1
    #: no progress bar (a shard pushed in a worker process)
    quiet: bool = False

    @classmethod
    def open(cls, params: BackfillParams, settings: Settings, kind: Kind = "backfill") -> Job:
        """The run ``params`` describe; ``params.run_dir`` is resumed when it holds one."""
        folder = RunFolder(Path(params.run_dir) if params.run_dir else Path("runs") / new_run_id())
        job = cls([Path(p) for p in params.exports], settings, folder, kind, dict(params.mapping_overrides))
        # Remembered state is kept per target API. A backfill on the embedded emulator remembers none
        # (its database stays in the run folder, for a resume); a sync there keeps the emulator's
        # database in its state folder, so the next sync finds the state it remembers.
        if kind == "sync" or (params.state_dir and not settings.embedded):
            job.state_dir = StateDir.for_target(params.state_dir, settings.target)
        if isinstance(params, SyncParams):
            job.full, job.from_current = params.full, params.from_current
        if not job.exports:
            raise InputError("no export files given")
        job.run = folder.read_record()
        job.attempt = len(job.run.attempts) + 1
        return job

    @property
    def rules(self) -> Rules:
        return self.settings.rules_profile()

    @property
    def catalog_source(self) -> CatalogSource:
        return catalog_source(self.settings.catalog, self.settings.embedded)

    @property
    def planned_catalog(self) -> Catalog:
        """The catalog recorded at planning time: a resume validates against what the plan was made from."""
        return catalog_of_record(self.run.catalog or [])

    @property
    def emulator_db(self) -> Path:
        """Where the embedded emulator keeps its database: with the remembered state, else in the run
        folder, so that a resume (and the next sync) finds what the emulator was sent."""
        return (self.state_dir.root if self.state_dir is not None else self.folder.root) / "emulator.db"

    @property
    def resuming(self) -> bool:
        return self.folder.path("plan.parquet").exists() and self.run.status is not None

    @property
    def run_root(self) -> Path:
        """The folder a resume names: the run's, also for one of its shards."""
        return self.folder.root.parents[1] if self.shard is not None else self.folder.root

    @property
    def sharded(self) -> bool:
        """The run's users are split into shards, each planned, pushed and finished in its own folder."""
        return (self.run.shards or 1) > 1 and self.shard is None

    def for_shard(self, index: int) -> Job:
        """Shard ``index`` of this run, in ``shards/<index>/`` of its folder: a run of its own whose
        exports are its cut of the export's events. The state folder is read for it but written only
        by the whole run, once every shard has finished."""
        folder = RunFolder(self.folder.path(f"{SHARDS_DIR}/{index:03d}"))
        run = folder.read_record()
        return Job(
            self.exports,
            self.settings,
            folder,
            self.kind,
            self.mapping_overrides,
            self.state_dir,
            self.full,
            self.from_current,
            attempt=len(run.attempts) + 1,
            run=run,
            shard=index,
            run_shards=self.run.shards or 1,
        )

    def shard_jobs(self) -> list[Job]:
        return [self.for_shard(k) for k in range(self.run.shards or 1)] if self.sharded else []

    @property
    def plain_sync(self) -> bool:
        """A sync against the remembered state (not --full, not --from-current)."""
        return self.kind == "sync" and not self.full and not self.from_current

    def mapping(self) -> SourceMapping:
        return mapping_of(self.settings, self.mapping_overrides)

    def save(self) -> None:
        self.folder.write_record(self.run)


def mapping_of(settings: Settings, overrides: dict[str, Any] | None = None) -> SourceMapping:
    """The run's mapping: the preset, the mapping file over it, the command-line overrides over both."""
    doc: dict[str, Any] | None = None
    if settings.mapping:
        try:
            doc = load_mapping(settings.mapping, "a mapping file: a YAML mapping of field: value")
        except DocumentError as exc:
            raise input_error(exc) from exc
    return resolve_mapping(settings.preset, doc, overrides or None, mapping_where=str(settings.mapping))
