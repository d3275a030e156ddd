"""Shared helpers for lorag's benchmarks: free ports, starting a service process, corpus texts, reporting."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from lorag_core.probe import check

ROOT = Path(__file__).resolve().parent.parent
SCIFACT = ROOT.parent / "shared" / "data" / "beir" / "scifact" / "corpus.jsonl"
RESULTS = ROOT / "benchmarks" / "results"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def corpus_texts(limit: int, path: Path = SCIFACT) -> list[str]:
    """Real passages: SciFact abstracts (title + text), as an ingest would embed them."""
    texts = []
    with path.open() as handle:
        for line in handle:
            doc = json.loads(line)
            texts.append(f"{doc['title']}. {doc['text']}"[:1200])
            if len(texts) == limit:
                break
    return texts


def start_service(module: str, env: dict[str, str], health_timeout: float = 180) -> subprocess.Popen[bytes]:
    """Start ``python -m module`` and wait until its gRPC health says SERVING."""
    port = env[next(k for k in env if k.endswith("_PORT"))]
    process = subprocess.Popen(
        [sys.executable, "-m", module], env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + health_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{module} exited with {process.returncode}")
        if check(f"127.0.0.1:{port}", timeout=1)[0]:  # the chassis' health probe: SERVING or not
            return process
        time.sleep(0.2)
    process.kill()
    raise TimeoutError(f"{module} not SERVING after {health_timeout} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()


def report(name: str, figures: dict[str, object]) -> None:
    """Print the figures and keep them under benchmarks/results/ (git-ignored)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
