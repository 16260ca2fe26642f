"""Fake Dify apps: one API key, one mode, an optional input form."""

from __future__ import annotations

import secrets
import string
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

#: The endpoint each mode is served by; wrong route -> the 400 code Dify uses for that route.
CHAT_MODES = frozenset({"chat", "advanced-chat", "agent-chat"})
ROUTE_MODES = {
    "/chat-messages": (CHAT_MODES, "not_chat_app"),
    "/completion-messages": (frozenset({"completion"}), "app_unavailable"),
    "/workflows/run": (frozenset({"workflow"}), "not_workflow_app"),
}
GENERATION_PATHS = tuple(ROUTE_MODES)
DEFAULT_MODES = ("chat", "completion", "workflow", "advanced-chat", "agent-chat")
_DEFAULT_NAMES = {
    "chat": "Fake Chatbot",
    "completion": "Fake Text Generator",
    "workflow": "Fake Workflow",
    "advanced-chat": "Fake Chatflow",
    "agent-chat": "Fake Agent",
}
_KEY_ALPHABET = string.ascii_letters + string.digits


def generate_key() -> str:
    """Same format as Dify's ``ApiToken.generate_api_key("app-", 24)``."""
    return "app-" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(24))


@dataclass(eq=False)
class FakeApp:
    """One Dify app as the fake serves it.

    :param mode: Dify app mode (``chat``, ``completion``, ``workflow``, ``advanced-chat``, ``agent-chat``).
    :param name: shown by ``GET /info``.
    :param key: API key; generated in Dify's format when None.
    :param inputs: the app's input form: variable names (optional text inputs) or dicts
        ``{"variable", "type", "label", "required", "default", "options"}``.
    :param api_enabled: False answers 403 like an app whose API service was switched off.
    :param outputs: workflow apps: a run's ``data.outputs`` from its inputs, to script what a
        test's workflow returns (default ``{"result": answer_text(None, inputs)}``).
    :param answer: the other modes: the answer text from (query, inputs), to script replies such
        as JSON for output schemas (default :func:`~.answers.answer_text`); usage is computed on it.
    :param workflow_id: the published workflow version that runs by default.
    :param versions: other published versions a run may pin (``/workflows/{id}/run``, or the
        ``workflow_id`` of a chatflow call).
    :param pinned_runs: False refuses pinned runs with 403, like Dify Cloud's sandbox plan.
    :param citations: a RAG app's knowledge retrieval: (query, inputs) -> the
        ``metadata.retriever_resources`` of its answer (document_name, segment_id, score, ...).
    :param file_upload: GET /parameters ``file_upload`` (the app's upload feature); file inputs are
        form entries of type ``file``/``file-list`` with ``allowed_file_types``,
        ``allowed_file_extensions``, ``allowed_file_upload_methods`` and (lists) ``max_length``.
    :param upload_limits: ``system_parameters`` overrides (MB per type, ``workflow_file_upload_limit``):
        advertised by GET /parameters and enforced by ``POST /files/upload``.
    :param enforced_limits: what the upload endpoint really enforces where it differs from what
        is advertised (a deployment tighter than it says: 413 ``file_too_large``).
    :param upload_extensions: extensions the upload endpoint accepts (None: any); others get 415
        ``unsupported_file_type``.
    """

    mode: str = "chat"
    name: str | None = None
    key: str | None = None
    inputs: Sequence[str | dict[str, Any]] = ()
    api_enabled: bool = True
    description: str = "An app served by FakeDify."
    tags: Sequence[str] = ()
    author_name: str = "FakeDify"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    workflow_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    outputs: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    answer: Callable[[str | None, dict[str, Any]], str] | None = None
    versions: Sequence[str] = ()
    pinned_runs: bool = True
    citations: Callable[[str | None, dict[str, Any]], list[dict[str, Any]]] | None = None
    file_upload: dict[str, Any] | None = None
    upload_limits: dict[str, float] | None = None
    enforced_limits: dict[str, float] | None = None
    upload_extensions: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if self.mode not in _DEFAULT_NAMES:
            raise ValueError(f"unsupported app mode {self.mode!r}; use one of {sorted(_DEFAULT_NAMES)}")
        self.versions = tuple(self.versions)
        for version in self.published():
            try:
                uuid.UUID(version)
            except ValueError:
                # Dify's workflow ids are UUIDs: any other id could never be pinned.
                raise ValueError(f"workflow versions are UUIDs, got {version!r}") from None
        if self.name is None:
            self.name = _DEFAULT_NAMES[self.mode]
        if self.key is None:
            self.key = generate_key()

    def __repr__(self) -> str:
        # The key is a secret: never show it in reprs that end up in logs.
        return f"FakeApp(mode={self.mode!r}, name={self.name!r}, id={self.id!r})"

    def form(self) -> list[dict[str, Any]]:
        """The input form as normalized dicts (variable, type, label, required, default, options)."""
        out = []
        for item in self.inputs:
            spec: dict[str, Any] = {"variable": item} if isinstance(item, str) else dict(item)
            spec.setdefault("type", "text-input")
            spec.setdefault("label", spec["variable"])
            spec.setdefault("required", False)
            spec.setdefault("default", "")
            out.append(spec)
        return out

    def published(self) -> tuple[str, ...]:
        """Every workflow version a run may use, the default first."""
        return (self.workflow_id, *self.versions)


#: The input forms of the default apps: optional text inputs, like a typical app's.
DEFAULT_FORMS: dict[str, tuple[str, ...]] = {
    "chat": ("language",),
    "advanced-chat": ("language",),
    "agent-chat": ("language",),
    "completion": ("language", "topic"),
    "workflow": ("question", "day"),
}


def default_apps() -> list[FakeApp]:
    """One app per mode the fake supports, each with its default input form."""
    return [FakeApp(mode=mode, inputs=DEFAULT_FORMS[mode]) for mode in DEFAULT_MODES]
