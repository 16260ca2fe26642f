"""Start, watch and reliably stop the Airflow processes of a system test.

Every process is started in its own session (so its process group can be killed as a whole) and
carries a per-test marker in its environment. Children inherit the environment, so even a
grandchild that escaped its group (a double fork, a Celery pool process re-parented to init) is
found again by scanning ``/proc/*/environ`` for the marker: that is how the test proves it left
nothing behind, and it only ever signals processes it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

MARKER_ENV = "DIFY_SYSTEM_TEST_MARKER"


@dataclass
class Started:
    name: str
    proc: subprocess.Popen
    log: Path
    handle: IO[bytes]


class Processes:
    """The processes one test started; :meth:`stop_all` in ``finally`` ends them all.

    :param log_dir: each process writes stdout+stderr to ``<log_dir>/<name>.log``.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        self.marker = f"dify-systest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._started: list[Started] = []
        #: Processes found by the marker after their group was killed (they had left it).
        self.escaped: list[str] = []

    def _env(self, env: Mapping[str, str]) -> dict[str, str]:
        return {**env, MARKER_ENV: self.marker}

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Started:
        log = self.log_dir / f"{name}.log"
        handle = log.open("ab")
        proc = subprocess.Popen(
            list(argv),
            env=self._env(env),
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started = Started(name, proc, log, handle)
        self._started.append(started)
        return started

    def run(self, name: str, argv: Sequence[str], env: Mapping[str, str], timeout: float) -> str:
        """Run a short command to completion (bounded); its group is killed on timeout."""
        started = self.start(name, argv, env)
        try:
            code = started.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._kill_group(started.proc.pid, signal.SIGKILL)
            started.proc.wait(timeout=10)
            raise AssertionError(f"{name} did not finish in {timeout:.0f}s\n{self.tail(name)}") from None
        finally:
            started.handle.close()
        if code != 0:
            raise AssertionError(f"{name} exited with {code}\n{self.tail(name)}")
        return started.log.read_text(errors="replace")

    def check_alive(self, *names: str) -> None:
        """Fail fast (with the log tail) when a long-running component died."""
        for s in self._started:
            if (not names or s.name in names) and s.proc.poll() is not None and not s.handle.closed:
                raise AssertionError(f"{s.name} exited with {s.proc.returncode}\n{self.tail(s.name)}")

    def tail(self, name: str, lines: int = 60) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return f"--- {name}: no log"
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return f"--- {name} ({path}) last {len(text)} lines:\n" + "\n".join(text)

    def log_contains(self, name: str, text: str) -> bool:
        path = self.log_dir / f"{name}.log"
        return path.exists() and text in path.read_text(errors="replace")

    def tails(self, lines: int = 60) -> str:
        return "\n".join(self.tail(s.name, lines) for s in self._started)

    @staticmethod
    def _kill_group(pgid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def stop_all(self, grace: float = 20.0) -> list[str]:
        """Stop every started process; returns what was still alive afterwards (should be nothing).

        SIGTERM goes to the group leaders only, all at once: Airflow components and Celery workers
        then shut their own children down cleanly (a Celery warm shutdown lets a finishing task
        report). After the shared grace period every group is SIGKILLed, and finally any process
        still carrying the marker (it left its group) is killed by PID and noted in :attr:`escaped`.
        """
        # Leaders are only reaped after their group was killed: while a leader is unreaped (alive
        # or a zombie) its pid, hence the group id, cannot be reused by an unrelated process.
        running = [s for s in self._started if s.proc.returncode is None]
        for s in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(s.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and not all(_exited(s.proc.pid) for s in running):
            time.sleep(0.1)
        for s in running:
            self._kill_group(s.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                s.proc.wait(timeout=10)
        for s in self._started:
            if not s.handle.closed:
                s.handle.close()
        left = self.leftovers()
        self.escaped += [f"{pid} {cmd}" for pid, cmd in left]
        deadline = time.monotonic() + 10
        while left and time.monotonic() < deadline:
            for pid, _ in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            left = self.leftovers()
        return [f"{pid} {cmd}" for pid, cmd in left]

    def leftovers(self) -> list[tuple[int, str]]:
        """Live (non-zombie) processes carrying this test's marker."""
        needle = f"{MARKER_ENV}={self.marker}".encode()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                if needle not in (entry / "environ").read_bytes().split(b"\0"):
                    continue
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue  # exited meanwhile, or not ours to read
            found.append((int(entry.name), cmd[:200]))
        return found


def _exited(pid: int) -> bool:
    """Has our child ``pid`` exited? Does not reap it (WNOWAIT)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True
