"""Decoding settings shared by the generation and gateway clients."""

from __future__ import annotations

from collections.abc import Sequence

from lorag.common.v1 import common_pb2


def sampling_params(
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    max_new_tokens: int | None = None,
    stop_sequences: Sequence[str] = (),
    seed: int | None = None,
    repetition_penalty: float | None = None,
) -> common_pb2.SamplingParams:
    """A ``SamplingParams`` from keyword arguments; ``None`` leaves a field unset (the service's default)."""
    params = common_pb2.SamplingParams(stop_sequences=list(stop_sequences))
    given: dict[str, float | int | None] = {
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "repetition_penalty": repetition_penalty,
    }
    for name, value in given.items():
        if value is not None:
            setattr(params, name, value)
    return params


FINISH_REASONS = {
    common_pb2.FINISH_REASON_UNSPECIFIED: "",
    common_pb2.FINISH_REASON_STOP: "stop",
    common_pb2.FINISH_REASON_LENGTH: "length",
    common_pb2.FINISH_REASON_STOP_SEQUENCE: "stop_sequence",
    common_pb2.FINISH_REASON_CANCELLED: "cancelled",
}
"""Finish reasons as the short names the SDK and the CLI's JSON use."""
