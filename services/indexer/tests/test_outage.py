"""Outages: Weaviate unreachable → UNAVAILABLE (never INTERNAL) and NOT_SERVING; back → served again, nothing lost.

The recovery test runs its own private Weaviate (the session's is shared and must stay up), stops it under a stream
of writes, and starts it again on the same ports.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lorag.indexer.v1 import indexer_service_pb2 as pb
from lorag_cli.stack.ports import PortPicker
from lorag_cli.stack.weaviate import WeaviateServer
from lorag_client import IndexerClient
from lorag_client.indexer import chunk_record
from lorag_core.errors import LoragError, Unavailable
from lorag_indexer.config import IndexerSettings
from lorag_indexer.server import create_app

pytestmark = pytest.mark.service

SERVICE = "lorag.indexer.v1.IndexerService"


def closed_ports() -> tuple[int, int]:
    """Two ports nothing listens on (picked free, then released)."""
    with PortPicker() as picker:
        return picker.single(), picker.single()


async def health(address: str) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE))
    return reply.status


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout} s")
        await asyncio.sleep(0.1)


def record(doc: str, i: int) -> pb.ChunkRecord:
    return chunk_record(
        str(uuid.uuid5(uuid.NAMESPACE_URL, f"{doc}/{i}")), doc, f"{doc} part {i}", [1.0, float(i)], chunk_index=i
    )


async def test_unreachable_weaviate_answers_unavailable_at_once_and_is_not_serving():
    http_port, grpc_port = closed_ports()
    settings = IndexerSettings(
        port=0, weaviate_http_port=http_port, weaviate_grpc_port=grpc_port, health_interval_seconds=0.2
    )
    app, store = create_app(settings)
    await app.start()
    await store.start(wait=False)
    try:
        # A plain channel (no client-side retries) shows how fast the indexer itself answers.
        async with grpc.aio.insecure_channel(app.address) as channel:
            client = IndexerClient(app.address, timeout=10, channel=channel)
            calls = [
                client.get_collection("docs"),
                client.list_collections(),
                client.search("docs", "acme", text="x"),
                client.upsert_chunks("docs", "acme", [record("d", 0)]),
                client.get_document_states("docs", "acme", ["d"]),
            ]
            for call in calls:
                started = time.monotonic()
                with pytest.raises(Unavailable) as failure:
                    await call
                assert failure.value.reason == "DEPENDENCY_UNAVAILABLE"
                assert time.monotonic() - started < 1
            # Bad input is still INVALID_ARGUMENT: it is refused before Weaviate is needed.
            with pytest.raises(LoragError) as refused:
                await client.get_collection("9 not a name")
            assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert await health(app.address) == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await app.stop(0)
        await store.close()


async def test_startup_gives_up_after_the_connect_timeout():
    http_port, grpc_port = closed_ports()
    _, store = create_app(
        IndexerSettings(port=0, weaviate_http_port=http_port, weaviate_grpc_port=grpc_port, connect_timeout_seconds=0.5)
    )
    try:
        with pytest.raises(Unavailable, match="did not become reachable"):
            await store.start()
    finally:
        await store.close()


def test_bad_configuration_fails_fast_naming_the_variable():
    env = {**os.environ, "LORAG_WEAVIATE_HTTP_PORT": "abc", "LORAG_INDEXER_BATCH_SIZE": "0"}
    done = subprocess.run(
        [sys.executable, "-m", "lorag_indexer"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert "LORAG_WEAVIATE_HTTP_PORT='abc'" in done.stderr
    assert "LORAG_INDEXER_BATCH_SIZE='0'" in done.stderr


async def test_outage_and_recovery_lose_nothing_acknowledged(tmp_path):
    server = WeaviateServer(tmp_path / "data", log_path=tmp_path / "weaviate.log")
    await asyncio.to_thread(server.__enter__)
    app = store = None
    try:
        settings = IndexerSettings(
            port=0,
            weaviate_host=server.host,
            weaviate_http_port=server.http_port,
            weaviate_grpc_port=server.grpc_port,
            health_interval_seconds=0.3,
            write_backoff_seconds=0.05,
        )
        app, store = create_app(settings)
        await app.start()
        await store.start()
        await app.set_serving()
        async with IndexerClient(app.address, timeout=10) as client:
            await client.create_collection("outage", 2)
            acknowledged: list[str] = []
            codes: set[grpc.StatusCode] = set()
            stop_writing = asyncio.Event()

            async def writer() -> None:
                n = 0
                while not stop_writing.is_set():
                    doc = f"doc-{n:04d}"
                    try:
                        await client.upsert_chunks("outage", "acme", [record(doc, 0), record(doc, 1)])
                        acknowledged.append(doc)
                    except LoragError as exc:
                        codes.add(exc.code)
                    n += 1
                    await asyncio.sleep(0.02)

            writing = asyncio.create_task(writer())
            await wait_for(lambda: _true(len(acknowledged) >= 5), 10, "five writes acknowledged")

            await asyncio.to_thread(server.stop)
            await wait_for(
                lambda: _is(health(app.address), health_pb2.HealthCheckResponse.NOT_SERVING), 5, "NOT_SERVING"
            )
            with pytest.raises(Unavailable):
                await client.search("outage", "acme", vector=[1.0, 0.0])
            during = len(acknowledged)

            await asyncio.to_thread(server.__enter__)  # the same ports and data directory
            await wait_for(lambda: _is(health(app.address), health_pb2.HealthCheckResponse.SERVING), 15, "SERVING")
            await wait_for(lambda: _true(len(acknowledged) >= during + 5), 10, "writes acknowledged again")
            stop_writing.set()
            await writing

            assert codes <= {grpc.StatusCode.UNAVAILABLE}, codes  # never INTERNAL, never a silent partial write
            states = await client.get_document_states("outage", "acme", acknowledged)
            assert [s.document_id for s in states if s.chunk_count != 2] == []
            hits = await client.search("outage", "acme", vector=[1.0, 0.0], limit=5)
            assert hits.hits
    finally:
        if app is not None:
            await app.stop(0)
        if store is not None:
            await store.close()
        await asyncio.to_thread(server.stop)


async def _true(value: bool) -> bool:
    return value


async def _is(status_call: Awaitable[int], want: int) -> bool:
    return await status_call == want
