"""Pre-flight: what GET /info and GET /parameters can tell before the first paid call.

A wrong key, a host without ``/v1``, an app of another mode than ``app_mode`` says, a required
input nobody maps, an input name the app does not have: each would fail every row. Checked here,
they cost two free requests and no generation call.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from airflow_dify.batch.errors import PreflightError
from airflow_dify.client.errors import DifyError
from airflow_dify.client.models import MODE_FAMILY, AppInfo

#: Input types that take files, not text (Dify's user_input_form).
FILE_TYPES = frozenset({"file", "file-list"})


class SupportsInfo(Protocol):
    def info(self) -> AppInfo: ...

    def parameters(self) -> dict[str, Any]: ...


def preflight(
    client: SupportsInfo,
    app_mode: str | None,
    input_columns: Mapping[str, str],
    logger: Any,
    *,
    file_columns: Mapping[str, str] | None = None,
) -> AppInfo:
    """The app (name and own Dify mode), once the key, the mode and the input mapping are known to fit."""
    return preflight_app(client, app_mode, input_columns, logger, file_columns=file_columns)[0]


def preflight_app(
    client: SupportsInfo,
    app_mode: str | None,
    input_columns: Mapping[str, str],
    logger: Any,
    *,
    file_columns: Mapping[str, str] | None = None,
) -> tuple[AppInfo, dict[str, Any]]:
    """:func:`preflight`, and what GET /parameters answered (the file inputs' limits are in it)."""
    try:
        info = client.info()
    except DifyError as err:
        raise PreflightError(f"pre-flight GET /info failed, so no row was called: {err}") from err
    mode = info.mode
    if mode not in MODE_FAMILY:
        raise PreflightError(
            f"Dify app {info.name!r} has mode {mode!r}, which is not supported ({sorted(MODE_FAMILY)})"
        )
    if app_mode is not None and MODE_FAMILY[app_mode] != MODE_FAMILY[mode]:
        raise PreflightError(
            f"app_mode={app_mode!r}, but the app behind this key ({info.name!r}) is a {mode!r} app: use its "
            "own key, or leave app_mode empty to take the app's mode; no row was called"
        )
    logger.info("Dify app %r (mode %s) answers; checking its inputs", info.name, mode)
    try:
        parameters = client.parameters()
    except DifyError as err:
        raise PreflightError(f"pre-flight GET /parameters failed, so no row was called: {err}") from err
    check_inputs(info.name, form_of(parameters), {**input_columns, **(file_columns or {})})
    return info, parameters


def form_of(parameters: Mapping[str, Any]) -> dict[str, tuple[str, bool]]:
    """variable -> (input type, required) from GET /parameters' ``user_input_form``."""
    form: dict[str, tuple[str, bool]] = {}
    for item in parameters.get("user_input_form") or []:
        if not isinstance(item, Mapping):
            continue
        for kind, spec in item.items():
            if isinstance(spec, Mapping) and spec.get("variable"):
                form[str(spec["variable"])] = (str(kind), bool(spec.get("required")))
    return form


def check_inputs(app: str, form: dict[str, tuple[str, bool]], input_columns: Mapping[str, str]) -> None:
    """PreflightError naming every unmapped required input and every mapped name the app lacks."""
    problems = []
    unknown = [v for v in input_columns if v not in form]
    if unknown:
        known = ", ".join(form) or "none"
        problems.append(f"input_columns maps {unknown}, which the app has no input for (its inputs: {known})")
    missing = [v for v, (_, required) in form.items() if required and v not in input_columns]
    if missing:
        files = [v for v in missing if form[v][0] in FILE_TYPES]
        note = f" ({', '.join(files)}: a file input)" if files else ""
        problems.append(
            f"the app requires input(s) {missing}{note}: map each to a column, "
            f"input_columns={{{', '.join(f'{v!r}: <column>' for v in missing)}}}"
        )
    if problems:
        raise PreflightError(f"app {app!r}: " + "; ".join(problems) + "; no row was called")


__all__ = ["FILE_TYPES", "SupportsInfo", "check_inputs", "form_of", "preflight", "preflight_app"]
