"""JSON output by constrained decoding: xgrammar compiles a grammar per schema, and the sampler masks
every token the grammar does not allow, so the output is valid by construction, not by asking."""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from heylook.errors import InvalidRequest
from heylook.types import JsonFormat, Tool

# "JSON mode" without a schema means a JSON object, as OpenAI's json_object and llama.cpp's
# json grammar (behind Ollama's format "json") both do.
_ANY_OBJECT = json.dumps({"type": "object"})
# What a held grammar really costs the process, per byte of xgrammar's estimate
# (CompiledGrammar.memory_size_bytes): 3,000 distinct schemas on the demo model's vocabulary, held
# up to 32 MiB of estimate, grew the process 42 MiB and levelled there. Counted at 2x to be safe.
# xgrammar's own cache is not used: bounded at 32 MiB of its estimate, the same 3,000 schemas grew
# the process 186 MiB and it kept rising (~70 KB per schema it had ever compiled).
RESIDENT_PER_ESTIMATED_BYTE = 2


class JsonGrammars:
    """Compiles JSON grammars for one model's tokenizer, and keeps the most recently used ones up to
    a bound in resident bytes."""

    def __init__(
        self, tokenizer: Any, vocab_size: int, stop_token_ids: list[int], *, cache_bytes: int = -1
    ) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._stop_token_ids = stop_token_ids
        # What compiled grammars may hold, resident: the least recently used go past it. -1: no bound.
        self._cache_bytes = cache_bytes
        self._compiler: Any = None
        self._lock = threading.Lock()
        # Compiled grammars by what they were compiled from, least recently used first.
        self._held: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self._held_bytes = 0

    @property
    def bytes_held(self) -> int:
        """What the held grammars cost the process, as counted against the bound."""
        return self._held_bytes

    def __len__(self) -> int:
        return len(self._held)

    def compile(self, format: JsonFormat) -> Any:
        """A CompiledGrammar; a schema xgrammar cannot use is a 400."""
        schema = format.schema or _ANY_OBJECT
        key = "json\0" + schema
        if (held := self._recall(key)) is not None:
            return held
        compiler = self._get_compiler()
        try:
            # No free whitespace: small models under a JSON grammar otherwise pad with newlines.
            grammar = compiler.compile_json_schema(schema, any_whitespace=False)
        except Exception as error:  # xgrammar raises RuntimeError / ValueError on a schema it rejects
            raise InvalidRequest(f"unusable JSON schema: {error}", param="response_format") from None
        return self._keep(key, grammar)

    def compile_structure(self, structure: Any, tools: tuple[Tool, ...] = ()) -> Any:
        """A CompiledGrammar for a structural tag (chat.grammar); a tool schema xgrammar cannot use,
        or that no arguments can satisfy, is a 400 naming that tool."""
        key = "tag\0" + structure.model_dump_json()
        if (held := self._recall(key)) is not None:
            return held
        compiler = self._get_compiler()
        try:
            grammar = compiler.compile_structural_tag(structure)
        except Exception as error:
            for index, tool in enumerate(tools):
                try:
                    compiler.compile_json_schema(tool.parameters)
                except Exception as tool_error:
                    param = f"tools[{index}].function.parameters"
                    message = f"unusable JSON schema for the tool {tool.name!r}: {_first_line(tool_error)}"
                    raise InvalidRequest(message, param=param) from None
            raise InvalidRequest(
                f"unusable JSON schema: {_first_line(error)}", param="response_format"
            ) from None
        return self._keep(key, grammar)

    def _recall(self, key: str) -> Any | None:
        with self._lock:
            entry = self._held.get(key)
            if entry is None:
                return None
            self._held.move_to_end(key)
            return entry[0]

    def _keep(self, key: str, grammar: Any) -> Any:
        """Holds a new grammar, dropping the least recently used past the bound; one bigger than
        the whole bound is used and not kept."""
        cost = int(grammar.memory_size_bytes) * RESIDENT_PER_ESTIMATED_BYTE
        if self._cache_bytes < 0 or cost <= self._cache_bytes:
            with self._lock:
                if key not in self._held:
                    self._held[key] = (grammar, cost)
                    self._held_bytes += cost
                while self._cache_bytes >= 0 and self._held_bytes > self._cache_bytes:
                    _, (_, dropped) = self._held.popitem(last=False)
                    self._held_bytes -= dropped
        return grammar

    def _get_compiler(self) -> Any:
        with self._lock:
            if self._compiler is None:
                import xgrammar

                info = xgrammar.TokenizerInfo.from_huggingface(
                    self._tokenizer, vocab_size=self._vocab_size, stop_token_ids=self._stop_token_ids
                )
                self._compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
            return self._compiler


def _first_line(error: Exception) -> str:
    """xgrammar's message without the source location it starts with."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split(": ", 1)[1] if text.startswith("[") and ": " in text else text
