"""Reviews back to Dify: each new, changed or cleared verdict sent once as message feedback.

A row is sent when its verdict + note (see :func:`airflow_dify.sql.reviews.signature`) differs
from what was last sent: a verdict as ``rating`` with the note as ``content``, a verdict cleared
after it was sent as ``rating: null`` (Dify's way to revoke). The user is the one who asked:
Dify scopes each message to its end user. Verdicts Dify cannot take (a workflow app's runs have no
message; a row without an answer has no message id) are counted and named, never dropped.

Errors: a message Dify no longer has (404) or a refused feedback (400) fails that row, recorded
in ``feedback_error``, and is not sent again until its verdict changes. Refused credentials
(401/403) stop at once, and so does an error left after the client's retries (Dify unreachable,
5xx): those rows stay to do, and the next run sends them. Dify answers 404 for a message of
another user too, so 404s before any feedback of the run was accepted are not settled, and
:data:`NOT_FOUND_LIMIT` of them stop the run naming ``user`` (a feedback task in another DAG
than the batch's has another default user).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Protocol

from airflow_dify.batch.errors import FeedbackStoppedError, PreflightError
from airflow_dify.batch.recovery import row_user
from airflow_dify.client.errors import (
    DifyAuthError,
    DifyBadRequestError,
    DifyError,
    DifyForbiddenError,
    DifyNotFoundError,
)
from airflow_dify.client.models import AppInfo
from airflow_dify.sql.reviews import (
    RATINGS,
    REVOKED,
    ReviewRow,
    ReviewWrite,
    clean_note,
    clean_verdict,
    signature,
)

log = logging.getLogger("airflow_dify.batch.feedback")
#: Ids named in a log line, at most.
SAMPLE = 10
WORKFLOW_APP = "not reviewable: a workflow app's runs have no message to rate"
NO_MESSAGE = "not reviewable: the row has no message_id (not answered yet)"
#: Stop after this many 404s with no feedback accepted: the ``user`` is likely not the batch's.
NOT_FOUND_LIMIT = 5


class SupportsFeedback(Protocol):
    """What sending reviews needs of a client (a :class:`~airflow_dify.client.DifyClient`)."""

    def info(self) -> AppInfo: ...

    def feedback(
        self, message_id: str, *, rating: str | None, user: str, content: str | None = None
    ) -> dict[str, Any]: ...


class ReviewSource(Protocol):
    """Where verdicts are read and feedback recorded (:class:`~airflow_dify.sql.reviews.ReviewTable`)."""

    def prepare(self) -> list[str]: ...

    def iter_pages(
        self, page_size: int, where: str | None = None, where_parameters: Any = None
    ) -> Iterator[list[ReviewRow]]: ...

    def record(self, writes: Sequence[ReviewWrite]) -> None: ...


@dataclass
class FeedbackSummary:
    """Totals of one run: ``selected`` = sent + revoked + skipped_unchanged + not_reviewable +
    failed + left_pending."""

    selected: int = 0
    sent: int = 0
    revoked: int = 0
    skipped_unchanged: int = 0
    not_reviewable: int = 0
    failed: int = 0
    #: Rows read but not handled because the run stopped (they are sent by the next run).
    left_pending: int = 0
    stopped: str | None = None  # None | "auth" | "unavailable" | "not_found"
    #: 404s while no feedback of the run was accepted yet (see NOT_FOUND_LIMIT); not in the XCom.
    unconfirmed_not_found: int = 0
    error_codes: Counter[str] = field(default_factory=Counter)
    not_reviewable_ids: list[Any] = field(default_factory=list)
    failed_ids: list[Any] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The XCom summary (JSON-safe)."""
        return {
            "selected": self.selected,
            "sent": self.sent,
            "revoked": self.revoked,
            "skipped_unchanged": self.skipped_unchanged,
            "not_reviewable": self.not_reviewable,
            "failed": self.failed,
            "left_pending": self.left_pending,
            "stopped": self.stopped,
            "error_codes": dict(self.error_codes.most_common()),
        }

    def _fail(self, row_id: Any, code: str) -> None:
        self.failed += 1
        self.error_codes[code] += 1
        if len(self.failed_ids) < SAMPLE:
            self.failed_ids.append(row_id)


@dataclass(frozen=True)
class Decision:
    """What to do with one row: ``unchanged``, ``not_reviewable``, ``invalid`` or ``send``."""

    action: str
    rating: str | None = None
    content: str | None = None
    signature: str | None = None
    error: str | None = None


def decide(row: ReviewRow, unreviewable: str | None = None) -> Decision:
    """The decision for ``row``; ``unreviewable`` is why none of the app's rows can be rated."""
    rating, sent = clean_verdict(row.verdict), _stripped(row.sent)
    if rating is None and sent is None:
        return Decision("unchanged")  # never reviewed: nothing to send, nothing to revoke
    problem: str | None = None
    note: str | None = None
    if rating is not None and rating not in RATINGS:
        shown = rating if len(rating) <= 40 else rating[:39] + "\u2026"
        problem = f"review_verdict must be 'like' or 'dislike' (or empty to revoke), got {shown!r}"
    elif rating is not None:
        try:
            note = clean_note(row.note)
        except ValueError as exc:
            problem = str(exc)
    sig = signature(rating, note) if problem is None else None
    if sig is not None and sig == sent:
        return Decision("unchanged", signature=sig)
    reason = unreviewable or (None if _has_text(row.message_id) else NO_MESSAGE)
    if reason is not None:
        return Decision("not_reviewable", error=reason)
    if problem is not None:
        return Decision("invalid", error=problem)
    return Decision("send", rating, note, sig)


def send_feedback(
    reviews: ReviewSource,
    client: SupportsFeedback,
    *,
    user: str,
    max_concurrency: int = 4,
    page_size: int = 100,
    where: str | None = None,
    where_parameters: Any = None,
    logger: Any = None,
    user_per_row: bool = False,
) -> FeedbackSummary:
    """Send every new, changed or cleared verdict of ``reviews`` once and record it.

    ``user_per_row``: the batch asked as ``<user>-<row id>`` (its ``user_per_row``): so is each
    feedback sent.

    Raises PreflightError (nothing sent) when GET /info fails or an argument is wrong, and
    :class:`FeedbackStoppedError` (what was sent is recorded) when every feedback would fail.
    """
    logger = logger or log
    if not isinstance(user, str) or not user.strip():
        raise PreflightError("user is required: the end-user id the answers were generated for")
    if not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool) or max_concurrency < 1:
        raise PreflightError(f"max_concurrency: expected a positive integer, got {max_concurrency!r}")
    try:
        info = client.info()
    except DifyError as err:
        raise PreflightError(f"pre-flight GET /info failed, so no feedback was sent: {err}") from err
    unreviewable = WORKFLOW_APP if info.mode == "workflow" else None
    added = reviews.prepare()
    logger.info(
        "Dify feedback: app %r (mode %s), user %r%s",
        info.name,
        info.mode,
        user,
        f"; created review columns {added}" if added else "",
    )
    summary = FeedbackSummary()

    def user_of(row_id: Any) -> str:
        return row_user(user, row_id) if user_per_row else user

    with ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="dify-feedback") as pool:
        for page in reviews.iter_pages(page_size, where, where_parameters):
            stop = _page(page, reviews, client, pool, max_concurrency, user_of, unreviewable, summary, logger)
            if stop is not None:
                _report(summary, logger)
                raise FeedbackStoppedError(stop, summary)
    _report(summary, logger)
    return summary


def _page(
    page: list[ReviewRow],
    reviews: ReviewSource,
    client: SupportsFeedback,
    pool: ThreadPoolExecutor,
    window: int,
    user_of: Callable[[Any], str],
    unreviewable: str | None,
    summary: FeedbackSummary,
    logger: Any,
) -> str | None:
    """Send and record one page, at most ``window`` feedbacks in flight; the reason to stop, or None."""
    summary.selected += len(page)
    writes: list[ReviewWrite] = []
    not_found: list[ReviewWrite] = []
    to_send: list[tuple[ReviewRow, Decision]] = []
    for row in page:
        d = decide(row, unreviewable)
        if d.action == "unchanged":
            summary.skipped_unchanged += 1
        elif d.action == "not_reviewable":
            summary.not_reviewable += 1
            if len(summary.not_reviewable_ids) < SAMPLE:
                summary.not_reviewable_ids.append(row.row_id)
            if row.error != d.error:  # say so in the table once; the verdict stays as it is
                writes.append(ReviewWrite(row.row_id, d.error))
        elif d.action == "invalid":
            summary._fail(row.row_id, "invalid_verdict")
            if row.error != d.error:
                writes.append(ReviewWrite(row.row_id, d.error))
        else:
            to_send.append((row, d))
    stop: str | None = None
    queue = iter(to_send)
    inflight: dict[Future[Any], tuple[ReviewRow, Decision]] = {}
    while True:
        # Submitted only as slots free up, so a stop sends nothing more than what is in flight.
        while stop is None and len(inflight) < window and (item := next(queue, None)) is not None:
            row, d = item
            args = _args(d, user_of(row.row_id))
            inflight[pool.submit(client.feedback, str(row.message_id).strip(), **args)] = item
        if not inflight:
            break
        done, _ = wait(inflight, return_when=FIRST_COMPLETED)
        for future in done:
            row, d = inflight.pop(future)
            err = future.exception()
            if err is not None and not isinstance(err, DifyError):
                wait(inflight)  # a bug, not Dify's answer: keep what is known, then raise it
                reviews.record(writes)
                raise err
            now = dt.datetime.now(dt.timezone.utc)
            if err is None:
                writes.append(ReviewWrite(row.row_id, None, d.signature, now))
                _count_sent(summary, d)
            elif isinstance(err, DifyBadRequestError) and d.rating is None:
                # Dify had no feedback left to revoke (400 invalid_param): the wanted state holds.
                logger.info(
                    "row %r: Dify had no feedback to revoke (%s); recorded as revoked", row.row_id, err
                )
                writes.append(ReviewWrite(row.row_id, None, d.signature, now))
                summary.revoked += 1
            elif isinstance(err, DifyNotFoundError):
                not_found.append(ReviewWrite(row.row_id, str(err), d.signature, now))
                summary._fail(row.row_id, err.code)
            elif isinstance(err, DifyBadRequestError):
                # This row's own problem: not sent again until its verdict or note changes.
                writes.append(ReviewWrite(row.row_id, str(err), d.signature, now))
                summary._fail(row.row_id, err.code)
            else:
                summary._fail(row.row_id, err.code)
                writes.append(ReviewWrite(row.row_id, str(err)))  # stays to do: the next run sends it
                if stop is None:
                    stop = _stop_reason(err, summary)
    summary.left_pending += sum(1 for _ in queue)
    if not_found and summary.sent + summary.revoked == 0:
        # No message found yet in this run: more likely a wrong ``user`` than deleted messages,
        # so these stay to do (error noted) instead of being settled as the rows' own problem.
        writes += [ReviewWrite(w.row_id, w.error) for w in not_found]
        summary.unconfirmed_not_found += len(not_found)
        if stop is None and summary.unconfirmed_not_found >= NOT_FOUND_LIMIT:
            summary.stopped = "not_found"
            stop = (
                f"the first {summary.unconfirmed_not_found} feedbacks all got 404 'Message Not Exists.' "
                f"and none was accepted: Dify finds a message only for the user who asked it, so check "
                f"that user={user_of('<row id>')!r} is the batch's (its default is airflow-<the batch's "
                "dag_id>, and user_per_row must match the batch's); if "
                "those messages were deleted in Dify, clear their verdicts. Nothing was settled"
            )
    else:
        writes += not_found  # deleted messages: settled, not sent again until the verdict changes
    reviews.record(writes)
    return stop


def _args(d: Decision, user: str) -> dict[str, Any]:
    return {"rating": d.rating, "user": user, "content": d.content}


def _count_sent(summary: FeedbackSummary, d: Decision) -> None:
    if d.signature == REVOKED:
        summary.revoked += 1
    else:
        summary.sent += 1


def _stop_reason(err: BaseException, summary: FeedbackSummary) -> str:
    if isinstance(err, (DifyAuthError, DifyForbiddenError)):
        summary.stopped = "auth"
        return (
            f"Dify refused the credentials while sending feedback ({err}); stopped at once. What was "
            "sent is recorded; fix the dify connection's key and re-run to send the rest"
        )
    summary.stopped = "unavailable"
    return (
        f"feedback could not be sent even after retries ({err}); stopped. What was sent is "
        "recorded; re-run once Dify answers to send the rest"
    )


def _report(summary: FeedbackSummary, logger: Any) -> None:
    logger.info(
        "Feedback: %s selected, %s sent, %s revoked, %s unchanged, %s not reviewable, %s failed%s",
        *(f"{n:,}" for n in (summary.selected, summary.sent, summary.revoked)),
        *(f"{n:,}" for n in (summary.skipped_unchanged, summary.not_reviewable, summary.failed)),
        f", {summary.left_pending:,} left for the next run" if summary.left_pending else "",
    )
    if summary.not_reviewable:
        logger.warning(
            "%s row(s) have a verdict Dify cannot take (workflow app, or no message_id); ids e.g. %s",
            f"{summary.not_reviewable:,}",
            summary.not_reviewable_ids,
        )
    if summary.failed:
        logger.warning(
            "%s feedback(s) failed (%s); see feedback_error; ids e.g. %s",
            f"{summary.failed:,}",
            dict(summary.error_codes.most_common(5)),
            summary.failed_ids,
        )


def _has_text(value: Any) -> bool:
    return value is not None and bool(str(value).strip())


def _stripped(value: Any) -> Any:
    # A CHAR column on a generic engine may pad; signatures never contain spaces.
    return value.strip() if isinstance(value, str) else value


__all__ = [
    "NO_MESSAGE",
    "WORKFLOW_APP",
    "Decision",
    "FeedbackSummary",
    "ReviewSource",
    "SupportsFeedback",
    "decide",
    "send_feedback",
]
