"""The container health probe against a real chassis server on port 0: exit 0 only when SERVING."""

from __future__ import annotations

import asyncio
import socket
import sys

import pytest
from chassis_probe import PROBE, Probe, probe_pb2_grpc

from lorag_core import probe
from lorag_core.config import ServiceSettings
from lorag_core.server import ServiceApp

pytestmark = pytest.mark.service


async def run_probe(*args: str) -> tuple[int, str]:
    """Run ``python -m lorag_core.probe`` as Docker's HEALTHCHECK would; return (exit code, its output)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lorag_core.probe", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode is not None  # communicate() waits for the exit
    return proc.returncode, out.decode()


async def test_probe_follows_health_from_not_serving_to_serving_to_shutdown():
    app = ServiceApp("probe", ServiceSettings(port=0))
    app.add_service(PROBE, probe_pb2_grpc.add_ProbeServiceServicer_to_server, Probe())
    await app.start()
    try:
        code, out = await run_probe("--address", app.address)
        assert (code, out.strip().rsplit(": ", 1)[-1]) == (1, "NOT_SERVING"), out  # still "loading its models"
        await app.set_serving()
        code, out = await run_probe("--address", app.address, "--service", PROBE.full_name)
        assert (code, out.strip().rsplit(": ", 1)[-1]) == (0, "SERVING"), out
        # A service the server does not host is not healthy, whatever the server's own status.
        serving, seen = await asyncio.to_thread(probe.check, app.address, "lorag.nope.v1.NopeService")
        assert (serving, seen.split(":")[0]) == (False, "NOT_FOUND")
        await app.health.enter_graceful_shutdown()  # what SIGTERM does first
        assert await asyncio.to_thread(probe.main, ["--address", app.address]) == 1
    finally:
        await app.stop(0)


async def test_probe_fails_when_nothing_listens():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    serving, seen = await asyncio.to_thread(probe.check, f"127.0.0.1:{port}", "", 2.0)
    assert serving is False
    assert seen.split(":")[0] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
