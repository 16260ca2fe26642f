"""The widely copied asyncio + aiohttp batch script, re-implemented faithfully as a baseline.

Source: the OpenAI cookbook's ``examples/api_request_parallel_processor.py``. Its design, kept
as it is: requests are read one at a time from a JSONL file; one main loop that takes the next
request (retries first), refills a requests/min and a tokens/min capacity bucket that **starts
full** (a whole minute's budget), launches at most one request per pass when both buckets have
room, and sleeps **1 ms** per pass; each request is its own task on one ``aiohttp.ClientSession``;
failures go to a retry queue until ``max_attempts``; a rate-limit error pauses the loop 15 s;
every result is **appended to a JSONL file** (open, write, close per result); the stdlib event
loop (``asyncio.run``).

Adapted to Dify, and nothing else changed:

* the call is Dify's blocking ``POST /chat-messages``; errors are Dify's ``{code, message,
  status}`` (the cookbook looks for OpenAI's ``{"error": ...}``), and a rate-limit error is a 429
  or a message saying "rate limit";
* tokens per request are estimated as characters / 4 + 15 completion tokens (the cookbook counts
  with tiktoken, which downloads its encodings at run time);
* concurrency: the script has no cap of its own but aiohttp's connection pool (100 by default);
  the bench sets that pool to the scenario's concurrency (``TCPConnector(limit=...)``);
* logging at WARNING (the script's default is INFO: a line per request), so the comparison is of
  the design, not of per-request log lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from bench.baselines.peer_report import CHAT_PATH, ThreadWatch, count_results, main, report, timed

SECONDS_TO_PAUSE_AFTER_RATE_LIMIT_ERROR = 15
SECONDS_TO_SLEEP_EACH_LOOP = 0.001  # 1 ms limits max throughput to 1,000 requests per second


@dataclass
class StatusTracker:
    """Stores metadata about the script's progress. Only one instance is created."""

    num_tasks_started: int = 0
    num_tasks_in_progress: int = 0  # script ends when this reaches 0
    num_tasks_succeeded: int = 0
    num_tasks_failed: int = 0
    num_rate_limit_errors: int = 0
    num_api_errors: int = 0  # excluding rate limit errors, counted above
    num_other_errors: int = 0
    time_of_last_rate_limit_error: float = 0  # used to cool off after hitting rate limits


@dataclass
class APIRequest:
    """Stores an API request's inputs, outputs, and other metadata. Contains a method to make an API call."""

    task_id: int
    request_json: dict
    token_consumption: int
    attempts_left: int
    metadata: dict | None
    result: list = field(default_factory=list)

    async def call_api(
        self,
        session: aiohttp.ClientSession,
        request_url: str,
        request_header: dict,
        retry_queue: asyncio.Queue,
        save_filepath: str,
        status_tracker: StatusTracker,
    ) -> None:
        """Calls the API and saves results."""
        logging.info(f"Starting request #{self.task_id}")
        error: Any = None
        try:
            async with session.post(url=request_url, headers=request_header, json=self.request_json) as resp:
                response = await resp.json()
                status = resp.status
            if status != 200 or (isinstance(response, dict) and "code" in response and "status" in response):
                logging.warning(f"Request {self.task_id} failed with error {response}")
                status_tracker.num_api_errors += 1
                error = response
                message = str(response.get("message", "")) if isinstance(response, dict) else ""
                if status == 429 or "rate limit" in message.lower():
                    status_tracker.time_of_last_rate_limit_error = time.time()
                    status_tracker.num_rate_limit_errors += 1
                    status_tracker.num_api_errors -= 1  # rate limit errors are counted separately
        except (
            Exception
        ) as e:  # catching naked exceptions is bad practice, but in this case we'll log & save them
            logging.warning(f"Request {self.task_id} failed with Exception {e}")
            status_tracker.num_other_errors += 1
            error = e
        if error:
            self.result.append(error)
            if self.attempts_left:
                retry_queue.put_nowait(self)
            else:
                logging.error(
                    f"Request {self.request_json} failed after all attempts. Saving errors: {self.result}"
                )
                data = (
                    [self.request_json, [str(e) for e in self.result], self.metadata]
                    if self.metadata
                    else [self.request_json, [str(e) for e in self.result]]
                )
                append_to_jsonl(data, save_filepath)
                status_tracker.num_tasks_in_progress -= 1
                status_tracker.num_tasks_failed += 1
        else:
            data = (
                [self.request_json, response, self.metadata]
                if self.metadata
                else [self.request_json, response]
            )
            append_to_jsonl(data, save_filepath)
            status_tracker.num_tasks_in_progress -= 1
            status_tracker.num_tasks_succeeded += 1
            logging.debug(f"Request {self.task_id} saved to {save_filepath}")


def append_to_jsonl(data: Any, filename: str) -> None:
    """Append a json payload to the end of a jsonl file."""
    json_string = json.dumps(data)
    with open(filename, "a") as f:
        f.write(json_string + "\n")


def num_tokens_consumed_from_request(request_json: dict) -> int:
    """Prompt characters / 4 plus the completion budget (the cookbook's tiktoken count, estimated)."""
    prompt = request_json.get("query") or ""
    return len(prompt) // 4 + 15


def task_id_generator_function():  # type: ignore[no-untyped-def]
    """Generate integers 0, 1, 2, and so on."""
    task_id = 0
    while True:
        yield task_id
        task_id += 1


async def process_api_requests_from_file(
    requests_filepath: str,
    save_filepath: str,
    request_url: str,
    api_key: str,
    max_requests_per_minute: float,
    max_tokens_per_minute: float,
    max_attempts: int,
    connection_limit: int,
    launches: list[float],
) -> StatusTracker:
    """Processes API requests in parallel, throttling to stay under rate limits."""
    request_header = {"Authorization": f"Bearer {api_key}"}

    # initialize trackers
    queue_of_requests_to_retry: asyncio.Queue = asyncio.Queue()
    task_id_generator = task_id_generator_function()  # generates integer IDs of 0, 1, 2, ...
    status_tracker = StatusTracker()  # single instance to track a collection of variables
    next_request = None  # variable to hold the next request to call

    # initialize available capacity counts
    available_request_capacity = max_requests_per_minute
    available_token_capacity = max_tokens_per_minute
    last_update_time = time.time()

    # initialize flags
    file_not_finished = True  # after file is empty, we'll skip reading it
    tasks = set()  # (the cookbook drops its task references; kept here so none is collected early)

    with open(requests_filepath) as file:
        # `requests` will provide requests one at a time
        requests = file.__iter__()
        connector = aiohttp.TCPConnector(limit=connection_limit)
        async with aiohttp.ClientSession(connector=connector) as session:
            while True:
                # get next request (if one is not already waiting for capacity)
                if next_request is None:
                    if not queue_of_requests_to_retry.empty():
                        next_request = queue_of_requests_to_retry.get_nowait()
                        logging.debug(f"Retrying request {next_request.task_id}: {next_request}")
                    elif file_not_finished:
                        try:
                            # get new request
                            request_json = json.loads(next(requests))
                            next_request = APIRequest(
                                task_id=next(task_id_generator),
                                request_json=request_json,
                                token_consumption=num_tokens_consumed_from_request(request_json),
                                attempts_left=max_attempts,
                                metadata=request_json.pop("metadata", None),
                            )
                            status_tracker.num_tasks_started += 1
                            status_tracker.num_tasks_in_progress += 1
                            logging.debug(f"Reading request {next_request.task_id}: {next_request}")
                        except StopIteration:
                            # if file runs out, set flag to stop reading it
                            logging.debug("Read file exhausted")
                            file_not_finished = False

                # update available capacity
                current_time = time.time()
                seconds_since_update = current_time - last_update_time
                available_request_capacity = min(
                    available_request_capacity + max_requests_per_minute * seconds_since_update / 60.0,
                    max_requests_per_minute,
                )
                available_token_capacity = min(
                    available_token_capacity + max_tokens_per_minute * seconds_since_update / 60.0,
                    max_tokens_per_minute,
                )
                last_update_time = current_time

                # if enough capacity available, call API
                if next_request:
                    next_request_tokens = next_request.token_consumption
                    if available_request_capacity >= 1 and available_token_capacity >= next_request_tokens:
                        # update counters
                        available_request_capacity -= 1
                        available_token_capacity -= next_request_tokens
                        next_request.attempts_left -= 1

                        # call API
                        launches.append(time.monotonic())
                        task = asyncio.create_task(
                            next_request.call_api(
                                session=session,
                                request_url=request_url,
                                request_header=request_header,
                                retry_queue=queue_of_requests_to_retry,
                                save_filepath=save_filepath,
                                status_tracker=status_tracker,
                            )
                        )
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                        next_request = None  # reset next_request to empty

                # if all tasks are finished, break
                if status_tracker.num_tasks_in_progress == 0:
                    break

                # main loop sleeps briefly so concurrent tasks can run
                await asyncio.sleep(SECONDS_TO_SLEEP_EACH_LOOP)

                # if a rate limit error was hit recently, pause to cool down
                seconds_since_rate_limit_error = time.time() - status_tracker.time_of_last_rate_limit_error
                if seconds_since_rate_limit_error < SECONDS_TO_PAUSE_AFTER_RATE_LIMIT_ERROR:
                    remaining_seconds_to_pause = (
                        SECONDS_TO_PAUSE_AFTER_RATE_LIMIT_ERROR - seconds_since_rate_limit_error
                    )
                    await asyncio.sleep(remaining_seconds_to_pause)
                    # ^e.g., if pause is 15 seconds and call was at 10 seconds, we'll pause for 5 more
                    until = (
                        status_tracker.time_of_last_rate_limit_error + SECONDS_TO_PAUSE_AFTER_RATE_LIMIT_ERROR
                    )
                    logging.warning(f"Pausing to cool down until {time.ctime(until)}")

    # after finishing, log final status
    logging.info(f"Parallel processing complete. Results saved to {save_filepath}")
    if status_tracker.num_tasks_failed > 0:
        logging.warning(
            f"{status_tracker.num_tasks_failed} / {status_tracker.num_tasks_started} requests failed. "
            f"Errors logged to {save_filepath}."
        )
    if status_tracker.num_rate_limit_errors > 0:
        logging.warning(
            f"{status_tracker.num_rate_limit_errors} rate limit errors received. "
            "Consider running at a lower rate."
        )
    return status_tracker


#: "no limit" for a bucket: capacity that never runs out within a bench run.
UNLIMITED = 1e12


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """One run over ``spec["requests"]`` (JSONL), results appended to ``spec["results"]``."""
    logging.basicConfig(level=getattr(logging, spec.get("logging_level", "WARNING")))
    rpm = float(spec.get("rpm") or UNLIMITED)
    tpm = float(spec.get("tpm") or UNLIMITED)
    launches: list[float] = []
    threads = ThreadWatch()

    async def go() -> StatusTracker:
        threads.start()
        try:
            return await asyncio.wait_for(
                process_api_requests_from_file(
                    spec["requests"],
                    spec["results"],
                    spec["url"].rstrip("/") + CHAT_PATH,
                    spec["key"],
                    rpm,
                    tpm,
                    int(spec.get("max_attempts", 5)),
                    int(spec["concurrency"]),
                    launches,
                ),
                timeout=float(spec.get("timeout", 600)),
            )
        finally:
            threads.stop()

    tracker, started, wall, cpu = timed(asyncio.run, go)
    ok, bad = count_results(spec["results"])
    return report(
        peer="cookbook",
        rows=tracker.num_tasks_started,
        succeeded=ok,
        failed=bad,
        wall=wall,
        cpu=cpu,
        threads_peak=threads.peak,
        launches=launches,
        started=started,
        extra={
            "rate_limit_errors": tracker.num_rate_limit_errors,
            "api_errors": tracker.num_api_errors,
            "other_errors": tracker.num_other_errors,
            "event_loop": "asyncio",
        },
    )


if __name__ == "__main__":
    raise SystemExit(main(run))
