"""Fixtures of the retrieval tests: an in-process stand-in for the embedding service's ``Encode`` (the real model)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from lorag_retrieval.encoder import Encoded


class LocalEncoder:
    """The packaged all-MiniLM-L6-v2 in process, with the embedding service's contract (unit vectors, model id);
    it records every call so tests can see what a reranker asked for."""

    def __init__(self, model) -> None:
        self.model = model
        self.calls: list[tuple[str, list[str]]] = []

    async def encode(
        self, texts: Sequence[str], input_type: str = "document", *, truncate: bool = True, field_map=None
    ) -> Encoded:
        self.calls.append((input_type, list(texts)))
        vectors = self.model.encode(list(texts), normalize_embeddings=True, show_progress_bar=False)
        return Encoded(
            vectors=np.asarray(vectors, dtype=np.float32),
            model="sentence-transformers/all-MiniLM-L6-v2",
            tokens=len(texts),
        )


@pytest.fixture(scope="session")
def minilm():
    from sentence_transformers import SentenceTransformer

    from lorag_embedding.backends.local import default_model_path

    return SentenceTransformer(str(default_model_path()), device="cpu")


@pytest.fixture
def encoder(minilm) -> LocalEncoder:
    return LocalEncoder(minilm)
