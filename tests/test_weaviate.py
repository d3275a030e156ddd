"""The real Weaviate the tests run: multi-tenant collection, our own vectors, tenant isolation."""

from __future__ import annotations

import uuid

import pytest
from weaviate import connect_to_local
from weaviate.classes.config import Configure, DataType, Property
from weaviate.classes.data import DataObject
from weaviate.classes.query import MetadataQuery
from weaviate.classes.tenants import Tenant

from lorag_cli.stack.weaviate import WeaviateServer

pytestmark = pytest.mark.service

VECTORS = {
    "alpha": [1.0, 0.0, 0.0, 0.0],
    "beta": [0.0, 1.0, 0.0, 0.0],
    "gamma": [0.0, 0.0, 0.6, 0.8],
}


@pytest.fixture
def client(weaviate: WeaviateServer):
    client = connect_to_local(host=weaviate.host, port=weaviate.http_port, grpc_port=weaviate.grpc_port)
    try:
        yield client
    finally:
        client.close()


def test_ready_endpoint(weaviate: WeaviateServer) -> None:
    assert weaviate.is_ready()
    assert weaviate.lorag_env()["LORAG_WEAVIATE_URL"] == weaviate.http_url


def test_multi_tenant_self_provided_vectors(client) -> None:
    name = f"Docs_{uuid.uuid4().hex[:8]}"
    collection = client.collections.create(
        name,
        vector_config=Configure.Vectors.self_provided(),
        multi_tenancy_config=Configure.multi_tenancy(enabled=True),
        properties=[Property(name="text", data_type=DataType.TEXT), Property(name="n", data_type=DataType.INT)],
    )
    try:
        collection.tenants.create([Tenant(name="acme"), Tenant(name="globex")])
        acme = collection.with_tenant("acme")
        ids = {word: uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/acme/{word}") for word in VECTORS}
        result = acme.data.insert_many(
            [
                DataObject(properties={"text": word, "n": i}, uuid=ids[word], vector=vector)
                for i, (word, vector) in enumerate(VECTORS.items())
            ]
        )
        assert not result.has_errors, result.errors

        # By id: properties and the vector we supplied come back unchanged.
        obj = acme.query.fetch_object_by_id(ids["gamma"], include_vector=True)
        assert obj is not None
        assert obj.properties == {"text": "gamma", "n": 2}
        assert obj.vector["default"] == pytest.approx(VECTORS["gamma"])

        # By vector: the nearest object is the one with that vector, at distance ~0.
        hits = acme.query.near_vector(
            near_vector=[0.0, 0.1, 0.0, 0.0], limit=3, return_metadata=MetadataQuery(distance=True)
        ).objects
        assert hits[0].properties["text"] == "beta"
        assert hits[0].uuid == ids["beta"]
        assert hits[0].metadata.distance == pytest.approx(0.0, abs=1e-5)
        assert len(hits) == 3
        assert len(acme.query.fetch_objects(limit=10).objects) == 3

        # Another tenant sees nothing of acme's.
        globex = collection.with_tenant("globex")
        assert globex.query.fetch_objects(limit=10).objects == []
        assert globex.query.fetch_object_by_id(ids["alpha"]) is None
        assert globex.query.near_vector(near_vector=VECTORS["alpha"], limit=3).objects == []
    finally:
        client.collections.delete(name)
