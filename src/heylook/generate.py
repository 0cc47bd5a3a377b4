"""The one generation path behind every API: request in, chunks out.

`start_generation` does everything that can fail with a clean HTTP status (unknown model, load
failure, bad prompt) before the first byte of a response; afterwards only chunks flow.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any

import anyio.to_thread

from heylook.engine import GenerationStream
from heylook.errors import InvalidRequest
from heylook.router import ModelRouter
from heylook.types import (
    ChatPrompt,
    Chunk,
    FinalChunk,
    GenerationRequest,
    Prompt,
    SamplingOptions,
    SamplingParams,
    TextPrompt,
)

# OpenAI's defaults; the lowest layer under request, alias and model generation_config.
HEYLOOK_DEFAULTS = SamplingOptions(temperature=1.0, top_p=1.0, ignore_eos=False)


@dataclass
class Generation:
    """A request admitted to a model's engine."""

    request: GenerationRequest
    prompt_tokens: int
    stream: GenerationStream
    load_ns: int
    started_ns: int

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The engine's chunks; the final one carries load and total time.

        Closing this iterator closes the engine's, which cancels the sequence at once rather than
        whenever the garbage collector gets to it.
        """
        async with aclosing(self.stream.chunks()) as chunks:
            async for chunk in chunks:
                if isinstance(chunk, FinalChunk):
                    total = time.perf_counter_ns() - self.started_ns
                    chunk = replace(
                        chunk, timings=replace(chunk.timings, load_ns=self.load_ns, total_ns=total)
                    )
                yield chunk

    def cancel(self) -> None:
        self.stream.cancel()


async def start_generation(router: ModelRouter, request: GenerationRequest) -> Generation:
    started = time.perf_counter_ns()
    resolved = await router.get(request.model)
    model = resolved.model
    options = (
        request.options.over(resolved.alias.options).over(model.generation_defaults).over(HEYLOOK_DEFAULTS)
    )
    assert options.temperature is not None and options.top_p is not None  # HEYLOOK_DEFAULTS sets both
    prompt_ids = await anyio.to_thread.run_sync(encode_prompt, model.tokenizer, request.prompt)
    room = model.context_length - len(prompt_ids)
    if room < 1:
        raise InvalidRequest(
            f"the prompt is {len(prompt_ids)} tokens; {request.model!r} has a context of "
            f"{model.context_length} tokens",
            param="messages" if isinstance(request.prompt, ChatPrompt) else "prompt",
        )
    params = SamplingParams(
        max_new_tokens=min(options.max_tokens or room, room),
        temperature=options.temperature,
        top_p=options.top_p,
        seed=options.seed,
        stop=options.stop or (),
        ignore_eos=bool(options.ignore_eos),
    )
    stream = model.engine.submit(prompt_ids, params)
    return Generation(request, len(prompt_ids), stream, resolved.load_ns, started)


def encode_prompt(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids for a prompt: chat messages through the model's chat template, text as is."""
    if isinstance(prompt, TextPrompt):
        ids = list(tokenizer(prompt.text)["input_ids"])
        param = "prompt"
    else:
        param = "messages"
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidRequest(
                "this model has no chat template; send a raw prompt to /v1/completions instead", param=param
            )
        messages = [{"role": m.role, "content": m.content} for m in prompt.messages]
        try:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as error:  # jinja2 raises on messages a template refuses (e.g. bad role order)
            raise InvalidRequest(
                f"the model's chat template refused these messages: {error}", param=param
            ) from None
        # The template already wrote any BOS or special tokens into the text.
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        if tokenizer.bos_token_id is None:
            raise InvalidRequest("the prompt is empty", param=param)
        ids = [tokenizer.bos_token_id]
    return ids
