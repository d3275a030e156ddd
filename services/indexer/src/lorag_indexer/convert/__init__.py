"""The edge of the indexer: protobuf requests → validated domain objects, domain results → protobuf responses.

Everything a request can get wrong without asking Weaviate is checked here and reported as one
``InvalidArgument`` listing every bad field (``BadRequest`` field violations with proto paths such as
``chunks[3].vector``). Checks that need the collection's schema (vector length, metadata types, filter fields) take
its :class:`~lorag_indexer.domain.CollectionInfo`. Nothing here knows Weaviate: filters become domain filter trees.

One module per concern: ``names`` (collection and tenant names), ``paging`` (page sizes and tokens),
``collections`` (collections and tenants), ``chunks`` (chunks, metadata values, documents), ``filters`` and
``search``. The handlers use the names re-exported here.
"""

from lorag_indexer.convert.chunks import chunk_to_pb, chunks_from_pb, document_ids, document_state_to_pb
from lorag_indexer.convert.collections import CollectionDefaults, collection_spec, collection_to_pb, tenant_to_pb
from lorag_indexer.convert.filters import filter_from_pb
from lorag_indexer.convert.names import collection_and_tenant, collection_name
from lorag_indexer.convert.paging import decode_page_token, encode_page_token, page_size
from lorag_indexer.convert.search import hit_to_pb, search_query, timing

__all__ = [
    "CollectionDefaults",
    "chunk_to_pb",
    "chunks_from_pb",
    "collection_and_tenant",
    "collection_name",
    "collection_spec",
    "collection_to_pb",
    "decode_page_token",
    "document_ids",
    "document_state_to_pb",
    "encode_page_token",
    "filter_from_pb",
    "hit_to_pb",
    "page_size",
    "search_query",
    "tenant_to_pb",
    "timing",
]
