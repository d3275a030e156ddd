"""The proto edge's rules of the contract (input, roles, sampling ranges, adapter references, context)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from lorag.common.v1 import common_pb2
from lorag.generation.v1 import generation_service_pb2 as pb
from lorag_core.errors import InvalidArgument
from lorag_generation.backends.base import GenerationInput, Role
from lorag_generation.convert import (
    AdapterReference,
    check_prompt_fits,
    parse_adapter_reference,
    parse_input,
    parse_sampling,
    validate_adapter_name,
)

pytestmark = pytest.mark.unit


def fields(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.violations]


def chat(*turns: tuple[common_pb2.Role.ValueType, str]) -> pb.GenerateRequest:
    return pb.GenerateRequest(
        chat=common_pb2.Chat(messages=[common_pb2.ChatMessage(role=r, content=c) for r, c in turns])
    )


def sampling(**values: Any) -> common_pb2.SamplingParams:
    return common_pb2.SamplingParams(**values)


def test_unset_sampling_takes_every_default() -> None:
    settings = parse_sampling(sampling(), max_new_tokens_limit=1024, default_temperature=0.7)
    assert (settings.temperature, settings.top_p, settings.top_k) == (pytest.approx(0.7), 1.0, 0)
    assert (settings.max_new_tokens, settings.seed, settings.repetition_penalty) == (256, None, 1.0)
    assert settings.stop_sequences == ()


def test_zero_temperature_is_greedy_and_explicit_values_are_kept() -> None:
    settings = parse_sampling(
        sampling(
            temperature=0, top_p=0.5, top_k=5, max_new_tokens=3, seed=-7, stop_sequences=["\n"], repetition_penalty=1.2
        ),
        max_new_tokens_limit=1024,
        default_temperature=0.7,
    )
    assert settings.greedy
    assert (settings.top_p, settings.top_k, settings.max_new_tokens, settings.seed) == (0.5, 5, 3, -7)
    assert settings.stop_sequences == ("\n",)
    assert settings.repetition_penalty == pytest.approx(1.2)


def test_default_max_new_tokens_never_exceeds_the_limit() -> None:
    assert parse_sampling(sampling(), max_new_tokens_limit=100, default_temperature=0.7).max_new_tokens == 100


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"temperature": 3.0}, "sampling.temperature"),
        ({"temperature": -0.1}, "sampling.temperature"),
        ({"temperature": math.nan}, "sampling.temperature"),
        ({"top_p": 0.0}, "sampling.top_p"),
        ({"top_p": 1.5}, "sampling.top_p"),
        ({"top_k": -1}, "sampling.top_k"),
        ({"max_new_tokens": 0}, "sampling.max_new_tokens"),
        ({"max_new_tokens": 1025}, "sampling.max_new_tokens"),
        ({"repetition_penalty": 0.0}, "sampling.repetition_penalty"),
        ({"stop_sequences": ["a"] * 9}, "sampling.stop_sequences"),
        ({"stop_sequences": ["ok", ""]}, "sampling.stop_sequences[1]"),
    ],
)
def test_out_of_range_sampling_names_the_field(values: dict, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_sampling(sampling(**values), max_new_tokens_limit=1024, default_temperature=0.7)
    assert fields(caught.value) == [field]


def test_every_bad_sampling_field_is_reported_at_once() -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_sampling(sampling(temperature=5, top_k=-2), max_new_tokens_limit=10, default_temperature=0.7)
    assert fields(caught.value) == ["sampling.temperature", "sampling.top_k"]


def test_prompt_and_chat_inputs() -> None:
    assert parse_input(pb.GenerateRequest(prompt="Once")) == GenerationInput(prompt="Once")
    parsed = parse_input(chat((common_pb2.ROLE_SYSTEM, "be brief"), (common_pb2.ROLE_USER, "hi")))
    assert parsed.messages is not None
    assert [(m.role, m.content) for m in parsed.messages] == [(Role.SYSTEM, "be brief"), (Role.USER, "hi")]


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (pb.GenerateRequest(), "input"),
        (pb.GenerateRequest(prompt=""), "prompt"),
        (pb.GenerateRequest(chat=common_pb2.Chat()), "chat.messages"),
        (chat((common_pb2.ROLE_UNSPECIFIED, "hi")), "chat.messages[0].role"),
        (chat((common_pb2.ROLE_USER, "hi"), (common_pb2.ROLE_SYSTEM, "late")), "chat.messages[1].role"),
        (chat((common_pb2.ROLE_USER, "hi"), (common_pb2.ROLE_ASSISTANT, "hello")), "chat.messages[1].role"),
    ],
)
def test_bad_input_names_the_field(request_: pb.GenerateRequest, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_input(request_)
    assert field in fields(caught.value)


def test_prompt_over_the_context_names_the_count_and_the_limit() -> None:
    check_prompt_fits(GenerationInput(prompt="x"), 100, 28, 128)  # exactly full is fine
    with pytest.raises(InvalidArgument) as caught:
        check_prompt_fits(GenerationInput(prompt="x"), 100, 29, 128)
    assert fields(caught.value) == ["prompt"]
    assert "100 tokens" in caught.value.message and "128" in caught.value.message
    with pytest.raises(InvalidArgument) as caught:
        check_prompt_fits(GenerationInput(prompt=None, messages=()), 200, 1, 128)
    assert fields(caught.value) == ["chat"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("support-bot", AdapterReference("support-bot")),
        ("support.bot_v2@production", AdapterReference("support.bot_v2", alias="production")),
        ("support-bot@12", AdapterReference("support-bot", version="12")),
    ],
)
def test_adapter_references(text: str, expected: AdapterReference) -> None:
    parsed = parse_adapter_reference(text)
    assert parsed == expected
    assert str(parsed) == text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("@prod", "INVALID_NAME"),
        ("a b", "INVALID_NAME"),
        ("x" * 129, "INVALID_NAME"),
        ("name@", "INVALID_ARGUMENT"),
        ("name@a@b", "INVALID_ARGUMENT"),
    ],
)
def test_bad_adapter_references_are_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_adapter_reference(text)
    assert fields(caught.value) == ["adapter"]
    assert caught.value.reason == reason


def test_adapter_names_follow_the_shared_rule() -> None:
    assert validate_adapter_name("support.bot_v2") == "support.bot_v2"
    for bad in ("", "a@b", "x" * 129):
        with pytest.raises(InvalidArgument) as caught:
            validate_adapter_name(bad)
        assert fields(caught.value) == ["name"] and caught.value.reason == "INVALID_NAME"
