"""heylook run and heylook chat: talk to an alias from the terminal, through a running server when
one is up, else generating in this process."""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import cyclopts
import httpx

from heylook.cli.common import (
    EXIT_USAGE,
    CommandFailed,
    ModelsOption,
    UrlOption,
    app,
    auth_headers,
    console,
    open_registry,
    server_url,
)
from heylook.cli.flags import find_flag, flag_class, flag_rows, parse_flag_value, stated
from heylook.errors import HeylookError
from heylook.protocols.images import image_from_data_url, media_type
from heylook.registry.aliases import Registry
from heylook.types import ChatPrompt, GenerationRequest, JsonFormat, Message, SamplingOptions, TextChunk

Opt = cyclopts.Parameter
# A turn as the CLI keeps it (and writes to --history): role, content, and a user turn's images
# as data: URLs.
Turn = dict[str, Any]
ImagesOption = Annotated[
    list[Path] | None,
    Opt(
        help="An image file to send with the question (a vision model's alias); repeat for more.", negative=()
    ),
]


# What run and chat can set: the settings with a flag that the OpenAI API carries (a running
# server is talked to through it), the system prompt and JSON mode.
RUN_ROWS = flag_rows(api="openai")
if TYPE_CHECKING:

    class Settings:
        system: str | None
        json_mode: bool

        def __init__(self, **values: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...

else:
    Settings = flag_class(
        "Settings",
        "Generation flags; in a chat, /set changes them.",
        RUN_ROWS,
        extra=[
            ("system", Annotated[str | None, Opt(help="The system prompt (instead of the alias's).")], None),
            ("json_mode", Annotated[bool, Opt(help="Replies are JSON objects (by grammar).")], False),
        ],
    )


def sampling_options(settings: Settings) -> SamplingOptions:
    return SamplingOptions(
        **stated(settings, RUN_ROWS), response_format=JsonFormat() if settings.json_mode else None
    )


def openai_fields(settings: Settings) -> dict[str, Any]:
    values = stated(settings, RUN_ROWS)
    named: dict[str, Any] = {str(row.openai): values[row.name] for row in RUN_ROWS if row.name in values}
    if settings.json_mode:
        named["response_format"] = {"type": "json_object"}
    return named


class Backend(Protocol):
    description: str

    def stream(self, alias: str, messages: list[Turn], settings: Settings) -> Iterator[str]: ...

    def close(self) -> None: ...


class ServerBackend:
    """A running heylook server, through its OpenAI API."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.description = f"server at {url}"
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=None), headers=auth_headers())

    def stream(self, alias: str, messages: list[Turn], settings: Settings) -> Iterator[str]:
        sent = [_openai_message(m) for m in messages]
        body = {"model": alias, "messages": sent, "stream": True, **openai_fields(settings)}
        with self._client.stream("POST", f"{self.url}/v1/chat/completions", json=body) as response:
            if response.status_code >= 400:
                response.read()
                raise CommandFailed(response.json().get("error", {}).get("message", response.text))
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[len("data: ") :])
                if "error" in chunk:
                    raise CommandFailed(chunk["error"]["message"])
                for choice in chunk.get("choices", []):
                    if text := choice.get("delta", {}).get("content"):
                        yield text

    def close(self) -> None:
        self._client.close()


class LocalBackend:
    """The model loaded in this process, generating through heylook's own core path."""

    def __init__(self, registry: Registry) -> None:
        from anyio.from_thread import start_blocking_portal

        from heylook.providers.backends import Backends
        from heylook.router import ModelRouter

        self.description = "this process"
        self.router = ModelRouter(registry, keep_alive=-1)
        self.backends = Backends(self.router)
        self._portal_context = start_blocking_portal()
        self._portal = self._portal_context.__enter__()

    def load(self, alias: str) -> Any:
        """Load now, so the wait comes before the first question rather than inside it; the tokenizer
        (None for a remote alias: there is nothing to load here)."""
        try:
            if self.backends.resolve(alias).remote:
                return None
            lease = self._portal.call(self.router.acquire, alias)
        except HeylookError as error:
            raise CommandFailed(error.message) from None
        self.router.release(lease)
        return lease.model.tokenizer

    def stream(self, alias: str, messages: list[Turn], settings: Settings) -> Iterator[str]:
        prompt = ChatPrompt(tuple(_message(m, f"messages[{i}]") for i, m in enumerate(messages)))
        request = GenerationRequest(alias, prompt, sampling_options(settings))
        generation = self._portal.call(self.backends.start, request)
        chunks = generation.chunks()
        try:
            while True:
                try:
                    chunk = self._portal.call(chunks.__anext__)
                except StopAsyncIteration:
                    return
                if isinstance(chunk, TextChunk):
                    yield chunk.text
        finally:
            self._portal.call(chunks.aclose)

    def close(self) -> None:
        self._portal.call(self.backends.aclose)
        self.router.close()
        self._portal_context.__exit__(None, None, None)


def read_image(path: Path) -> str:
    """An image file as the data: URL a turn keeps; a file that cannot be read is a usage error."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise CommandFailed(f"cannot read the image {path}: {error.strerror or error}", EXIT_USAGE) from None
    return f"data:{media_type(data)};base64,{base64.b64encode(data).decode('ascii')}"


def _openai_message(turn: Turn) -> dict[str, Any]:
    """A turn as the OpenAI API takes it: with images, its content is their image_url parts and
    then its text."""
    images = turn.get("images") or []
    if not images:
        return {"role": turn["role"], "content": turn["content"]}
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in images]
    return {"role": turn["role"], "content": [*parts, {"type": "text", "text": turn["content"]}]}


def _message(turn: Turn, where: str) -> Message:
    images = tuple(
        image_from_data_url(url, f"{where}.images[{k}]") for k, url in enumerate(turn.get("images") or ())
    )
    return Message(turn["role"], turn["content"], images=images)


def connect(url: str | None, models: Path | None) -> Backend:
    """The server at --url (or $HEYLOOK_URL, or the default) if it answers, else this process.
    A --url given explicitly must answer."""
    base = server_url(url)
    try:
        if httpx.get(f"{base}/health", timeout=1).json().get("status") == "ok":
            return ServerBackend(base)
    except (httpx.HTTPError, ValueError):
        if url:
            raise CommandFailed(f"no heylook server answers at {base}") from None
    return LocalBackend(open_registry(models))


def say(backend: Backend, alias: str, messages: list[Turn], settings: Settings) -> str:
    """Stream a reply to stdout as it comes; the whole reply is returned."""
    parts = []
    try:
        for piece in backend.stream(alias, messages, settings):
            parts.append(piece)
            sys.stdout.write(piece)
            sys.stdout.flush()
    except HeylookError as error:
        raise CommandFailed(error.message) from None
    finally:
        sys.stdout.write("\n")
        sys.stdout.flush()
    return "".join(parts)


@app.command
def run(
    alias: str,
    prompt: Annotated[str | None, Opt(help="What to ask; read from stdin when left out.")] = None,
    /,
    *,
    settings: Settings | None = None,
    image: ImagesOption = None,
    url: UrlOption = None,
    models: ModelsOption = None,
) -> int:
    """Ask once and stream the answer."""
    settings = settings or Settings()
    images = [read_image(path) for path in image or ()]
    text = prompt if prompt is not None else sys.stdin.read()
    if not text.strip():
        raise CommandFailed("nothing to ask: give a prompt or pipe one in", EXIT_USAGE)
    question: Turn = {"role": "user", "content": text, **({"images": images} if images else {})}
    messages = ([{"role": "system", "content": settings.system}] if settings.system else []) + [question]
    backend = connect(url, models)
    try:
        say(backend, alias, messages, settings)
    finally:
        backend.close()
    return 0


# --- chat -----------------------------------------------------------------------------------------

HELP = f"""Commands:
  /set KEY VALUE   change a setting: {", ".join(row.name for row in RUN_ROWS)}, json_mode
  /set             show the settings
  /system TEXT     set the system prompt (/system alone removes it)
  /image PATH      send an image file with the next question
  /clear           forget the conversation (the system prompt stays)
  /bye             leave
Start a line with \"\"\" to write several lines, and end them with \"\"\"."""


@dataclass
class Conversation:
    system: str | None = None
    turns: list[Turn] = field(default_factory=list)
    # Images (data: URLs) that go with the next question: --image, /image.
    pending_images: list[str] = field(default_factory=list)

    def messages(self) -> list[Turn]:
        return ([{"role": "system", "content": self.system}] if self.system else []) + self.turns

    def fit(self, count: Callable[[list[Turn]], int], limit: int) -> int:
        """Drop the oldest user and assistant turns until the prompt fits `limit` tokens; the system
        prompt and the newest question always stay. Returns how many turns were dropped."""
        dropped = 0
        while len(self.turns) > 1 and count(self.messages()) > limit:
            self.turns.pop(0)
            dropped += 1
        return dropped

    @classmethod
    def load(cls, path: Path) -> Conversation:
        try:
            messages = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise CommandFailed(f"cannot read the conversation in {path}: {error}", EXIT_USAGE) from None
        if not isinstance(messages, list) or not all(
            isinstance(m, dict) and {"role", "content"} <= set(m) for m in messages
        ):
            raise CommandFailed(f"{path} must hold a JSON list of {{role, content}} messages", EXIT_USAGE)
        system = next((m["content"] for m in messages if m["role"] == "system"), None)
        return cls(system, [m for m in messages if m["role"] != "system"])

    def save(self, path: Path) -> None:
        """Atomically, so a crash never leaves half a history behind."""
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent or ".")
        with os.fdopen(handle, "w") as file:
            json.dump(self.messages(), file, ensure_ascii=False, indent=1)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)


@app.command
def chat(
    alias: str,
    /,
    *,
    settings: Settings | None = None,
    history: Annotated[
        Path | None, Opt(help="Keep the conversation in this JSON file, and resume it.")
    ] = None,
    input_file: Annotated[
        Path | None, Opt(help="Start from this file: JSON messages, or text to ask first.")
    ] = None,
    ctx: Annotated[int | None, Opt(help="Drop the oldest turns to keep the prompt within N tokens.")] = None,
    image: ImagesOption = None,
    url: UrlOption = None,
    models: ModelsOption = None,
) -> int:
    """Talk with an alias: answers stream as they are written. /help lists the commands."""
    settings = settings or Settings()
    conversation = Conversation.load(history) if history and history.exists() else Conversation()
    conversation.pending_images = [read_image(path) for path in image or ()]
    first_question = None
    if input_file:
        if input_file.suffix == ".json":
            conversation.turns += Conversation.load(input_file).turns
        else:
            first_question = input_file.read_text()
    if settings.system is not None:
        conversation.system = settings.system
    backend = connect(url, models)
    try:
        if isinstance(backend, LocalBackend):
            with console.status(f"loading {alias} ..."):
                backend.load(alias)
        count = _token_counter(backend, alias, models) if ctx else None
        console.print(f"[dim]{alias} via {backend.description}. /help for commands, /bye to leave.[/dim]")
        question = first_question
        while True:
            if question is None:
                question = _read_question()
                if question is None:
                    break
            if not question:
                question = None
                continue
            if question.startswith("/"):
                if not _command(question, conversation, settings):
                    break
                question = None
                continue
            images, conversation.pending_images = conversation.pending_images, []
            conversation.turns.append(
                {"role": "user", "content": question, **({"images": images} if images else {})}
            )
            if count and ctx:
                dropped = conversation.fit(count, ctx)
                if dropped:
                    console.print(
                        f"[dim](dropped the {dropped} oldest turn(s) to stay within {ctx} tokens)[/dim]"
                    )
            try:
                reply = say(backend, alias, conversation.messages(), replace(settings, system=None))  # type: ignore[type-var]
            except KeyboardInterrupt:
                reply = ""
                console.print("[dim](stopped)[/dim]")
            except CommandFailed as failure:  # this question failed; the chat goes on
                console.print(f"[red]error:[/red] {failure.message}")
                conversation.turns.pop()
                question = None
                continue
            conversation.turns.append({"role": "assistant", "content": reply})
            if history:
                conversation.save(history)
            question = None
    finally:
        backend.close()
    return 0


def _read_question() -> str | None:
    """One question: a line, or the lines between a pair of \"\"\". None at the end of input."""
    try:
        line = input(">>> ")
    except EOFError:
        return None
    except KeyboardInterrupt:
        console.print()
        return ""
    if not line.lstrip().startswith('"""'):
        return line.strip()
    first = line.lstrip()[3:]
    if first.rstrip().endswith('"""'):
        return first.rstrip()[:-3].strip()
    lines = [first]
    while True:
        try:
            more = input("... ")
        except EOFError:
            break
        if more.rstrip().endswith('"""'):
            lines.append(more.rstrip()[:-3])
            break
        lines.append(more)
    return "\n".join(lines).strip("\n")


def _command(line: str, conversation: Conversation, settings: Settings) -> bool:
    """Carry out a slash command; False means leave."""
    name, _, rest = line.partition(" ")
    rest = rest.strip()
    if name in ("/bye", "/exit", "/quit"):
        return False
    if name in ("/help", "/?"):
        console.print(HELP)
    elif name == "/clear":
        conversation.turns.clear()
        console.print("[dim]Conversation cleared.[/dim]")
    elif name == "/system":
        conversation.system = rest or None
        console.print("[dim]System prompt " + ("set." if rest else "removed.") + "[/dim]")
    elif name == "/set":
        _set(rest, settings)
    elif name == "/image":
        _attach(rest, conversation)
    else:
        console.print(f"Unknown command {name}. /help lists them.")
    return True


def _attach(text: str, conversation: Conversation) -> None:
    path = text.strip().strip("'\"")
    if not path:
        console.print("/image PATH sends an image file with the next question.")
        return
    try:
        conversation.pending_images.append(read_image(Path(path).expanduser()))
    except CommandFailed as failure:  # a wrong path is the user's to fix; the chat goes on
        console.print(f"[red]error:[/red] {failure.message}")
        return
    count = len(conversation.pending_images)
    console.print(f"[dim]{count} image{'s' if count > 1 else ''} will go with the next question.[/dim]")


def _set(text: str, settings: Settings) -> None:
    if not text:
        values = {"system": settings.system, "json_mode": settings.json_mode} | {
            row.name: getattr(settings, row.name) for row in RUN_ROWS
        }
        # `is` tests: 0.0 == False, and a temperature of 0 is a setting worth showing.
        shown = {name: value for name, value in values.items() if value is not None and value is not False}
        console.print(shown or "Every setting is the alias's default.")
        return
    key, _, value = text.partition(" ")
    if key in ("json", "json_mode", "json-mode"):
        if value.strip().lower() not in ("on", "off", "true", "false", "1", "0"):
            console.print(f"{value!r} does not suit {key}: on or off.")
            return
        settings.json_mode = value.strip().lower() in ("on", "true", "1")
        console.print(f"[dim]json_mode = {settings.json_mode}[/dim]")
        return
    row = find_flag(key, RUN_ROWS)
    if row is None:
        console.print(f"Unknown setting {key!r}. /help lists them.")
        return
    try:
        setattr(settings, row.name, parse_flag_value(row, value.strip(), getattr(settings, row.name)))
    except ValueError:
        console.print(f"{value!r} does not suit {key}.")
        return
    console.print(f"[dim]{row.name} = {getattr(settings, row.name)}[/dim]")


def _token_counter(backend: Backend, alias: str, models: Path | None) -> Callable[[list[Turn]], int]:
    """Counts prompt tokens as the model's chat template makes them, with the model's tokenizer."""
    from heylook.generate import encode_prompt

    tokenizer = backend.load(alias) if isinstance(backend, LocalBackend) else None
    if tokenizer is None:
        from transformers import AutoTokenizer

        from heylook.models.sources import find_local

        try:
            directory = find_local(open_registry(models).get(alias).source)
        except HeylookError as error:
            raise CommandFailed(error.message) from None
        if directory is None:
            raise CommandFailed(f"--ctx needs {alias!r}'s tokenizer on this machine; pull the model first")
        tokenizer = AutoTokenizer.from_pretrained(directory)

    def count(messages: list[Turn]) -> int:
        prompt = ChatPrompt(tuple(Message(m["role"], m["content"]) for m in messages))
        return len(encode_prompt(tokenizer, prompt))

    return count
