"""The internal request and chunk types: every wire format is translated to and from these."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from heylook.options import setting_names

FinishReason = Literal["stop", "length", "tool_calls"]
ROLES = ("system", "user", "assistant", "tool")
# Ollama's `think`: on, off, or how hard; None leaves it to the model (on for models that think).
Think = bool | Literal["low", "medium", "high"] | None
THINK_LEVELS = ("low", "medium", "high")
# Temperatures below this decode greedily (0 does, by definition).
GREEDY_BELOW = 1e-4


@dataclass(frozen=True)
class ToolCall:
    """A function call the assistant made. `arguments` is a JSON object as text, exactly as the
    model wrote it: OpenAI carries it as that string, Ollama as the object it holds."""

    name: str
    arguments: str = "{}"
    id: str = ""


@dataclass(frozen=True)
class Tool:
    """A function the model may call; `parameters` is its JSON schema, as JSON text."""

    name: str
    description: str = ""
    parameters: str = '{"type": "object", "properties": {}}'


@dataclass(frozen=True)
class ToolChoice:
    """Whether the model must call a tool: "auto" leaves it to the model, "none" never calls,
    "required" calls at least one, "function" calls the one named."""

    mode: Literal["auto", "none", "required", "function"] = "auto"
    name: str | None = None


@dataclass(frozen=True)
class ImageInput:
    """An image a message carries, as the client sent it: its bytes (base64 and data: URLs already
    decoded) or an http(s) URL still to fetch. Nothing is known to be an image yet: heylook.images
    fetches, checks and resizes it before a model sees it."""

    data: bytes = b""
    url: str = ""  # set where `data` is empty
    # Where in the request it came from, for errors that name it: "messages[0].content[1]",
    # "messages[2].images[0]", "input[0].content[1]".
    where: str = ""


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    # An assistant turn's calls, and a tool turn's answer to one (by id, or by the function's name).
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    tool_name: str | None = None
    # An assistant turn's reasoning, for templates that show it again.
    thinking: str = ""
    # Images, in the order given; they go before the message's text when it is rendered (as Ollama
    # places its `images`), text parts joined in their order.
    images: tuple[ImageInput, ...] = ()


@dataclass(frozen=True)
class ChatPrompt:
    """Messages rendered through the model's chat template."""

    messages: tuple[Message, ...]
    # Text to send as is when the model has no chat template; None makes that an error.
    untemplated: str | None = None


@dataclass(frozen=True)
class TextPrompt:
    """Raw text given to the model as is."""

    text: str


@dataclass(frozen=True)
class InfillPrompt:
    """Fill in the middle: the model writes what goes between `prefix` and `suffix`."""

    prefix: str
    suffix: str


Prompt = ChatPrompt | TextPrompt | InfillPrompt


@dataclass(frozen=True)
class JsonFormat:
    """Output constrained to JSON: any object, or what a JSON schema (as JSON text) allows."""

    schema: str | None = None


@dataclass(frozen=True)
class LoadOptions:
    """How a model's weights are loaded. Part of what identifies a loaded model: the same weights
    in 4-bit and in bfloat16 are two loaded models."""

    dtype: str = "auto"  # auto (the checkpoint's), float32, bfloat16, float16
    device: str = "auto"  # auto (a CUDA GPU if torch sees one, else the CPU), cpu, cuda, cuda:N
    # int8 or int4 (also spelt 8bit, 4bit): heylook's block kernel on a CPU, bitsandbytes on a CUDA
    # GPU (heylook.models.quantization). None: a GGUF keeps about its own bits, others stay float.
    quantization: str | None = None
    trust_remote_code: bool = False  # run the repo's own modelling code: only when an alias opts in
    # The device's fast path (CPUs: float16 weights through fbgemm; CUDA: float32 models in 16 bits);
    # false keeps the plain modules.
    fast_path: bool = True
    # A request decoding alone checks tokens guessed from its own earlier tokens (prompt lookup) in
    # one pass; false decodes a token a pass (heylook.engine.speculate).
    speculative: bool = True


class SamplingOptions:
    """Generation controls as one layer states them: any of the settings in heylook.options (and
    the JSON `response_format`), each read as an attribute; an unsaid one reads None.

    Layers stack: a request's options over an alias's defaults over the model's generation_config
    over heylook's defaults (see `over`).
    """

    __slots__ = ("_values",)
    _values: dict[str, Any]

    def __init__(self, **values: Any) -> None:
        known = {*setting_names(), "response_format"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise TypeError(f"no generation setting is named {', '.join(unknown)}")
        object.__setattr__(self, "_values", {k: v for k, v in values.items() if v is not None})

    def __getattr__(self, name: str) -> Any:
        if name == "response_format" or name in setting_names():
            return self._values.get(name)
        raise AttributeError(name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("SamplingOptions are read-only: make new ones (over, or the constructor)")

    def stated(self) -> dict[str, Any]:
        """The settings this layer states, by name."""
        return dict(self._values)

    def over(self, base: SamplingOptions) -> SamplingOptions:
        """These options, with whatever they leave unsaid taken from `base`."""
        return SamplingOptions(**{**base._values, **self._values})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SamplingOptions) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(sorted((k, repr(v)) for k, v in self._values.items())))

    def __repr__(self) -> str:
        return f"SamplingOptions({', '.join(f'{k}={v!r}' for k, v in self._values.items())})"


@dataclass(frozen=True)
class GenerationRequest:
    """One request in the internal format, whichever API it came in through."""

    model: str
    prompt: Prompt
    options: SamplingOptions
    # Seconds the model stays loaded once this request is done: None is the default, a negative
    # number is forever, 0 unloads it as soon as it is idle.
    keep_alive: float | None = None
    # Token ids put before the prompt: Ollama's `context` from an earlier reply.
    context: tuple[int, ...] = ()
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice = field(default_factory=ToolChoice)
    parallel_tool_calls: bool = True
    think: Think = None
    # `think` is a hint (Anthropic's adaptive thinking and effort): a model that cannot think
    # ignores it instead of refusing the request.
    think_hint: bool = False
    # Log probabilities of the reply's tokens: None asks for none; n, each token's own and its n
    # most likely alternatives (0 to MAX_TOP_LOGPROBS).
    logprobs: int | None = None
    # How many replies (choices) to generate from the one prompt (OpenAI's `n`, 1 to MAX_CHOICES).
    n: int = 1
    # The most tokens the reasoning may take (Anthropic's thinking.budget_tokens); None: no limit.
    thinking_budget: int | None = None
    # Bulk work (a batch's line), never set from a request's body: a local model runs it only
    # while no interactive request runs or waits.
    background: bool = False
    # Tools the client offered that a model here cannot run (hosted ones: web search, file search,
    # code interpreter, computer use, MCP servers), dropped rather than refused: their types, said
    # back in the X-Heylook-Dropped-Tools header.
    dropped_tools: tuple[str, ...] = ()


@dataclass(frozen=True)
class LoadRequest:
    """Load a model (or, with keep_alive 0, unload it) without generating: Ollama's empty prompt."""

    model: str
    keep_alive: float | None = None


@dataclass(frozen=True)
class ThinkingBudget:
    """How one sequence's reasoning is cut: after `tokens` tokens inside the reasoning markers
    (`inside`: the prompt opened them), the engine writes `cut` (the close marker's token ids)."""

    tokens: int
    open: str
    close: str
    cut: tuple[int, ...]
    inside: bool = False


@dataclass(frozen=True)
class SamplingParams:
    """Settled controls for one sequence in the engine: nothing left unsaid."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    min_p: float = 0.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    # A compiled grammar (xgrammar's CompiledGrammar) the output must follow, or None.
    grammar: Any = None
    # Report each token's log probability and this many most likely alternatives; None: none.
    logprobs: int | None = None
    thinking: ThinkingBudget | None = None  # None: the reasoning runs as long as the model likes

    @property
    def penalized(self) -> bool:
        return (
            self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0
        ) and self.penalty_last_n != 0

    @property
    def greedy(self) -> bool:
        # Dividing scores by a temperature this small overflows them; its answer is greedy anyway.
        return self.temperature < GREEDY_BELOW


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0  # of the prompt's, taken from the prefix cache instead of evaluated

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    """Nanoseconds, as Ollama reports them."""

    load_ns: int = 0
    prompt_eval_ns: int = 0
    eval_ns: int = 0
    total_ns: int = 0


# The most replies one OpenAI request may ask for (`n`).
MAX_CHOICES = 8
# The most alternatives a token's logprobs may list: OpenAI's and Ollama's top_logprobs bound.
MAX_TOP_LOGPROBS = 20
# What a log probability too small for a float (or -inf) is reported as, as OpenAI reports it.
LOGPROB_FLOOR = -9999.0


@dataclass(frozen=True)
class TokenLogprob:
    """A token and its log probability under the model's own distribution at that step (the raw
    logits' log_softmax: before temperature, penalties, top-k/p and grammar masks)."""

    token: str  # the token's own text (its bytes read as UTF-8, U+FFFD for a piece of a character)
    logprob: float
    raw: bytes = b""  # the token's bytes: a piece of a multi-byte character stays a piece


@dataclass(frozen=True)
class Logprob(TokenLogprob):
    """A generated token's log probability, with the most likely tokens at its step (best first)."""

    top: tuple[TokenLogprob, ...] = ()
    # Where the token's text starts in the text the model wrote (characters): OpenAI's text_offset.
    offset: int = 0


Logprobs = tuple[Logprob, ...]


@dataclass(frozen=True)
class TextChunk:
    """New text of the completion, stop sequences already removed."""

    text: str
    # How many tokens the model had generated when this text came out (0 where nobody counts):
    # stamped by the producer, since the reader may be several tokens behind it.
    tokens: int = 0
    # With logprobs asked for: the tokens that came out with this chunk, in order. A token goes
    # out with the chunk that shows (the start of) its text; tokens that end up in reasoning or a
    # tool call go out with those chunks, and tokens of text cut by a stop sequence not at all.
    logprobs: Logprobs = ()
    choice: int = 0  # which of the request's `n` replies this is part of


@dataclass(frozen=True)
class ThinkingChunk:
    """New text of the model's reasoning, split from the answer by its template's markers."""

    text: str
    tokens: int = 0
    logprobs: Logprobs = ()
    choice: int = 0


@dataclass(frozen=True)
class ToolCallChunk:
    """A piece of a tool call as it is written: a call's first piece carries its id and name, the
    pieces after it more of its arguments. Joined, the pieces of a call are its `ToolCallDone`."""

    index: int
    arguments: str = ""
    id: str = ""
    name: str = ""
    tokens: int = 0
    logprobs: Logprobs = ()
    choice: int = 0


@dataclass(frozen=True)
class ToolCallDone:
    """A tool call the model has finished writing, whole: for writers that send calls at once."""

    index: int
    call: ToolCall
    tokens: int = 0
    logprobs: Logprobs = ()
    choice: int = 0


@dataclass(frozen=True)
class FinalChunk:
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    # The prompt's token ids and the generated ones: Ollama's `context`.
    context: tuple[int, ...] = ()
    # The request asked for logprobs: a whole reply carries them, even when no token has any.
    logprobs: bool = False
    # With n > 1: every choice's finish reason, by index (finish_reason is choice 0's); usage
    # counts the prompt once and every choice's tokens. Empty for one choice.
    finishes: tuple[FinishReason, ...] = ()
    # The stop sequence that ended the reply, where the one who generated it knows (the engine).
    stop_sequence: str | None = None


ReplyChunk = TextChunk | ThinkingChunk | ToolCallChunk | ToolCallDone
Chunk = ReplyChunk | FinalChunk


@dataclass(frozen=True)
class Reply:
    """A whole reply, as the chunks of a stream add up to."""

    content: str = ""
    thinking: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    logprobs: Logprobs = ()  # every chunk's, in order
    # The tokens generated by the time the reasoning's last chunk came out (0 where none is counted):
    # the Responses API's reasoning_tokens.
    thinking_tokens: int = 0
    # With n > 1: every choice's reply, by index (this one's fields are choice 0's).
    choices: tuple[Reply, ...] = ()


@dataclass(frozen=True)
class ModelFacts:
    """What is known of an alias's model from its files, without loading it."""

    name: str
    source: str  # the source as models.yaml states it
    description: str = ""
    options: SamplingOptions = field(default_factory=SamplingOptions)
    on_disk: bool = False  # False: not downloaded (or not converted) yet
    size_bytes: int = 0
    modified: float = 0.0
    family: str = ""
    parameter_count: int | None = None
    dtype: str = ""
    # A GGUF heylook converted: its quantization as llama.cpp names it ("Q4_1") and its
    # general.file_type (3); empty and None for any other model.
    source_quantization: str = ""
    source_file_type: int | None = None
    context_length: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    chat_template: str | None = None
    infill: bool = False
    remote: bool = False  # served by a remote provider, which knows the model's abilities
    thinks: bool = False  # its chat template marks reasoning (chat.syntax.template_traits)
    kind: str = "generate"  # or "embed" (an embedding model), "rerank" (a cross-encoder): models.kind
    vision: bool = False  # a vision-language model: it reads images (models.kind.reads_images)

    @property
    def digest(self) -> str:
        """Stable for the same source and files; changes when they do."""
        return hashlib.sha256(f"{self.source}\0{self.size_bytes}\0{self.modified}".encode()).hexdigest()


@dataclass(frozen=True)
class RemoteModel:
    """A model a remote provider offers, with what it says about where it runs."""

    id: str
    owned_by: str
    providers: list[dict[str, Any]] = field(default_factory=list)
    # True when the list is heylook's own (no token, or the provider out of reach), not the provider's.
    fallback_list: bool = False


# --- embeddings -------------------------------------------------------------------------------------

Pooling = Literal["mean", "cls", "max", "mean_sqrt_len", "lasttoken"]


@dataclass(frozen=True)
class EncoderConfig:
    """How an embedding model's token states become one vector."""

    pooling: Pooling = "mean"
    normalize: bool = True  # to unit length (cosine similarity is then a dot product)
    max_length: int | None = None  # tokens an input is cut to; None: the model's context


@dataclass(frozen=True)
class EmbedRequest:
    """Embeddings of texts (or of token ids, on the OpenAI API), from either API."""

    model: str
    inputs: tuple[str | tuple[int, ...], ...]
    truncate: bool = True  # cut inputs longer than the model takes; False: refuse them
    dimensions: int | None = None  # a Matryoshka model's shorter vectors
    keep_alive: float | None = None


@dataclass(frozen=True)
class Embeddings:
    vectors: list[list[float]]
    prompt_tokens: int
    load_ns: int = 0
    total_ns: int = 0
    replica: str | None = None  # the replica that gave them, for an alias with replicas


# --- tokenization -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizeRequest:
    """Text (TextPrompt) or a conversation (ChatPrompt, through the chat template) to token ids."""

    model: str
    prompt: TextPrompt | ChatPrompt
    add_special_tokens: bool = True  # to text only: a template writes its own
    with_pieces: bool = False


# --- reranking --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RerankRequest:
    """Documents scored for their relevance to a query by a cross-encoder."""

    model: str
    query: str
    documents: tuple[str, ...]
    top_n: int | None = None  # the best this many; None: all
    return_documents: bool = True


@dataclass(frozen=True)
class Ranking:
    scores: list[float]  # by document, in the order given
    prompt_tokens: int
