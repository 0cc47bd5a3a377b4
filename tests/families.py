"""Tiny randomly initialised models of real families: each family's real chat template (from
tests/templates/) and its special tokens, on that family's architecture where transformers has it,
so tool calling and reasoning can be tested per family, offline and fast.

`build_scripted_model` makes a model that writes a fixed reply: each token of the script is the
only likely successor of the one before it, so a test knows exactly what the model will say.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TEMPLATES = Path(__file__).parent / "templates"
_CORPUS = [
    "The capital of France is Paris. The weather is sunny, 21 degrees. Call get_weather for a city.",
    'JSON {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}} [1, 2.5, true, null]',
    "Numbers 0123456789 and punctuation: !?.,;:-()[]{} \"quotes\" 'single' <tags> </tags> ```json",
]


@dataclass(frozen=True)
class Family:
    template: str  # file in tests/templates
    special: tuple[str, ...]  # control tokens (special: hidden from text unless they are markers)
    eos: str
    bos: str | None = None
    added: tuple[str, ...] = ()  # ordinary added tokens (Qwen's <tool_call>, <think>)
    architecture: str = "llama"

    @property
    def chat_template(self) -> str:
        return (TEMPLATES / self.template).read_text()


_QWEN = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
_QWEN_ADDED = ("<tool_call>", "</tool_call>", "<think>", "</think>", "<tool_response>", "</tool_response>")
_DEEPSEEK = (
    "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>",
    "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>", "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>",
    "<｜tool▁sep｜>", "<｜tool▁outputs▁begin｜>", "<｜tool▁outputs▁end｜>", "<｜tool▁output▁begin｜>",
    "<｜tool▁output▁end｜>",
)  # fmt: skip
_MISTRAL = (
    "<s>", "</s>", "[INST]", "[/INST]", "[TOOL_CALLS]", "[AVAILABLE_TOOLS]", "[/AVAILABLE_TOOLS]",
    "[TOOL_RESULTS]", "[/TOOL_RESULTS]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]", "[ARGS]", "[CALL_ID]",
)  # fmt: skip
_LLAMA = (
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<|eom_id|>",
    "<|python_tag|>",
)  # fmt: skip

FAMILIES: dict[str, Family] = {
    "qwen3": Family("qwen3.jinja", _QWEN, "<|im_end|>", added=_QWEN_ADDED, architecture="qwen3"),
    "qwen2.5": Family("qwen2.5.jinja", _QWEN, "<|im_end|>", added=_QWEN_ADDED, architecture="qwen2"),
    "hermes3": Family(
        "hermes3.jinja",
        (*_QWEN, "<|begin_of_text|>"),
        "<|im_end|>",
        bos="<|begin_of_text|>",
        added=_QWEN_ADDED,
    ),
    "qwen3-coder": Family("qwen3-coder.jinja", _QWEN, "<|im_end|>", added=_QWEN_ADDED, architecture="qwen3"),
    "llama3.2": Family("llama3.2.jinja", _LLAMA, "<|eot_id|>", bos="<|begin_of_text|>"),
    "llama3.1": Family("llama3.1.jinja", _LLAMA, "<|eot_id|>", bos="<|begin_of_text|>"),
    "mistral-nemo": Family("mistral-nemo.jinja", _MISTRAL, "</s>", bos="<s>", architecture="mistral"),
    "devstral": Family("devstral.jinja", _MISTRAL, "</s>", bos="<s>", architecture="mistral"),
    "granite3.3": Family(
        "granite3.3.jinja",
        ("<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>", "<|tool_call|>"),
        "<|end_of_text|>",
        architecture="granite",
    ),
    "deepseek-r1-distill": Family(
        "deepseek-r1-distill.jinja",
        _DEEPSEEK,
        "<｜end▁of▁sentence｜>",
        bos="<｜begin▁of▁sentence｜>",
        added=("<think>", "</think>"),
        architecture="qwen2",
    ),
    "deepseek-v3.1": Family(
        "deepseek-v3.1.jinja",
        _DEEPSEEK,
        "<｜end▁of▁sentence｜>",
        bos="<｜begin▁of▁sentence｜>",
        added=("<think>", "</think>"),
    ),
    "gemma2": Family(
        "gemma2.jinja", ("<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>"), "<end_of_turn>", bos="<bos>"
    ),
    "phi3.5": Family(
        "phi3.5.jinja", ("<|user|>", "<|assistant|>", "<|system|>", "<|end|>", "<|endoftext|>"), "<|end|>"
    ),
}


def build_tokenizer(family: Family):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=list(family.special),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(_CORPUS * 20, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=family.eos,
        bos_token=family.bos,
        pad_token=family.eos,
        additional_special_tokens=[t for t in family.special if t not in (family.eos, family.bos)],
    )
    tokenizer.add_tokens(list(family.added))
    tokenizer.chat_template = family.chat_template
    return tokenizer


def _config(architecture: str, vocab_size: int, hidden: int, layers: int, tokenizer):
    import transformers

    names = {
        "llama": "LlamaConfig", "qwen2": "Qwen2Config", "qwen3": "Qwen3Config", "mistral": "MistralConfig",
        "granite": "GraniteConfig",
    }  # fmt: skip
    config_class = getattr(transformers, names[architecture])
    extra = {"head_dim": hidden // 4} if architecture == "qwen3" else {}
    return config_class(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        tie_word_embeddings=False,
        **extra,
    )


def build_family_model(directory: Path, name: str) -> Path:
    """A random model of that family, saved as a model directory heylook can load."""
    import torch
    from transformers import AutoModelForCausalLM

    family = FAMILIES[name]
    tokenizer = build_tokenizer(family)
    config = _config(family.architecture, len(tokenizer), 32, 2, tokenizer)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


# What a scripted model writes where its script says nothing and a grammar forbids ending: close
# the string, the object or the array, or a digit; so under a grammar it writes the shortest JSON.
_LEANINGS = {'"': 0.5, "}": 0.4, "]": 0.35, "1": 0.3}
# How far the scripted token's score stands above the rest: at 1, a leaning token was still drawn
# about once in 400 steps at temperature 1 (a test read 'Paris"'); at 4 never in practice.
_SHARPNESS = 4.0


def build_scripted_model(directory: Path, name: str, script: dict[str, str]) -> Path:
    """A model of that family that writes a fixed reply.

    `script` maps a token's text to the token that must come next; after tokens it does not name,
    the turn ends (or, where a grammar forbids that, the model leans to closing what is open). Every
    attention and MLP output is zero, so each position's hidden state is its own token's embedding
    (plus one dimension always on, for the leanings): the model is a lookup table from one token to
    the next, and a script whose tokens differ plays out exactly.
    """
    import torch
    from transformers import AutoModelForCausalLM

    family = FAMILIES[name]
    tokenizer = build_tokenizer(family)
    ids = {text: _single_token(tokenizer, text) for pair in script.items() for text in pair}
    vocab = len(tokenizer)
    # One dimension per token and one always on, rounded up so that 4 heads get an even width.
    config = _config(family.architecture, vocab, (vocab + 8) // 8 * 8, 1, tokenizer)
    model = AutoModelForCausalLM.from_config(config)
    eos = tokenizer.convert_tokens_to_ids(family.eos)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        for norm in (m for m in model.modules() if "RMSNorm" in type(m).__name__):
            norm.weight.fill_(1.0)
        embed = model.get_input_embeddings().weight
        embed[:, :vocab] = torch.eye(vocab)
        embed[:, vocab] = 1.0
        head = model.get_output_embeddings().weight
        head[eos, :vocab] = _SHARPNESS  # by default, the turn ends
        for text, leaning in _LEANINGS.items():
            head[_single_token(tokenizer, text), vocab] = leaning * _SHARPNESS
        for before, after in script.items():
            head[:, ids[before]] = 0.0
            head[ids[after], ids[before]] = _SHARPNESS
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _single_token(tokenizer, text: str) -> int:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        tokenizer.add_tokens([text])
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (text, ids)
    return ids[0]
