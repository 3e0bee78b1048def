"""Run settings: the flags or flow parameters given, over environment variables, over a config file,
over defaults, resolved once by ``Settings.resolve``.

Each setting is declared once, as a field of ``Settings``: its name, type, default, help (the
description) and where else it may come from (its ``Source``: the environment variable and the
command-line flag). The commands' options and ``lifecycle.params.RunOptions`` are held to these fields.
The API key is an ``ApiKey``: it prints masked, and run.json records only whether one was set.
"""

from __future__ import annotations

import os
import re
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import BeforeValidator, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from frigade.documents import DocumentError, load_mapping
from frigade.rules import DEFAULT_RULES, ProfileError, Rules, load_rules
from frigade.secret import ApiKey
from transforms.schema import InputError, input_error

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_CONFIG",
    "EMBEDDED_TARGET",
    "Settings",
    "Source",
    "check_api_url",
    "failure_limit",
    "load_config_file",
]

DEFAULT_CONFIG = "frigade-migrate.yaml"
DEFAULT_API_URL = "https://api.frigade.com"
#: the target of a run on the embedded emulator (whose URL changes from run to run)
EMBEDDED_TARGET = "embedded emulator"
#: how the given settings are named in a message: as command-line flags or as flow parameters
GivenAs = Literal["flag", "parameter"]


@dataclass(frozen=True, slots=True)
class Source:
    """Where a setting may come from besides the config file: its environment variable, and its
    command-line flag (None: only the environment or the config file set it)."""

    env: str
    flag: str | None = None


def _api_key(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return ApiKey(value)
    except ValueError as exc:
        # ApiKey's message never holds the key; the resolver puts where it came from first
        raise ValueError(str(exc).removeprefix("the API key ")) from None


def _prefixed(name: str, flag: bool = True) -> Source:
    return Source("FRIGADE_MIGRATE_" + name.upper(), "--" + name.replace("_", "-") if flag else None)


class Settings(BaseSettings):
    """The settings of a run. Build it with ``Settings.resolve``: it turns every invalid value into an
    ``InputError`` that names the setting and where it came from."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    api_url: Annotated[str | None, Source("FRIGADE_API_URL", "--api-url")] = Field(
        default=None, description="API base; with neither URL nor key the embedded emulator is started"
    )
    api_key: Annotated[ApiKey | None, BeforeValidator(_api_key), Source("FRIGADE_API_KEY", "--api-key")] = Field(
        default=None, repr=False, description="API key (never printed, logged or written)"
    )
    rate: Annotated[float, _prefixed("rate")] = Field(
        default=20.0, gt=0, description="requests per second, never exceeded in any one-second window"
    )
    concurrency: Annotated[int, _prefixed("concurrency")] = Field(
        default=512,
        ge=1,
        description="most requests in flight: a ceiling, the number in flight follows the API's latency "
        "and answers (enough for 500/s at 500 ms)",
    )
    mode: Annotated[Literal["state", "history"], _prefixed("mode")] = Field(
        default="state",
        description="state: fewest requests reproducing each user's final state; "
        "history: every de-duplicated state event in order",
    )
    catalog: Annotated[str | None, _prefixed("catalog")] = Field(
        default=None,
        description="flows and their ordered steps: a YAML/JSON file, or 'api' (default: api, "
        "or the bundled sample on the embedded emulator)",
    )
    preset: Annotated[str | None, _prefixed("preset")] = Field(
        default=None, description="built-in source shape (see `frigade-migrate inspect`); default: long"
    )
    mapping: Annotated[str | None, _prefixed("mapping")] = Field(
        default=None, description="YAML mapping for shapes no preset covers, or to override a preset's parts"
    )
    max_failures: Annotated[str, _prefixed("max_failures")] = Field(
        default="0", description="fail (exit 1) above this many rejected users, N or P%"
    )
    max_quarantined: Annotated[str | None, _prefixed("max_quarantined")] = Field(
        default=None,
        description="refuse (exit 2, nothing sent) a plan that quarantines more than this many rows, N or P% "
        "of the rows in (default: no limit)",
    )
    send_created_at: Annotated[bool, Source("FRIGADE_MIGRATE_SEND_CREATED_AT", "--no-created-at")] = Field(
        default=True, description="send the source event's time as createdAt"
    )
    batch_requests: Annotated[int, _prefixed("batch_requests", flag=False)] = Field(
        default=5000,
        ge=1,
        description="users per push task: one Prefect task per batch of users, never one per request",
    )
    timeout: Annotated[float, _prefixed("timeout", flag=False)] = Field(
        default=30.0, gt=0, description="seconds one request may take"
    )
    max_attempts: Annotated[int, _prefixed("max_attempts", flag=False)] = Field(
        default=6, ge=1, description="attempts of one request before it counts as failed"
    )
    rules: Annotated[str, _prefixed("rules")] = Field(
        default=DEFAULT_RULES.name,
        description="which reading of Frigade's state rules to plan, push and reconcile with: sdk, legacy, "
        "or the file `frigade-migrate probe` writes",
    )
    policy: Annotated[Literal["merge", "overwrite"], _prefixed("policy")] = Field(
        default="merge",
        description="users who already have state in Frigade: merge (keep progress made in Frigade, add the "
        "export's) or overwrite (the export wins)",
    )
    outage_window_s: Annotated[float, Source("FRIGADE_MIGRATE_OUTAGE_WINDOW", "--outage-window")] = Field(
        default=300.0,
        ge=0,
        description="seconds to ride out an unreachable API, every sender paused, before stopping with exit 3 "
        "(0: a refused connection is a failed attempt of that user)",
    )
    shards: Annotated[int | None, _prefixed("shards")] = Field(
        default=None,
        ge=1,
        le=4096,
        description="split the users by a hash of their id into N shards, each planned, pushed and "
        "reconciled on its own, so memory is bounded whatever the export's size (default: one shard per "
        "5 million rows)",
    )
    workers: Annotated[int, _prefixed("workers")] = Field(
        default=1,
        ge=1,
        le=64,
        description="push the shards from N processes on this machine (a Dask LocalCluster), all of them "
        "within --rate together",
    )
    dask_address: Annotated[str | None, _prefixed("dask_address", flag=False)] = Field(
        default=None,
        description="push the shards on this existing Dask cluster (a scheduler address, e.g. "
        "tcp://10.0.0.5:8786) instead of processes on this machine; --workers is then the shards pushed at once",
    )
    progress_every_s: Annotated[float, Source("FRIGADE_MIGRATE_PROGRESS_EVERY")] = Field(
        default=30.0, gt=0, description="seconds between two progress lines when the output is not a terminal"
    )

    #: settings a flow run may not be given as a parameter (Prefect stores parameters)
    SECRET: ClassVar[frozenset[str]] = frozenset({"api_key"})

    @field_validator("max_failures", "max_quarantined")
    @classmethod
    def _limit(cls, spec: str | None) -> str | None:
        if spec is not None and _FAILURES.fullmatch(spec) is None:
            raise ValueError(f"must be a count or a percentage like 0.5%, not {spec!r}")
        return spec

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, url: str | None) -> str | None:
        if url is not None:
            check_api_url(url)
        return url

    @field_validator("rules")
    @classmethod
    def _rules(cls, spec: str) -> str:
        try:
            load_rules(spec)
        except ProfileError as exc:
            # the profile's own message names the flag; the resolver names where the value came from
            raise ValueError(str(exc).removeprefix("--rules ")) from None
        return spec

    @classmethod
    def resolve(
        cls,
        given: Mapping[str, Any],
        config_file: str | None = None,
        env: Mapping[str, str] | None = None,
        *,
        given_as: GivenAs = "flag",
    ) -> Settings:
        """``given`` (None: not given) over ``env`` (default: this process's) over ``config_file``
        (default: ./frigade-migrate.yaml when present) over the defaults."""
        kwargs = {k: v for k, v in given.items() if v is not None}
        sources = (
            _Given(cls, kwargs, given_as),
            _Environment(cls, os.environ if env is None else env),
            _ConfigFile(cls, config_file),
        )
        try:
            # _build_sources is BaseSettings' own way in for sources built beforehand; the dataclass
            # signature mypy derives from the fields does not show it
            return cls(_build_sources=(sources, kwargs))  # type: ignore[call-arg]
        except ValidationError as exc:
            # from None: pydantic's text holds the input, which may be the key
            raise _input_error(exc, sources) from None

    @classmethod
    def source(cls, name: str) -> Source:
        return next(m for m in cls.model_fields[name].metadata if isinstance(m, Source))

    @classmethod
    def overridable(cls) -> list[str]:
        """The settings a flag or a flow parameter may give (``RunOptions``' fields)."""
        return [n for n in cls.model_fields if cls.source(n).flag is not None and n not in cls.SECRET]

    @classmethod
    def help(cls, name: str) -> str:
        """The option's help: the description, the environment variable and the default."""
        info, source = cls.model_fields[name], cls.source(name)
        if source.flag and source.flag.startswith("--no-"):
            # a flag that turns the setting off: say what the flag does
            return f"do not {info.description} [env {source.env}=false]"
        extra = [f"env {source.env}"]
        if info.default is not None:
            extra.append(f"default {info.default:g}" if isinstance(info.default, float) else f"default {info.default}")
        return f"{info.description} [{'; '.join(extra)}]"

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
    def users_at_once(self) -> int:
        """Users one push batch sends to at once, and state read-backs running at once: each holds
        one request in flight at a time, so as many as the ceiling on requests in flight, and the
        client's adaptive limit decides how many of them send."""
        return self.concurrency

    @property
    def target(self) -> str:
        """The API this run writes to: its URL, or ``EMBEDDED_TARGET``."""
        return EMBEDDED_TARGET if self.embedded else self.api_url or DEFAULT_API_URL

    def public(self) -> dict[str, Any]:
        """What run.json may record: everything but the key, which is only said to be set or not."""
        out = self.model_dump(exclude={"api_key"})
        out["api_key"] = "set" if self.api_key is not None else "not set"
        return out


_FAILURES = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(%?)\s*")


def check_api_url(url: str) -> None:
    """Raise ValueError unless ``url`` is an API base as the client joins paths to it: http:// or
    https://, a host, and no /v1 (the client adds it). Checked once, where settings are resolved, so
    that every command words a mistyped URL alike instead of each tripping over it differently."""
    parts = urlsplit(url.strip())
    shown = _USER_INFO.sub("", url)  # user info could hold a secret
    if parts.scheme.lower() not in ("http", "https") or "://" not in url or not parts.hostname:
        bare = _USER_INFO.sub("", url.strip().split("://", 1)[-1]).rstrip("/") or "HOST"
        scheme = "http" if bare.split(":")[0].split("/")[0] in _LOOPBACK else "https"
        raise ValueError(
            f"must start with http:// or https:// and name a host, not {shown!r}: did you mean {scheme}://{bare}?"
        )
    path = parts.path.rstrip("/")
    if path.lower().endswith("/v1"):
        base = shown.rstrip("/")[: -len("/v1")]
        raise ValueError(f"must be the API base, without /v1, not {shown!r}: did you mean {base}?")


_USER_INFO = re.compile(r"(?:(?<=//)|^)[^/@]*@")
_LOOPBACK = ("localhost", "127.0.0.1", "[::1]")


def failure_limit(spec: str, users: int, flag: str = "--max-failures") -> int:
    """``N`` (users, or rows for ``--max-quarantined``) or ``P%`` of ``users``."""
    m = _FAILURES.fullmatch(str(spec))
    if not m:
        raise InputError(f"{flag} must be a count or a percentage like 0.5%, not {spec!r}")
    value = float(m.group(1))
    return int(users * value / 100) if m.group(2) else int(value)


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
    unknown = sorted(set(doc) - set(Settings.model_fields))
    if unknown:
        raise InputError(f"unknown settings {', '.join(unknown)}", file=str(target))
    if "api_key" in doc:
        raise InputError("keep the API key out of config files: use FRIGADE_API_KEY", file=str(target))
    return doc


class _Labelled(PydanticBaseSettingsSource):
    """A source that can say where each of its values came from."""

    values: dict[str, Any]

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.values)

    @abstractmethod
    def where(self, name: str) -> tuple[str, str | None]:
        """How to name the setting ``name`` from here, and the file it is in (if any)."""


class _Given(_Labelled):
    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any], given_as: GivenAs) -> None:
        super().__init__(settings_cls)
        self.values, self.given_as = values, given_as

    def where(self, name: str) -> tuple[str, str | None]:
        flag = Settings.source(name).flag if name in Settings.model_fields else None
        if self.given_as == "flag" and flag:
            return flag, None
        return f"parameter {name}", None


class _Environment(_Labelled):
    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        super().__init__(settings_cls)
        # an empty variable counts as not set, as a shell's `FRIGADE_API_URL= cmd` means
        self.values = {n: env[v] for n in Settings.model_fields if env.get(v := Settings.source(n).env)}

    def where(self, name: str) -> tuple[str, str | None]:
        return f"{name} (env {Settings.source(name).env})", None


class _ConfigFile(_Labelled):
    def __init__(self, settings_cls: type[BaseSettings], path: str | None) -> None:
        super().__init__(settings_cls)
        self.values = load_config_file(path)
        self.file = path or DEFAULT_CONFIG

    def where(self, name: str) -> tuple[str, str | None]:
        return name, self.file


_PROBLEMS = {
    "greater_than": "must be above {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "float_parsing": "must be a number",
    "float_type": "must be a number",
    "int_parsing": "must be a whole number",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "literal_error": "must be {expected}",
    "string_type": "must be text",
    "extra_forbidden": "is not a setting",
}


def _input_error(exc: ValidationError, sources: tuple[_Labelled, ...]) -> InputError:
    """The first problem, in one line: the setting, where it came from, what is wrong with it."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else "settings"
    source = next((s for s in sources if name in s.values), None)
    where, file = source.where(name) if source is not None else (name, None)
    ctx = error.get("ctx") or {}
    if error["type"] == "value_error":
        problem = str(ctx.get("error", error["msg"]))
    else:
        numbers = {k: f"{v:g}" if isinstance(v, float) else v for k, v in ctx.items()}
        problem = _PROBLEMS.get(error["type"], error["msg"]).format(**numbers)
        if name not in Settings.SECRET:
            value = error["input"]
            problem += f", not {value:g}" if isinstance(value, float) else f", not {value!r}"
    return InputError(f"{where} {problem}", file=file)
