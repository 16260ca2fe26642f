"""FakeDify: a real local HTTP server that behaves like Dify's /v1 API, for tests, demos and benchmarks.

``fake_dify`` (the pytest fixture) is imported lazily so that using FakeDify needs no pytest.
"""

from __future__ import annotations

from typing import Any

from airflow_dify.testing.answers import answer_text, make_usage, prompt_text
from airflow_dify.testing.apps import FakeApp
from airflow_dify.testing.fake import FakeDify
from airflow_dify.testing.faults import Fault, FaultPlan
from airflow_dify.testing.state import Bill, Feedback, RequestRecord

__all__ = [
    "Bill",
    "FakeApp",
    "Feedback",
    "FakeDify",
    "Fault",
    "FaultPlan",
    "RequestRecord",
    "answer_text",
    "fake_dify",
    "make_usage",
    "prompt_text",
]


def __getattr__(name: str) -> Any:
    if name == "fake_dify":
        from airflow_dify.testing.pytest_plugin import fake_dify

        return fake_dify
    raise AttributeError(name)
