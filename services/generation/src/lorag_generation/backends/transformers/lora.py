"""The LoRA adapters attached to the model, and which of them each forward pass runs with.

peft wraps the model on the first load (``PeftModel``) and injects LoRA layers into it in place, so the transformers
model stays the module called: a pass whose rows are all on the base model runs with the LoRA layers disabled, a
pass on one adapter with that adapter active (neither pays for per-row routing), and a mix of adapters goes through
peft's per-row ``adapter_names``. Everything here runs on the decode thread.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from lorag_generation.backends.base import AdapterFiles

#: peft's name for "no adapter" in a mixed batch.
BASE_ADAPTER = "__base__"


class LoraAdapters:
    """Attaches and detaches adapters by name and routes forward passes; ``resident`` is shared with the event loop,
    which only reads it (to refuse a job naming an adapter that is not attached)."""

    def __init__(self, model: Any, device: Any, resident: set[str]) -> None:
        self.model = model
        self.device = device
        self.resident = resident
        self.peft: Any = None
        self.mode: tuple[str, str | None] | None = None  # the layers' state the last pass left: base, single, mixed

    def load(self, name: str, files: AdapterFiles) -> None:
        """Attach the adapter at ``files.path`` under ``name``, replacing what that name held."""
        from peft import PeftModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, files.path, adapter_name=name, is_trainable=False)
            else:
                if name in self.resident:
                    self.peft.delete_adapter(name)
                    self.resident.discard(name)
                self.peft.load_adapter(files.path, adapter_name=name, is_trainable=False)
            self.peft.to(self.device)
            self.peft.eval()
        self.resident.add(name)
        self.mode = None

    def unload(self, name: str) -> None:
        if name not in self.resident:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.peft.delete_adapter(name)
        self.resident.discard(name)
        self.mode = None

    def forward(self, adapters: Sequence[str | None], **inputs: Any) -> Any:
        """One forward pass, row ``i`` with adapter ``adapters[i]`` (``None``: the base model)."""
        if self.peft is None:
            return self.model(**inputs)
        names = set(adapters)
        if names == {None}:
            mode: tuple[str, str | None] = ("base", None)
        elif len(names) == 1:
            mode = ("single", next(iter(names)))
        else:
            mode = ("mixed", None)
        if mode != self.mode:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if mode[0] == "base":
                    self.peft.base_model.disable_adapter_layers()
                else:
                    self.peft.base_model.enable_adapter_layers()
                    # PeftModel keeps its own active adapter (used by its forward); keep it a resident one.
                    active = mode[1] or next(name for name in names if name is not None)
                    self.peft.set_adapter(active)
            self.mode = mode
        if mode[0] == "mixed":
            return self.peft(**inputs, adapter_names=[adapter or BASE_ADAPTER for adapter in adapters])
        return self.model(**inputs)
