"""pytest plugin with the ``fake_dify`` fixture.

Register it with ``pytest_plugins = ["airflow_dify.testing.pytest_plugin"]`` in a conftest.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_dify.testing.fake import FakeDify


@pytest.fixture
def fake_dify() -> Iterator[FakeDify]:
    """A started FakeDify with the default apps (one per mode), stopped after the test."""
    fake = FakeDify()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
