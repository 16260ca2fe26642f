"""Workflow runs as the fake executes them: start, two LLM nodes, end; each LLM node with its usage.

A run is computed whole when it starts, so the blocking body, the stream's node events, the
stored run and the billing entry all come from one value and agree to the last decimal. Each LLM
node writes half of the output text and is priced with :func:`~.answers.make_usage` over the
prompt and its half, so a test can predict every node's tokens and price.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from airflow_dify.testing.answers import answer_text, make_usage, new_id, prompt_text
from airflow_dify.testing.apps import FakeApp

OK_STATUSES = ("succeeded", "partial-succeeded")
#: The Human Input node a paused run waits on.
PAUSED_NODE = "1700000000000"


@dataclass(frozen=True)
class NodeRun:
    """One executed node; ``usage`` (LLM nodes that finished) is shaped like ``metadata.usage``.
    The graph is a line, so a node's index and predecessor are its place in the run."""

    id: str
    node_id: str
    node_type: str
    title: str
    status: str
    outputs: dict[str, Any] | None
    elapsed_time: float
    error: str | None = None
    usage: dict[str, Any] | None = None

    def execution_metadata(self) -> dict[str, Any] | None:
        """As Dify streams it: the price is a JSON number (float of the Decimal, which is exact
        for prices of 7 decimals: ``Decimal(str(float(p))) == p``)."""
        if self.usage is None:
            return None
        price = float(Decimal(self.usage["total_price"]))
        return {
            "total_tokens": self.usage["total_tokens"],
            "total_price": price,
            "currency": self.usage["currency"],
        }


@dataclass(frozen=True)
class WorkflowRun:
    """A run: ``data`` is the blocking body's ``data`` (and ``workflow_finished.data``)."""

    data: dict[str, Any]
    nodes: tuple[NodeRun, ...]
    inputs: dict[str, Any]

    def usages(self, finished: Collection[str] | None = None) -> list[dict[str, Any]]:
        """The usage of each LLM node that ran (only those in ``finished`` when given)."""
        return [
            n.usage for n in self.nodes if n.usage is not None and (finished is None or n.node_id in finished)
        ]


def app_outputs(app: FakeApp, inputs: dict[str, Any]) -> dict[str, Any]:
    """What the workflow of ``app`` returns: its scripted ``outputs``, else the default result."""
    if app.outputs is None:
        return {"result": answer_text(None, inputs)}
    outputs = app.outputs(dict(inputs))
    if not isinstance(outputs, dict):
        raise TypeError(f"FakeApp.outputs must return a dict, got {type(outputs).__name__}")
    return outputs


def output_text(outputs: dict[str, Any]) -> str:
    """What the LLM nodes 'wrote' to produce ``outputs``: text values as they are, others as
    JSON, one per line; it is what their usage is computed on."""
    return "\n".join(
        v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True)
        for v in outputs.values()
    )


def start_node(inputs: dict[str, Any]) -> NodeRun:
    return NodeRun(new_id(), "start", "start", "Start", "succeeded", dict(inputs), 0.0)


def _llm_node(node_id: str, title: str, prompt: str, text: str, latency: float) -> NodeRun:
    usage = make_usage(prompt, text, latency)
    tokens = {k: usage[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    outputs = {"text": text, "usage": tokens}
    return NodeRun(new_id(), node_id, "llm", title, "succeeded", outputs, latency, usage=usage)


def run_workflow(
    app: FakeApp,
    inputs: dict[str, Any],
    latency: float,
    workflow_id: str,
    status: str = "succeeded",
    error: str | None = None,
) -> WorkflowRun:
    """Run version ``workflow_id``. A failed run fails in ``llm_final`` (the draft was billed); a
    paused one waits after ``llm_draft``; the others run all four nodes."""
    outputs = app_outputs(app, inputs)
    text, prompt, step = output_text(outputs), prompt_text(None, inputs), latency / 2
    half = len(text) // 2
    nodes = [start_node(inputs), _llm_node("llm_draft", "Draft", prompt, text[:half], step)]
    if status == "failed":
        nodes.append(NodeRun(new_id(), "llm_final", "llm", "Final", "failed", None, step, error))
    elif status != "paused":
        nodes.append(_llm_node("llm_final", "Final", prompt, text[half:], step))
        nodes.append(NodeRun(new_id(), "end", "end", "End", "succeeded", outputs, 0.0))
    tokens = sum(node.usage["total_tokens"] for node in nodes if node.usage is not None)
    ran = outputs if status in OK_STATUSES else {}
    data = run_data(workflow_id, status, ran, tokens, len(nodes), latency, error)
    return WorkflowRun(data, tuple(nodes), dict(inputs))


def run_data(
    workflow_id: str,
    status: str,
    outputs: dict[str, Any],
    total_tokens: int,
    total_steps: int,
    latency: float,
    error: str | None = None,
) -> dict[str, Any]:
    """The ``data`` of a run, built when it starts (the reply is sent after the latency)."""
    started = time.time()
    data: dict[str, Any] = {
        "id": new_id(),
        "workflow_id": workflow_id,
        "status": status,
        "outputs": outputs,
        "error": error,
        "elapsed_time": float(latency),
        "total_tokens": total_tokens,
        "total_steps": total_steps,
        "created_at": int(started),
        "finished_at": None if status == "paused" else int(started + latency),
    }
    if status == "paused":
        data["paused_nodes"] = [PAUSED_NODE]
        data["reasons"] = [
            {"type": "human_input_required", "node_id": PAUSED_NODE, "node_title": "Human Input"}
        ]
    return data
