"""Proxies and CA bundles come from the environment, as requests reads them."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest

from airflow_dify.client import DifyClient, DifyConfigError, DifyTransportError
from airflow_dify.client.environment import ca_bundle, proxy_for
from airflow_dify.client.transport import Request
from airflow_dify.client.urllib3_transport import Urllib3Transport
from airflow_dify.testing import FakeDify
from tests.client.client_helpers import FAST
from tests.client.servers import (
    ForwardProxy,
    RawServer,
    answer,
    closed_port,
    read_request,
    self_signed,
    server_tls,
)

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """A clean proxy environment; set what a test needs on the returned monkeypatch."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    yield monkeypatch


@pytest.mark.parametrize(
    ("variables", "url", "expected"),
    [
        ({}, "https://api.dify.ai/v1", None),
        ({"HTTPS_PROXY": "http://p:3128"}, "https://api.dify.ai/v1", "http://p:3128"),
        ({"HTTPS_PROXY": "http://p:3128"}, "http://dify.local/v1", None),
        ({"http_proxy": "http://p:8080"}, "http://dify.local/v1", "http://p:8080"),
        ({"ALL_PROXY": "http://all:1"}, "https://api.dify.ai/v1", "http://all:1"),
        ({"ALL_PROXY": "http://all:1", "HTTPS_PROXY": "http://s:2"}, "https://x/v1", "http://s:2"),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "dify.ai"}, "https://api.dify.ai/v1", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".dify.ai"}, "https://api.dify.ai/v1", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "ify.ai"}, "https://api.dify.ai/v1", None),  # requests'
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "other.ai"}, "https://api.dify.ai/v1", "http://p:1"),
        ({"HTTPS_PROXY": "http://p:1", "no_proxy": "x.org, api.dify.ai"}, "https://api.dify.ai/v1", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, "https://api.dify.ai/v1", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, "http://10.2.3.4:5001/v1", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, "http://11.2.3.4/v1", "http://p:1"),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1:5001/v1", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "27.0.0.1"}, "http://127.0.0.1/v1", "http://p:1"),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "::1"}, "http://[::1]:5001/v1", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "dify.ai:443"}, "https://api.dify.ai/v1", None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "dify.ai:8443"}, "https://api.dify.ai/v1", "http://p:1"),
    ],
)
def test_proxy_for(
    env: pytest.MonkeyPatch, variables: dict[str, str], url: str, expected: str | None
) -> None:
    for name, value in variables.items():
        env.setenv(name, value)
    assert proxy_for(url) == expected


def test_calls_go_through_the_proxy_with_its_credentials(
    env: pytest.MonkeyPatch, fake_dify: FakeDify
) -> None:
    with ForwardProxy() as proxy:
        env.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://batch:p%40ss@"))
        with DifyClient(fake_dify.url, fake_dify.app("chat").key, retry=FAST) as client:
            assert client.chat("via proxy", user="u").answer == "Answer: via proxy"
            streamed = client.chat("streamed", user="u", response_mode="streaming")
            assert streamed.answer == "Answer: streamed"
    assert proxy.seen == [f"POST {fake_dify.url}/chat-messages"] * 2  # absolute-form: a forward proxy
    assert proxy.auth == ["Basic " + base64.b64encode(b"batch:p@ss").decode()] * 2
    assert fake_dify.requests[0].auth == "key"  # the app key still reached Dify, through the proxy


def test_https_goes_through_a_connect_tunnel_with_the_same_tls_settings(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    ok = answer(200, b'{"name": "tunnelled", "mode": "chat"}', Content_Type="application/json")
    with (
        RawServer(lambda c: (read_request(c), c.sendall(ok)), tls=server_tls(cert, key)) as server,
        ForwardProxy() as proxy,
    ):
        env.setenv("HTTPS_PROXY", proxy.url)
        env.setenv("REQUESTS_CA_BUNDLE", str(cert))  # verified through the tunnel, as without it
        with DifyClient(server.url, "app-AbCdEfGhIjKlMnOpQrStUvWx", retry=FAST) as client:
            assert client.info().name == "tunnelled"
    assert proxy.seen == [f"CONNECT 127.0.0.1:{server.port}"]


def test_no_proxy_connects_directly(env: pytest.MonkeyPatch, fake_dify: FakeDify) -> None:
    with ForwardProxy() as proxy:
        env.setenv("HTTP_PROXY", proxy.url)
        env.setenv("NO_PROXY", "localhost,127.0.0.1")
        with DifyClient(fake_dify.url, fake_dify.app("chat").key, retry=FAST) as client:
            client.info()
    assert proxy.seen == [] and fake_dify.requests[0].path == "/info"


def test_socks_proxy(env: pytest.MonkeyPatch) -> None:
    """SOCKS proxies work as in requests: through PySocks when it is installed, else a clear error."""
    env.setenv("ALL_PROXY", f"socks5://127.0.0.1:{closed_port()}")
    transport = Urllib3Transport()
    request = Request("GET", "http://127.0.0.1:9/v1/info", {}, None, (1.0, 1.0), "info")
    try:
        import socks  # noqa: F401
    except ImportError:
        with pytest.raises(DifyConfigError, match="PySocks"):
            transport.send(request)
    else:
        with pytest.raises(DifyTransportError, match="SOCKS") as info:
            transport.send(request)
        assert info.value.code == "connection_error" and not info.value.maybe_billed
    transport.close()


def test_ca_bundle_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/a.pem")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/b.pem")
    assert ca_bundle() == ("/a.pem", "REQUESTS_CA_BUNDLE")
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    assert ca_bundle() == ("/b.pem", "CURL_CA_BUNDLE")
    monkeypatch.delenv("CURL_CA_BUNDLE")
    assert ca_bundle() == (certifi.where(), "certifi")
