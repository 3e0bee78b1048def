"""The sync state folder: the state Frigade returned for every user the syncs touched, so the next
sync plans only what changed. Updated only by a run that finished; a stopped run leaves a marker so
that no new sync re-plans from a state that run may already have changed (resume it instead).

Remembered state describes one Frigade account, so a state folder (``state`` unless ``--state-dir``
names another) keeps one sub-folder per target API, named by the API's host and a digest of its URL
(a key never is in either: it travels in a header). Rehearsing against the emulator and then running
the same command against production uses two sub-folders. However a folder's path is written, it is
one folder with one rule: a scheduled sync given an absolute path finds what a relative one left.
On the embedded emulator the emulator's database is kept in the state folder too, so that what it
remembers and what the emulator holds stay together.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import polars as pl

from lifecycle.runfolder import RunFolder, normal_target
from lifecycle.settings import DEFAULT_API_URL, EMBEDDED_TARGET
from transforms.buckets import ROWS_PER_BUCKET, buckets_of
from transforms.reconcile import latest_snapshot
from transforms.schema import InputError
from transforms.snapshot import SNAPSHOT_SCHEMA
from transforms.state import FLOW_KEY
from transforms.sync import (
    EVENTS_HASH_SCHEMA,
    REMEMBERED_FLOW_SCHEMA,
    REMEMBERED_STEP_SCHEMA,
    StateFrames,
    from_snapshot,
    merge,
)

#: the state folder's, and a finished run's, full known state after that run
KNOWN_SNAPSHOT = "known_snapshot.parquet"
#: the files a run's returned state is folded into, as they are written
_FOLDED = (
    ("flows.parquet", REMEMBERED_FLOW_SCHEMA),
    ("steps.parquet", REMEMBERED_STEP_SCHEMA),
    (KNOWN_SNAPSHOT, SNAPSHOT_SCHEMA),
)
#: the state folder when none is named; it holds one sub-folder per target API
DEFAULT_STATE_DIR = "state"
#: the files of a state folder (and the embedded emulator's database)
_STATE_FILES = ("flows.parquet", "steps.parquet", "users.parquet", "last_run.json", "unfinished.json", "emulator.db")


def target_folder(target: str) -> str:
    """The sub-folder name of one target API: its host, readable, and a digest of its URL."""
    if target == EMBEDDED_TARGET:
        return "embedded-emulator"
    parts = urlsplit(target.strip())
    host = (parts.hostname or "api").lower()
    normal = normal_target(target)
    digest = hashlib.sha256(normal.encode("utf-8")).hexdigest()[:12]
    readable = re.sub(r"[^a-z0-9.-]+", "_", host + (f"_{parts.port}" if parts.port else ""))
    return f"{readable}-{digest}"


class StateDir:
    def __init__(self, root: Path, target: str | None = None) -> None:
        self.root = root
        #: the API this state folder is for (recorded, and checked before a run plans from it)
        self.target = target
        self._folder = RunFolder(root)

    @classmethod
    def for_target(cls, given: str | None, target: str) -> StateDir:
        """The state folder of a run against ``target``: this API's sub-folder of the folder named
        (default ``state``), the same however that folder's path is written (relative, absolute, ``./``,
        a trailing slash, through a symlink). A folder named that is itself an API's sub-folder is used
        as it is; the flat files of an older version are moved into the sub-folder of the API they name."""
        base = canonical_folder(Path(given or DEFAULT_STATE_DIR))
        recorded = RunFolder(base).read_json("last_run.json").get("api_url")
        if base.name in (target_folder(target), recorded and target_folder(str(recorded))):
            # an API's sub-folder named itself: used as it is (``check_target`` refuses another API)
            return cls(base, target)
        _adopt_flat_folder(base)
        return cls(base / target_folder(target), target)

    def load(self) -> StateFrames:
        """The remembered state (empty frames before the first finished run)."""
        flows, steps = self.root / "flows.parquet", self.root / "steps.parquet"
        if not flows.exists():
            return StateFrames(pl.DataFrame(schema=REMEMBERED_FLOW_SCHEMA), pl.DataFrame(schema=REMEMBERED_STEP_SCHEMA))
        return StateFrames(pl.read_parquet(flows), pl.read_parquet(steps))

    def load_base(self, keys: pl.DataFrame | None = None) -> StateFrames | None:
        """What the export asked for when each user-flow was last left at its target: the base of the
        next merge (``transforms.merge``), of the user-flows ``keys`` only when given; None before any."""
        flows, steps = self.root / "source_flows.parquet", self.root / "source_steps.parquet"
        if not flows.exists():
            return None
        scans = (pl.scan_parquet(f) for f in (flows, steps))
        if keys is not None:
            scans = (f.join(keys.lazy().select(FLOW_KEY), on=FLOW_KEY, how="semi") for f in scans)
        return StateFrames(*(f.collect() for f in scans))

    def record_base(self, analysed: pl.DataFrame, clean: StateFrames) -> None:
        """The analysed users' base replaced by ``clean`` (the source targets of the users the run left
        exactly at their target): a user left elsewhere has no base, so the next merge keeps both sides."""
        old = self.load_base()
        users = analysed.select("user_id").unique()
        for name, new, keys in zip(
            ("source_flows", "source_steps"), clean, (FLOW_KEY, [*FLOW_KEY, "step_id"]), strict=True
        ):
            kept = (
                []
                if old is None
                else [getattr(old, name.removeprefix("source_")).join(users, on="user_id", how="anti")]
            )
            self._folder.write_parquet(f"{name}.parquet", pl.concat([*kept, new]).sort(keys))

    def known_snapshot(self) -> pl.DataFrame:
        """The latest state Frigade returned for every user any recorded run touched, in the shape of
        a run's snapshot: what an audit compares when a sync's own snapshot covers only its users."""
        path = self.root / KNOWN_SNAPSHOT
        return pl.read_parquet(path) if path.exists() else pl.DataFrame(schema=SNAPSHOT_SCHEMA)

    def load_events_hashes(self) -> pl.DataFrame:
        """The per-user hashes of the events past runs left exactly at their target."""
        path = self.root / "users.parquet"
        # events hashes vouch for remembered state: without that state they mean nothing
        if not path.exists() or not (self.root / "flows.parquet").exists():
            return pl.DataFrame(schema=EVENTS_HASH_SCHEMA)
        remembered = pl.read_parquet(path)
        # a state folder of an earlier version: its users are planned again against the remembered state
        return remembered if "events_hash" in remembered.columns else pl.DataFrame(schema=EVENTS_HASH_SCHEMA)

    def unfinished_run(self) -> Path | None:
        """The run folder of a sync that planned from this state folder and did not finish."""
        marker = self._folder.read_json("unfinished.json")
        return Path(marker["run_dir"]) if marker else None

    def check_no_unfinished_run(self, this_run: Path) -> None:
        earlier = self.unfinished_run()
        if earlier is not None and earlier.resolve() != this_run.resolve():
            raise InputError(
                f"the sync in {earlier} did not finish; resume it with --run-dir {earlier} (a deployment: "
                "parameter run_dir), or run a sync without one, which resumes it first; or plan against the "
                "state Frigade has now with --from-current (parameter from_current)",
                file=str(self.root / "unfinished.json"),
            )

    def mark_unfinished(self, run_dir: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._folder.write_json({"run_dir": str(run_dir)}, "unfinished.json")

    def check_target(self, api_url: str | None) -> None:
        """A state folder describes one Frigade account: never plan one API's sync from another's."""
        recorded = self._folder.read_json("last_run.json").get("api_url")
        # compared as named: the folder's name is the normal URL's, so a trailing slash is the same API
        if recorded and api_url and normal_target(str(recorded)) != normal_target(api_url):
            raise InputError(
                f"this state folder remembers {normal_target(str(recorded))}, not {normal_target(api_url)}; name "
                "the folder above it as --state-dir (it keeps one sub-folder per API), or another one",
                file=str(self.root / "last_run.json"),
            )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One run at a time per state folder (a nightly sync and a manual one must not interleave)."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / "lock"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = path.read_text(encoding="utf-8").strip() if path.exists() else ""
            if holder.isdigit() and _alive(int(holder)):
                raise InputError(f"another run (pid {holder}) is using this state folder", file=str(path)) from None
            path.unlink(missing_ok=True)  # left by a run that died
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        try:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            yield
        finally:
            path.unlink(missing_ok=True)

    def record(
        self,
        snapshot: pl.DataFrame | pl.LazyFrame,
        run_id: str,
        api_url: str | None,
        events_hashes: tuple[pl.DataFrame, pl.DataFrame] | None = None,
        per_bucket: int = ROWS_PER_BUCKET,
    ) -> None:
        """Fold the returned state of this run's users into the remembered state; with ``events_hashes``
        (those of the users the run analysed, and of those it left at their target), replace the
        analysed users' hashes by the clean ones (the others are forgotten, so planned again);
        without, forget the hashes of every user whose state was returned. The state is folded a
        bucket of users at a time (``transforms.buckets``): the files are those folded in one piece."""
        self.root.mkdir(parents=True, exist_ok=True)
        snap = snapshot.lazy().select(*SNAPSHOT_SCHEMA).cast(pl.Schema(SNAPSHOT_SCHEMA))
        remembered = [
            pl.scan_parquet(path) if (path := self.root / name).exists() else pl.LazyFrame(schema=schema)
            for name, schema in _FOLDED
        ]
        users = pl.concat([f.select("user_id") for f in (snap, *remembered)])
        buckets = buckets_of(users, per_bucket)
        with contextlib.ExitStack() as stack:
            flows, steps, known = (stack.enter_context(self._folder.parquet_writer(n, s)) for n, s in _FOLDED)
            for k in range(len(buckets)):
                where = buckets.where(k)
                returned = snap.filter(where).collect()
                old_flows, old_steps, old_known = (f.filter(where).collect() for f in remembered)
                new_flows, new_steps = from_snapshot(returned)
                flows(merge(old_flows, new_flows, FLOW_KEY))
                steps(merge(old_steps, new_steps, [*FLOW_KEY, "step_id"]))
                known(latest_snapshot(pl.concat([old_known, returned])))
        returned_users = snap.select(pl.col("user_id").unique()).collect()
        # A run without events hashes (planned without a state folder, or by an older version) still moved
        # its users' state: their hashes no longer vouch for it and are forgotten.
        analysed, clean = events_hashes if events_hashes is not None else (returned_users, None)
        kept = self.load_events_hashes().join(analysed.select("user_id").unique(), on="user_id", how="anti")
        parts = [kept] if clean is None else [kept, clean.select(*EVENTS_HASH_SCHEMA)]
        self._folder.write_parquet("users.parquet", pl.concat(parts))
        self._folder.write_json(
            {
                "last_run": run_id,
                "users": returned_users.height,
                "api_url": api_url and normal_target(api_url),
            },
            "last_run.json",
        )
        (self.root / "unfinished.json").unlink(missing_ok=True)


def canonical_folder(path: Path) -> Path:
    """One spelling of a folder, whichever was given: symlinks and ``..`` resolved, relative to the
    working folder (the project folder, where deployments run too) when it is inside it, else absolute."""
    real = path.expanduser().resolve()
    here = Path.cwd().resolve()
    return real.relative_to(here) if real.is_relative_to(here) and real != here else real


def _adopt_flat_folder(base: Path) -> None:
    """An older version kept the default folder flat, for one API: move its files into that API's
    sub-folder, so its state is neither lost (a sync would resend everything) nor used for another API."""
    if not (base / "last_run.json").exists() and not (base / "flows.parquet").exists():
        return
    recorded = RunFolder(base).read_json("last_run.json").get("api_url") or DEFAULT_API_URL
    into = base / target_folder(str(recorded))
    into.mkdir(parents=True, exist_ok=True)
    for name in _STATE_FILES:
        if (base / name).exists() and not (into / name).exists():
            os.replace(base / name, into / name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
