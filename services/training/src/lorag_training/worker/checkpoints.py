"""Checkpoints that make a resumed job continue exactly where it stopped.

`<output_dir>/checkpoints/checkpoint-<step>/` holds the PEFT adapter (loadable as it is), the trainable tensors
bit for bit, the optimizer and LR-scheduler states, every RNG state and the data position. The `COMPLETE` marker
is written last, after everything else is fsynced: a folder without it (a crash mid-save) is ignored and replaced.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

MARKER = "COMPLETE"
STATE_FILE = "trainer_state.json"


@dataclass(frozen=True)
class SavedCheckpoint:
    name: str
    step: int
    path: Path
    size_bytes: int


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"checkpoint-{step}"


def latest_complete(root: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    best: tuple[int, Path] | None = None
    if not root.is_dir():
        return None
    for child in root.iterdir():
        if not child.name.startswith("checkpoint-") or not (child / MARKER).exists():
            continue
        try:
            step = int(child.name.removeprefix("checkpoint-"))
        except ValueError:
            continue
        if best is None or step > best[0]:
            best = (step, child)
    return None if best is None else best[1]


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _fsync_tree(path: Path) -> None:
    for f in path.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def save(
    root: Path,
    step: int,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    rank_rng: list[dict[str, Any]] | None = None,
) -> SavedCheckpoint:
    """Write checkpoint-<step> (rank 0 only). `state` is the JSON-able loop state (step, data position, ...);
    `rank_rng` the RNG states of every rank (so each rank's dropout stream resumes too)."""
    path = checkpoint_dir(root, step)
    if path.exists():
        shutil.rmtree(path)  # an incomplete leftover of a crash at this very step
    path.mkdir(parents=True)
    model.save_pretrained(path / "adapter")
    torch.save(trainable_state(model), path / "trainable.pt")
    torch.save(optimizer.state_dict(), path / "optimizer.pt")
    torch.save(scheduler.state_dict(), path / "scheduler.pt")
    torch.save(rank_rng if rank_rng is not None else [rng_state()], path / "rng_state.pt")
    (path / STATE_FILE).write_text(json.dumps(state, indent=2), encoding="utf-8")
    _fsync_tree(path)
    with open(path / MARKER, "w", encoding="utf-8") as fh:
        fh.write(str(step))
        fh.flush()
        os.fsync(fh.fileno())
    return SavedCheckpoint(path.name, step, path, _size(path))


def load(path: Path, model: Any, optimizer: torch.optim.Optimizer, scheduler: Any, rank: int = 0) -> dict[str, Any]:
    """Restore everything save() wrote into live objects; returns the loop state."""
    trainable = torch.load(path / "trainable.pt", map_location="cpu", weights_only=True)
    params = dict(model.named_parameters())
    missing = [n for n in trainable if n not in params]
    if missing:
        raise RuntimeError(f"checkpoint {path.name} does not match the model: {missing[:3]}")
    with torch.no_grad():
        for name, tensor in trainable.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=False))
    rngs = torch.load(path / "rng_state.pt", map_location="cpu", weights_only=False)
    set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
    return json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
