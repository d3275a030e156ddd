"""Pure parts of the worker: spec validation, label masking, splits, schedules, device/dtype/quantisation choice,
torchrun rank logic, the events file and failure classification. Only the tokenizer is loaded (no model)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lorag_training.worker.__main__ import failure_of
from lorag_training.worker.data import (
    IGNORE_INDEX,
    DatasetError,
    collate,
    encode_chat,
    encode_completion,
    encode_rows,
    make_schedule,
    read_rows,
    split_indices,
)
from lorag_training.worker.events import EventWriter, read_events
from lorag_training.worker.loop import epoch_order, lr_lambda
from lorag_training.worker.model import (
    DistContext,
    choose_device,
    choose_dtype,
    dist_backend,
    dist_context,
    lora_config,
    quantization_config,
)
from lorag_training.worker.spec import Hyperparameters, SpecError, WorkerError, load_spec, parse_spec

pytestmark = pytest.mark.unit


def spec_dict(tmp_path: Path, **over: object) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "job_id": "j1",
        "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "dataset_path": str(tmp_path / "d.jsonl"),
        "dataset_version": "abc",
        "dataset_format": "chat",
        "method": "lora",
        "hyperparameters": {
            "rank": 8,
            "alpha": 16.0,
            "dropout": 0.05,
            "target_modules": [],
            "epochs": 1.0,
            "max_steps": 0,
            "learning_rate": 2e-4,
            "batch_size": 4,
            "gradient_accumulation_steps": 1,
            "max_length": 2048,
            "seed": 42,
            "eval_split_fraction": 0.1,
            "warmup_ratio": 0.03,
            "eval_steps": 0,
            "save_steps": 0,
            "logging_steps": 10,
        },
        "adapter_name": "a",
        "output_dir": str(tmp_path),
        "mlflow": {"tracking_uri": "sqlite:///x.db", "registry_uri": "sqlite:///x.db", "experiment": "e"},
        "devices": [],
        "display_name": "",
    }
    spec.update(over)
    return spec


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from lorag_models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model().path)


# -- spec -----------------------------------------------------------------------------------------------------


def test_spec_round_trip(tmp_path: Path) -> None:
    (tmp_path / "spec.json").write_text(json.dumps(spec_dict(tmp_path, dataset_name="ds")))
    spec = load_spec(tmp_path / "spec.json")
    assert spec.hyperparameters == Hyperparameters(alpha=16.0, eval_split_fraction=0.1)
    assert spec.events_path == tmp_path / "events.jsonl"
    assert spec.checkpoints_dir == tmp_path / "checkpoints"
    assert spec.extra == {"dataset_name": "ds"}
    assert spec.hyperparameters.as_params()["target_modules"] == "all-linear"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"method": "full"}, "method"),
        ({"dataset_format": "csv"}, "dataset_format"),
        ({"job_id": 3}, "job_id"),
        ({"adapter_name": ""}, "adapter_name"),
    ],
)
def test_spec_rejects_bad_top_level_fields(tmp_path: Path, change: dict, field: str) -> None:
    with pytest.raises(SpecError, match=field) as info:
        parse_spec(spec_dict(tmp_path, **change))
    assert info.value.reason == "INVALID_SPEC"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("rank", 0),
        ("rank", 300),
        ("dropout", 1.0),
        ("learning_rate", 0.0),
        ("batch_size", 0),
        ("eval_split_fraction", 0.6),
        ("logging_steps", 0),
        ("seed", "x"),
        ("rank", True),
    ],
)
def test_spec_rejects_out_of_range_hyperparameters(tmp_path: Path, name: str, value: object) -> None:
    raw = spec_dict(tmp_path)
    raw["hyperparameters"][name] = value
    with pytest.raises(SpecError, match=f"hyperparameters.{name}"):
        parse_spec(raw)


def test_missing_and_unreadable_spec(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpecError, match="unreadable"):
        load_spec(tmp_path / "bad.json")


# -- data -----------------------------------------------------------------------------------------------------


def test_chat_labels_cover_only_assistant_turns(tokenizer) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "Hi there."},
        {"role": "user", "content": "Again."},
        {"role": "assistant", "content": "Hello again."},
    ]
    ex = encode_chat(tokenizer, messages, 512)
    assert len(ex.input_ids) == len(ex.labels)
    learned = tokenizer.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE_INDEX])
    assert learned == "Hi there.<|im_end|>\nHello again.<|im_end|>\n"
    prompt = tokenizer.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab == IGNORE_INDEX])
    assert "Say hi." in prompt and "Be brief." in prompt and "Hi there" not in prompt
    assert all(lab in (IGNORE_INDEX, tok) for tok, lab in zip(ex.input_ids, ex.labels, strict=True))


def test_chat_truncation_keeps_alignment(tokenizer) -> None:
    messages = [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "ok"}]
    ex = encode_chat(tokenizer, messages, 16)
    assert len(ex.input_ids) == 16
    assert set(ex.labels) == {IGNORE_INDEX}  # the answer was cut off: nothing to learn
    short = [
        {"role": "system", "content": "x"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "ok"},
    ]
    examples, dropped = encode_rows(tokenizer, [{"messages": messages}, {"messages": short}], "chat", 24)
    assert dropped == 1 and len(examples) == 1 and len(examples[0].input_ids) < 24
    opening = encode_chat(tokenizer, [{"role": "assistant", "content": "Welcome."}], 64)
    learned = [t for t, lab in zip(opening.input_ids, opening.labels, strict=True) if lab != IGNORE_INDEX]
    assert tokenizer.decode(learned).startswith("Welcome.")
    with pytest.raises(DatasetError, match="max_length"):
        encode_rows(tokenizer, [{"messages": messages}], "chat", 16)


def test_completion_labels_cover_completion_and_eos(tokenizer) -> None:
    ex = encode_completion(tokenizer, "Q: two plus two?\nA:", " four", 64)
    learned = [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE_INDEX]
    assert tokenizer.decode(learned) == " four" + tokenizer.eos_token
    assert ex.labels[0] == IGNORE_INDEX
    assert tokenizer.decode(ex.input_ids).startswith("Q: two plus two?")


def test_read_rows_reports_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": 1, "completion": "b"}\n')
    with pytest.raises(DatasetError, match="line 3: prompt"):
        read_rows(path, "completion")
    path.write_text('{"messages": [{"role": "robot", "content": "x"}]}\n')
    with pytest.raises(DatasetError, match=r"messages\[0\].role"):
        read_rows(path, "chat")
    path.write_text("not json\n")
    with pytest.raises(DatasetError, match="line 1: invalid JSON"):
        read_rows(path, "chat")
    path.write_text('{"prompt": "a", "completion": "b"}\n')
    assert read_rows(path, "completion") == [{"prompt": "a", "completion": "b"}]


def test_split_is_deterministic_and_disjoint() -> None:
    train, held = split_indices(20, 0.1, seed=7)
    assert (train, held) == split_indices(20, 0.1, seed=7)
    assert len(held) == 2 and not set(train) & set(held) and sorted(train + held) == list(range(20))
    assert split_indices(20, 0.1, seed=8) != (train, held)
    assert split_indices(5, 0.0, seed=1) == ([0, 1, 2, 3, 4], [])
    assert len(split_indices(3, 0.01, seed=1)[1]) == 1  # a positive fraction holds out at least one row


def test_collate_pads_and_masks(tokenizer) -> None:
    a = encode_completion(tokenizer, "x", " yes", 64)
    b = encode_completion(tokenizer, "a longer prompt here", " no", 64)
    batch = collate([a, b], pad_id=tokenizer.pad_token_id)
    width = max(len(a.input_ids), len(b.input_ids))
    assert batch["input_ids"].shape == (2, width)
    assert batch["attention_mask"].sum().item() == len(a.input_ids) + len(b.input_ids)
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_schedule_and_positions() -> None:
    s = make_schedule(n_train_per_rank=10, batch_size=4, accumulation=2, epochs=2.5, max_steps=0)
    assert (s.batches_per_epoch, s.steps_per_epoch, s.total_steps) == (3, 2, 5)
    assert [s.position(i) for i in range(5)] == [(0, 0), (0, 2), (1, 0), (1, 2), (2, 0)]
    assert s.epoch_at(3) == 1.5
    assert make_schedule(10, 4, 1, 1.0, max_steps=7).total_steps == 7


def test_lr_warmup_then_linear_decay() -> None:
    f = lr_lambda(total_steps=10, warmup_steps=2)
    values = [f(i) for i in range(11)]
    assert values[0] < values[1] < values[2] == 1.0
    assert values[2:] == sorted(values[2:], reverse=True) and values[10] == 0.0
    assert lr_lambda(5, 0)(0) == 1.0


# -- devices, dtype, quantisation, ranks ------------------------------------------------------------------


def test_device_choice() -> None:
    single = DistContext()
    assert choose_device([], single, cuda_count=0) == "cpu"
    assert choose_device([], single, cuda_count=4) == "cpu"
    assert choose_device(["cuda:3"], single, cuda_count=1) == "cuda:0"  # CUDA_VISIBLE_DEVICES renumbers
    assert choose_device(["cuda:0", "cuda:1"], DistContext(2, 1, 1), cuda_count=2) == "cuda:1"
    with pytest.raises(WorkerError) as info:
        choose_device(["cuda:0"], single, cuda_count=0)
    assert info.value.reason == "DEVICE_UNAVAILABLE"
    with pytest.raises(WorkerError):
        choose_device([], DistContext(2, 0, 0), cuda_count=0)


def test_dtype_choice() -> None:
    assert choose_dtype("cpu", bf16_supported=True) == torch.float32
    assert choose_dtype("cuda:0", bf16_supported=True) == torch.bfloat16
    assert choose_dtype("cuda:0", bf16_supported=False) == torch.float32
    assert dist_backend("cuda:0") == "nccl" and dist_backend("cpu") == "gloo"


def test_quantization_only_for_qlora_on_cuda() -> None:
    assert quantization_config("lora", "cpu", torch.float32) is None
    assert quantization_config("dora", "cuda:0", torch.bfloat16) is None
    with pytest.raises(WorkerError, match="CUDA") as info:
        quantization_config("qlora", "cpu", torch.float32)
    assert info.value.reason == "UNSUPPORTED_METHOD"


def test_quantization_config_shape() -> None:
    pytest.importorskip("bitsandbytes")
    cfg = quantization_config("qlora", "cuda:0", torch.bfloat16)
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_compute_dtype == torch.bfloat16


def test_lora_config_targets_and_dora() -> None:
    hp = Hyperparameters(rank=4, alpha=8.0, target_modules=())
    assert lora_config("lora", hp).target_modules == "all-linear"
    assert lora_config("lora", hp).use_dora is False
    cfg = lora_config("dora", Hyperparameters(target_modules=("q_proj", "v_proj")))
    assert cfg.use_dora is True and set(cfg.target_modules) == {"q_proj", "v_proj"}


def test_torchrun_environment() -> None:
    assert dist_context({}) == DistContext(1, 0, 0)
    ctx = dist_context({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "2"})
    assert ctx.distributed and not ctx.is_main and ctx.local_rank == 2
    assert dist_context({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}).is_main
    for bad in ({"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "x"}):
        with pytest.raises(WorkerError):
            dist_context(bad)


def test_ranks_see_disjoint_shards_in_a_reproducible_order() -> None:
    shards = [epoch_order(10, DistContext(2, r, r), seed=3, epoch=0) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 5
    assert sorted(shards[0] + shards[1]) == list(range(10))
    assert epoch_order(10, DistContext(), 3, 1) == epoch_order(10, DistContext(), 3, 1)
    assert epoch_order(10, DistContext(), 3, 1) != epoch_order(10, DistContext(), 3, 0)


# -- events and failures ------------------------------------------------------------------------------------


def test_event_writer_appends_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    w = EventWriter(path)
    w.emit("step", step=1, loss=float("nan"))
    w.log("info", "hello")
    w.close()
    EventWriter(path, enabled=False).emit("step", step=2)  # other ranks write nothing
    w2 = EventWriter(path)
    w2.emit("completed", adapter={"name": "a"})
    w2.close()
    with open(path, "a") as fh:
        fh.write('{"type": "trunc')  # a crash mid-line
    events = read_events(path)
    assert [e["type"] for e in events] == ["step", "log", "completed"]
    assert events[0]["loss"] is None and events[0]["time"].endswith("Z")
    assert events[1] == {"type": "log", "time": events[1]["time"], "level": "info", "message": "hello"}


def test_failure_reasons() -> None:
    assert failure_of(WorkerError("DATASET_ERROR", "line 2: bad"))[0] == "DATASET_ERROR"
    reason, message = failure_of(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert reason == "OUT_OF_MEMORY" and "batch_size" in message and "max_length" in message
    assert failure_of(RuntimeError("DefaultCPUAllocator: can't allocate memory"))[0] == "OUT_OF_MEMORY"
    assert failure_of(ValueError("boom")) == ("TRAINING_ERROR", "ValueError: boom")


def test_worker_threads_spin_unless_told_otherwise() -> None:
    from lorag_training.worker.__main__ import set_thread_wait_policy

    env = {"OMP_WAIT_POLICY": "PASSIVE"}  # what the service's chassis default passes down
    assert set_thread_wait_policy(env) == "ACTIVE" and env["OMP_WAIT_POLICY"] == "ACTIVE"
    env = {"OMP_WAIT_POLICY": "PASSIVE", "LORAG_TRAINING_WORKER_OMP_WAIT_POLICY": "PASSIVE"}
    assert set_thread_wait_policy(env) == "PASSIVE" and env["OMP_WAIT_POLICY"] == "PASSIVE"
