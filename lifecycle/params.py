"""The typed parameters of a run: what a command's flags, a flow run or a deployment in prefect.yaml
may give. Each flow takes one of these models, so prefect.yaml is validated against it.

The settings fields are overrides (None: not given); ``lifecycle.settings`` resolves them over the
environment, the config file and the defaults. Their names, types and constraints are those of the
``Settings`` fields (tests/lifecycle/test_params.py holds them equal), and their descriptions are
taken from there. The API key is never a parameter (Prefect stores
parameters): it comes from FRIGADE_API_KEY or the Prefect Secret block named by ``api_key_block``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from lifecycle.settings import Settings

Mode = Literal["state", "history"]
Kind = Literal["backfill", "sync", "plan"]


def _describe(schema: dict[str, Any]) -> None:
    """The settings' help, written once on the Settings fields, in the schema Prefect's UI shows."""
    for name, prop in schema.get("properties", {}).items():
        if name in Settings.model_fields and isinstance(prop, dict):
            prop.setdefault("description", Settings.model_fields[name].description)


class RunOptions(BaseModel):
    """The settings a run may be given; None leaves a setting to the environment, config or default."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_describe)

    preset: str | None = None
    mapping: str | None = None
    catalog: str | None = None
    api_url: str | None = None
    rate: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, ge=1)
    mode: Mode | None = None
    max_failures: str | None = None
    max_quarantined: str | None = None
    send_created_at: bool | None = None
    rules: str | None = None
    policy: Literal["merge", "overwrite"] | None = None
    outage_window_s: float | None = Field(default=None, ge=0)
    shards: int | None = Field(default=None, ge=1, le=4096)
    workers: int | None = Field(default=None, ge=1, le=64)

    def given(self) -> dict[str, Any]:
        """The settings given here, by setting name."""
        return {k: v for k, v in self.model_dump(include=set(RunOptions.model_fields)).items() if v is not None}


class BackfillParams(RunOptions):
    """A backfill: migrate ``exports`` into Frigade. With ``state_dir`` the state it leaves becomes the
    starting point of later syncs."""

    exports: list[str] = Field(min_length=1)
    run_dir: str | None = None
    state_dir: str | None = None
    config_file: str | None = None
    #: the Prefect Secret block holding the API key (else FRIGADE_API_KEY)
    api_key_block: str | None = None
    #: mapping fields over the preset and mapping file (the command's --user-col, --timezone, ...)
    mapping_overrides: dict[str, Any] = Field(default_factory=dict)


class SyncParams(BackfillParams):
    """A sync: send only what changed since the last finished run remembered in ``state_dir``."""

    state_dir: str | None = "state"
    mode: Literal["state"] | None = None
    #: ignore the remembered state: plan every user as a backfill
    full: bool = False
    #: plan against the state read from the API (when others also write to Frigade)
    from_current: bool = False
