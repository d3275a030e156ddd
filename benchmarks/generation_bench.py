"""Generation service vs raw ``model.generate`` on the same prompts (SmolLM2-135M-Instruct, greedy).

(a) decode speed: completion tokens/s of sequential single requests through the service (measured by the client,
    gRPC and streaming included) ÷ tokens/s of ``model.generate`` in this process on the same prompts with the same
    max_new_tokens. Target >= 0.95.
(b) time-to-first-token overhead: the service's TTFT as the client sees it (request sent -> first delta received)
    minus the in-process time to the first token (chat template + tokenization + prefill + first token with
    ``generate(max_new_tokens=1)``). Target <= 10 ms.
(c) optional: N concurrent requests through the service (one batch) vs the sequential in-process loop.

Service and baseline run alternately, prompt by prompt, with the same torch thread count and OMP wait policy, so
machine-wide drift hits both equally. Figures go to stdout and benchmarks/results/generation.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # what lorag_core.server.run sets for the service
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import free_port, report, start_service, stop  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "Write a short poem about the sea.",
    "Explain what a neural network is in two sentences.",
    "Give me three tips for learning a new language.",
    "What is the boiling point of water in Fahrenheit?",
    "Describe a cat to someone who has never seen one.",
    "Why is the sky blue?",
    "List the planets of the solar system.",
]


async def _service_run(address: str, prompt: str, max_new_tokens: int) -> tuple[int, float, float, str, float]:
    """One streamed request: (completion tokens, seconds, client TTFT s, text, server-reported TTFT s)."""
    from lorag_client import GenerationClient

    async with GenerationClient(address, timeout=600) as client:
        await client.model_info()  # connect before timing
        started = time.perf_counter()
        first = None
        parts = []
        async for message in client.generate_stream(
            messages=[{"role": "user", "content": prompt}], temperature=0, max_new_tokens=max_new_tokens
        ):
            if message.HasField("delta"):
                if first is None:
                    first = time.perf_counter() - started
                parts.append(message.delta.text)
            else:
                tokens = message.summary.usage.completion_tokens
                server_ttft = message.summary.timing.time_to_first_token_ns / 1e9
        return tokens, time.perf_counter() - started, first or 0.0, "".join(parts), server_ttft


async def _concurrent(address: str, prompts: list[str], max_new_tokens: int) -> tuple[int, float]:
    from lorag_client import GenerationClient

    async with GenerationClient(address, timeout=600) as client:
        await client.model_info()
        started = time.perf_counter()
        replies = await asyncio.gather(
            *(client.generate(messages=[{"role": "user", "content": p}], temperature=0, max_new_tokens=max_new_tokens) for p in prompts)
        )
        return sum(r.usage.completion_tokens for r in replies), time.perf_counter() - started


class Baseline:
    """The same model in this process, called as a user of transformers would."""

    def __init__(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from lorag_models import resolve_model

        path = resolve_model().path
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.generate("Hello", 2)

    def _ids(self, prompt: str):  # type: ignore[no-untyped-def]
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt"
        )["input_ids"]

    def generate(self, prompt: str, max_new_tokens: int) -> tuple[int, float, str]:
        started = time.perf_counter()
        ids = self._ids(prompt)
        with self.torch.inference_mode():
            out = self.model.generate(
                ids, attention_mask=self.torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False
            )
        elapsed = time.perf_counter() - started
        new = out[0, ids.shape[1] :]
        return int(new.shape[0]), elapsed, self.tokenizer.decode(new, skip_special_tokens=True)

    def first_token_seconds(self, prompt: str) -> float:
        return self.generate(prompt, 1)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per request (greedy)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the prompts")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent requests for (c); 0 skips it")
    args = parser.parse_args()

    port = free_port()
    service = start_service("lorag_generation", {"LORAG_GENERATION_PORT": str(port), "HF_HUB_OFFLINE": "1", "LORAG_LOG_LEVEL": "WARNING"})
    address = f"127.0.0.1:{port}"
    try:
        baseline = Baseline()
        asyncio.run(_service_run(address, "Hello", 2))  # warm both paths
        service_tokens = baseline_tokens = 0
        service_seconds = baseline_seconds = 0.0
        ttft_service: list[float] = []
        ttft_inprocess: list[float] = []
        ttft_server: list[float] = []
        mismatches = 0
        for _ in range(args.rounds):
            for prompt in PROMPTS:
                tokens, seconds, ttft, text, server_ttft = asyncio.run(_service_run(address, prompt, args.max_new_tokens))
                ttft_server.append(server_ttft)
                service_tokens += tokens
                service_seconds += seconds
                ttft_service.append(ttft)
                base_tokens, base_seconds, base_text = baseline.generate(prompt, args.max_new_tokens)
                baseline_tokens += base_tokens
                baseline_seconds += base_seconds
                ttft_inprocess.append(baseline.first_token_seconds(prompt))
                mismatches += text.strip() != base_text.strip()
        concurrent = None
        if args.concurrency:
            prompts = (PROMPTS * ((args.concurrency // len(PROMPTS)) + 1))[: args.concurrency]
            concurrent = asyncio.run(_concurrent(address, prompts, args.max_new_tokens))
    finally:
        stop(service)

    service_rate = service_tokens / service_seconds
    baseline_rate = baseline_tokens / baseline_seconds
    ttft_s, ttft_b = statistics.median(ttft_service), statistics.median(ttft_inprocess)
    figures: dict[str, object] = {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "requests": len(ttft_service),
        "max_new_tokens": args.max_new_tokens,
        "service_tokens_per_s": round(service_rate, 2),
        "inprocess_generate_tokens_per_s": round(baseline_rate, 2),
        "tokens_per_s_ratio": round(service_rate / baseline_rate, 3),
        "tokens_per_s_target": 0.95,
        "service_ttft_ms_median": round(ttft_s * 1000, 2),
        "inprocess_ttft_ms_median": round(ttft_b * 1000, 2),
        "service_reported_ttft_ms_median": round(statistics.median(ttft_server) * 1000, 2),
        "ttft_overhead_ms": round((ttft_s - ttft_b) * 1000, 2),
        "ttft_overhead_target_ms": 10,
        "greedy_text_mismatches": mismatches,
    }
    if concurrent is not None:
        tokens, seconds = concurrent
        figures.update(
            {
                "concurrent_requests": args.concurrency,
                "service_concurrent_tokens_per_s": round(tokens / seconds, 2),
                "concurrent_vs_sequential_generate": round((tokens / seconds) / baseline_rate, 2),
            }
        )
    report("generation", figures)


if __name__ == "__main__":
    main()
