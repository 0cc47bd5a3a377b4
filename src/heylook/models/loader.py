"""Loads a model source into a running engine."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import torch

from heylook.chat.syntax import TemplateTraits, shown_special_tokens, template_text, template_traits
from heylook.engine import cpu_attention, cpu_linear
from heylook.engine.constraints import JsonGrammars
from heylook.engine.draft import DraftModel
from heylook.engine.encoder import Encoder, Scorer
from heylook.engine.runner import Engine
from heylook.errors import InvalidRequest, ModelLoadFailed
from heylook.models import quantization
from heylook.models.convert import gguf_source
from heylook.models.kind import (
    GENERATIVE_ENCODER,
    ModelKind,
    encoder_config,
    folder_config,
    folder_kind,
    folder_reads_images,
)
from heylook.models.sources import resolve
from heylook.models.vision import load_processor, refuse_3d_positions
from heylook.options import generation_config_keys
from heylook.registry.model_source import ModelSource
from heylook.settings import DEFAULT_GRAMMAR_CACHE_BYTES, DEFAULT_PREFIX_CACHE_BYTES
from heylook.types import EncoderConfig, LoadOptions, SamplingOptions

log = logging.getLogger(__name__)

# Models that do not state their context length get this many tokens.
FALLBACK_CONTEXT_LENGTH = 2048
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length", "n_ctx")


@dataclass
class LoadedModel:
    source: ModelSource
    directory: Path
    # What runs the model on its own thread: the engine of a model that generates, the encoder of
    # an embedding model. The router sees either through device, active, parallel and close.
    runner: Engine | Encoder
    tokenizer: Any
    context_length: int
    # What the model's own generation_config asks for; below alias defaults, above heylook's.
    generation_defaults: SamplingOptions
    load_ns: int
    size_bytes: int = 0  # weights and buffers, where they live (engine.device)
    # What the weights run as, as Ollama names it (/api/ps): Q8_0, Q4_1, F16, BF16, F32, NF4...
    quantization_level: str = ""
    grammars: JsonGrammars | None = None
    # The tool-call syntax and reasoning markers of its chat template (read from the tokenizer's).
    traits: TemplateTraits = field(default_factory=TemplateTraits)
    vocab_size: int = 0  # token ids the model takes: 0 to vocab_size - 1 (0: not known)
    kind: ModelKind = "generate"
    # A vision-language model's processor (its images into pixel inputs and image tokens); None
    # for a model that reads text only.
    processor: Any = None
    _encoder: Encoder | None = None  # a generating model's, made on its first embedding request

    @property
    def engine(self) -> Engine:
        """The generation engine; callers check `kind` first (an embedding model has none)."""
        if self.kind != "generate":
            raise InvalidRequest("this model does not generate text")
        return cast(Engine, self.runner)

    def encoder(self) -> Encoder:
        """What embeds with this model: an embedding model's own encoder; for a model that
        generates, its transformer without the output layer, mean-pooled and normalised."""
        if isinstance(self.runner, Encoder):
            return self.runner
        if self._encoder is None:
            model = self.engine.model
            self._encoder = Encoder(
                model.base_model,
                replace(GENERATIVE_ENCODER, max_length=self.context_length),
                name=f"{self.engine.name}-embeddings",
                pad_token_id=_pad_token_id(self.tokenizer),
            )
        return self._encoder

    def close(self) -> None:
        self.runner.close()
        if self._encoder is not None:
            self._encoder.close()


def pick_device(requested: str) -> torch.device:
    """The device a model goes to: "auto" is a CUDA GPU when torch sees one, else the CPU."""
    if requested == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadFailed(f"the alias asks for device {requested!r}, but torch sees no CUDA GPU here")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ModelLoadFailed(
            f"device {requested!r} does not exist: torch sees {torch.cuda.device_count()} GPU(s)"
        )
    return device


def from_pretrained_options(load: LoadOptions, device: torch.device) -> dict[str, Any]:
    """from_pretrained's keyword arguments for these load options on this device."""
    options: dict[str, Any] = {
        "dtype": "auto" if load.dtype == "auto" else getattr(torch, load.dtype),
        "trust_remote_code": load.trust_remote_code,
    }
    if not quantization.quantized(load.quantization) or device.type == "cpu":  # the CPU's: after loading
        return options
    if device.type != "cuda":
        raise ModelLoadFailed(
            f"{load.quantization} quantization runs on a CPU (heylook's kernel) or a CUDA GPU "
            f"(bitsandbytes), and this model goes to {device}; remove 'quantization' from the alias's "
            "load options"
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelLoadFailed(
            f"{load.quantization} quantization needs bitsandbytes: pip install 'heylook[gpu]'"
        )
    from transformers import BitsAndBytesConfig

    if quantization.kind_of(load.quantization) == "int4":
        config = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    else:
        config = BitsAndBytesConfig(load_in_8bit=True)
    # bitsandbytes places the weights itself; the model cannot be moved afterwards.
    return {**options, "quantization_config": config, "device_map": {"": device.index or 0}}


def converted_gguf_options(options: dict[str, Any], load: LoadOptions, directory: Path) -> dict[str, Any]:
    """A GGUF converted by heylook stores its linear weights as float16 (models/convert.py); left to
    "auto", it loads as float32, as it was dequantized: the CPU computes in float32 (float16
    activations there are slow and inexact) while its fast path packs the linear weights as float16
    again, and a GPU gets 16-bit weights from _half_precision_on_gpu."""
    if load.dtype != "auto" or gguf_source(directory) is None:
        return options
    return {**options, "dtype": torch.float32}


def load_model(
    source: ModelSource,
    load: LoadOptions | None = None,
    *,
    name: str,
    grammar_cache_bytes: int = DEFAULT_GRAMMAR_CACHE_BYTES,
    prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
    draft: tuple[ModelSource, LoadOptions] | None = None,
) -> LoadedModel:
    """Blocking: resolve, convert if needed, load, start the engine. Run it off the event loop.
    With `draft`, that model is loaded too, to guess tokens for this one (engine/draft.py)."""
    load = load or LoadOptions()
    started = time.perf_counter_ns()
    device = pick_device(load.device)
    options = from_pretrained_options(load, device)
    directory = resolve(source)
    options = converted_gguf_options(options, load, directory)
    kind = folder_kind(directory)
    if kind in ("embed", "rerank"):
        return load_encoder(source, directory, load, device, options, name=name, started=started, kind=kind)
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    processor = None
    try:
        if folder_reads_images(directory):
            # The text model's tokenizer is the processor's: one vocabulary, one chat template.
            refuse_3d_positions(folder_config(directory), source.describe())
            processor = load_processor(directory, load.trust_remote_code)
            tokenizer = processor.tokenizer
            model = AutoModelForImageTextToText.from_pretrained(directory, **options)
        else:
            tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=load.trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(directory, **options)
        model.eval()
        # Read before the fast path replaces the output layer.
        vocab_size = model.get_output_embeddings().weight.shape[0]
        # Before the move: a GPU gets the half-precision weights, not the float32 ones.
        fast_path = apply_fast_path(model, load, device, gguf_quantization(directory))
        if "device_map" not in options:
            model.to(device)  # type: ignore[arg-type]  # transformers' stub takes the model, not the device
        if device.type == "cpu" and fast_path.note:
            own_copies(model)
        return_freed_memory()
    except ModelLoadFailed:
        raise
    except Exception as error:
        raise ModelLoadFailed(f"could not load {source.describe()}: {error}") from error
    if processor is not None:
        refuse_3d_positions(model, source.describe())
    eos_token_ids = _eos_token_ids(model, tokenizer)
    traits = template_traits(template_text(tokenizer))
    drafter = load_draft(*draft, vocab_size, engine_device(model)) if draft else None
    engine = Engine(
        model,
        tokenizer,
        eos_token_ids=eos_token_ids,
        name=name,
        hidden_token_ids=hidden_token_ids(tokenizer, traits),
        speculative=load.speculative,
        prefix_cache_bytes=prefix_cache_bytes,
        draft_model=drafter,
    )
    loaded = LoadedModel(
        source=source,
        directory=directory,
        runner=engine,
        tokenizer=tokenizer,
        context_length=context_length(model.config, tokenizer),
        generation_defaults=generation_defaults(model.generation_config),
        load_ns=time.perf_counter_ns() - started,
        size_bytes=module_bytes(model),
        quantization_level=fast_path.level,
        grammars=JsonGrammars(tokenizer, vocab_size, sorted(eos_token_ids), cache_bytes=grammar_cache_bytes),
        traits=traits,
        vocab_size=vocab_size,
        processor=processor,
    )
    log.info(
        "loaded %s from %s on %s in %.1f s (%s)%s",
        name,
        directory,
        engine.device,
        loaded.load_ns / 1e9,
        fast_path.note or "no fast path",
        _gguf_note(directory),
    )
    return loaded


def gguf_quantization(directory: Path) -> str | None:
    """The quantization of the GGUF this folder was converted from (\"Q4_1\"), or None."""
    source = gguf_source(directory)
    return str(source.get("quantization") or "") or None if source else None


def own_copies(model: torch.nn.Module) -> None:
    """Give the tensors the fast path left (embeddings, norms, biases) memory of their own. Loaded,
    they are the checkpoint file mapped into memory, and while any of them lives every page of the
    file read while loading stays resident, the replaced weights' too (the demo model's converted
    GGUF: ~200 MB)."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            tensor.data = tensor.data.clone()


def return_freed_memory() -> None:
    """Hand the loader's freed copies back to the system: the float32 linear weights the fast
    path replaced stay in glibc's heap otherwise (SmolLM2's converted GGUF: ~470 MB resident)."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to ask
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _gguf_note(directory: Path) -> str:
    source = gguf_source(directory)
    if source is None:
        return ""
    return f"; converted from a {source.get('quantization') or ''} GGUF"


def engine_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def load_draft(
    source: ModelSource, load: LoadOptions, vocab_size: int, device: torch.device
) -> torch.nn.Module:
    """A draft model for a model on `device` whose output has `vocab_size` tokens: a causal LM
    reading text, on the same device, with the same vocabulary (its guesses are token ids)."""
    from transformers import AutoModelForCausalLM

    directory = resolve(source)
    if folder_kind(directory) != "generate" or folder_reads_images(directory):
        raise ModelLoadFailed(f"the draft model {source.describe()} must be a text model that generates")
    try:
        model = AutoModelForCausalLM.from_pretrained(directory, **from_pretrained_options(load, device))
        model.eval()
        draft_vocab = model.get_output_embeddings().weight.shape[0]
        suits = DraftModel.suits(model)
        apply_fast_path(model, load, device, gguf_quantization(directory))
        if "device_map" not in from_pretrained_options(load, device):
            model.to(device)  # type: ignore[arg-type]
    except Exception as error:
        raise ModelLoadFailed(f"could not load the draft model {source.describe()}: {error}") from error
    # Families pad their output layers differently (Qwen2.5's 0.5B and 7B): a draft may have fewer
    # rows than the model, never more (its guesses are fed to the model as token ids).
    if not suits:
        raise ModelLoadFailed(
            f"the draft model {source.describe()} keeps a rolling or folded cache (sliding-window or "
            "linear attention), which cannot drop the guesses the model refuses"
        )
    if draft_vocab > vocab_size:
        raise ModelLoadFailed(
            f"the draft model {source.describe()} has {draft_vocab} tokens in its vocabulary and the "
            f"model it drafts for {vocab_size}: a draft must share the model's tokenizer"
        )
    return model


def load_encoder(
    source: ModelSource,
    directory: Path,
    load: LoadOptions,
    device: torch.device,
    options: dict[str, Any],
    *,
    name: str,
    started: int,
    kind: ModelKind = "embed",
) -> LoadedModel:
    """An embedding model (its transformer without a head, pooled as its sentence-transformers
    configuration says) or a reranker (a cross-encoder: a sequence-classification head scoring a
    query and a document together). Either keeps its own precision (no fast path): what it gives
    matches the reference implementation."""
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    config = encoder_config(directory) if kind == "embed" else EncoderConfig(normalize=False)
    architecture = AutoModel if kind == "embed" else AutoModelForSequenceClassification
    try:
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=load.trust_remote_code)
        model = architecture.from_pretrained(directory, **options).eval()
        if "device_map" not in options:
            model.to(device)
    except Exception as error:
        raise ModelLoadFailed(f"could not load {source.describe()}: {error}") from error
    limit = context_length(model.config, tokenizer)
    config = replace(config, max_length=min(config.max_length or limit, limit))
    encoder: Encoder
    if kind == "rerank":
        encoder = Scorer(
            model, name=name, pad_token_id=_pad_token_id(tokenizer), sep_token_id=tokenizer.sep_token_id
        )
    else:
        encoder = Encoder(model, config, name=name, pad_token_id=_pad_token_id(tokenizer))
    loaded = LoadedModel(
        source=source,
        directory=directory,
        runner=encoder,
        tokenizer=tokenizer,
        context_length=config.max_length or limit,
        generation_defaults=SamplingOptions(),
        load_ns=time.perf_counter_ns() - started,
        size_bytes=module_bytes(model),
        vocab_size=int(model.get_input_embeddings().num_embeddings),
        kind=kind,
    )
    what = f"embeddings, {config.pooling} pooling" if kind == "embed" else "reranking"
    log.info("loaded %s (%s) on %s", name, what, encoder.device)
    return loaded


def _pad_token_id(tokenizer: Any) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(candidate, int):
            return candidate
    return 0


@dataclass(frozen=True)
class FastPath:
    """What apply_fast_path did: words for the log, and what the weights run as (/api/ps)."""

    note: str | None
    level: str


def apply_fast_path(
    model: torch.nn.Module, load: LoadOptions, device: torch.device, gguf_quantization: str | None = None
) -> FastPath:
    """Switch the model to what decodes fastest on its device.

    On a CPU, linear layers get block-quantized weights where the alias asks for them
    (`quantization: int8 | int4`) or the model is a GGUF (about its own bits, models/quantization.py),
    through heylook's kernel (engine/quantized_linear.py); else float16 weights through fbgemm: a
    step reads half the bytes and a batch of rows costs little more than one (docs/benchmarks.md).
    On a CUDA GPU, a float32 model (a GGUF conversion, or a float32 checkpoint) whose alias leaves
    dtype to the checkpoint runs in bfloat16 (float16 where the GPU has no bfloat16): half the bytes
    per step, and the GPU's 16-bit matrix units. Also on a CPU, attention reads grouped key/value
    heads without copying them per query head (engine/cpu_attention.py). `load.fast_path: false`
    turns off all but an alias's own quantization. Call it before moving the model.
    """
    level = _dtype_level(model)
    if device.type == "cuda":
        if kind := quantization.kind_of(load.quantization):  # bitsandbytes quantized it while loading
            return FastPath(None, quantization.GPU_LEVELS[kind])
        if not load.fast_path:
            return FastPath(None, level)
        note = _half_precision_on_gpu(model, load)
        return FastPath(note, _dtype_level(model))
    if device.type != "cpu":
        return FastPath(None, level)
    done = []
    kind = quantization.cpu_kind(load.quantization, gguf_quantization, load.fast_path)
    if kind is not None:
        from heylook.engine import quantized_kernel, quantized_linear

        try:
            quantized_kernel.load()
        except quantized_kernel.KernelUnavailable as error:
            if quantization.quantized(load.quantization):
                raise ModelLoadFailed(f"{load.quantization} quantization on the CPU: {error}") from error
            log.warning("%s GGUF runs with float16 weights: %s", gguf_quantization, error)
            kind = None
        else:
            replaced = quantized_linear.quantize_linears(model, kind)
            requantized = quantization.requantized_note(kind, gguf_quantization) if gguf_quantization else ""
            done.append(
                f"{replaced} linear layers in {kind} blocks" + (f" ({requantized})" if requantized else "")
            )
            # After the linears: a tied output layer has taken its own copy of the table by then.
            if quantized_linear.quantize_embeddings(model):
                done.append("token embeddings in int8 blocks")
            level = quantization.CPU_LEVELS[kind]
    if (
        kind is None
        and load.fast_path
        and cpu_linear.available()
        and (replaced := cpu_linear.pack_linears(model))
    ):
        done.append(f"{replaced} linear layers with float16 weights (fbgemm)")
        level = "F16"
    if load.fast_path and cpu_attention.use_grouped_attention(model):
        done.append("grouped-query attention without copies")
    return FastPath(", ".join(done) or None, level)


def _dtype_level(model: torch.nn.Module) -> str:
    return quantization.FLOAT_LEVELS.get(str(next(model.parameters()).dtype).removeprefix("torch."), "")


def _half_precision_on_gpu(model: torch.nn.Module, load: LoadOptions) -> str | None:
    if load.dtype != "auto" or next(model.parameters()).dtype != torch.float32:
        return None
    dtype = torch.bfloat16 if gpu_supports_bfloat16() else torch.float16
    model.to(dtype)
    return f"float32 weights as {str(dtype).removeprefix('torch.')}"


def gpu_supports_bfloat16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def module_bytes(module: torch.nn.Module) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    # Tied weights appear once per name but take memory once.
    unique = {t.data_ptr(): t.numel() * t.element_size() for t in tensors}
    # Packed weights are neither parameters nor buffers.
    packed = sum(getattr(m, "weight_bytes", 0) for m in module.modules())
    return sum(unique.values()) + packed


def hidden_token_ids(tokenizer: Any, traits: TemplateTraits) -> frozenset[int] | None:
    """The special tokens replies leave out, when some must show because they are the family's
    tool-call or reasoning markers; None (leave them all out) when none are."""
    shown = shown_special_tokens(tokenizer, traits)
    if not shown:
        return None
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    special = set(tokenizer.all_special_ids) | {i for i, token in added.items() if token.special}
    return frozenset(special - shown.keys())


def _eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def context_length(config: Any, tokenizer: Any) -> int:
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in _CONTEXT_KEYS:
        value = getattr(text_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10_000_000:
        return limit
    return FALLBACK_CONTEXT_LENGTH


def generation_defaults(generation_config: Any) -> SamplingOptions:
    """The model's sampling preferences, where its generation_config turns sampling on.

    transformers defaults do_sample to False; reading that as "greedy" would make every model
    without a generation_config.json deterministic, unlike what an OpenAI or Ollama user expects.
    """
    if generation_config is None:
        return SamplingOptions()
    # Only what the file states: transformers' own defaults (top_k=50, ...) are not the model's wish.
    stated = (
        generation_config.to_diff_dict()
        if hasattr(generation_config, "to_diff_dict")
        else vars(generation_config)
    )
    if not stated.get("do_sample"):
        return SamplingOptions()
    return SamplingOptions(**{key: stated[key] for key in generation_config_keys() if key in stated})
