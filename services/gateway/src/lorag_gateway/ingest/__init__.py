"""The gateway's ingestion, without gRPC: ``parsing`` (content → normalised text and title), ``chunking``
(token-aware chunks with exact character spans), ``documents`` (validation, ids, hashes, ``prepare_document``)
and ``pipeline`` (prepare → embed → index, many documents at once)."""
