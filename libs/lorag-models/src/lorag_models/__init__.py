"""Where lorag's models come from: a Hugging Face id or local folder, or a packaged offline default.

`resolve_model(ref)` turns what a user configured into a folder transformers can load with
`from_pretrained`. The packaged SmolLM2-135M-Instruct ships as a GGUF file; it is converted once into a
safetensors folder in the cache (outside any checkout) so that later loads take well under a second.
"""

from lorag_models.resolve import (
    DEFAULT_CHAT_MODEL,
    ModelNotFound,
    ResolvedModel,
    cache_dir,
    resolve_model,
)

__all__ = ["DEFAULT_CHAT_MODEL", "ModelNotFound", "ResolvedModel", "cache_dir", "resolve_model"]
