"""Run settings: command-line flags over environment variables over a config file over defaults.

The API key is an ``ApiKey``: it prints masked, and run.json records only whether one was set.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from frigade.documents import DocumentError, load_mapping
from frigade.rules import DEFAULT_RULES, ProfileError, Rules, load_rules
from frigade.secret import ApiKey
from transforms.schema import InputError, input_error

#: environment variable -> setting
ENV = {
    "FRIGADE_API_URL": "api_url",
    "FRIGADE_API_KEY": "api_key",
    "FRIGADE_MIGRATE_RATE": "rate",
    "FRIGADE_MIGRATE_CONCURRENCY": "concurrency",
    "FRIGADE_MIGRATE_CATALOG": "catalog",
    "FRIGADE_MIGRATE_OUTAGE_WINDOW": "outage_window_s",
}
DEFAULT_CONFIG = "frigade-migrate.yaml"
DEFAULT_API_URL = "https://api.frigade.com"
#: the target of a run on the embedded emulator (whose URL changes from run to run)
EMBEDDED_TARGET = "embedded emulator"


@dataclass(frozen=True, slots=True)
class Settings:
    api_url: str | None = None
    api_key: ApiKey | None = field(default=None, repr=False)
    #: requests per second, never exceeded in any one-second window; conservative by default
    rate: float = 20.0
    concurrency: int = 32
    mode: str = "state"
    catalog: str | None = None
    preset: str | None = None
    mapping: str | None = None
    max_failures: str = "0"
    send_created_at: bool = True
    #: users per push task: one Prefect task per batch of users, never one per request
    batch_requests: int = 5000
    timeout: float = 30.0
    max_attempts: int = 6
    #: the rules profile to plan, push and reconcile with: a built-in name or a probe's file
    rules: str = DEFAULT_RULES.name
    #: how long the API may be unreachable (connections refused) before the run stops, resumable
    outage_window_s: float = 300.0

    def __post_init__(self) -> None:
        if self.mode not in ("state", "history"):
            raise InputError(f"--mode must be 'state' or 'history', not {self.mode!r}")
        if self.rate <= 0:
            raise InputError("--rate must be above 0")
        if self.concurrency < 1:
            raise InputError("--concurrency must be at least 1")
        if not self.outage_window_s >= 0:
            raise InputError("--outage-window must be 0 or more seconds")
        failure_limit(self.max_failures, 1)
        self.rules_profile()

    def rules_profile(self) -> Rules:
        try:
            return load_rules(self.rules)
        except ProfileError as exc:
            raise InputError(str(exc)) from exc

    @property
    def embedded(self) -> bool:
        """No URL and no key: run against the embedded emulator."""
        return self.api_url is None and self.api_key is None

    @property
    def target(self) -> str:
        """The API this run writes to: its URL, or ``EMBEDDED_TARGET``."""
        return EMBEDDED_TARGET if self.embedded else self.api_url or DEFAULT_API_URL

    def public(self) -> dict[str, Any]:
        """What run.json may record: everything but the key, which is only said to be set or not."""
        out = {k: v for k, v in asdict(self).items() if k != "api_key"}
        out["api_key"] = "set" if self.api_key is not None else "not set"
        return out


def failure_limit(spec: str, users: int) -> int:
    """``N`` users or ``P%`` of the users touched."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*", str(spec))
    if not m:
        raise InputError(f"--max-failures must be a count or a percentage like 0.5%, not {spec!r}")
    value = float(m.group(1))
    return int(users * value / 100) if m.group(2) else int(value)


def _coerce(name: str, value: Any) -> Any:
    types = {f.name: f.type for f in fields(Settings)}
    kind = str(types[name])
    if name == "api_key":
        return value if isinstance(value, ApiKey) or value is None else ApiKey(str(value))
    if value is None:
        return None
    try:
        if "float" in kind:
            return float(value)
        if "int" in kind:
            return int(value)
        if "bool" in kind:
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
    except ValueError as exc:
        raise InputError(f"setting {name}: {value!r} is not a valid {kind}") from exc
    return str(value)


def load_config_file(path: str | None) -> dict[str, Any]:
    """The config file named, else ``frigade-migrate.yaml`` in the working folder when present."""
    target = Path(path) if path else Path(DEFAULT_CONFIG)
    if not target.exists():
        if path:
            raise InputError("config file not found", file=str(target))
        return {}
    try:
        doc = load_mapping(target, "a config file: a mapping of setting: value")
    except DocumentError as exc:
        raise input_error(exc) from exc
    names = {f.name for f in fields(Settings)}
    unknown = sorted(set(doc) - names)
    if unknown:
        raise InputError(f"unknown settings {', '.join(unknown)}", file=str(target))
    if "api_key" in doc:
        raise InputError("keep the API key out of config files: use FRIGADE_API_KEY", file=str(target))
    return doc


def resolve(
    flags: Mapping[str, Any], env: Mapping[str, str] | None = None, config: Mapping[str, Any] | None = None
) -> Settings:
    env = os.environ if env is None else env
    merged: dict[str, Any] = dict(config or {})
    for var, name in ENV.items():
        if env.get(var):
            merged[name] = env[var]
    merged.update({k: v for k, v in flags.items() if v is not None})
    return replace(Settings(), **{k: _coerce(k, v) for k, v in merged.items()})
