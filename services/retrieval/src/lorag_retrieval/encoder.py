"""Query and passage vectors from the embedding service, as the pipeline and the fusion reranker use them.

The call itself is the SDK's (:meth:`lorag_client.EmbeddingClient.embed_all`: split to the service's batch limit,
retried as its contract allows, failures raised as lorag errors); this module only renames the fields a failure
names to the caller's request and turns the response into a float32 matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal

import numpy as np

from lorag_client import EmbeddingClient
from lorag_core.downstream import FieldMap, renamed_fields


@dataclass
class Encoded:
    """Vectors for a list of texts (rows in input order), the model that made them and the tokens it read."""

    vectors: np.ndarray  # float32 [n, dimensions]
    model: str
    tokens: int = 0


class Encoder:
    """Embeds texts through the embedding service; ``field_map`` renames ``texts[i]`` in a failure's violations."""

    def __init__(self, client: EmbeddingClient) -> None:
        self.client = client

    async def encode(
        self,
        texts: Sequence[str],
        input_type: Literal["query", "document"] = "document",
        *,
        truncate: bool = True,
        field_map: FieldMap | None = None,
    ) -> Encoded:
        with renamed_fields(field_map) if field_map is not None else nullcontext():
            response = await self.client.embed_all(texts, input_type=input_type, truncate=truncate)
        vectors = np.asarray([e.values for e in response.embeddings], dtype=np.float32)
        if not len(vectors):
            vectors = np.zeros((0, 0), dtype=np.float32)
        return Encoded(vectors=vectors, model=response.model, tokens=int(response.usage.prompt_tokens))

    async def close(self) -> None:
        await self.client.close()


__all__ = ["Encoded", "Encoder"]
