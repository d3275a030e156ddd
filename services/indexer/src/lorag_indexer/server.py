"""Wires the Weaviate store into the lorag chassis, with health that follows Weaviate's reachability."""

from __future__ import annotations

from grpc_health.v1 import health_pb2

from lorag.indexer.v1 import indexer_service_pb2 as pb
from lorag.indexer.v1 import indexer_service_pb2_grpc as pb_grpc
from lorag_core.server import ServiceApp
from lorag_indexer.backends.weaviate import WeaviateStore
from lorag_indexer.config import IndexerSettings
from lorag_indexer.convert import CollectionDefaults
from lorag_indexer.service import IndexerServicer

SERVICE = pb.DESCRIPTOR.services_by_name["IndexerService"]


def create_app(settings: IndexerSettings) -> tuple[ServiceApp, WeaviateStore]:
    """The indexer, not yet started: run it with ``lorag_core.server.serve(app, store.start, store.close)``.

    Health is NOT_SERVING until ``store.start()`` has seen Weaviate, and goes NOT_SERVING again (then back to
    SERVING) whenever the store's monitor finds Weaviate unreachable (then reachable).
    """
    app = ServiceApp("indexer", settings)

    async def on_availability(up: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
        for service in ("", SERVICE.full_name):
            await app.health.set(service, status)

    store = WeaviateStore(
        settings, tracer=app.telemetry.tracer, meter=app.telemetry.meter, on_availability=on_availability
    )
    defaults = CollectionDefaults(
        ef=settings.hnsw_ef,
        ef_construction=settings.hnsw_ef_construction,
        max_connections=settings.hnsw_max_connections,
        bm25_k1=settings.bm25_k1,
        bm25_b=settings.bm25_b,
    )
    app.add_service(SERVICE, pb_grpc.add_IndexerServiceServicer_to_server, IndexerServicer(store, defaults))
    return app, store
