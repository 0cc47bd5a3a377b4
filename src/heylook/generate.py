"""The one generation path behind every API: request in, chunks out.

`start_generation` does everything that can fail with a clean HTTP status (unknown model, load
failure, bad prompt, bad schema) before the first byte of a response; afterwards only chunks flow.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, replace
from typing import Any, Literal

import anyio.to_thread

from heylook.chat.plan import ReplyPlan, plan_chat
from heylook.chat.render import render_chat
from heylook.chat.syntax import template_text, template_traits
from heylook.engine.runner import GenerationStream
from heylook.engine.sampling import choice_seed
from heylook.errors import ContextLengthExceeded, InvalidRequest
from heylook.images import load_images
from heylook.metrics import Metrics
from heylook.models.loader import LoadedModel
from heylook.models.vision import VisionPrompt, encode_with_images
from heylook.options import defaults as settings_defaults
from heylook.registry.aliases import Alias
from heylook.router import Lease, ModelRouter
from heylook.settings import Settings
from heylook.types import (
    ChatPrompt,
    Chunk,
    FinalChunk,
    GenerationRequest,
    ImageInput,
    InfillPrompt,
    JsonFormat,
    LoadRequest,
    Logprobs,
    Message,
    Prompt,
    ReplyChunk,
    SamplingOptions,
    SamplingParams,
    TextChunk,
    TextPrompt,
    ThinkingBudget,
    Usage,
)

# Fill-in-the-middle token spellings: StarCoder (and SmolLM), Qwen-Coder and CodeGemma, DeepSeek-Coder.
_INFILL_TOKENS = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
)


@dataclass
class LocalGeneration:
    """A request admitted to a local model's engine, holding a lease on the model until closed.

    With `n` > 1 there is a stream for each choice: their chunks come out as they arrive, marked
    with their choice, each choice read apart by its own reply parser; one FinalChunk ends them
    all, with every choice's finish reason."""

    request: GenerationRequest
    prompt_tokens: int
    streams: list[GenerationStream]
    lease: Lease
    router: ModelRouter
    started_ns: int
    # How to read the reply apart (reasoning, answer, tool calls); None passes the text on as it is.
    plan: ReplyPlan | None = None
    _closed: bool = False

    @property
    def served_by(self) -> str:
        return self.lease.alias.name

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        """The engine's chunks; the final one carries load and total time. Ending, or closing this
        iterator, closes the generation."""
        clock = TokenClock(self.router.metrics, self.request.model, self.started_ns)
        try:
            if len(self.streams) == 1:
                async with aclosing(self._choice(0, clock)) as chunks:
                    async for chunk in chunks:
                        yield self._timed(chunk, clock) if isinstance(chunk, FinalChunk) else chunk
            else:
                async with aclosing(self._merged(clock)) as chunks:
                    async for chunk in chunks:
                        yield chunk
        finally:
            self.close()

    def _timed(self, final: FinalChunk, clock: TokenClock) -> FinalChunk:
        total = time.perf_counter_ns() - self.started_ns
        final = replace(final, timings=replace(final.timings, load_ns=self.lease.load_ns, total_ns=total))
        clock.finished(final)
        return final

    async def _merged(self, clock: TokenClock) -> AsyncGenerator[Chunk, None]:
        """Every choice's chunks as they come, then one FinalChunk for them all."""
        arrived: asyncio.Queue[tuple[int, Chunk | BaseException]] = asyncio.Queue()

        async def read(choice: int) -> None:
            try:
                async with aclosing(self._choice(choice, clock)) as chunks:
                    async for chunk in chunks:
                        arrived.put_nowait((choice, chunk))
            except Exception as error:
                arrived.put_nowait((choice, error))

        readers = [asyncio.create_task(read(choice)) for choice in range(len(self.streams))]
        finals: dict[int, FinalChunk] = {}
        try:
            while len(finals) < len(readers):
                choice, item = await arrived.get()
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, FinalChunk):
                    finals[choice] = item
                else:
                    yield replace(item, choice=choice)
        finally:
            for reader in readers:
                reader.cancel()
            await asyncio.gather(*readers, return_exceptions=True)
        ordered = [finals[choice] for choice in range(len(readers))]
        first = ordered[0]
        yield self._timed(
            replace(
                first,
                usage=Usage(first.usage.prompt_tokens, sum(f.usage.completion_tokens for f in ordered)),
                timings=replace(first.timings, eval_ns=max(f.timings.eval_ns for f in ordered)),
                finishes=tuple(f.finish_reason for f in ordered),
            ),
            clock,
        )

    async def _choice(self, choice: int, clock: TokenClock) -> AsyncGenerator[Chunk, None]:
        """One choice's chunks, read apart by its own parser; its FinalChunk last."""
        parser = self.plan.parser() if self.plan is not None and self.plan.reads_parts else None
        logprobs = _LogprobsCarrier()
        async with aclosing(self.streams[choice].chunks()) as chunks:
            async for chunk in chunks:
                if isinstance(chunk, FinalChunk):
                    if parser is not None:
                        for part in logprobs.onto(parser.finish(), last=True):
                            yield part
                        if parser.calls and chunk.finish_reason == "stop":
                            chunk = replace(chunk, finish_reason="tool_calls")
                    yield chunk
                    continue
                assert isinstance(chunk, TextChunk)
                if choice == 0:
                    clock.arrived(chunk.tokens)
                if parser is None:
                    yield chunk
                else:
                    logprobs.carry(chunk.logprobs)
                    for part in logprobs.onto(parser.feed(chunk.text, chunk.tokens)):
                        yield part

    def close(self) -> None:
        """Stop generating if it still is, and give the model back. Safe to call again."""
        if self._closed:
            return
        self._closed = True
        for stream in self.streams:
            stream.cancel()
        self.router.release(self.lease, keep_alive_for(self.request, self.lease.alias))


class _LogprobsCarrier:
    """Carries the engine's logprobs across the reply parser: the tokens of text the parser holds
    back go out with the next part it gives, whichever part (answer, reasoning, a tool call) that
    is, so every token is reported once, in order."""

    def __init__(self) -> None:
        self._waiting: Logprobs = ()

    def carry(self, logprobs: Logprobs) -> None:
        self._waiting += logprobs

    def onto(self, parts: list[ReplyChunk], *, last: bool = False) -> list[ReplyChunk]:
        """`parts`, the first one with the tokens waiting; `last`: the reply is over, so tokens
        still waiting go out in an empty text chunk if no part is left to carry them."""
        if not self._waiting:
            return parts
        if parts:
            parts = [replace(parts[0], logprobs=self._waiting + parts[0].logprobs), *parts[1:]]
        elif last:
            parts = [TextChunk("", logprobs=self._waiting)]
        else:
            return parts
        self._waiting = ()
        return parts


class TokenClock:
    """Times one generation's tokens for the metrics: the first, then each one after."""

    def __init__(self, metrics: Metrics | None, model: str, started_ns: int) -> None:
        self._metrics = metrics
        self._model = model
        self._last_ns = started_ns
        self._tokens = 0

    def arrived(self, tokens: int) -> None:
        if self._metrics is None:
            return
        now = time.perf_counter_ns()
        seconds = (now - self._last_ns) / 1e9
        if self._tokens == 0:
            self._metrics.time_to_first_token.labels(self._model).observe(seconds)
        elif tokens > self._tokens:
            # A chunk may carry several tokens (text held back for a stop sequence): share the wait.
            per_token = seconds / (tokens - self._tokens)
            for _ in range(tokens - self._tokens):
                self._metrics.inter_token_latency.labels(self._model).observe(per_token)
        self._last_ns, self._tokens = now, tokens

    def finished(self, final: FinalChunk) -> None:
        if self._metrics is not None:
            self._metrics.prompt_tokens.labels(self._model).inc(final.usage.prompt_tokens)
            self._metrics.prompt_tokens_cached.labels(self._model).inc(final.usage.cached_tokens)
            self._metrics.completion_tokens.labels(self._model).inc(final.usage.completion_tokens)


async def start_generation(
    router: ModelRouter, request: GenerationRequest, settings: Settings | None = None
) -> LocalGeneration:
    settings = settings or Settings()
    started = time.perf_counter_ns()
    lease = await router.acquire(request.model, request.n)
    try:
        prepared = await _prepare(lease, request, settings)
    except BaseException:
        router.release(lease, keep_alive_for(request, lease.alias))
        raise
    params = prepared.params
    if prepared.grammar is not None:
        # A schema can take a while to compile: meanwhile this request holds no place at the model.
        router.release(lease)
        grammar = await compile_grammar(prepared.grammar, settings.grammar_timeout)
        waited = lease.load_ns
        lease = await router.acquire(request.model, request.n)
        lease = replace(lease, load_ns=lease.load_ns + waited)
        params = replace(params, grammar=grammar)
    try:
        engine, ids, background = lease.model.engine, prepared.prompt_ids, request.background
        if request.n == 1:
            streams = [engine.submit(ids, params, prepared.inputs, background=background)]
        else:
            choices = [replace(params, seed=choice_seed(params.seed, choice)) for choice in range(request.n)]
            streams = engine.submit_group(ids, choices, prepared.inputs, background=background)
    except BaseException:
        router.release(lease, keep_alive_for(request, lease.alias))
        raise
    return LocalGeneration(request, len(prepared.prompt_ids), streams, lease, router, started, prepared.plan)


@dataclass(frozen=True)
class GrammarJob:
    """A grammar to compile for one request, and the field to blame if it cannot be."""

    compile: Callable[[], Any]
    param: str


# Compiles run on threads of their own, a few at a time, so a slow one cannot starve the worker
# threads every request needs (tokenizing, templates).
_COMPILE_THREADS = anyio.CapacityLimiter(2)


async def compile_grammar(job: GrammarJob, timeout: float) -> Any:
    """The compiled grammar, or a 400 when it takes longer than `timeout` (the thread is left to
    finish: xgrammar cannot be interrupted; the size limits on schemas keep that short)."""
    try:
        with anyio.fail_after(timeout):
            return await anyio.to_thread.run_sync(
                job.compile, abandon_on_cancel=True, limiter=_COMPILE_THREADS
            )
    except TimeoutError:
        message = f"the output's grammar took longer than {timeout:g} s to compile: simplify the schema"
        raise InvalidRequest(message, param=job.param) from None


async def load_only(router: ModelRouter, request: LoadRequest) -> Literal["load", "unload"]:
    """Ollama's empty prompt: load the model (or with keep_alive 0, unload it) and generate nothing."""
    if request.keep_alive == 0:
        router.unload(request.model)
        return "unload"
    lease = await router.acquire(request.model)
    router.release(lease, keep_alive_for(request, lease.alias))
    return "load"


def keep_alive_for(request: GenerationRequest | LoadRequest, alias: Alias) -> float | None:
    """The request's keep_alive, else the alias's; None leaves it to the server's default."""
    return request.keep_alive if request.keep_alive is not None else alias.keep_alive


def with_default_system(prompt: Prompt, system: str | None) -> Prompt:
    """A conversation that does not open with a system message gets the alias's; one that does
    keeps its own (a system message later on is an instruction at that point, not the prompt's)."""
    if not system or not isinstance(prompt, ChatPrompt) or _opens_with_system(prompt.messages):
        return prompt
    return replace(prompt, messages=(Message("system", system), *prompt.messages))


def _opens_with_system(messages: tuple[Message, ...]) -> bool:
    return bool(messages) and messages[0].role == "system"


@dataclass(frozen=True)
class _Prepared:
    prompt_ids: list[int]
    params: SamplingParams  # without the grammar, compiled apart
    plan: ReplyPlan | None
    grammar: GrammarJob | None
    inputs: dict[str, Any]  # a vision model's pixel inputs, for the prompt's forward pass


async def _prepare(lease: Lease, request: GenerationRequest, settings: Settings) -> _Prepared:
    model = lease.model
    if model.kind != "generate":
        # Ollama's words: "all-minilm" does not support chat.
        chat = isinstance(request.prompt, ChatPrompt) and request.prompt.untemplated is None
        what = "chat" if chat else "generate"
        raise InvalidRequest(f"{json.dumps(lease.alias.name)} does not support {what}", param="model")
    options = (
        request.options.over(lease.alias.options)
        .over(model.generation_defaults)
        .over(SamplingOptions(**settings_defaults()))
    )
    context_length = min(model.context_length, options.context_length or model.context_length)
    encoded, plan, inputs = await encode_request_and_images(
        model, lease.alias, request, settings, options.response_format, context_length
    )
    _check_context(request, model.vocab_size, _image_token_id(model))
    prompt_ids = [*request.context, *encoded]
    room = context_length - len(prompt_ids)
    if room < 1:
        raise ContextLengthExceeded(
            len(prompt_ids), context_length, request.model, param=_prompt_param(request.prompt)
        )
    # The server's limit holds for every request: those that set none (Ollama's num_predict -1) and
    # those that ask for more.
    max_new_tokens = min(options.max_tokens or room, settings.max_tokens_limit or room, room)
    grammar, grammars = None, model.grammars
    if grammars is not None and plan is not None and plan.structure is not None:
        structure, tools = plan.structure, request.tools
        grammar = GrammarJob(lambda: grammars.compile_structure(structure, tools), "tools")
    elif grammars is not None and options.response_format is not None:
        response_format = options.response_format
        grammar = GrammarJob(lambda: grammars.compile(response_format), "response_format")
    params = replace(_settle(options, max_new_tokens, None), logprobs=request.logprobs)
    params = replace(params, thinking=thinking_budget(model.tokenizer, request, plan))
    return _Prepared(prompt_ids, params, plan, grammar, inputs)


async def encode_request_and_images(
    model: LoadedModel,
    alias: Alias,
    request: GenerationRequest,
    settings: Settings,
    response_format: JsonFormat | None = None,
    context_length: int | None = None,
) -> tuple[list[int], ReplyPlan | None, dict[str, Any]]:
    """The prompt's token ids, the reply's plan, and for a chat with images (loaded here, under the
    server's URL policy) the pixel inputs of the prompt's forward pass. Images are a 400 naming
    the alias when its model reads text only. With `context_length`, a prompt whose text is too
    long for it whatever its tokens is refused before it is tokenized."""
    images = prompt_images(request.prompt)
    if not images:
        ids, plan = await anyio.to_thread.run_sync(
            encode_request, model, request, alias.system, response_format, context_length
        )
        return ids, plan, {}
    if model.processor is None:
        raise InvalidRequest(
            f"{json.dumps(alias.name)} is a text-only model and does not read images: "
            "send them to a vision model's alias",
            param=images[0].where or None,
        )
    pictures = await load_images(
        images, allow_private=settings.allow_private_image_urls, processor=model.processor
    )
    vision, plan = await anyio.to_thread.run_sync(
        encode_vision_request, model, request, alias.system, response_format, pictures, context_length
    )
    return vision.ids, plan, vision.inputs


def prompt_images(prompt: Prompt) -> tuple[ImageInput, ...]:
    """Every image of a conversation, in order: each message's, earlier turns' too."""
    if not isinstance(prompt, ChatPrompt):
        return ()
    return tuple(image for message in prompt.messages for image in message.images)


def thinking_budget(
    tokenizer: Any, request: GenerationRequest, plan: ReplyPlan | None
) -> ThinkingBudget | None:
    """The request's thinking budget for the engine, where the model marks its reasoning and
    reasons in this reply (without markers there is nothing to cut: the budget does nothing)."""
    if request.thinking_budget is None or plan is None or plan.think is None or not plan.keep_thinking:
        return None
    think = plan.think
    # The close marker on a line of its own, as templates write it; the model writes what follows.
    cut = tuple(tokenizer("\n" + think.close, add_special_tokens=False)["input_ids"])
    return ThinkingBudget(request.thinking_budget, think.open, think.close, cut, inside=plan.in_thinking)


def encode_request(
    model: LoadedModel,
    request: GenerationRequest,
    system: str | None,
    response_format: JsonFormat | None = None,
    context_length: int | None = None,
) -> tuple[list[int], ReplyPlan | None]:
    """The prompt's token ids as the model is given them (the alias's system prompt, the tools and
    the reasoning switch through the chat template), and for a chat, the reply's plan."""
    prompt = with_default_system(request.prompt, system)
    fits = None if context_length is None else ContextFit(context_length, request.model)
    if isinstance(prompt, ChatPrompt) and _has_template(model.tokenizer):
        plan = plan_chat(model.tokenizer, model.traits, prompt, request, response_format)
        refuse_text_beyond_context(model.tokenizer, plan.text, fits, "messages")
        return tokenize_rendered(model.tokenizer, plan.text), plan
    _refuse_chat_features(request)
    return encode_prompt(model.tokenizer, prompt, fits), None


def encode_vision_request(
    model: LoadedModel,
    request: GenerationRequest,
    system: str | None,
    response_format: JsonFormat | None,
    images: list[Any],
    context_length: int | None = None,
) -> tuple[VisionPrompt, ReplyPlan | None]:
    """A chat with images (`images`: its messages' images, loaded, in order) as a vision model
    takes it: rendered through the chat template with an image part before each message's text,
    then through the processor, which expands each image into its tokens and gives its pixels."""
    prompt = with_default_system(request.prompt, system)
    if not isinstance(prompt, ChatPrompt) or not _has_template(model.tokenizer):
        raise InvalidRequest(
            f"{request.model!r} places images through its chat template, and has none", param="messages"
        )
    plan = plan_chat(model.tokenizer, model.traits, prompt, request, response_format)
    fits = None if context_length is None else ContextFit(context_length, request.model)
    refuse_text_beyond_context(model.tokenizer, plan.text, fits, "messages")
    return encode_with_images(model.processor, plan.text, images, "messages"), plan


def _image_token_id(model: LoadedModel) -> int | None:
    token = getattr(model.processor, "image_token_id", None)
    return token if isinstance(token, int) else None


def _check_context(request: GenerationRequest, vocab_size: int, image_token: int | None = None) -> None:
    """Ollama's `context` goes to the model as token ids: each must be one of its tokens, and none
    an image's (its pixels are not sent again)."""
    if image_token is not None and image_token in request.context:
        raise InvalidRequest(
            f"'context' holds image tokens, which {request.model!r} cannot read without the image: "
            "send the conversation as messages with its images instead",
            param="context",
        )
    if not vocab_size:
        return
    wrong = next((i for i in request.context if not 0 <= i < vocab_size), None)
    if wrong is not None:
        raise InvalidRequest(
            f"'context' holds {wrong}, which is no token id of {request.model!r} (0 to {vocab_size - 1})",
            param="context",
        )


def _refuse_chat_features(request: GenerationRequest) -> None:
    """Tools and thinking go through a chat template: a raw prompt, or a model without one, has none."""
    if request.tools and request.tool_choice.mode != "none":
        raise InvalidRequest(
            "tools need the model's chat template: send messages, not a raw prompt", param="tools"
        )
    if request.think not in (None, False) and not request.think_hint:
        raise InvalidRequest(
            f"{request.model!r} does not support thinking here: it needs a chat template", param="think"
        )


def _settle(options: SamplingOptions, max_new_tokens: int, grammar: Any) -> SamplingParams:
    """SamplingParams from options that heylook's defaults (heylook.options) have made complete."""
    given = {
        name: getattr(options, name)
        for name in (
            "temperature", "top_p", "top_k", "min_p", "typical_p", "repetition_penalty",
            "presence_penalty", "frequency_penalty", "penalty_last_n", "seed",
        )
    }  # fmt: skip
    return SamplingParams(
        max_new_tokens=max_new_tokens,
        stop=options.stop or (),
        ignore_eos=bool(options.ignore_eos),
        grammar=grammar,
        **given,
    )


def _prompt_param(prompt: Prompt) -> str:
    return "messages" if isinstance(prompt, ChatPrompt) else "prompt"


def _has_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def tokenize_rendered(tokenizer: Any, text: str) -> list[int]:
    """A rendered chat prompt's ids: the template already wrote any BOS or special tokens."""
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids or _empty_prompt(tokenizer, "messages")


def encode_prompt(tokenizer: Any, prompt: Prompt, fits: ContextFit | None = None) -> list[int]:
    """Token ids for a prompt: chat messages through the model's chat template, text as is, infill
    through the model's fill-in-the-middle tokens. With `fits`, text too long for that context
    whatever its tokens is refused before it is tokenized."""
    param = _prompt_param(prompt)
    if isinstance(prompt, TextPrompt):
        refuse_text_beyond_context(tokenizer, prompt.text, fits, param)
        ids = list(tokenizer(prompt.text)["input_ids"])
    elif isinstance(prompt, InfillPrompt):
        text = infill_text(tokenizer, prompt)
        refuse_text_beyond_context(tokenizer, text, fits, param)
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    elif not _has_template(tokenizer) and prompt.untemplated is not None:
        refuse_text_beyond_context(tokenizer, prompt.untemplated, fits, param)
        ids = list(tokenizer(prompt.untemplated)["input_ids"])
    else:
        if not _has_template(tokenizer):
            raise InvalidRequest(
                "this model has no chat template; send a raw prompt to /v1/completions instead", param=param
            )
        traits = template_traits(template_text(tokenizer))
        text = render_chat(tokenizer, prompt.messages, traits).text
        refuse_text_beyond_context(tokenizer, text, fits, param)
        return tokenize_rendered(tokenizer, text)
    return ids or _empty_prompt(tokenizer, param)


@dataclass(frozen=True)
class ContextFit:
    """The context a prompt must fit: `tokens` of the model the client named `model`."""

    tokens: int
    model: str


def refuse_text_beyond_context(tokenizer: Any, text: str, fits: ContextFit | None, param: str) -> None:
    """A prompt whose text is longer than the context's tokens could spell, at the most characters
    one token stands for, is refused before it is tokenized (a 15 MB prompt took 17 s to tokenize
    into its 400). A tokenizer with no such bound (see `token_spans`) checks nothing here, nor
    does text short enough to count: the 400 then says how many tokens, which clients act on."""
    if fits is None or len(text) <= _WORTH_COUNTING:
        return
    spans = token_spans(tokenizer)
    if spans is None or len(text) <= fits.tokens * spans.most:
        return
    spelled = len(text) - sum(text.count(char) for char in spans.dropped)
    if spelled <= fits.tokens * spans.most:
        return
    raise ContextLengthExceeded(
        None,
        fits.tokens,
        fits.model,
        param=param,
        message=(
            f"the input length exceeds the context length: the prompt is {len(text)} characters, more "
            f"than {fits.tokens} tokens can hold (at most {spans.most} characters a token); "
            f"{fits.model!r} has a context of {fits.tokens} tokens"
        ),
    )


# Text this long is tokenized in about a second (the demo model's tokenizer: 1 to 1.5 s a million
# characters), worth it for the exact count in the 400 (Claude Code compacts by it).
_WORTH_COUNTING = 2**20


@dataclass(frozen=True)
class TokenSpans:
    """How much of a prompt's text one token can stand for: at most `most` characters, counting
    none of the `dropped` ones (characters the vocabulary cannot spell, which it leaves out)."""

    most: int
    dropped: str = ""


# Per tokenizer, computed once: reading its whole vocabulary takes a tenth of a second.
_TOKEN_SPANS: weakref.WeakKeyDictionary[Any, TokenSpans | None] = weakref.WeakKeyDictionary()
# NFC and NFKC compose: at most four characters become one (no character's canonical
# decomposition is longer: U+1FAF, an omega with three marks).
_COMPOSED = 4
_LENGTH_KEEPING_NORMALIZERS = {"NFD", "NFKD", "Prepend"}
_COMPOSING_NORMALIZERS = {"NFC", "NFKC"}
# Pre-tokenizers that split text without dropping any of it (Split unless it removes what matches).
_KEEPING_SPLITS = {"ByteLevel", "Split", "Digits", "Punctuation", "Metaspace"}


def token_spans(tokenizer: Any) -> TokenSpans | None:
    """The most characters of a prompt's text one token can stand for, where that is bounded: every
    character of the text ends up in some token (bytes are the fallback: byte-level BPE, or a
    vocabulary with byte tokens) or is one the vocabulary drops, no normalizer shortens the text
    beyond composing, no pre-tokenizer drops any of it. Else None: a word-piece [UNK] stands for
    a whole word, a Whitespace pre-tokenizer drops spaces, and a character bound would refuse
    prompts that fit."""
    try:
        return _TOKEN_SPANS[tokenizer]
    except KeyError:
        pass
    except TypeError:  # not weakly referable: read every time
        return _token_spans(tokenizer)
    spans = _TOKEN_SPANS[tokenizer] = _token_spans(tokenizer)
    return spans


def _token_spans(tokenizer: Any) -> TokenSpans | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:  # a slow (Python) tokenizer: its pieces are not declared
        return None
    spec = json.loads(backend.to_str())
    shrink = _normalizer_shrink(spec.get("normalizer"))
    model, pre = spec.get("model") or {}, _parts(spec.get("pre_tokenizer"))
    if shrink is None or any(not _keeps_text(part) for part in pre):
        return None
    vocab = tokenizer.get_vocab()
    if any(part.get("type") == "ByteLevel" for part in pre):
        # A byte the vocabulary cannot spell is dropped. With UTF-8's continuation bytes spelled,
        # every character but ASCII keeps one (a vocabulary may lack lead bytes that text seldom or
        # never has, and ASCII controls: SmolLM2's lacks 0xF1 and 0x04); unspelled ASCII is dropped.
        if any(_BYTE_LEVEL[byte] not in vocab for byte in range(0x80, 0xC0)):
            return None
        dropped = "".join(chr(byte) for byte in range(0x80) if _BYTE_LEVEL[byte] not in vocab)
    elif model.get("type") == "BPE" and model.get("byte_fallback"):
        if any(f"<0x{byte:02X}>" not in vocab for byte in range(0xC0)):
            return None
        dropped = ""
    else:
        return None
    # A byte-level token's characters are bytes, each at most a character of the text.
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    longest = max((len(piece) for piece in pieces if piece is not None), default=0)
    return TokenSpans(longest * shrink, dropped) if longest else None


def _byte_level_chars() -> dict[int, str]:
    """Byte-level BPE's character for each byte (GPT-2's table, which every such tokenizer uses)."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]  # shown as themselves
    others = [byte for byte in range(256) if byte not in printable]  # shown as 256 onwards
    return {byte: chr(byte) for byte in printable} | {byte: chr(256 + n) for n, byte in enumerate(others)}


_BYTE_LEVEL = _byte_level_chars()


def _parts(spec: dict[str, Any] | None) -> list[dict[str, Any]]:
    if spec is None:
        return []
    if spec.get("type") == "Sequence":
        inner = spec.get("normalizers", spec.get("pretokenizers", []))
        return [part for each in inner for part in _parts(each)]
    return [spec]


def _normalizer_shrink(spec: dict[str, Any] | None) -> int | None:
    """How many characters of text at most become one through the normalizer; None when it may
    drop text (strip, a pattern replaced by less)."""
    shrink = 1
    for part in _parts(spec):
        kind = part.get("type")
        if kind in _COMPOSING_NORMALIZERS:
            shrink = _COMPOSED
        elif kind == "Replace":
            pattern = (part.get("pattern") or {}).get("String")
            if pattern is None or len(part.get("content", "")) < len(pattern):
                return None
        elif kind not in _LENGTH_KEEPING_NORMALIZERS:
            return None
    return shrink


def _keeps_text(part: dict[str, Any]) -> bool:
    return part.get("type") in _KEEPING_SPLITS and part.get("behavior") != "Removed"


def _empty_prompt(tokenizer: Any, param: str) -> list[int]:
    if tokenizer.bos_token_id is None:
        raise InvalidRequest("the prompt is empty", param=param)
    return [tokenizer.bos_token_id]


def infill_text(tokenizer: Any, prompt: InfillPrompt) -> str:
    """The prefix-suffix-middle layout in the tokenizer's own fill-in-the-middle tokens."""
    vocab = tokenizer.get_vocab()
    for begin, hole, end in _INFILL_TOKENS:
        if begin in vocab and hole in vocab and end in vocab:
            return f"{begin}{prompt.prefix}{hole}{prompt.suffix}{end}"
    raise InvalidRequest(
        "this model has no fill-in-the-middle tokens, so it cannot complete between a prompt and a suffix",
        param="suffix",
    )
