"""The run folder: the only place a run's files are written, each write atomic (temp file + rename).

runs/<run-id>/ run.json, quarantine.parquet, plan.parquet, expected_*.parquet, outcomes/part-*.parquet,
snapshot.parquet (+ snapshot_parts/), reconcile.parquet, report.md, dispatch.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import polars as pl

from frigade.push import Outcome
from frigade.secret import ApiKey
from lifecycle.record import RunRecord
from lifecycle.settings import DEFAULT_API_URL, EMBEDDED_TARGET, Settings
from transforms.schema import InputError

OUTCOME_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "user_id": pl.String(),
    "flow_slug": pl.String(),
    "seq": pl.Int64(),
    "status": pl.Int64(),
    "attempts": pl.Int64(),
    "ok": pl.Boolean(),
    "error_class": pl.String(),
    "message": pl.String(),
    "outcome": pl.String(),
    "at": pl.Float64(),
    "attempt": pl.Int64(),
}

#: rows per row group of a file written by streaming: the writer holds one row group before it writes
#: it, and polars' default (about 250,000 rows) made the snapshot's merge 33 MiB at 20,000 users (2 at 3,000)
SINK_ROW_GROUP = 50_000


def new_run_id(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()


def file_digest(path: Path) -> dict[str, Any]:
    """Size, modification time and sha256, so a resumed run can tell the input did not change."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    st = path.stat()
    return {"path": str(path), "bytes": st.st_size, "mtime": st.st_mtime, "sha256": digest.hexdigest()}


def inputs_unchanged(record: RunRecord) -> bool:
    """Whether every export a run was planned from is still there, byte for byte."""
    for recorded in record.inputs or []:
        path = Path(recorded["path"])
        if not path.is_file() or file_digest(path)["sha256"] != recorded["sha256"]:
            return False
    return True


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def normal_target(target: str) -> str:
    """A target API as it is compared and named: scheme, host and port lower-cased, the path without a
    trailing slash; never the user info or the query of the URL (they could hold a secret)."""
    if target == EMBEDDED_TARGET:
        return target
    parts = urlsplit(target.strip())
    host = (parts.hostname or "api").lower()
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme.lower()}://{host}{port}{parts.path.rstrip('/')}"


def recorded_settings(settings: Settings) -> dict[str, Any]:
    """The settings run.json records: the public ones, the URL as compared and named."""
    return settings.public() | {"api_url": settings.api_url and normal_target(settings.api_url)}


def recorded_target(settings: dict[str, Any] | None) -> str | None:
    """The API a run was planned for, from the settings its run.json records (None: not planned yet).
    As ``Settings.target``: the URL, else production with a key, else the embedded emulator."""
    if not settings:
        return None
    if settings.get("api_url"):
        return str(settings["api_url"])
    return DEFAULT_API_URL if settings.get("api_key") == "set" else EMBEDDED_TARGET


def key_check(key: ApiKey | None) -> dict[str, str] | None:
    """What run.json keeps of the key, so a resume can tell it is the same one: an HMAC-SHA256 of the
    key under a random salt of this run (never the key, nor a plain hash a leaked run.json could be
    matched against); None without a key (the embedded emulator)."""
    if key is None:
        return None
    salt = os.urandom(16).hex()
    return {"salt": salt, "hmac": _key_hmac(key, salt)}


def _key_hmac(key: ApiKey, salt: str) -> str:
    return hmac.new(bytes.fromhex(salt), key.reveal().encode("utf-8"), hashlib.sha256).hexdigest()


def check_run_target(root: Path, target: str, key: ApiKey | None) -> None:
    """A run folder belongs to the API and the account it was planned for: a resume against another API,
    with none configured (which would start the embedded emulator), or with another key (one host serves
    every account) would finish its plan on the wrong account while run.json still names the right one.
    Refused (exit 2) before anything starts."""
    record = RunFolder(root).read_record()
    made_for = recorded_target(record.settings)
    if made_for is None:
        return
    if normal_target(made_for) == normal_target(target):
        made_with = record.key_check
        # a run.json of an earlier version, or of a run made without a key, binds no key
        if made_with and (key is None or not hmac.compare_digest(_key_hmac(key, made_with["salt"]), made_with["hmac"])):
            raise InputError(
                f"run folder {root} was made with another API key; set FRIGADE_API_KEY to the key it was made "
                "with, or start a new run folder"
            )
        return
    if made_for == EMBEDDED_TARGET:
        raise InputError(
            f"run folder {root} was made for the embedded emulator, not {normal_target(target)}; resume it "
            "without --api-url, --api-key, FRIGADE_API_URL and FRIGADE_API_KEY, or start a new run folder"
        )
    if target == EMBEDDED_TARGET:
        now = "but no API is configured (the resume would go to the embedded emulator)"
    else:
        now = f"not {normal_target(target)}"
    raise InputError(
        f"run folder {root} was made for {normal_target(made_for)}, {now}; resume it with "
        f"--api-url {normal_target(made_for)} and FRIGADE_API_KEY set to that API's key, or start a new run folder"
    )


class RunFolder:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def exists(self) -> bool:
        return (self.root / "run.json").exists()

    def path(self, name: str) -> Path:
        return self.root / name

    def create(self) -> None:
        for sub in ("outcomes", "snapshot_parts"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- json ------------------------------------------------------------------------------------

    def read_json(self, name: str = "run.json") -> dict[str, Any]:
        p = self.path(name)
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}

    def write_json(self, doc: dict[str, Any], name: str = "run.json") -> None:
        text = json.dumps(doc, indent=2, sort_keys=False, default=str)
        _atomic_write(self.path(name), lambda p: p.write_text(text + "\n", encoding="utf-8"))

    def read_record(self) -> RunRecord:
        """run.json as a typed record (an empty one before the run is planned)."""
        return RunRecord.model_validate(self.read_json())

    def write_record(self, record: RunRecord) -> None:
        self.write_json(record.as_dict())

    def write_text(self, name: str, text: str) -> None:
        _atomic_write(self.path(name), lambda p: p.write_text(text, encoding="utf-8"))

    # -- parquet -----------------------------------------------------------------------------------

    def write_parquet(self, name: str, df: pl.DataFrame) -> None:
        _atomic_write(self.path(name), lambda p: df.write_parquet(p))

    def write_file(self, name: str, write: Callable[[Path], object]) -> None:
        """``name`` written by ``write`` (given the path to write), atomically."""
        _atomic_write(self.path(name), write)

    def write_parquet_frames(self, name: str, frames: Iterable[pl.DataFrame], schema: dict[str, pl.DataType]) -> None:
        """One file of ``frames`` one after the other, each written as it comes, so that a file larger
        than memory is never held whole (each frame is cast to ``schema``)."""
        with self.parquet_writer(name, schema) as write:
            for frame in frames:
                write(frame)

    @contextlib.contextmanager
    def parquet_writer(self, name: str, schema: dict[str, pl.DataType]) -> Iterator[Callable[[pl.DataFrame], None]]:
        """A writer of ``name`` frame by frame (each cast to ``schema``), in place once the block ends
        without an error, atomically: until then readers see the file as it was. Each frame is a part
        file first, and the parts are streamed into one (polars only: pyarrow's writer would add its
        libraries, some 35 MB, to every run's memory)."""
        parts = self.path(f".{name}.parts")
        shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True)
        written: list[Path] = []

        def write(frame: pl.DataFrame) -> None:
            written.append(parts / f"part-{len(written):06d}.parquet")
            frame.select(*schema).cast(pl.Schema(schema)).write_parquet(written[-1])

        try:
            yield write
            if not written:
                write(pl.DataFrame(schema=schema))
            self.sink_parquet(name, pl.scan_parquet(written))
        finally:
            shutil.rmtree(parts, ignore_errors=True)

    def sink_parquet(self, name: str, frame: pl.LazyFrame) -> None:
        """``frame`` streamed into ``name`` (which it may read: the file is replaced once written), in
        row groups of ``SINK_ROW_GROUP`` rows."""
        _atomic_write(self.path(name), lambda p: frame.sink_parquet(p, row_group_size=SINK_ROW_GROUP))

    def read_parquet(self, name: str) -> pl.DataFrame:
        return pl.read_parquet(self.path(name))

    def scan_parts(self, folder: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
        return self.lazy_parts(folder, schema).collect()

    def lazy_parts(self, folder: str, schema: dict[str, pl.DataType]) -> pl.LazyFrame:
        """The parts of an append-only folder as one lazy frame in ``schema`` (a column a part lacks is
        null): a filter on it reads only what it keeps. One scan of every part, not one scan each: a
        scan each reads them all at once, in memory that grew with the number of parts."""
        files = sorted((self.root / folder).glob("part-*.parquet"))
        if not files:
            return pl.LazyFrame(schema=schema)
        return pl.scan_parquet(files, schema=schema, missing_columns="insert", extra_columns="ignore")

    def write_part(self, folder: str, attempt: int, df: pl.DataFrame) -> None:
        """The next numbered part of an append-only folder (outcomes/, snapshot_parts/)."""
        existing = len(list((self.root / folder).glob(f"part-{attempt:03d}-*.parquet")))
        self.write_parquet(f"{folder}/part-{attempt:03d}-{existing:06d}.parquet", df)

    def outcomes(self) -> pl.DataFrame:
        return self.scan_parts("outcomes", OUTCOME_SCHEMA)


class OutcomeLog:
    """Append-only outcome parts, flushed every ``every_s`` seconds or ``max_rows`` rows, so a killed
    run loses at most the last few seconds of acknowledgements (which resume then reads back)."""

    def __init__(self, folder: RunFolder, attempt: int, *, every_s: float = 2.0, max_rows: int = 20_000) -> None:
        self.folder, self.attempt = folder, attempt
        self.every_s, self.max_rows = every_s, max_rows
        self._rows: list[tuple[Any, ...]] = []
        self._last = time.monotonic()
        self.counts: dict[str, int] = {}

    def add(self, outcome: Outcome) -> None:
        # a tuple in OUTCOME_SCHEMA's order: dataclasses.asdict deep-copies every field, per outcome
        o = outcome
        self._rows.append(
            (
                o.request_id,
                o.user_id,
                o.flow_slug,
                o.seq,
                o.status,
                o.attempts,
                o.ok,
                o.error_class,
                o.message,
                o.outcome,
                o.at,
                self.attempt,
            )
        )
        self.counts[outcome.outcome] = self.counts.get(outcome.outcome, 0) + 1
        if len(self._rows) >= self.max_rows or time.monotonic() - self._last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        if not self._rows:
            return
        df = pl.DataFrame(self._rows, schema=OUTCOME_SCHEMA, orient="row")
        self._rows = []
        self.folder.write_part("outcomes", self.attempt, df)


class DispatchJournal:
    """Before any user past ``reserved`` (its index in plan order) is handed to a worker, the
    reservation moves ``block`` users past it and is written durably. After a crash, users past it
    were certainly never sent, and only those up to it need their state read back. Users go in
    plan order a chunk at a time, longest first within a chunk (``transforms.work``): a chunk is
    admitted by its highest index, so the reservation covers it whole."""

    def __init__(self, folder: RunFolder, attempt: int, block: int) -> None:
        self.folder, self.attempt, self.block = folder, attempt, max(block, 1)
        # Never below an earlier attempt's reservation: a crash of this attempt must still cover the
        # users that one may have left in flight.
        self.reserved = self.previous()

    def admit(self, index: int) -> None:
        if index > self.reserved:
            self.reserved = index + self.block
            self.folder.write_json({"attempt": self.attempt, "reserved_through": self.reserved}, "dispatch.json")

    def previous(self) -> int:
        return int(self.folder.read_json("dispatch.json").get("reserved_through", -1))
