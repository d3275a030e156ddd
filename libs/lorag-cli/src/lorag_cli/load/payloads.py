"""What `lorag load` sends: the RPCs of each service, realistic requests for them, and the setup they need.

Every call goes through the SDK client of the service under load (``lorag_client.CLIENTS``), made with its
retries off (a retried call would hide the failure its caller saw): ``ServiceClient.invoke`` or ``invoke_stream``
sends the requests built here, and a failed call raises a ``LoragError`` whose code the report counts.

Texts come from real prose (this repository's ``docs/`` by default, or ``--corpus``), cut into sentences of
varying length; queries are word spans of those sentences, so keyword search finds something and dense search
sees natural language. Requests are built ahead into a pool (``Workload.request(i)`` picks ``pool[i % n]``), so
building them costs nothing during the measured window; streamed uploads (IngestDocuments, UploadDataset) are
built per call so that each carries new content.

Some RPCs need state before they can succeed; prepare (``lorag_cli.load.prepare``) creates it and says what it did:

- a collection with documents (indexer Search/ListDocuments/BatchGetDocumentStates, retrieval Retrieve, gateway
  Retrieve/Ask/AskStream): when the tenant of the collection is missing or empty, the corpus files are ingested
  through the gateway, or, with no gateway reachable, written straight to the indexer (vectors from the embedding
  service, else random unit vectors);
- query vectors for indexer Search: the embedding service's, else random unit vectors of the collection's size;
- a dataset for training GetDataset: a small completion dataset uploaded as ``lorag-load``.

RPCs that write (UpsertChunks, IngestDocuments, UploadDataset) are never defaults: they run only when named
with ``--rpc``.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import json
import math
import random
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from lorag.common.v1 import common_pb2
from lorag.indexer.v1 import indexer_service_pb2
from lorag_client import CLIENTS, IndexerClient, ServiceClient, TrainingClient, sampling_params
from lorag_client import retrieval_options as sdk_retrieval_options
from lorag_client.indexer import chunk_record

Kind = Literal["unary", "server_stream", "client_stream", "bidi_stream"]

# The contract's service name, e.g. "EmbeddingService", by the service's short name.
SERVICE_PACKAGES = {service: client.descriptor.name for service, client in CLIENTS.items()}


@dataclass(frozen=True)
class RpcSpec:
    """One RPC the load tool can drive."""

    name: str
    kind: Kind = "unary"
    mutates: bool = False  # Writes state: never a default, only run when named with --rpc.
    needs_corpus: bool = False  # Needs a collection/tenant holding documents.


RPCS: dict[str, dict[str, RpcSpec]] = {
    "embedding": {s.name: s for s in (RpcSpec("Embed"), RpcSpec("Info"))},
    "indexer": {
        s.name: s
        for s in (
            RpcSpec("Search", needs_corpus=True),
            RpcSpec("GetCollection", needs_corpus=True),
            RpcSpec("ListCollections"),
            RpcSpec("ListTenants", needs_corpus=True),
            RpcSpec("ListDocuments", needs_corpus=True),
            RpcSpec("BatchGetDocumentStates", needs_corpus=True),
            RpcSpec("UpsertChunks", mutates=True, needs_corpus=True),
        )
    },
    "retrieval": {s.name: s for s in (RpcSpec("Retrieve", needs_corpus=True), RpcSpec("Rerank"))},
    "gateway": {
        s.name: s
        for s in (
            RpcSpec("Retrieve", needs_corpus=True),
            RpcSpec("Ask", needs_corpus=True),
            RpcSpec("AskStream", "server_stream", needs_corpus=True),
            RpcSpec("IngestDocuments", "bidi_stream", mutates=True),
        )
    },
    "generation": {
        s.name: s
        for s in (
            RpcSpec("Generate"),
            RpcSpec("GenerateStream", "server_stream"),
            RpcSpec("GetModelInfo"),
            RpcSpec("ListAdapters"),
        )
    },
    "training": {
        s.name: s
        for s in (
            RpcSpec("ListTrainingJobs"),
            RpcSpec("ListDatasets"),
            RpcSpec("GetDataset"),
            RpcSpec("UploadDataset", "client_stream", mutates=True),
        )
    },
}

# The RPC a service is loaded with when --rpc is not given: its main read path.
DEFAULT_RPC = {
    "embedding": "Embed",
    "indexer": "Search",
    "retrieval": "Retrieve",
    "gateway": "Retrieve",
    "generation": "Generate",
    "training": "ListTrainingJobs",
}

LOAD_DATASET = "lorag-load"
LOAD_DESCRIPTION = "written by lorag load"
POOL_SIZE = 256

# Used only when no corpus folder can be found (an installed CLI without the repository's docs/).
FALLBACK_SENTENCES = (
    "lorag is a set of Python gRPC services for adapting a language model to an organisation's documents.",
    "The gateway ingests documents, retrieves passages and answers questions with citations.",
    "Each chunk has a deterministic id derived from its collection, tenant, document and position.",
    "Hybrid search fuses a BM25 keyword ranking with a dense vector ranking.",
    "The embedding service batches texts from many callers up to a token budget.",
    "A reranker reorders the first-stage candidates with a cross-encoder.",
    "LoRA adapters change how the model behaves without retraining all of its weights.",
    "Training jobs are resources with a state that clients poll or watch as a stream of events.",
    "Every response of a model service carries timing metadata: queue, inference and total time.",
    "A tenant isolates one customer's chunks from every other tenant's in the same collection.",
    "Health stays NOT_SERVING until the models are loaded and the connections are ready.",
    "Errors carry a google.rpc.Status with a reason and the fields that were wrong.",
)


def rpc_spec(service: str, rpc: str | None) -> RpcSpec:
    """The spec of ``rpc`` (the service's default when None); ValueError naming the choices otherwise."""
    if service not in RPCS:
        raise ValueError(f"unknown service {service!r}; choose one of {', '.join(RPCS)}")
    name = rpc or DEFAULT_RPC[service]
    if name not in RPCS[service]:
        choices = ", ".join(RPCS[service])
        raise ValueError(f"{service} has no RPC {name!r} the load tool drives; choose one of {choices}")
    return RPCS[service][name]


def full_method(service: str, rpc: str) -> str:
    """The RPC's full name as reflection and ghz know it, e.g. ``lorag.embedding.v1.EmbeddingService.Embed``."""
    return f"{CLIENTS[service].descriptor.full_name}.{rpc}"


# -- text ------------------------------------------------------------------------------------------------------------


def default_corpus_dir() -> Path | None:
    """This repository's docs/ (beside the source tree), else ./docs, else None."""
    for candidate in (Path(__file__).resolve().parents[5] / "docs", Path.cwd() / "docs"):
        if candidate.is_dir() and any(candidate.glob("*.md")):
            return candidate
    return None


_FENCE = re.compile(r"```.*?```", re.S)
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`\"(])")


def sentences_from_markdown(text: str) -> list[str]:
    """Prose sentences of a markdown text: code blocks, tables and headings dropped, links reduced to their text."""
    text = _LINK.sub(r"\1", _FENCE.sub("\n", text))
    paragraphs: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "|", "```", "<")):
            if current:
                paragraphs.append(" ".join(current))
                current = []
            continue
        current.append(stripped.lstrip("-*> ").strip())
    if current:
        paragraphs.append(" ".join(current))
    found = []
    for paragraph in paragraphs:
        for sentence in _SENTENCE_END.split(paragraph):
            sentence = sentence.replace("`", "").replace("**", "").strip()
            if 20 <= len(sentence) <= 600 and sum(c.isalpha() for c in sentence) > len(sentence) / 2:
                found.append(sentence)
    return found


def corpus_files(folder: Path | None) -> list[Path]:
    if folder is None:
        return []
    return sorted(p for p in folder.rglob("*") if p.suffix in (".md", ".txt") and p.is_file())


def load_sentences(folder: Path | None) -> list[str]:
    sentences = [s for path in corpus_files(folder) for s in sentences_from_markdown(path.read_text(errors="replace"))]
    return sentences or list(FALLBACK_SENTENCES)


class TextSource:
    """Deterministic realistic texts: passages of 1-4 consecutive sentences and queries of 3-10 words."""

    def __init__(self, sentences: list[str], seed: int = 0) -> None:
        if not sentences:
            raise ValueError("no sentences to build payloads from")
        self.sentences = sentences
        self.rng = random.Random(seed)

    def passage(self, max_sentences: int = 4) -> str:
        start = self.rng.randrange(len(self.sentences))
        count = self.rng.randint(1, max_sentences)
        return " ".join(self.sentences[start : start + count]) or self.sentences[start]

    def query(self) -> str:
        words = re.findall(r"[\w'-]+", self.rng.choice(self.sentences))
        size = min(len(words), self.rng.randint(3, 10))
        start = self.rng.randrange(max(1, len(words) - size + 1))
        span = " ".join(words[start : start + size])
        return span if self.rng.random() < 0.5 else f"What does lorag say about {span.lower()}?"


def random_unit_vector(dimensions: int, rng: random.Random) -> list[float]:
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def load_chunk(
    collection: str, tenant: str, document_id: str, index: int, text: str, vector: Sequence[float], chunk_index: int
) -> indexer_service_pb2.ChunkRecord:
    """A chunk as the ingest path writes it: an id derived from where it lives, and its text's hash."""
    chunk_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{collection}/{tenant}/{document_id}/{index}"))
    record = chunk_record(
        chunk_id,
        document_id,
        text,
        vector,
        chunk_index=chunk_index,
        content_sha256=hashlib.sha256(text.encode()).hexdigest(),
    )
    record.chunk.tenant, record.chunk.collection = tenant, collection
    return record


# -- the workload ----------------------------------------------------------------------------------------------------


@dataclass
class LoadOptions:
    """What the user chose beyond service and RPC."""

    collection: str = "docs"
    tenant: str = "default"
    mode: str = "hybrid"  # dense | keyword | hybrid
    top_k: int = 5
    rerank: bool | None = None  # None: the service's default
    batch: int = 1  # texts per Embed request; passages per Rerank request are 8 * batch
    max_new_tokens: int = 16
    adapter: str = ""
    corpus: Path | None = None
    seed: int = 0
    timeout: float = 30.0


@dataclass
class Workload:
    """One RPC ready to be driven: ``call(i)`` sends request i and returns when the call is complete."""

    service: str
    spec: RpcSpec
    client: ServiceClient  # The SDK client of the service under load, its retries off.
    build: Callable[[int], Any]  # Request i (a message, or an iterator of messages for client streams).
    timeout: float
    notes: list[str] = field(default_factory=list)  # What prepare did, for the report.

    async def call(self, i: int) -> float | None:
        """Send request ``i``; return the loop time of the first response message for response streams."""
        request = self.build(i)
        if self.spec.kind in ("unary", "client_stream"):
            await self.client.invoke(self.spec.name, request, timeout=self.timeout)
            return None
        first = None
        async for _ in self.client.invoke_stream(self.spec.name, request, timeout=self.timeout):
            if first is None:
                first = asyncio.get_running_loop().time()
        return first


def messages(service: str) -> Any:
    return importlib.import_module(f"lorag.{service}.v1.{service}_service_pb2")


SEARCH_MODES = {
    "dense": common_pb2.SEARCH_MODE_VECTOR,
    "keyword": common_pb2.SEARCH_MODE_KEYWORD,
    "hybrid": common_pb2.SEARCH_MODE_HYBRID,
}


def retrieval_options(options: LoadOptions) -> common_pb2.RetrievalOptions:
    return sdk_retrieval_options(mode=cast(Any, options.mode), top_k=options.top_k, rerank=options.rerank)


def sampling(options: LoadOptions, i: int) -> common_pb2.SamplingParams:
    """Greedy, short answers: the cost of a request is then stable and bounded by --max-new-tokens."""
    return sampling_params(temperature=0.0, max_new_tokens=options.max_new_tokens, seed=i)


def completion_dataset(text: TextSource, rows: int) -> bytes:
    """A small completion-format JSONL dataset of real prose."""
    lines = [json.dumps({"prompt": text.query(), "completion": text.passage(2)}) for _ in range(rows)]
    return ("\n".join(lines) + "\n").encode()


def upload_requests(pb: Any, name: str, data: bytes) -> Iterator[Any]:
    yield pb.UploadDatasetRequest(
        metadata=pb.DatasetMetadata(name=name, format=pb.DATASET_FORMAT_COMPLETION, description=LOAD_DESCRIPTION)
    )
    yield pb.UploadDatasetRequest(data=data)


async def build_workload(
    service: str, rpc: str | None, client: ServiceClient, options: LoadOptions, addresses: Callable[[str], str]
) -> Workload:
    """The workload of ``service``'s ``rpc`` over ``client`` (the service's SDK client, made with
    ``retries=False``), after its prepare step; ``addresses(svc)`` finds the other services prepare may use."""
    from lorag_cli.load import prepare

    spec = rpc_spec(service, rpc)
    pb = messages(service)
    text = TextSource(load_sentences(options.corpus or default_corpus_dir()), options.seed)
    notes: list[str] = []

    def other(name: str) -> str:
        return client.target if name == service else addresses(name)

    if spec.needs_corpus:
        notes.append(await prepare.ensure_corpus(options, text, other))

    def pool(make: Callable[[int], Any]) -> Callable[[int], Any]:
        built = [make(i) for i in range(POOL_SIZE)]
        return lambda i: built[i % len(built)]

    build: Callable[[int], Any]
    match service, spec.name:
        case "embedding", "Embed":
            build = pool(
                lambda i: pb.EmbedRequest(
                    texts=[text.passage() for _ in range(options.batch)], input_type=pb.INPUT_TYPE_DOCUMENT
                )
            )
        case "embedding", "Info":
            build = pool(lambda i: pb.InfoRequest())
        case "indexer", "Search":
            queries = [text.query() for _ in range(64)]
            vectors, how = await prepare.query_vectors(options, queries, other)
            notes.append(how)
            mode = SEARCH_MODES[options.mode]
            build = pool(
                lambda i: pb.SearchRequest(
                    collection=options.collection,
                    tenant=options.tenant,
                    mode=mode,
                    limit=options.top_k,
                    query_text=queries[i % len(queries)] if mode != common_pb2.SEARCH_MODE_VECTOR else "",
                    query_vector=vectors[i % len(vectors)] if mode != common_pb2.SEARCH_MODE_KEYWORD else [],
                )
            )
        case "indexer", "GetCollection":
            build = pool(lambda i: pb.GetCollectionRequest(name=options.collection))
        case "indexer", "ListCollections":
            build = pool(lambda i: pb.ListCollectionsRequest(page_size=20))
        case "indexer", "ListTenants":
            build = pool(lambda i: pb.ListTenantsRequest(collection=options.collection, page_size=20))
        case "indexer", "ListDocuments":
            build = pool(
                lambda i: pb.ListDocumentsRequest(collection=options.collection, tenant=options.tenant, page_size=20)
            )
        case "indexer", "BatchGetDocumentStates":
            listed = await cast(IndexerClient, client).list_documents(
                options.collection, options.tenant, page_size=50, timeout=options.timeout
            )
            ids = [d.document_id for d in listed.documents] or ["absent"]
            build = pool(
                lambda i: pb.BatchGetDocumentStatesRequest(
                    collection=options.collection,
                    tenant=options.tenant,
                    document_ids=[*ids[: 1 + i % len(ids)], f"absent-{i}"],
                )
            )
        case "indexer", "UpsertChunks":
            collection = await cast(IndexerClient, client).get_collection(options.collection, timeout=options.timeout)
            dims = collection.vector_dimensions
            rng = random.Random(options.seed)
            notes.append(
                f"UpsertChunks writes 8 chunks per call into documents load-upsert-<n> of "
                f"{options.collection}/{options.tenant} (random unit vectors, {dims} dimensions)"
            )

            def upsert(i: int) -> Any:
                document_id = f"load-upsert-{i}"
                chunks = [
                    load_chunk(
                        options.collection,
                        options.tenant,
                        document_id,
                        index,
                        text.passage(2),
                        random_unit_vector(dims, rng),
                        chunk_index=index,
                    )
                    for index in range(8)
                ]
                return pb.UpsertChunksRequest(collection=options.collection, tenant=options.tenant, chunks=chunks)

            build = upsert
        case "retrieval", "Retrieve":
            build = pool(
                lambda i: pb.RetrieveRequest(
                    query=text.query(),
                    tenant=options.tenant,
                    collection=options.collection,
                    options=retrieval_options(options),
                )
            )
        case "retrieval", "Rerank":
            build = pool(
                lambda i: pb.RerankRequest(
                    query=text.query(), passages=[text.passage(2) for _ in range(8 * options.batch)]
                )
            )
        case "gateway", "Retrieve":
            build = pool(
                lambda i: pb.RetrieveRequest(
                    query=text.query(),
                    tenant=options.tenant,
                    collection=options.collection,
                    options=retrieval_options(options),
                )
            )
        case "gateway", "Ask" | "AskStream":
            ask_type = pb.AskRequest if spec.name == "Ask" else pb.AskStreamRequest
            build = pool(
                lambda i: ask_type(
                    question=text.query(),
                    tenant=options.tenant,
                    collection=options.collection,
                    retrieval=retrieval_options(options),
                    adapter=options.adapter,
                    sampling=sampling(options, i),
                )
            )
        case "gateway", "IngestDocuments":
            notes.append(
                f"IngestDocuments writes one document load-ingest-<n> per call into "
                f"{options.collection}/{options.tenant}"
            )

            def ingest(i: int) -> Iterator[Any]:
                yield pb.IngestDocumentsRequest(
                    document=pb.Document(
                        id=f"load-ingest-{i}",
                        tenant=options.tenant,
                        collection=options.collection,
                        title=f"load {i}",
                        text=" ".join(text.passage() for _ in range(4)),
                    )
                )

            build = ingest
        case "generation", "Generate" | "GenerateStream":
            request_type = pb.GenerateRequest if spec.name == "Generate" else pb.GenerateStreamRequest
            build = pool(
                lambda i: request_type(
                    chat=common_pb2.Chat(
                        messages=[common_pb2.ChatMessage(role=common_pb2.ROLE_USER, content=text.query())]
                    ),
                    adapter=options.adapter,
                    sampling=sampling(options, i),
                )
            )
        case "generation", "GetModelInfo":
            build = pool(lambda i: pb.GetModelInfoRequest())
        case "generation", "ListAdapters":
            build = pool(lambda i: pb.ListAdaptersRequest(page_size=20))
        case "training", "ListTrainingJobs":
            build = pool(lambda i: pb.ListTrainingJobsRequest(page_size=20))
        case "training", "ListDatasets":
            build = pool(lambda i: pb.ListDatasetsRequest(page_size=20))
        case "training", "GetDataset":
            dataset = completion_dataset(TextSource(text.sentences), 32)  # The same rows on every run.
            await cast(TrainingClient, client).upload_dataset(
                dataset,
                name=LOAD_DATASET,
                format="completion",
                description=LOAD_DESCRIPTION,
                timeout=max(options.timeout, 120),
            )
            notes.append(f"prepare uploaded dataset {LOAD_DATASET} (32 completion rows; unchanged on a re-run)")
            build = pool(lambda i: pb.GetDatasetRequest(name=LOAD_DATASET))
        case "training", "UploadDataset":
            notes.append(f"UploadDataset stores datasets {LOAD_DATASET}-upload (16 rows; 16 distinct versions at most)")
            variants = [completion_dataset(text, 16) for _ in range(16)]

            def upload(i: int) -> Iterator[Any]:
                return upload_requests(pb, f"{LOAD_DATASET}-upload", variants[i % len(variants)])

            build = upload
        case _:  # pragma: no cover - RPCS and this table are kept together
            raise ValueError(f"no payload for {service} {spec.name}")
    return Workload(service, spec, client, build, options.timeout, notes)
