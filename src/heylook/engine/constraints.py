"""JSON output by constrained decoding: xgrammar compiles a grammar per schema, and the sampler masks
every token the grammar does not allow, so the output is valid by construction, not by asking."""

from __future__ import annotations

import json
import threading
from typing import Any

from heylook.errors import InvalidRequest
from heylook.types import JsonFormat, Tool

# "JSON mode" without a schema means a JSON object, as OpenAI's json_object and llama.cpp's
# json grammar (behind Ollama's format "json") both do.
_ANY_OBJECT = json.dumps({"type": "object"})
# xgrammar bounds its cache by its own estimate of each grammar's size; the process holds more:
# 1,200 distinct schemas through a compiler bounded at 8 MiB grew the demo model's process by
# 32 MiB and levelled there (allocator overhead and the compiler's working memory). So it is told a
# quarter of the bytes the cache may really take.
RESIDENT_PER_ESTIMATED_BYTE = 4


class JsonGrammars:
    """Compiles JSON grammars for one model's tokenizer; xgrammar caches each schema's grammar."""

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

    def compile(self, format: JsonFormat) -> Any:
        """A CompiledGrammar; a schema xgrammar cannot use is a 400."""
        compiler = self._get_compiler()
        try:
            # No free whitespace: small models under a JSON grammar otherwise pad with newlines.
            return compiler.compile_json_schema(format.schema or _ANY_OBJECT, any_whitespace=False)
        except Exception as error:  # xgrammar raises RuntimeError / ValueError on a schema it rejects
            raise InvalidRequest(f"unusable JSON schema: {error}", param="response_format") from None

    def compile_structure(self, structure: Any, tools: tuple[Tool, ...] = ()) -> Any:
        """A CompiledGrammar for a structural tag (chat.grammar); a tool schema xgrammar cannot use,
        or that no arguments can satisfy, is a 400 naming that tool."""
        compiler = self._get_compiler()
        try:
            return compiler.compile_structural_tag(structure)
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

    def _get_compiler(self) -> Any:
        with self._lock:
            if self._compiler is None:
                import xgrammar

                info = xgrammar.TokenizerInfo.from_huggingface(
                    self._tokenizer, vocab_size=self._vocab_size, stop_token_ids=self._stop_token_ids
                )
                limit = self._cache_bytes // RESIDENT_PER_ESTIMATED_BYTE if self._cache_bytes >= 0 else -1
                self._compiler = xgrammar.GrammarCompiler(info, cache_limit_bytes=limit)
            return self._compiler


def _first_line(error: Exception) -> str:
    """xgrammar's message without the source location it starts with."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.split(": ", 1)[1] if text.startswith("[") and ": " in text else text
