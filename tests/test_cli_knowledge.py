"""The knowledge-path verbs of the `lorag` command, run as users run them, against the whole stack on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

LORAG = str(Path(sys.executable).parent / "lorag")


@pytest.fixture(scope="module")
def run(lorag_services):
    env = {**os.environ, **{f"LORAG_{name.upper()}_ADDRESS": address for name, address in lorag_services.items()}}

    async def lorag(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run, [LORAG, *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )

    return lorag


async def test_ingest_sync_and_retrieve_a_folder(run, tmp_path: Path):
    collection, scope = f"Cli{uuid.uuid4().hex[:8]}", ["--tenant", "cli"]
    (tmp_path / "guide").mkdir()
    (tmp_path / "guide" / "setup.md").write_text("# Setup\n\nRun make setup, then lorag up to start the stack.\n")
    (tmp_path / "adapters.txt").write_text("LoRA adapters change how the model behaves without retraining it.\n")
    (tmp_path / "old.html").write_text("<html><body><p>An outdated page about fax machines.</p></body></html>")
    (tmp_path / ".hidden.md").write_text("never ingested")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")

    first = await run("ingest", str(tmp_path), "--collection", collection, *scope, "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) | {"seconds": 0, "chunks": 0, "embedded_tokens": 0} == {
        "written": 3,
        "unchanged": 0,
        "failed": 0,
        "documents": 3,
        "chunks": 0,
        "embedded_tokens": 0,
        "seconds": 0,
        "failures": [],
    }
    again = json.loads((await run("ingest", str(tmp_path), "--collection", collection, *scope, "--json")).stdout)
    assert (again["written"], again["unchanged"], again["embedded_tokens"]) == (0, 3, 0)

    (tmp_path / "adapters.txt").write_text("LoRA adapters are small; lorag loads several and picks one per request.\n")
    (tmp_path / "old.html").unlink()
    synced = await run("sync", str(tmp_path), "--collection", collection, *scope, "--json")
    assert synced.returncode == 0, synced.stderr
    report = json.loads(synced.stdout)
    assert (report["written"], report["unchanged"], report["deleted"]) == (1, 1, ["old.html"])

    found = await run("retrieve", "how many adapters does lorag load?", "--collection", collection, *scope, "--json")
    hits = json.loads(found.stdout)["chunks"]
    assert hits[0]["chunk"]["document_id"] == "adapters.txt"
    assert "several" in hits[0]["chunk"]["text"]
    assert "old.html" not in {h["chunk"]["document_id"] for h in hits}
    table = await run("retrieve", "start the stack", "--collection", collection, *scope)
    assert "guide/setup.md" in table.stdout


async def test_ingest_reports_failures_and_exits_non_zero(run, tmp_path: Path):
    (tmp_path / "empty.txt").write_text("   \n")
    (tmp_path / "fine.txt").write_text("A fine document.")
    done = await run("ingest", str(tmp_path), "--collection", f"Cli{uuid.uuid4().hex[:8]}", "--json")
    assert done.returncode == 1
    report = json.loads(done.stdout)
    assert (report["written"], report["failed"]) == (1, 1)
    assert report["failures"][0]["document_id"] == "empty.txt" and report["failures"][0]["code"] == "INVALID_ARGUMENT"


async def test_eval_retrieval_prints_one_json_object_per_mode(run, tmp_path: Path):
    corpus = {
        "d1": ("Eiffel Tower", "The Eiffel Tower in Paris was completed in 1889."),
        "d2": ("Photosynthesis", "Plants turn light, water and carbon dioxide into sugar and oxygen."),
        "d3": ("Insulin", "Insulin lowers blood glucose by helping cells absorb sugar."),
        "d4": ("Volcanoes", "Magma that reaches the surface erupts as lava from volcanoes."),
    }
    queries = {
        "q1": "When was the tower in Paris finished?",
        "q2": "How do plants make oxygen?",
        "q3": "Which hormone reduces blood sugar?",
    }
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": i, "title": t, "text": x, "metadata": {}}) + "\n" for i, (t, x) in corpus.items())
    )
    (tmp_path / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items())
    )
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\nq3\td3\t1\n")
    args = [
        "eval",
        "retrieval",
        "--beir",
        str(tmp_path),
        "--split",
        "test",
        "--mode",
        "all",
        "--json",
        "--collection",
        f"Ev{uuid.uuid4().hex[:8]}",
    ]
    done = await run(*args)
    assert done.returncode == 0, done.stderr
    rows = _objects(done.stdout)
    assert [row["mode"] for row in rows] == ["dense", "keyword", "hybrid", "hybrid-rerank"]
    for row in rows:
        assert set(row) == {"mode", "ndcg_at_10", "recall_at_100", "mrr_at_10", "queries"}
        assert row["queries"] == 3
    assert rows[0]["ndcg_at_10"] == 1.0  # the right abstract first for each easy query
    second = await run(*args)
    assert "0 written, 4 unchanged" in second.stderr


def _objects(text: str) -> list[dict]:
    decoder, rows, index = json.JSONDecoder(), [], 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        row, index = decoder.raw_decode(text, index)
        rows.append(row)
    return rows
