"""lorag retrieval service: embed the query, search the indexer, rerank, MMR (``python -m lorag_retrieval``)."""
