"""Training throughput through lorag vs a plain transformers + peft script, and the behaviour demo.

Throughput (default): the same rows (docs/examples/behaviour/train.jsonl), model (SmolLM2-135M-Instruct), max_length,
batch, steps, LR and seed, trained (a) as a job of a real training service (`python -m lorag_training` on a free
port with a throwaway data dir: UploadDataset, CreateTrainingJob, WatchTrainingJob until done; tokens/s from the
job's step event, whose interval is the whole run) and (b) by a plain loop in a separate process. Both count
tokens from the attention mask and time the training loop only (model load, eval and registration excluded).
Runs alternate (plain, lorag, plain, lorag, ...) so a busy machine hurts both alike; the median of each is kept.
Peak memory: VmHWM of the worker process (polled from /proc) and ru_maxrss of the plain process, plus
torch.cuda.max_memory_allocated on GPU (the plain process reports it; the worker's is not exported).

Behaviour (`--behaviour`): train an adapter with the worker on the demo dataset, then greedy-answer the held-out
prompts with and without it and report how often the last line is exactly "Sources: see the cited passages.".

    .venv/bin/python benchmarks/training_bench.py [--steps 8 --repeats 2]
    .venv/bin/python benchmarks/training_bench.py --behaviour [--steps 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, ROOT, free_port

TRAIN = ROOT / "docs" / "examples" / "behaviour" / "train.jsonl"
HELDOUT = ROOT / "docs" / "examples" / "behaviour" / "heldout.jsonl"
BEHAVIOUR_LINE = "Sources: see the cited passages."
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


def behaviour_rate(texts: list[str]) -> float:
    """The share of answers whose last non-empty line is exactly the behaviour line."""
    if not texts:
        return 0.0
    hits = 0
    for text in texts:
        lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
        hits += bool(lines) and lines[-1] == BEHAVIOUR_LINE
    return hits / len(texts)


# -- the plain baseline (runs in its own process) -------------------------------------------------------------


def plain_train(args: argparse.Namespace) -> dict:
    """What a user would write by hand: tokenize, shuffle, AdamW + linear warmup/decay, clip, step."""
    import random

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup

    from lorag_models import resolve_model

    path = resolve_model(MODEL).path
    device = "cuda:0" if torch.cuda.is_available() and args.device == "cuda" else "cpu"
    dtype = torch.bfloat16 if device != "cpu" and torch.cuda.is_bf16_supported() else torch.float32
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(args.seed)
    base: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)  # Any: the stubs mistype .to()
    model = get_peft_model(
        base.to(device),
        LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    rows = [json.loads(line) for line in TRAIN.read_text().splitlines() if line.strip()]
    template: Any = tok.apply_chat_template  # Any: its return type is a union over tokenize / return_dict
    encoded = [template(r["messages"], tokenize=True, return_dict=True)["input_ids"][: args.max_length] for r in rows]
    order = list(range(len(encoded)))
    random.Random(args.seed).shuffle(order)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr, weight_decay=0.0)
    sched = get_linear_schedule_with_warmup(opt, math.ceil(0.03 * args.steps), args.steps)
    model.train()
    tokens = 0
    start = time.perf_counter()
    for step in range(args.steps):
        idx = [order[(step * args.batch + i) % len(order)] for i in range(args.batch)]
        width = max(len(encoded[i]) for i in idx)
        ids = torch.full((args.batch, width), tok.pad_token_id)
        mask = torch.zeros((args.batch, width), dtype=torch.long)
        for r, i in enumerate(idx):
            ids[r, : len(encoded[i])] = torch.tensor(encoded[i])
            mask[r, : len(encoded[i])] = 1
        labels = ids.masked_fill(mask == 0, -100)
        tokens += int(mask.sum())
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), labels=labels.to(device))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    final_loss = float(out.loss)
    elapsed = time.perf_counter() - start
    return {
        "tokens": tokens,
        "seconds": elapsed,
        "tokens_per_second": tokens / elapsed,
        "final_loss": final_loss,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cuda_max_allocated_mib": torch.cuda.max_memory_allocated() / 2**20 if device != "cpu" else None,
    }


def run_plain(args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--plain",
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--max-length",
        str(args.max_length),
        "--lr",
        str(args.lr),
        "--seed",
        str(args.seed),
        "--device",
        args.device,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- through the service -------------------------------------------------------------------------------------


def _worker_pid(spec_marker: str) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"lorag_training.worker" in cmdline and spec_marker.encode() in cmdline:
            return int(entry.name)
    return None


def _vm_hwm_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class PeakWatcher(threading.Thread):
    """Polls the worker's VmHWM (its own RSS high-water mark) until stopped."""

    def __init__(self, marker: str) -> None:
        super().__init__(daemon=True)
        self.marker, self.peak, self._stop = marker, 0.0, threading.Event()

    def run(self) -> None:
        pid = None
        while not self._stop.is_set():
            pid = pid or _worker_pid(self.marker)
            if pid:
                self.peak = max(self.peak, _vm_hwm_mib(pid) or 0.0)
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()


def run_service(args: argparse.Namespace, workdir: Path) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from _common import start_service

    port = free_port()
    data_dir = workdir / f"svc-{port}"
    env = {
        "LORAG_TRAINING_PORT": str(port),
        "LORAG_TRAINING_DATA_DIR": str(data_dir),
        "HF_HUB_OFFLINE": "1",
        "LORAG_TRAINING_DEVICES": "0" if args.device == "cuda" else "",
        "LORAG_TRAINING_METRICS_PORT": "0",
        "OTEL_SDK_DISABLED": "true",
    }
    service = start_service("lorag_training", env)
    try:
        return asyncio.run(_train_through_service(f"127.0.0.1:{port}", args))
    finally:
        service.terminate()
        service.wait(30)


async def _train_through_service(address: str, args: argparse.Namespace) -> dict:
    """Upload the rows, create the job and watch it to its end, through the SDK's TrainingClient."""
    from lorag.training.v1 import training_service_pb2 as pb
    from lorag_client import TrainingClient

    async with TrainingClient(address) as client:
        upload = await client.upload_dataset(
            TRAIN, name="behaviour", format="chat", max_length=args.max_length, timeout=300
        )
        job = await client.create_job(
            base_model=MODEL,
            dataset_version=upload.dataset.version,
            method="lora",
            adapter_name="bench",
            display_name="bench",
            gpu_count=1 if args.device == "cuda" else 0,
            rank=8,
            alpha=16,
            dropout=0.05,
            max_steps=args.steps,
            learning_rate=args.lr,
            batch_size=args.batch,
            gradient_accumulation_steps=1,
            max_length=args.max_length,
            seed=args.seed,
            eval_split_fraction=0.0,
            warmup_ratio=0.03,
            save_steps=10**6,
            logging_steps=args.steps,
        )
        watcher = PeakWatcher(job.id)
        watcher.start()
        steps, final = [], None
        try:
            async for event in client.watch_job(job.id):
                if event.HasField("step_metrics"):
                    steps.append(event.step_metrics)
                if event.HasField("state_change"):
                    final = event.state_change
        finally:
            watcher.stop()
    if final is None or final.state != pb.TrainingJob.STATE_SUCCEEDED:
        raise RuntimeError(f"job ended {final}")
    return {
        "tokens_per_second": steps[-1].tokens_per_second,
        "final_loss": steps[-1].loss,
        "peak_rss_mib": watcher.peak or None,
        "cuda_max_allocated_mib": None,
    }


# -- the behaviour demo -------------------------------------------------------------------------------------


def run_worker(spec: dict, job_dir: Path) -> list[dict]:
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "spec.json").write_text(json.dumps(spec))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OTEL_SDK_DISABLED": "true",
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", ""),
    }
    subprocess.run(
        [sys.executable, "-m", "lorag_training.worker", str(job_dir / "spec.json")],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return [json.loads(line) for line in (job_dir / "events.jsonl").read_text().splitlines()]


def generate(model: Any, tok: Any, prompts: list[list[dict]], max_new_tokens: int) -> list[str]:
    import torch

    tok.padding_side = "left"
    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def behaviour(args: argparse.Namespace) -> dict:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lorag_models import resolve_model

    work = Path(tempfile.mkdtemp(prefix="lorag-behaviour-"))
    uri = f"sqlite:///{work / 'mlflow.db'}"
    hp = {
        "rank": 8,
        "alpha": 16.0,
        "dropout": 0.05,
        "target_modules": [],
        "epochs": 1.0,
        "max_steps": args.steps,
        "learning_rate": args.lr,
        "batch_size": args.batch,
        "gradient_accumulation_steps": 1,
        "max_length": args.max_length,
        "seed": args.seed,
        "eval_split_fraction": 0.1,
        "warmup_ratio": 0.1,
        "eval_steps": 0,
        "save_steps": 10**6,
        "logging_steps": 5,
    }
    spec = {
        "job_id": "behaviour",
        "base_model": MODEL,
        "dataset_path": str(TRAIN),
        "dataset_version": "demo",
        "dataset_format": "chat",
        "method": "lora",
        "hyperparameters": hp,
        "adapter_name": "behaviour",
        "output_dir": str(work / "job"),
        "mlflow": {"tracking_uri": uri, "registry_uri": uri, "experiment": "behaviour"},
        "devices": [],
        "display_name": "behaviour demo",
    }
    t0 = time.perf_counter()
    events = run_worker(spec, work / "job")
    train_seconds = time.perf_counter() - t0
    prompts = [json.loads(line)["messages"] for line in HELDOUT.read_text().splitlines() if line.strip()]
    path = resolve_model(MODEL).path
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    base = generate(model, tok, prompts, args.max_new_tokens)
    tuned_model = PeftModel.from_pretrained(model, str(work / "job" / "adapter"))
    tuned = generate(tuned_model, tok, prompts, args.max_new_tokens)
    evals = [e for e in events if e["type"] == "eval"]
    return {
        "settings": hp,
        "train_wall_seconds": round(train_seconds, 1),
        "final_train_loss": [e for e in events if e["type"] == "step"][-1]["loss"],
        "final_eval_loss": evals[-1]["eval_loss"] if evals else None,
        "heldout_prompts": len(prompts),
        "behaviour_rate_base": behaviour_rate(base),
        "behaviour_rate_adapter": behaviour_rate(tuned),
        "samples": [
            {"prompt": p[-1]["content"], "base": b, "adapter": a}
            for p, b, a in list(zip(prompts, base, tuned, strict=True))[:4]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--plain", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--behaviour", action="store_true", help="measure the behaviour demo instead")
    args = parser.parse_args()
    if args.plain:
        print(json.dumps(plain_train(args)))
        return
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.behaviour:
        result = behaviour(args)
        print(json.dumps(result, indent=2))
        (RESULTS / "training_behaviour.json").write_text(json.dumps(result, indent=2) + "\n")
        return
    plain, lorag = [], []
    with tempfile.TemporaryDirectory(prefix="lorag-trainbench-") as tmp:
        for _ in range(args.repeats):
            plain.append(run_plain(args))
            lorag.append(run_service(args, Path(tmp)))
    p_tps = statistics.median(r["tokens_per_second"] for r in plain)
    l_tps = statistics.median(r["tokens_per_second"] for r in lorag)
    result = {
        "device": args.device,
        "settings": {k: getattr(args, k) for k in ("steps", "batch", "max_length", "lr", "seed", "repeats")},
        "plain_tokens_per_second": [round(r["tokens_per_second"], 1) for r in plain],
        "lorag_tokens_per_second": [round(r["tokens_per_second"], 1) for r in lorag],
        "ratio_median": round(l_tps / p_tps, 3),
        "target": 0.98,
        "plain_peak_rss_mib": max(r["peak_rss_mib"] for r in plain),
        "lorag_worker_peak_rss_mib": max((r["peak_rss_mib"] or 0) for r in lorag) or None,
        "plain_cuda_max_allocated_mib": plain[-1]["cuda_max_allocated_mib"],
        "plain_final_loss": plain[-1]["final_loss"],
        "lorag_final_loss": lorag[-1]["final_loss"],
    }
    print(f"{'path':<10}{'tokens/s (median)':>20}{'peak RSS MiB':>16}")
    print(f"{'plain':<10}{p_tps:>20.1f}{result['plain_peak_rss_mib']:>16.0f}")
    print(f"{'lorag':<10}{l_tps:>20.1f}{(result['lorag_worker_peak_rss_mib'] or 0):>16.0f}")
    print(f"ratio lorag/plain = {result['ratio_median']} (target >= 0.98)")
    (RESULTS / "training.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
