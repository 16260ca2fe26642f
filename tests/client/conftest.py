"""Fixtures for the client tests: a fresh OAuth2 token cache and a client factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from airflow_dify.client import DifyClient, clear_token_cache
from airflow_dify.testing import FakeDify
from tests.client.client_helpers import FAST, client_class
from tests.client.transports import KINDS, transport_factory


@pytest.fixture(autouse=True)
def _fresh_token_cache() -> Iterator[None]:
    clear_token_cache()
    yield
    clear_token_cache()


@pytest.fixture
def client_engine() -> str:
    """Which client ``make_client`` builds: "sync"; modules testing both override this fixture."""
    return "sync"


@pytest.fixture
def make_client(fake_dify: FakeDify, client_engine: str) -> Iterator[Callable[..., DifyClient]]:
    """``make_client(mode="chat", **DifyClient kwargs)`` against the fixture's FakeDify."""
    clients: list[Any] = []
    build = client_class(client_engine)

    def make(mode: str = "chat", **kwargs: Any) -> DifyClient:
        kwargs.setdefault("retry", FAST)
        base_url = kwargs.pop("base_url", fake_dify.url)
        auth = kwargs.pop("auth", None) or fake_dify.app(mode).key
        client = build(base_url, auth, **kwargs)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture(params=KINDS)
def make_transport(request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    """``make_transport(**kwargs)``: each transport in turn (a test states the shared contract once)."""
    made: list[Any] = []
    factory = transport_factory(request.param)

    def make(**kwargs: Any) -> Any:
        made.append(factory(**kwargs))
        return made[-1]

    make.kind = request.param  # type: ignore[attr-defined]
    yield make
    for transport in made:
        transport.close()


@pytest.fixture(params=["sync", "async"])
def both_engines(request: pytest.FixtureRequest) -> str:
    """Overrides ``client_engine`` in modules whose behaviour both clients share."""
    return str(request.param)
