"""POST /v1/chat/completions/multipart, for clients that send image files rather than data: URLs:
a `request` part holding the chat completion body as JSON, and `image` (or `images`) file parts,
appended in their order as image_url parts of the last user message. Pure: the route reads the
form; this turns its parts into the body /v1/chat/completions takes, and names the images after
their form parts again once parsed."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from heylook.errors import InvalidRequest
from heylook.protocols.fields import parse_json_object
from heylook.protocols.images import media_type
from heylook.types import ChatPrompt, GenerationRequest

REQUEST_FIELD = "request"
IMAGE_FIELDS = ("image", "images")


def chat_body(
    request: str | bytes, images: Sequence[tuple[str, bytes]]
) -> tuple[dict[str, Any], dict[str, str]]:
    """The chat body with the images (form part name, bytes) appended to its last user message as
    data: URLs; and, by where the parser will name each image (messages[i].content[j]), the name
    of its form part (images[k]) for errors to name instead."""
    try:
        body = parse_json_object(request.encode() if isinstance(request, str) else request)
    except InvalidRequest as error:
        raise InvalidRequest(f"'{REQUEST_FIELD}': {error.message}", param=REQUEST_FIELD) from None
    if not images:
        return body, {}
    raw = body.get("messages")
    messages: list[Any] = raw if isinstance(raw, list) else []
    users = [i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "user"]
    if not users:
        raise InvalidRequest(
            f"'{REQUEST_FIELD}' has no user message for the image files to go with",
            param=f"{images[0][0]}[0]",
        )
    last = users[-1]
    message = dict(messages[last])
    content = message.get("content")
    if content is None:
        parts: list[Any] = []
    elif isinstance(content, str):
        parts = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        parts = list(content)
    else:  # the chat parser names what is wrong with it
        return body, {}
    names: dict[str, str] = {}
    counts: dict[str, int] = {}
    for field, data in images:
        index = counts[field] = counts.get(field, -1) + 1
        names[f"messages[{last}].content[{len(parts)}]"] = f"{field}[{index}]"
        url = f"data:{media_type(data)};base64,{base64.b64encode(data).decode('ascii')}"
        parts.append({"type": "image_url", "image_url": {"url": url}})
    message["content"] = parts
    return {**body, "messages": [*messages[:last], message, *messages[last + 1 :]]}, names


def named_after_parts(request: GenerationRequest, names: Mapping[str, str]) -> GenerationRequest:
    """The request with its uploaded images' `where` the form parts' names (images[0]), so that
    an error about one names the file part the client sent."""
    if not names or not isinstance(request.prompt, ChatPrompt):
        return request
    messages = tuple(
        replace(m, images=tuple(replace(i, where=names.get(i.where, i.where)) for i in m.images))
        if m.images
        else m
        for m in request.prompt.messages
    )
    return replace(request, prompt=replace(request.prompt, messages=messages))
