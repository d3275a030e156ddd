"""Generation service vs raw ``model.generate`` on the same prompts (SmolLM2-135M-Instruct, greedy).

(a) decode speed: completion tokens/s of sequential single requests through the service (measured by the client,
    gRPC and streaming included) ÷ tokens/s of ``model.generate`` in this process on the same prompts with the same
    max_new_tokens. Target >= 0.95.
(b) time-to-first-token overhead: the service's TTFT as the client sees it (request sent -> first delta received,
    over one warm channel, the request asking for ``--ttft-new-tokens`` so the decode thread runs on while the first
    delta travels, as in a real request) minus the in-process time to the first token (chat template +
    tokenization + prefill + first token with ``generate(max_new_tokens=1)``: the work a caller of transformers
    needs for it). Measured in pairs on the same prompt, the order alternating (service first, then in-process
    first), ``--ttft-rounds`` passes over the prompts; medians and p90s of both, and the median of the per-pair
    differences. Target <= 10 ms. The floor: a bare grpc.aio unary-stream echo (server in another process, no
    interceptors) measured on the same box (``grpc_echo_ms``).
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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # what lorag_core.server.run sets for the service
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import free_port, report, start_service, stop

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
            *(
                client.generate(messages=[{"role": "user", "content": p}], temperature=0, max_new_tokens=max_new_tokens)
                for p in prompts
            )
        )
        return sum(r.usage.completion_tokens for r in replies), time.perf_counter() - started


async def _ttft_pairs(address: str, baseline: Baseline, rounds: int, max_new_tokens: int) -> dict[str, list[float]]:
    """Client TTFT through the service and in-process TTFT, paired per prompt, alternating which goes first."""
    from lorag_client import GenerationClient

    series: dict[str, list[float]] = {"service": [], "inprocess": [], "server_reported": []}
    async with GenerationClient(address, timeout=600) as client:
        await client.model_info()  # connect before timing

        async def service(prompt: str) -> None:
            started = time.perf_counter()
            first = None
            async for message in client.generate_stream(
                messages=[{"role": "user", "content": prompt}], temperature=0, max_new_tokens=max_new_tokens
            ):
                if first is None:  # the first message: a delta (or the summary when nothing was decoded)
                    first = time.perf_counter() - started
                if message.HasField("summary"):
                    series["server_reported"].append(message.summary.timing.time_to_first_token_ns / 1e9)
            series["service"].append(first or 0.0)

        await service("Hello")  # warm both paths
        baseline.first_token_seconds("Hello")
        for values in series.values():
            values.clear()
        pair = 0
        for _ in range(rounds):
            for prompt in PROMPTS:
                if pair % 2 == 0:
                    await service(prompt)
                    series["inprocess"].append(baseline.first_token_seconds(prompt))
                else:
                    series["inprocess"].append(baseline.first_token_seconds(prompt))
                    await service(prompt)
                pair += 1
    return series


def _echo_server(port: int) -> None:
    """A bare grpc.aio server streaming its request back twice: the floor under any gRPC streaming call."""
    import grpc

    async def echo(request: bytes, context: object) -> AsyncIterator[bytes]:
        yield request
        yield request

    async def serve() -> None:
        handler = grpc.method_handlers_generic_handler(
            "bench.Echo", {"Stream": grpc.unary_stream_rpc_method_handler(echo, lambda b: b, lambda b: b)}
        )
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(serve())


async def _echo_first_message(port: int, calls: int = 200) -> list[float]:
    import grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        await asyncio.wait_for(channel.channel_ready(), 30)
        call = channel.unary_stream(
            "/bench.Echo/Stream", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        seconds = []
        for i in range(calls + 20):
            started = time.perf_counter()
            async for _ in call(b"x" * 200):
                if i >= 20:
                    seconds.append(time.perf_counter() - started)
                break
        return seconds


def grpc_echo_seconds() -> list[float]:
    import subprocess

    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--echo-server", str(port)])
    try:
        return asyncio.run(_echo_first_message(port))
    finally:
        stop(server)


def _ms(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values`` seconds, in ms."""
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)


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

    def _ids(self, prompt: str) -> Any:
        return cast(Any, self.tokenizer.apply_chat_template)(
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
        return int(new.shape[0]), elapsed, str(self.tokenizer.decode(new, skip_special_tokens=True))

    def first_token_seconds(self, prompt: str) -> float:
        return self.generate(prompt, 1)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per request (greedy)")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the prompts")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent requests for (c); 0 skips it")
    parser.add_argument("--ttft-rounds", type=int, default=4, help="passes over the prompts for (b), one pair each")
    parser.add_argument("--ttft-new-tokens", type=int, default=8, help="max_new_tokens of the service's TTFT requests")
    parser.add_argument("--echo-server", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        _echo_server(args.echo_server)
        return
    echo = grpc_echo_seconds()

    port = free_port()
    service = start_service(
        "lorag_generation", {"LORAG_GENERATION_PORT": str(port), "HF_HUB_OFFLINE": "1", "LORAG_LOG_LEVEL": "WARNING"}
    )
    address = f"127.0.0.1:{port}"
    try:
        baseline = Baseline()
        asyncio.run(_service_run(address, "Hello", 2))  # warm both paths
        service_tokens = baseline_tokens = 0
        service_seconds = baseline_seconds = 0.0
        ttft = asyncio.run(_ttft_pairs(address, baseline, args.ttft_rounds, args.ttft_new_tokens))
        mismatches = requests = 0
        for _ in range(args.rounds):
            for prompt in PROMPTS:
                tokens, seconds, _first, text, _server_ttft = asyncio.run(
                    _service_run(address, prompt, args.max_new_tokens)
                )
                service_tokens += tokens
                service_seconds += seconds
                base_tokens, base_seconds, base_text = baseline.generate(prompt, args.max_new_tokens)
                baseline_tokens += base_tokens
                baseline_seconds += base_seconds
                mismatches += text.strip() != base_text.strip()
                requests += 1
        concurrent = None
        if args.concurrency:
            prompts = (PROMPTS * ((args.concurrency // len(PROMPTS)) + 1))[: args.concurrency]
            concurrent = asyncio.run(_concurrent(address, prompts, args.max_new_tokens))
    finally:
        stop(service)

    service_rate = service_tokens / service_seconds
    baseline_rate = baseline_tokens / baseline_seconds
    ttft_service, ttft_inprocess, ttft_server = ttft["service"], ttft["inprocess"], ttft["server_reported"]
    ttft_s, ttft_b = statistics.median(ttft_service), statistics.median(ttft_inprocess)
    paired = [s - b for s, b in zip(ttft_service, ttft_inprocess, strict=True)]
    figures: dict[str, object] = {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "requests": requests,
        "max_new_tokens": args.max_new_tokens,
        "service_tokens_per_s": round(service_rate, 2),
        "inprocess_generate_tokens_per_s": round(baseline_rate, 2),
        "tokens_per_s_ratio": round(service_rate / baseline_rate, 3),
        "tokens_per_s_target": 0.95,
        "ttft_pairs": len(paired),
        "ttft_service_max_new_tokens": args.ttft_new_tokens,
        "service_ttft_ms_median": round(ttft_s * 1000, 2),
        "service_ttft_ms_p90": _ms(ttft_service, 0.9),
        "inprocess_ttft_ms_median": round(ttft_b * 1000, 2),
        "inprocess_ttft_ms_p90": _ms(ttft_inprocess, 0.9),
        "service_reported_ttft_ms_median": round(statistics.median(ttft_server) * 1000, 2),
        "ttft_overhead_ms": round((ttft_s - ttft_b) * 1000, 2),
        "ttft_overhead_paired_ms_median": round(statistics.median(paired) * 1000, 2),
        "ttft_overhead_paired_ms_p90": _ms(paired, 0.9),
        "grpc_and_client_ms_median": round((ttft_s - statistics.median(ttft_server)) * 1000, 2),
        "grpc_echo_ms_median": round(statistics.median(echo) * 1000, 3),
        "grpc_echo_ms_p90": _ms(echo, 0.9),
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
