"""run.json as a typed record: what a run was given, planned, did and concluded.

Fields not yet known are None and left out of the file, so a run.json says only what happened; a
run.json of another version reads with the fields it has (unknown ones are ignored).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lifecycle.params import Kind

Status = Literal["planned", "pushing", "stopped", "interrupted", "failed", "succeeded"]
#: statuses of a run that stopped before its end (resumable)
STOPPED_STATUSES: tuple[Status, ...] = ("stopped", "interrupted")


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)


class Attempt(_Record):
    """One try at pushing the plan: a resume is a new attempt."""

    attempt: int
    started_at: str
    #: the class of the error that stopped it (a stop, an interrupt), None when it ran to its end
    stopped_by: str | None = None
    finished_at: str | None = None
    elapsed_s: float | None = None
    #: requests this attempt sent (accepted by the server)
    sent: int | None = None


class Superseded(_Record):
    """A plan made under rules the server does not play, moved aside when the run planned again."""

    rules: dict[str, Any] | None = None
    outcomes: dict[str, int] | None = None
    folder: str


class RunRecord(_Record):
    #: the export's file digests (path, bytes, mtime, sha256), so a resume can refuse other inputs
    inputs: list[dict[str, Any]] | None = None
    run_id: str | None = None
    kind: Kind | None = None
    created_at: str | None = None
    #: the shards a sharded run's users are split into (None: one, the run itself)
    shards: int | None = None
    #: the run's settings, the key only said to be set or not
    settings: dict[str, Any] | None = None
    #: the key as a salted HMAC (``runfolder.key_check``), so a resume with another account's key is refused
    key_check: dict[str, str] | None = None
    state_dir: str | None = None
    state_target: str | None = None
    #: the catalog the plan was made from: slug, steps and status of each flow
    catalog: list[dict[str, Any]] | None = None
    counts: dict[str, int] | None = None
    accounting_closes: bool | None = None
    quarantine_reasons: dict[str, int] | None = None
    quarantine_examples: dict[str, list[str]] | None = None
    catalog_hints: list[str] | None = None
    dropped_events: dict[str, int] | None = None
    requests_by_action: dict[str, int] | None = None
    webhook_deliveries: dict[str, int] | None = None
    #: the rules profile the plan was made with (its name and settings)
    rules: dict[str, Any] | None = None
    status: Status | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    superseded: list[Superseded] = Field(default_factory=list)
    stop_message: str | None = None
    stop_exit_code: int | None = None
    targeting: dict[str, int] | None = None
    #: requests by their latest outcome
    outcomes: dict[str, int] | None = None
    failed_users: int | None = None
    failure_reasons: dict[str, int] | None = None
    mismatches: int | None = None
    unexplained_mismatches: int | None = None
    #: planned from the state Frigade holds: users read, the policy and what it did (transforms.merge)
    existing_state: dict[str, Any] | None = None
    #: the first users whose flows both the export and Frigade changed differently (conflicts.parquet)
    conflict_users: list[str] | None = None
    mismatched_users: int | None = None
    users_sent: int | None = None
    users_not_reached: int | None = None
    users_differing: int | None = None
    users_matching: int | None = None

    @property
    def stopped(self) -> bool:
        return self.status in STOPPED_STATUSES

    def as_dict(self) -> dict[str, Any]:
        """What run.json holds, the report reads and Prefect's artifacts show: the fields known, and
        those a planned run always states even when null (where its state is remembered; what stopped
        each attempt), as run.json always had them."""
        stated = {"state_dir", "state_target"} if self.run_id is not None else set()
        doc = {k: v for k, v in self.model_dump(mode="json").items() if v is not None or k in stated}
        if not self.superseded:
            del doc["superseded"]
        for attempt in doc["attempts"]:
            for k in [k for k, v in attempt.items() if v is None and k != "stopped_by"]:
                del attempt[k]
        return doc
