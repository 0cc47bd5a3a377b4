"""Images in the wire formats, as tables: OpenAI's image_url parts and Ollama's images to
ImageInput, what goes upstream, how a turn with images renders, and which models read images."""

from __future__ import annotations

import base64

import pytest

from heylook.chat.render import render_chat
from heylook.chat.syntax import template_traits
from heylook.errors import InvalidRequest
from heylook.models.kind import reads_images
from heylook.protocols import ollama, openai
from heylook.protocols.ollama import capabilities
from heylook.providers.remote import openai_message
from heylook.types import ChatPrompt, ImageInput, Message, ModelFacts

PNG = b"\x89PNG\r\n\x1a\n fake image bytes"
B64 = base64.b64encode(PNG).decode()
DATA_URL = f"data:image/png;base64,{B64}"


def _openai_messages(content) -> tuple[Message, ...]:
    request, _ = openai.parse_chat_request({"model": "m", "messages": [{"role": "user", "content": content}]})
    assert isinstance(request.prompt, ChatPrompt)
    return request.prompt.messages


@pytest.mark.parametrize(
    ("content", "text", "images"),
    [
        (
            [{"type": "image_url", "image_url": {"url": DATA_URL}}, {"type": "text", "text": "What is it?"}],
            "What is it?",
            (ImageInput(data=PNG, where="messages[0].content[0]"),),
        ),
        (  # text first: the image still goes before the text, and `detail` is accepted
            [
                {"type": "text", "text": "Compare "},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                {"type": "text", "text": "these."},
                {"type": "image_url", "image_url": {"url": DATA_URL, "detail": "high"}},
            ],
            "Compare these.",
            (
                ImageInput(url="https://example.com/a.png", where="messages[0].content[1]"),
                ImageInput(data=PNG, where="messages[0].content[3]"),
            ),
        ),
        (
            [{"type": "image_url", "image_url": {"url": DATA_URL}}],
            "",
            (ImageInput(PNG, where="messages[0].content[0]"),),
        ),
    ],
)
def test_openai_image_parts(content, text: str, images: tuple[ImageInput, ...]) -> None:
    [message] = _openai_messages(content)
    assert (message.content, message.images) == (text, images)


@pytest.mark.parametrize(
    ("url", "param", "words"),
    [
        ("data:image/png;base64,!!!not base64", "messages[0].content[1]", "not valid base64"),
        ("data:text/plain;base64,aGk=", "messages[0].content[1]", "not an image"),
        ("data:image/png,rawbytes", "messages[0].content[1]", "without ;base64"),
        ("ftp://example.com/a.png", "messages[0].content[1]", "data: URL or an http"),
    ],
)
def test_bad_openai_image_parts_are_400_naming_the_part(url: str, param: str, words: str) -> None:
    content = [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": url}}]
    with pytest.raises(InvalidRequest, match=words) as caught:
        _openai_messages(content)
    assert caught.value.param == param and caught.value.status == 400


def test_openai_images_across_turns_keep_their_turns() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": DATA_URL}}]},
            {"role": "assistant", "content": "A square."},
            {"role": "user", "content": [{"type": "text", "text": "And now?"}, *[
                {"type": "image_url", "image_url": {"url": DATA_URL}}] * 2]},
        ],
    }  # fmt: skip
    request, _ = openai.parse_chat_request(body)
    assert isinstance(request.prompt, ChatPrompt)
    wheres = [[i.where for i in m.images] for m in request.prompt.messages]
    assert wheres == [["messages[0].content[0]"], [], ["messages[2].content[1]", "messages[2].content[2]"]]


def test_ollama_chat_images() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "What is it?", "images": [B64, B64]},
            {"role": "assistant", "content": "Two squares."},
            {"role": "user", "content": "Sure?", "images": [B64]},
        ],
    }
    request = ollama.parse_chat_request(body).request
    assert isinstance(request.prompt, ChatPrompt)
    first, _, last = request.prompt.messages
    assert first.images == (
        ImageInput(PNG, where="messages[0].images[0]"),
        ImageInput(PNG, where="messages[0].images[1]"),
    )
    assert last.images == (ImageInput(PNG, where="messages[2].images[0]"),)


def test_ollama_generate_images_go_with_the_prompt() -> None:
    body = {"model": "m", "prompt": "What is it?", "system": "Be brief.", "images": [B64]}
    request = ollama.parse_generate_request(body).request
    assert isinstance(request.prompt, ChatPrompt)
    system, user = request.prompt.messages
    assert (system.images, user.content, user.images) == (
        (),
        "What is it?",
        (ImageInput(PNG, where="images[0]"),),
    )


def test_ollama_generate_with_images_and_no_prompt_generates() -> None:
    request = ollama.parse_generate_request({"model": "m", "images": [B64]}).request
    assert isinstance(request.prompt, ChatPrompt) and request.prompt.messages[-1].images


def test_images_go_upstream_as_openai_image_url_parts() -> None:
    message = Message(
        "user", "What is it?", images=(ImageInput(PNG), ImageInput(url="https://example.com/a.png"))
    )
    assert openai_message(message)["content"] == [
        {"type": "image_url", "image_url": {"url": DATA_URL}},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        {"type": "text", "text": "What is it?"},
    ]
    assert openai_message(Message("user", "hi"))["content"] == "hi"


class _PartsTokenizer:
    """Renders content parts as a vision template does: <image> for each image part."""

    chat_template = "parts"

    def apply_chat_template(self, turns, add_generation_prompt, tokenize, **options) -> str:
        def text(content) -> str:
            if isinstance(content, str):
                return content
            return "".join("<image>" if p["type"] == "image" else p["text"] for p in content)

        return "".join(f"[{t['role']}]{text(t['content'])}" for t in turns)


def test_a_turn_renders_its_images_before_its_text() -> None:
    messages = (
        Message("system", "Be brief."),
        Message("user", "Compare.", images=(ImageInput(PNG), ImageInput(PNG))),
        Message("assistant", "Same."),
        Message("user", "", images=(ImageInput(PNG),)),
    )
    rendered = render_chat(_PartsTokenizer(), messages, template_traits(None))
    assert rendered.text == "[system]Be brief.[user]<image><image>Compare.[assistant]Same.[user]<image>"


@pytest.mark.parametrize(
    ("config", "vision"),
    [
        ({"architectures": ["LlavaForConditionalGeneration"], "vision_config": {}, "text_config": {}}, True),
        ({"architectures": ["Idefics3ForConditionalGeneration"], "vision_config": {}}, True),
        ({"architectures": ["PaliGemmaForConditionalGeneration"], "image_token_index": 257152}, True),
        ({"architectures": ["LlamaForCausalLM"]}, False),
        ({"architectures": ["CLIPModel"], "vision_config": {}, "text_config": {}}, False),  # embeds
        ({"architectures": ["BertForSequenceClassification"]}, False),
    ],
)
def test_which_models_read_images(config: dict, vision: bool) -> None:
    assert reads_images(config) is vision


def test_show_lists_vision_for_a_vision_model() -> None:
    facts = ModelFacts(name="v", source="v", chat_template="t", vision=True)
    assert capabilities(facts) == ["completion", "tools", "vision"]
    assert "vision" not in capabilities(ModelFacts(name="t", source="t", chat_template="t"))
