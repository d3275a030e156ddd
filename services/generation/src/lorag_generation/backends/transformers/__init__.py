"""A causal LM in this process, decoding concurrent requests in one batch with a KV cache.

Threads, and why:

* **Decoding** runs on one dedicated thread that owns the model: the event loop stays free to accept requests and
  forward tokens while a forward pass runs, and nothing else ever touches the weights (adapter loads and unloads
  are commands the thread runs between steps), so no lock is held around a forward pass.
* **Tokenization** of prompts happens on the event loop with a tokenizer of its own (a few hundred microseconds),
  so an over-long prompt is refused before it takes a slot.

The decode loop is continuous batching: each iteration admits waiting requests into the running batch (their prompts
are prefilled left-padded with their own cache, which is then left-padded and concatenated onto the running cache),
runs one decode step for every row, and drops the rows that finished (end-of-sequence, max_new_tokens, a stop
sequence, or the client going away). A row's tokens reach its asyncio queue through one ``call_soon_threadsafe``
per step. Each row samples with its own settings and ``torch.Generator``; rows with different LoRA adapters share a
step through peft's ``adapter_names``.

Modules, by concern: ``backend`` (the ``GenerationBackend`` facade on the event loop), ``rows`` (what the two sides
share), ``decode_loop`` (the thread's loop), ``kv_cache`` (the running batch and its cache), ``lora`` (adapters and
forward routing), ``sampling``, ``detokenize``, ``loading`` (device, dtype, weights).
"""

from lorag_generation.backends.transformers.backend import TransformersBackend
from lorag_generation.backends.transformers.detokenize import IncrementalDetokenizer
from lorag_generation.backends.transformers.loading import choose_device, choose_dtype
from lorag_generation.backends.transformers.sampling import sample_token

__all__ = [
    "IncrementalDetokenizer",
    "TransformersBackend",
    "choose_device",
    "choose_dtype",
    "sample_token",
]
