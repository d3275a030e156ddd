"""Process bookkeeping for a stack that outlives the CLI: pid files, liveness, termination, log tails.

`lorag up` returns while its components keep running, so a later `lorag status`/`down` only has what is on disk.
A pid file therefore records the command line too: a pid reused by an unrelated process is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

_PROC = Path("/proc")


@dataclass(frozen=True)
class PidRecord:
    """What `up` wrote about a started component: its pid, argv and where it listens."""

    pid: int
    argv: list[str]
    endpoints: dict[str, Any] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)

    def write(self, path: Path) -> None:
        """Write atomically, so a concurrent reader never sees half a record."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> PidRecord | None:
        """The record at `path`, or None if absent or unreadable (treated as not running)."""
        try:
            data = json.loads(path.read_text())
            return cls(
                pid=int(data["pid"]),
                argv=[str(a) for a in data.get("argv", [])],
                endpoints=dict(data.get("endpoints", {})),
                started_at=float(data.get("started_at", 0.0)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool:
        """True if this pid still runs this record's command line."""
        return is_running(self.pid, self.argv)


# Children this process spawned, kept so they are reaped through their Popen (which then knows its exit code)
# and are not reported by Popen.__del__ as "still running" when a caller drops its reference.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def spawn(
    argv: list[str],
    *,
    env: Mapping[str, str],
    log: IO[bytes],
    cwd: Path | None = None,
    detach: bool = True,
) -> subprocess.Popen[bytes]:
    """Start `argv` with stdout and stderr into `log`; `detach` gives it its own session (outlives us)."""
    proc = subprocess.Popen(
        argv,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        start_new_session=detach,
    )
    _CHILDREN[proc.pid] = proc
    return proc


def returncode(pid: int) -> int | None:
    """The exit code of a child spawned here, once it has exited; None otherwise."""
    proc = _CHILDREN.get(pid)
    return proc.poll() if proc is not None else None


def _reap(pid: int) -> None:
    """Collect `pid` if it is our own exited child, so it does not linger as a zombie."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        proc.poll()
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _is_zombie(pid: int) -> bool:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    # Format: "pid (comm) S ..."; comm may contain spaces or parentheses, so split after the last ')'.
    return stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X")


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def exists(pid: int) -> bool:
    """True if `pid` is a live (non-zombie) process; reaps it if it is our exited child."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def is_running(pid: int, argv: list[str] | None = None) -> bool:
    """True if `pid` is alive and, where /proc tells, still runs `argv` (guards against pid reuse).

    A child spawned by this process is judged by its Popen, which knows for certain: reading /proc while the
    child starts can briefly disagree with `argv`, and a live child must never be reported as exited.
    """
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    if pid <= 0 or not exists(pid):
        return False
    if argv and _PROC.is_dir():
        actual = _cmdline(pid)
        if actual is not None and actual != argv:
            return False
    return True


def _signal(pid: int, sig: int, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if not exists(pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def terminate(pid: int, grace: float = 15.0) -> bool:
    """SIGTERM `pid` (its whole process group when it leads one), SIGKILL after `grace` seconds.

    Returns True if a running process was stopped, False if it was already gone.
    """
    if not exists(pid):
        return False
    try:
        group = os.getpgid(pid) == pid
    except ProcessLookupError:
        return False
    _signal(pid, signal.SIGTERM, group)
    if not _wait_gone(pid, grace):
        _signal(pid, signal.SIGKILL, group)
        _wait_gone(pid, 10.0)
    elif group:
        # The leader is gone; anything it left behind in its group goes too.
        _signal(pid, signal.SIGKILL, group)
    return True


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, or '' if it does not exist."""
    try:
        with path.open("r", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip("\n")
    except OSError:
        return ""


def open_log(path: Path, header: str) -> IO[bytes]:
    """Open a component log for appending, marking where this run starts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = path.open("ab", buffering=0)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    fh.write(f"\n=== {stamp} {header} ===\n".encode())
    return fh


class ManagedServer(ABC):
    """What a locally launched server (Weaviate, Jaeger) shares: stop, log tail and use as a context manager.

    Subclasses set ``self._proc`` in ``start()``, define ``wait_ready()`` and ``log_path``, and may change
    ``stop_grace`` (seconds between SIGTERM and SIGKILL).
    """

    _proc: subprocess.Popen[bytes] | None
    log_path: Path
    stop_grace: float = 15.0

    @abstractmethod
    def start(self, *, detach: bool = False) -> int:
        """Launch the server; return its pid."""

    @abstractmethod
    def wait_ready(self, timeout: float = 60.0) -> None:
        """Return once the server answers; raise when it does not within ``timeout`` seconds."""

    def stop(self, grace: float | None = None) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            terminate(proc.pid, self.stop_grace if grace is None else grace)
            with contextlib.suppress(subprocess.TimeoutExpired):  # terminate() already SIGKILLed a laggard
                proc.wait(timeout=5)

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
