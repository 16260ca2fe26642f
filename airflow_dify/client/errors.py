"""One exception hierarchy for everything the Dify client can raise.

Every error carries the HTTP status (None for network faults), Dify's ``code``, a message that is
safe to log (never a secret), whether a retry can help, and whether the server may already have
run (and billed) the request. The batch engine turns these into a row's ``status``/``error``.

Errors are values: all context goes through the constructor, and code that learns more after an
error was raised (the attempt count, a refreshed message) makes a new one with :meth:`evolve`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

from airflow_dify.errors import AirflowDifyError

if TYPE_CHECKING:
    from airflow_dify.client.models import DifyResult

E = TypeVar("E", bound="DifyError")


class DifyError(AirflowDifyError):
    """Base class. ``str(err)`` is short and secret-free: ``"<status> <code>: <message>"``.

    :param retryable: a retry can help (class default when None).
    :param maybe_billed: the request may have reached Dify and run (timeouts, 504 after send):
        re-sending it could pay twice (class default when None).
    :param attempts: attempts made, the failed one included (the retry loop evolves it).
    :param result: the partial result when Dify answered but the run did not succeed.
    :param workflow_run_id: a known run id (a broken stream after ``workflow_started``): look the
        run up instead of running it again.
    :param maybe_billed_retries: earlier attempts of the same call that may have been billed.
    """

    retryable: bool = False
    maybe_billed: bool = False
    default_code = "error"

    def __init_subclass__(
        cls, *, code: str | None = None, retryable: bool | None = None, maybe_billed: bool | None = None
    ) -> None:
        """Subclasses declare their code and defaults in the class line: one place to read them."""
        super().__init_subclass__()
        if code is not None:
            cls.default_code = code
        if retryable is not None:
            cls.retryable = retryable
        if maybe_billed is not None:
            cls.maybe_billed = maybe_billed

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
        retryable: bool | None = None,
        maybe_billed: bool | None = None,
        result: DifyResult | None = None,
        workflow_run_id: str | None = None,
        maybe_billed_retries: int = 0,
    ) -> None:
        self.message = message
        self.status = status
        self.code = code or self.default_code
        self.retry_after = retry_after
        if retryable is not None:
            self.retryable = retryable
        if maybe_billed is not None:
            self.maybe_billed = maybe_billed
        self.attempts = attempts
        self.result = result
        self.workflow_run_id = workflow_run_id
        self.maybe_billed_retries = maybe_billed_retries
        super().__init__(self.summary())

    def summary(self) -> str:
        head = f"{self.status} {self.code}" if self.status else self.code
        return f"{head}: {self.message}"

    def context(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this error."""
        return {
            "message": self.message,
            "status": self.status,
            "code": self.code,
            "retry_after": self.retry_after,
            "retryable": self.retryable,
            "maybe_billed": self.maybe_billed,
            "attempts": self.attempts,
            "result": self.result,
            "workflow_run_id": self.workflow_run_id,
            "maybe_billed_retries": self.maybe_billed_retries,
        }

    def evolve(self: E, **changes: Any) -> E:
        """A new error of the same class with ``changes`` applied; ``self`` is left as it was.

        The new error keeps the original's ``__cause__`` rather than chaining to the original, so
        a masked message never drags the unmasked one along in a traceback.
        """
        fresh = type(self)(**{**self.context(), **changes})
        fresh.__cause__ = self.__cause__
        fresh.__suppress_context__ = True
        return fresh

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from the constructor's arguments: the default (class, args) would re-summarise
        # the summary, e.g. when an executor ships the error to another process.
        return (_rebuild, (type(self), self.context()))


def _rebuild(cls: type[DifyError], context: dict[str, Any]) -> DifyError:
    return cls(**context)


class DifyConfigError(DifyError, ValueError, code="config_error"):
    """Bad settings detected before any call (connection extras, key format, base URL)."""


class DifyAPIError(DifyError, code="api_error"):
    """Dify answered with an error status."""


class DifyBadRequestError(DifyAPIError, code="bad_request"):
    """400: invalid_param, provider_*, app_unavailable, not_*_app, ... Terminal."""


class DifyAuthError(DifyAPIError, code="unauthorized"):
    """401: the key or token was refused. Terminal (after one OAuth2 refresh)."""


class DifyForbiddenError(DifyAPIError, code="forbidden"):
    """403: app deleted/abnormal, API service disabled, workspace archived. Terminal."""


class DifyNotFoundError(DifyAPIError, code="not_found"):
    """404: usually a base URL without ``/v1``. Terminal."""


class DifyRateLimitError(DifyAPIError, code="too_many_requests", retryable=True):
    """429 too_many_requests (per-app concurrency cap, or a gateway's rate limit). Retryable."""


class DifyQuotaError(DifyAPIError, code="rate_limit_error"):
    """429 rate_limit_error: a plan quota on Dify Cloud. Retrying does not clear it. Terminal."""


class DifyServerError(DifyAPIError, code="internal_server_error", retryable=True):
    """500/502/503/504/524 (JSON or an HTML proxy page). Retryable; the run may have happened."""


class DifyTransportError(DifyError, code="connection_error", retryable=True):
    """Connection refused/reset, DNS, TLS: the request never got an HTTP answer. Retryable."""


class DifyTimeoutError(DifyTransportError, code="timeout", maybe_billed=True):
    """Read timeout: the request was sent, Dify may still be running and billing it."""


class DifyResponseError(DifyError, code="malformed_response", retryable=True, maybe_billed=True):
    """A 2xx whose body is not the JSON we expect (truncated, malformed). Retryable, may be billed."""


class DifyRunFailedError(DifyError, code="workflow_failed"):
    """A workflow answered 200 with ``data.status`` other than ``succeeded``, or a stream ``error`` event."""


class DifyStreamError(DifyError, code="stream_broken", retryable=True, maybe_billed=True):
    """A stream that broke before its terminal event. Retryable; may be billed."""
