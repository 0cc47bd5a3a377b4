"""Remote providers' pure parts: which token, which fields go upstream, how long to wait."""

from __future__ import annotations

import email.utils
import time
from pathlib import Path
from typing import Any

import huggingface_hub.constants
import pytest

from heylook.providers.huggingface import HuggingFaceProvider
from heylook.providers.remote import _retry_after, openai_fields
from heylook.types import JsonFormat, SamplingOptions


@pytest.fixture
def stored_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "token"
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(path))
    for variable in ("HF_TOKEN", "HF_API_KEY", "MY_HF"):
        monkeypatch.delenv(variable, raising=False)
    return path


def test_token_order_hf_token_then_hf_api_key_then_the_stored_login(stored_token: Path, monkeypatch) -> None:
    provider = HuggingFaceProvider()
    assert provider.token() is None
    stored_token.write_text("from-login")
    assert provider.token() == "from-login"
    monkeypatch.setenv("HF_API_KEY", "from-api-key")
    assert provider.token() == "from-api-key"
    monkeypatch.setenv("HF_TOKEN", "from-hf-token")
    assert provider.token() == "from-hf-token"
    # An alias naming its own variable uses that one alone.
    assert HuggingFaceProvider(token_env="MY_HF").token() is None
    monkeypatch.setenv("MY_HF", "mine")
    assert HuggingFaceProvider(token_env="MY_HF").token() == "mine"


def test_the_router_url_can_be_moved(monkeypatch) -> None:
    monkeypatch.delenv("HEYLOOK_HF_ROUTER", raising=False)
    assert HuggingFaceProvider().base_url == "https://router.huggingface.co/v1"
    monkeypatch.setenv("HEYLOOK_HF_ROUTER", "http://proxy.internal/v1/")
    assert HuggingFaceProvider().base_url == "http://proxy.internal/v1"
    assert HuggingFaceProvider(base_url="http://alias.example/v1").base_url == "http://alias.example/v1"


@pytest.mark.parametrize(
    ("options", "fields"),
    [
        (SamplingOptions(), {}),
        (
            SamplingOptions(
                temperature=0.2, top_p=0.9, max_tokens=5, seed=1, stop=("x",), presence_penalty=0.5
            ),
            {
                "temperature": 0.2,
                "top_p": 0.9,
                "max_tokens": 5,
                "seed": 1,
                "stop": ["x"],
                "presence_penalty": 0.5,
            },
        ),
        (
            SamplingOptions(top_k=40, min_p=0.1, repetition_penalty=1.1),
            {"top_k": 40, "min_p": 0.1, "repetition_penalty": 1.1},
        ),
        (SamplingOptions(response_format=JsonFormat()), {"response_format": {"type": "json_object"}}),
        (
            SamplingOptions(response_format=JsonFormat('{"type": "object"}')),
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "output", "schema": {"type": "object"}},
                }
            },
        ),
    ],
)
def test_options_go_upstream_as_openai_fields(options: SamplingOptions, fields: dict) -> None:
    assert openai_fields(options) == fields


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert _retry_after({"retry-after": "3"}) == 3.0
    assert _retry_after({}) is None
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (_retry_after({"retry-after": later}) or 0) <= 31


def test_every_provider_models_yaml_names_has_a_class() -> None:
    from heylook.providers import KINDS
    from heylook.registry.aliases import PROVIDERS

    assert set(KINDS) == set(PROVIDERS)


@pytest.mark.parametrize(
    ("think", "hint", "sent"),
    [
        ("low", False, {"reasoning_effort": "low"}),
        # Anthropic's adaptive thinking and effort are hints: an upstream that cannot reason would
        # refuse reasoning_effort, so none goes.
        ("high", True, {}),
        (True, False, {}),
        (None, False, {}),
    ],
)
def test_reasoning_effort_goes_upstream_unless_a_hint(think: Any, hint: bool, sent: dict) -> None:
    from heylook.providers.remote import tool_fields
    from heylook.types import GenerationRequest

    request = GenerationRequest("m", "hi", SamplingOptions(), think=think, think_hint=hint)
    assert tool_fields(request) == sent
