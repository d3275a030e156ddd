"""Fixtures for chassis tests: probe servers on port 0 (see chassis_probe.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from chassis_probe import probe_pb2_grpc, start_probe


@pytest.fixture
async def probe():
    app = await start_probe()
    yield app
    await app.stop(0)


@pytest.fixture
async def probe_stub(probe):
    async with grpc.aio.insecure_channel(probe.address) as channel:
        yield probe_pb2_grpc.ProbeServiceStub(channel)
