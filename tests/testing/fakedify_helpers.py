"""Shared helpers for the FakeDify tests: shape comparison, OpenAPI validation, SSE parsing, and
calling the pure request handler."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema

from airflow_dify.testing.exchange import Reply, Request, Response, Stream
from airflow_dify.testing.handler import handle
from airflow_dify.testing.state import FakeState

DATA = Path(__file__).parent / "data"
_SCHEMAS = json.loads((DATA / "openapi_schemas.json").read_text())


def fixture(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_same_shape(actual: Any, expected: Any, where: str = "$") -> None:
    """Every key of ``expected`` exists in ``actual`` with the same JSON type (null matches anything)."""
    if expected is None or actual is None:
        return
    if isinstance(expected, bool) or isinstance(actual, bool):
        assert type(actual) is type(expected), (
            f"{where}: {type(actual).__name__} != {type(expected).__name__}"
        )
    elif isinstance(expected, (int, float)):
        assert isinstance(actual, (int, float)), f"{where}: {actual!r} is not a number"
        assert isinstance(actual, int) == isinstance(expected, int), f"{where}: int/float mismatch"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: not an object"
        for key, value in expected.items():
            assert key in actual, f"{where}: missing key {key!r}"
            assert_same_shape(actual[key], value, f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{where}: not an array"
        if expected and actual:
            assert_same_shape(actual[0], expected[0], f"{where}[0]")
    else:
        assert type(actual) is type(expected), (
            f"{where}: {type(actual).__name__} != {type(expected).__name__}"
        )


def _openapi_to_jsonschema(node: Any) -> Any:
    # OpenAPI 3.0 spells "may be null" as nullable: true; JSON Schema wants a type list.
    if isinstance(node, dict):
        node = {k: _openapi_to_jsonschema(v) for k, v in node.items()}
        if node.pop("nullable", False) and "type" in node:
            node["type"] = [node["type"], "null"]
        if "oneOf" in node:
            # The spec's oneOf alternatives have no required keys, so several always match.
            node["anyOf"] = node.pop("oneOf")
        return node
    if isinstance(node, list):
        return [_openapi_to_jsonschema(v) for v in node]
    return node


_CONVERTED = _openapi_to_jsonschema(copy.deepcopy(_SCHEMAS))


def validate(instance: Any, schema_name: str) -> None:
    """Validate against a component schema of Dify's OpenAPI spec."""
    schema = {"$ref": f"#/components/schemas/{schema_name}", **_CONVERTED}
    jsonschema.validate(instance, schema)


def parse_sse(text: str) -> tuple[list[str], list[dict[str, Any]]]:
    """(non-data lines such as ``event: ping``, decoded ``data:`` events) of a whole stream."""
    other, events = [], []
    for block in text.split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
            elif line:
                other.append(line)
    return other, events


def call(state: FakeState, path: str, body: Any = None, mode: str = "chat", method: str = "POST") -> Reply:
    """One request to the handler, with the key of the first app of ``mode``."""
    headers = {"authorization": f"Bearer {state.app(mode).key}"}
    raw = json.dumps(body).encode() if body is not None else b""
    return handle(Request(method, f"/v1{path}", headers, raw), state)


def response(reply: Reply) -> Response:
    assert isinstance(reply.send, Response), reply.send
    return reply.send


def stream(reply: Reply) -> Stream:
    assert isinstance(reply.send, Stream), reply.send
    return reply.send


def decoded(reply: Reply) -> Any:
    return json.loads(response(reply).body)


def events(reply: Reply) -> list[dict[str, Any]]:
    """The decoded ``data:`` events of a streamed reply."""
    return parse_sse(b"".join(frame.data for frame in stream(reply).frames).decode())[1]


def served(reply: Reply) -> Reply:
    """``reply`` after a server has sent it (recorded, and billed when the work was done)."""
    reply.close()
    return reply
