"""The indexer's store on Weaviate, one module per concern (see ``store``): ``connection`` (client, health monitor,
bounded calls), ``errors`` (classification), ``retries`` (write retries), ``schema`` (collections, tenants,
properties), ``chunks`` (writes and document reads), ``search`` (queries), ``filters`` (domain → Weaviate filters).
"""

from lorag_indexer.backends.weaviate.store import WeaviateStore

__all__ = ["WeaviateStore"]
