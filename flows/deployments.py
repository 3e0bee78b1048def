"""Checks prefect.yaml beyond what `prefect deploy` checks: every deployment's entrypoint loads, its
parameters are parameters of that flow with values of the right type (Prefect accepts unknown ones
silently), the flow's required parameters are given, every cron parses, and every backfill or sync
says which API it writes to (else it would go to production whenever its worker has a key).

Usage: python -m flows.deployments [prefect.yaml]  (exit 1 and a line per problem when it is wrong)"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, get_type_hints

from frigade.documents import DocumentError, load_mapping


def problems(path: Path) -> list[str]:
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.flows import load_flow_from_entrypoint

    # the problems are reported below, one line each: Prefect's own ERROR log of them is noise
    logging.getLogger("prefect.flows").setLevel(logging.CRITICAL)

    try:
        doc = load_mapping(path, "a prefect.yaml: a mapping with 'deployments'")
    except DocumentError as exc:
        return [str(exc)]
    out: list[str] = []
    for dep in doc.get("deployments", []):
        name = dep.get("name", "?")
        try:
            flow: Any = load_flow_from_entrypoint(str(dep["entrypoint"]))
        except Exception as exc:  # an entrypoint can fail in many ways; each is a problem to report
            out.append(f"{name}: entrypoint {dep.get('entrypoint')!r} does not load: {exc}")
            continue
        params: dict[str, Any] = dep.get("parameters") or {}
        known = flow.parameters.properties
        for unknown in sorted(set(params) - set(known)):
            out.append(f"{name}: {unknown!r} is not a parameter of {flow.name}")
        for required in flow.parameters.required or []:
            if required not in params:
                out.append(f"{name}: required parameter {required!r} of {flow.name} is missing")
        try:
            flow.validate_parameters({k: v for k, v in params.items() if k in known})
        except Exception as exc:  # prefect raises its own ParameterTypeError wrapping pydantic's
            out.append(f"{name}: parameters do not fit {flow.name}: {exc}")
        else:
            out += [f"{name}: {p}" for p in _setting_problems(flow, params, dep.get("job_variables") or {})]
        for schedule in dep.get("schedules") or []:
            if "cron" in schedule:
                try:
                    CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone"))
                except ValueError as exc:
                    out.append(f"{name}: cron {schedule['cron']!r} is not valid: {exc}")
    return out


def _setting_problems(flow: Any, params: dict[str, Any], job_variables: dict[str, Any]) -> list[str]:
    """What a run would refuse at 02:00 that can be told at deploy time: a setting's value (a
    --max-failures, a rules profile), an unknown preset; and a run that would write to production
    without the deployment saying so. Files are the worker's, not checked here."""
    from lifecycle.params import BackfillParams
    from lifecycle.settings import DEFAULT_API_URL, Settings
    from transforms.presets import resolve_mapping
    from transforms.schema import InputError

    model = get_type_hints(flow.fn).get("params")
    if not (isinstance(model, type) and issubclass(model, BackfillParams)):
        return []
    run = model.model_validate(params["params"])
    try:
        settings = Settings.resolve(run.given(), env={}, given_as="parameter")
        resolve_mapping(settings.preset, None)
    except InputError as exc:
        return [str(exc)]
    env = job_variables.get("env") or {}
    if "api_url" not in params["params"] and not env.get(Settings.source("api_url").env):
        return [
            f"no api_url: a run would write to {DEFAULT_API_URL} (production) whenever its worker has a key; "
            f"say which API: api_url: {DEFAULT_API_URL} (or a rehearsal's emulator), FRIGADE_API_URL under "
            "job_variables.env, or api_url: null to leave it to the worker's FRIGADE_API_URL"
        ]
    return []


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else "prefect.yaml")
    found = problems(path)
    for p in found:
        print(f"{path}: {p}", file=sys.stderr)
    if not found:
        print(f"{path}: every deployment's entrypoint, parameters and schedule check out")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
