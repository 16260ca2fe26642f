"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``).

The connection form is declared the Airflow 3.2+ way (``conn-fields`` + ``ui-field-behaviour``):
the React UI renders it without WTForms, and ``/ui/connections/hook_meta`` serves it. Both are
derived from :data:`airflow_dify.settings.SETTINGS`, so the form offers exactly what the parser reads.
"""

from __future__ import annotations

from typing import Any

from airflow_dify import __version__
from airflow_dify.settings import BY_NAME, EXTRAS, Setting


def _form_field(setting: Setting) -> dict[str, Any]:
    """One ``conn-fields`` entry: a JSON schema the React UI renders and validates."""
    schema: dict[str, Any] = {"type": [setting.json_type, "null"]}
    if setting.choices:
        schema["enum"] = list(setting.choices)
    if setting.secret:
        schema["format"] = "password"
    elif setting.url:
        schema["format"] = "url"
    if setting.minimum is not None:
        schema["minimum"] = setting.minimum
    if setting.default is not None:
        schema["default"] = setting.default
    return {"label": setting.label, "description": setting.help, "schema": schema}


CONN_FIELDS: dict[str, dict[str, Any]] = {s.name: _form_field(s) for s in EXTRAS}
_STANDARD = (BY_NAME["host"], BY_NAME["password"])


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-dify",
        "name": "Dify",
        "description": "Bulk LLM calls against Dify apps: SQL rows in, answers, usage and cost out.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "Dify",
                "external-doc-url": "https://docs.dify.ai/",
                "tags": ["software"],
            }
        ],
        "hooks": [{"integration-name": "Dify", "python-modules": ["airflow_dify.hooks.dify"]}],
        "operators": [
            {
                "integration-name": "Dify",
                "python-modules": [
                    "airflow_dify.operators.dify",
                    "airflow_dify.operators.feedback",
                    "airflow_dify.operators.estimate",
                ],
            }
        ],
        "connection-types": [
            {
                "connection-type": "dify",
                "hook-class-name": "airflow_dify.hooks.dify.DifyHook",
                "hook-name": "Dify",
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "login"],
                    "relabeling": {s.name: s.label for s in _STANDARD},
                    "placeholders": {
                        **{s.name: s.placeholder for s in _STANDARD},
                        "extra": '{"max_concurrency": 8, "requests_per_minute": 600}',
                    },
                },
                "conn-fields": CONN_FIELDS,
            }
        ],
    }
