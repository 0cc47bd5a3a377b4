"""Vision-language models, end to end: a tiny random LLaVA (tests/vision.py) served by a real
`heylook serve`, asked with images by the openai and ollama clients; the engine running an image's
prompt and then decoding it in one batch with text; what is refused, and how."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import openai
import pytest
import torch
import yaml

import ollama
from heylook.engine.runner import Engine
from heylook.errors import ModelLoadFailed
from heylook.models.estimate import estimate_alias, safetensors_tensors
from heylook.models.loader import LoadedModel, load_model
from heylook.models.vision import refuse_3d_positions
from heylook.registry.aliases import Alias
from heylook.registry.model_source import ModelSource
from heylook.types import (
    ChatPrompt,
    GenerationRequest,
    ImageInput,
    Message,
    SamplingOptions,
    SamplingParams,
    TextChunk,
)
from tests.fake_upstream import FakeUpstream
from tests.server import RunningServer
from tests.vision import IMAGE_SIZE, PATCH_SIZE, build_tiny_idefics3, build_tiny_vlm, png

IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
RED, BLUE = png((255, 0, 0)), png((0, 0, 255), size=(30, 50))


def data_url(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


def image_part(image: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": data_url(image)}}


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm"))


@pytest.fixture(scope="module")
def vision_server(
    tmp_path_factory: pytest.TempPathFactory,
    vlm_dir: Path,
    tiny_model_dir: Path,
    upstream_session: FakeUpstream,
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("vision-server")
    registry = {
        "models": {
            "vlm": {"model": str(vlm_dir)},
            "my-vlm": {"model": str(vlm_dir)},  # the README's examples' alias
            "tiny": {"model": str(tiny_model_dir)},
            "remote-vlm": {"provider": "openai", "base_url": upstream_session.base_url, "model": "scripted"},
        }
    }
    (folder / "models.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
    running = RunningServer(folder / "models.yaml", folder / "server.log", "--parallel", "4")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def vclient(vision_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{vision_server.base_url}/v1", api_key="-", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def oclient(vision_server: RunningServer) -> ollama.Client:
    return ollama.Client(host=vision_server.base_url, timeout=120)


def ask(client: openai.OpenAI, messages: list[dict], *, stream: bool = False, **more) -> tuple[str, int]:
    """The reply's text (greedy, a few tokens) and the prompt's token count."""
    common = {"model": "vlm", "messages": messages, "max_tokens": 6, "temperature": 0, **more}
    if not stream:
        reply = client.chat.completions.create(**common)
        assert reply.usage is not None
        return reply.choices[0].message.content or "", reply.usage.prompt_tokens
    chunks = list(
        client.chat.completions.create(**common, stream=True, stream_options={"include_usage": True})
    )
    usage = next(chunk.usage for chunk in chunks if chunk.usage)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    return text, usage.prompt_tokens


def test_openai_image_url_streamed_and_not(vclient: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": [image_part(RED), {"type": "text", "text": "What is this?"}]}]
    whole, prompt_tokens = ask(vclient, messages)
    streamed, streamed_tokens = ask(vclient, messages, stream=True)
    assert (streamed, streamed_tokens) == (whole, prompt_tokens)
    _, text_only = ask(vclient, [{"role": "user", "content": "What is this?"}])
    # The image's tokens are in the prompt: its patches (and the newline after its marker).
    assert prompt_tokens - text_only == IMAGE_TOKENS + 1


def test_the_pixels_reach_the_model(vclient: openai.OpenAI) -> None:
    """The same words with another image: the model's first token scores differently."""

    def first_logprob(image: bytes) -> float:
        reply = vclient.chat.completions.create(
            model="vlm",
            messages=[{"role": "user", "content": [image_part(image), {"type": "text", "text": "Colour?"}]}],
            max_tokens=1,
            temperature=0,
            logprobs=True,
        )
        assert reply.choices[0].logprobs is not None and reply.choices[0].logprobs.content
        return reply.choices[0].logprobs.content[0].logprob

    assert first_logprob(RED) != first_logprob(BLUE)
    assert first_logprob(RED) == first_logprob(RED)


def test_several_images_in_one_message_and_across_turns(vclient: openai.OpenAI) -> None:
    messages = [
        {
            "role": "user",
            "content": [image_part(RED), image_part(BLUE), {"type": "text", "text": "Compare."}],
        },
        {"role": "assistant", "content": "They differ."},
        {"role": "user", "content": [{"type": "text", "text": "And this one?"}, image_part(RED)]},
    ]
    text, prompt_tokens = ask(vclient, messages)
    _, without = ask(vclient, [{**m, "content": "x"} for m in messages])
    assert prompt_tokens > without + 3 * IMAGE_TOKENS
    assert isinstance(text, str)


def test_ollama_chat_and_generate_with_images(
    vclient: openai.OpenAI, oclient: ollama.Client, tmp_path: Path
) -> None:
    """Ollama's images (bytes or a file's path) read as OpenAI's image parts do: the same reply."""
    expected, _ = ask(
        vclient, [{"role": "user", "content": [image_part(RED), {"type": "text", "text": "Hi"}]}]
    )
    path = tmp_path / "red.png"
    path.write_bytes(RED)
    options = {"num_predict": 6, "temperature": 0}
    whole = oclient.chat(
        model="vlm", messages=[{"role": "user", "content": "Hi", "images": [RED]}], options=options
    )
    assert whole.message.content == expected
    parts = oclient.chat(
        model="vlm",
        messages=[{"role": "user", "content": "Hi", "images": [path]}],
        options=options,
        stream=True,
    )
    assert "".join(part.message.content for part in parts) == expected
    generated = oclient.generate(model="vlm", prompt="Hi", images=[RED], options=options)
    assert generated.response == expected
    streamed = oclient.generate(model="vlm", prompt="Hi", images=[str(path)], options=options, stream=True)
    assert "".join(part.response for part in streamed) == expected


def test_ollama_context_cannot_carry_images_onward(oclient: ollama.Client) -> None:
    first = oclient.generate(model="vlm", prompt="Hi", images=[RED], options={"num_predict": 2})
    assert first.context
    with pytest.raises(ollama.ResponseError, match="image tokens") as refused:
        oclient.generate(model="vlm", prompt="More", context=first.context, options={"num_predict": 2})
    assert refused.value.status_code == 400


def test_a_text_only_alias_given_an_image_is_a_400_naming_it(
    vclient: openai.OpenAI, oclient: ollama.Client
) -> None:
    content = [{"type": "text", "text": "Hi"}, image_part(RED)]
    with pytest.raises(openai.BadRequestError) as caught:
        vclient.chat.completions.create(model="tiny", messages=[{"role": "user", "content": content}])
    error = caught.value.body
    assert isinstance(error, dict) and '"tiny"' in error["message"] and "text-only" in error["message"]
    assert error["param"] == "messages[0].content[1]"
    with pytest.raises(ollama.ResponseError) as refused:
        oclient.chat(model="tiny", messages=[{"role": "user", "content": "Hi", "images": [RED]}])
    assert refused.value.status_code == 400 and '"tiny"' in refused.value.error


def test_bad_images_are_400_naming_the_part(vision_server: RunningServer, vclient: openai.OpenAI) -> None:
    bad = {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}
    with pytest.raises(openai.BadRequestError) as caught:
        vclient.chat.completions.create(
            model="vlm", messages=[{"role": "user", "content": [{"type": "text", "text": "Hi"}, bad]}]
        )
    assert isinstance(caught.value.body, dict) and caught.value.body["param"] == "messages[0].content[1]"
    not_an_image = base64.b64encode(b"plain text, no image").decode()
    reply = httpx.post(
        f"{vision_server.base_url}/api/chat",
        json={"model": "vlm", "messages": [{"role": "user", "content": "Hi", "images": ["%%%"]}]},
    )
    assert reply.status_code == 400 and "messages[0].images[0]" in reply.json()["error"]
    reply = httpx.post(
        f"{vision_server.base_url}/api/generate",
        json={"model": "vlm", "prompt": "Hi", "images": [not_an_image], "stream": False},
    )
    assert reply.status_code == 400 and "images[0]" in reply.json()["error"]


def test_an_image_request_batched_with_text_gets_what_it_gets_alone(vclient: openai.OpenAI) -> None:
    jobs = [
        [{"role": "user", "content": [image_part(RED), {"type": "text", "text": "What is this?"}]}],
        [{"role": "user", "content": "The capital of France is"}],
        [{"role": "user", "content": [image_part(BLUE), image_part(RED), {"type": "text", "text": "Two?"}]}],
        [{"role": "user", "content": "Numbers 0123456789"}],
    ]
    alone = [ask(vclient, job, max_tokens=12) for job in jobs]
    with ThreadPoolExecutor(len(jobs)) as pool:
        together = list(pool.map(lambda job: ask(vclient, job, max_tokens=12, stream=True), jobs))
    assert together == alone


def test_anthropic_token_counts_count_the_image_tokens(vision_server: RunningServer) -> None:
    def count(content: list[dict]) -> int:
        body = {"model": "vlm", "messages": [{"role": "user", "content": content}]}
        reply = httpx.post(f"{vision_server.base_url}/v1/messages/count_tokens", json=body)
        assert reply.status_code == 200, reply.text
        return reply.json()["input_tokens"]

    source = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(RED).decode()}
    text = {"type": "text", "text": "Hi"}
    assert count([{"type": "image", "source": source}, text]) - count([text]) == IMAGE_TOKENS + 1


def test_images_go_upstream_as_image_url_parts(
    vclient: openai.OpenAI, oclient: ollama.Client, fake_upstream: FakeUpstream
) -> None:
    url = "https://example.com/cat.png"  # a remote alias's upstream fetches it, not heylook
    content = [{"type": "text", "text": "Hi"}, {"type": "image_url", "image_url": {"url": url}}]
    vclient.chat.completions.create(model="remote-vlm", messages=[{"role": "user", "content": content}])
    oclient.chat(model="remote-vlm", messages=[{"role": "user", "content": "Hi", "images": [RED]}])
    sent = [
        r.body["messages"][0]["content"] for r in fake_upstream.requests if r.path.endswith("/completions")
    ]
    assert sent == [
        [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "Hi"}],
        [{"type": "image_url", "image_url": {"url": data_url(RED)}}, {"type": "text", "text": "Hi"}],
    ]


def test_show_lists_vision(vision_server: RunningServer) -> None:
    def capabilities(alias: str) -> list[str]:
        return httpx.post(f"{vision_server.base_url}/api/show", json={"model": alias}).json()["capabilities"]

    assert "vision" in capabilities("vlm")
    assert "vision" not in capabilities("tiny")


def test_the_readme_vision_examples_run_as_written(vision_server: RunningServer, tmp_path: Path) -> None:
    """The Vision section's curl and openai examples, on the tiny LLaVA as `my-vlm` (only the URL
    differs); the Python one reads photo.png from where it runs."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Vision: images in", 1)[1].split("\n## ", 1)[0]
    curl = next(b for b in re.findall(r"```sh\n(.*?)```", section, re.DOTALL) if '"image_url"' in b)
    done = subprocess.run(
        ["sh", "-c", curl.replace("http://127.0.0.1:11434", vision_server.base_url)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["object"] == "chat.completion"
    example = next(b for b in re.findall(r"```python\n(.*?)```", section, re.DOTALL) if "image_url" in b)
    (tmp_path / "photo.png").write_bytes(RED)
    done = subprocess.run(
        [sys.executable, "-c", example.replace("http://127.0.0.1:11434", vision_server.base_url)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr


# --- the engine and the loader, in process --------------------------------------------------------


# Each architecture's processor, and the inputs it gives beside the token ids.
ARCHITECTURES = {
    "llava": (build_tiny_vlm, {"pixel_values"}),
    "idefics3": (build_tiny_idefics3, {"pixel_values", "pixel_attention_mask"}),
}


@pytest.fixture(scope="module", params=sorted(ARCHITECTURES))
def vlm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadedModel]:
    build, _ = ARCHITECTURES[request.param]
    loaded = load_model(ModelSource(str(build(tmp_path_factory.mktemp(request.param)))), name=request.param)
    yield loaded
    loaded.close()


def test_a_vision_model_loads_with_its_processor(vlm: LoadedModel) -> None:
    assert vlm.processor is not None and vlm.tokenizer is vlm.processor.tokenizer
    assert type(vlm.processor.image_processor).__name__.endswith("Pil") or _has_torchvision()
    assert vlm.engine.batching  # LLaVA's Llama decodes with plain positions: in the shared batch


def _has_torchvision() -> bool:
    import importlib.util

    return importlib.util.find_spec("torchvision") is not None


async def collect(
    engine: Engine, ids: list[int], params: SamplingParams, inputs: dict[str, torch.Tensor] | None = None
) -> str:
    chunks = [chunk async for chunk in engine.submit(ids, params, inputs).chunks()]
    return "".join(chunk.text for chunk in chunks if isinstance(chunk, TextChunk))


@pytest.mark.anyio
async def test_the_engine_batches_an_image_prompt_with_text(vlm: LoadedModel) -> None:
    """The image's prompt runs the vision tower in its own forward pass, then decodes in one pass
    with the text sequences; each gets what it gets alone."""
    from heylook.generate import encode_vision_request
    from heylook.images import load_images

    request = GenerationRequest(
        "vlm",
        ChatPrompt((Message("user", "What is this?", images=(ImageInput(RED), ImageInput(BLUE))),)),
        SamplingOptions(),
    )
    pictures = await load_images([ImageInput(RED), ImageInput(BLUE)], processor=vlm.processor)
    vision, _ = encode_vision_request(vlm, request, None, None, pictures)
    assert set(vision.inputs) == ARCHITECTURES[vlm.engine.name][1]
    image_token = vlm.processor.image_token_id
    assert vision.ids.count(image_token) > 2 and len(vision.ids) > vision.ids.count(image_token)
    params = SamplingParams(max_new_tokens=10, temperature=0.0, ignore_eos=True)
    engine = vlm.engine
    engine.parallel = 4  # as `heylook serve --parallel 4` sets it
    texts = [[5, 6, 7], [8, 9, 10, 11, 12]]
    alone = [await collect(engine, vision.ids, params, vision.inputs)]
    alone += [await collect(engine, ids, params) for ids in texts]
    passes = engine.forward_passes
    results: list = [None] * 3

    async def one(index: int) -> None:
        if index == 0:
            results[0] = await collect(engine, vision.ids, params, vision.inputs)
        else:
            results[index] = await collect(engine, texts[index - 1], params)

    async with anyio.create_task_group() as group:
        for index in range(3):
            group.start_soon(one, index)
    assert results == alone
    # Three prompts, then ten shared steps (not thirty apart).
    assert engine.forward_passes - passes < 3 + 2 * 10


def test_three_dimensional_positions_are_refused() -> None:
    class Mrope(torch.nn.Module):
        def get_rope_index(self) -> None: ...

    class Wrapper(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = Mrope()

    with pytest.raises(ModelLoadFailed, match="multi-dimensional rotary positions"):
        refuse_3d_positions(Wrapper(), "org/qwen2-vl")
    refuse_3d_positions(torch.nn.Linear(1, 1), "org/llava")
    qwen3_vl = {"model_type": "qwen3_vl", "text_config": {"rope_scaling": {"mrope_section": [24, 20, 20]}}}
    with pytest.raises(ModelLoadFailed, match=r"multi-dimensional rotary positions \(qwen3_vl\)"):
        refuse_3d_positions(qwen3_vl, "org/qwen3-vl")
    refuse_3d_positions({"model_type": "llava", "text_config": {"rope_scaling": None}}, "org/llava")


def test_qwen2_vl_is_refused_before_its_weights_load(tmp_path: Path) -> None:
    config = {
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "model_type": "qwen2_vl",
        "vision_config": {"depth": 32},
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    }
    (tmp_path / "config.json").write_text(json.dumps(config))  # no weights at all: never reached
    with pytest.raises(ModelLoadFailed, match=r"multi-dimensional rotary positions \(qwen2_vl\)"):
        load_model(ModelSource(str(tmp_path)), name="qwen2-vl")


def test_the_estimate_counts_the_vision_tower(vlm_dir: Path, tiny_model_dir: Path) -> None:
    alias = Alias(name="vlm", source=ModelSource(str(vlm_dir)))
    estimate = estimate_alias(alias, "cpu")
    assert estimate is not None
    tensors = safetensors_tensors(vlm_dir)
    vision = sum(t.count for t in tensors if "vision_tower" in t.name)
    assert vision > 0 and estimate.weights_bytes >= sum(t.count for t in tensors) * 2
    from heylook.models.estimate import estimate as estimate_of
    from heylook.models.estimate import read_json
    from heylook.types import LoadOptions

    config = read_json(vlm_dir / "config.json")
    text_only = {k: v for k, v in config.items() if k != "vision_config"}
    with_tower = estimate_of(tensors, config, LoadOptions(), 512, "cpu")
    without = estimate_of(tensors, text_only, LoadOptions(), 512, "cpu")
    assert with_tower.overhead_bytes > without.overhead_bytes


def test_the_agent_apis_take_images_as_the_chat_api_does(
    vision_server: RunningServer, vclient: openai.OpenAI
) -> None:
    """The Responses API's input_image and Anthropic's image block, through their own SDKs, give
    the reply the chat API gives for the same image and words (greedy)."""
    import anthropic

    words = "What is this?"
    chat, prompt_tokens = ask(
        vclient, [{"role": "user", "content": [image_part(RED), {"type": "text", "text": words}]}]
    )
    response = vclient.responses.create(
        model="vlm", temperature=0, max_output_tokens=6,
        input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": data_url(RED)}, {"type": "input_text", "text": words},
        ]}],
    )  # fmt: skip
    assert response.output_text == chat and response.usage is not None
    assert response.usage.input_tokens == prompt_tokens
    claude = anthropic.Anthropic(base_url=vision_server.base_url, api_key="-", max_retries=0, timeout=120)
    source = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(RED).decode()}
    blocks = [{"type": "image", "source": source}, {"type": "text", "text": words}]
    message = claude.messages.create(
        model="vlm",
        max_tokens=6,
        extra_body={"temperature": 0},
        messages=[{"role": "user", "content": blocks}],
    )
    assert "".join(block.text for block in message.content if block.type == "text") == chat
    assert message.usage.input_tokens == prompt_tokens


# --- image URLs: the address policy, end to end -------------------------------------------------


@pytest.fixture(scope="module")
def red_url() -> Iterator[str]:
    """A red PNG at a URL on 127.0.0.1: what a private address may serve."""
    import http.server
    import threading

    class Red(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(RED)))
            self.end_headers()
            self.wfile.write(RED)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Red)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/red.png"
    server.shutdown()
    server.server_close()


def test_image_urls_on_private_addresses_need_the_operators_leave(
    tmp_path: Path, vlm_dir: Path, vclient: openai.OpenAI, red_url: str
) -> None:
    words = {"type": "text", "text": "What is this?"}
    by_url = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": red_url}}, words]}]
    with pytest.raises(openai.BadRequestError) as refused:
        ask(vclient, by_url)
    assert refused.value.body["param"] == "messages[0].content[0]"
    assert "--allow-private-image-urls" in refused.value.body["message"]
    (tmp_path / "models.yaml").write_text(yaml.safe_dump({"models": {"vlm": {"model": str(vlm_dir)}}}))
    allowing = RunningServer(tmp_path / "models.yaml", tmp_path / "server.log", "--allow-private-image-urls")
    try:
        client = openai.OpenAI(base_url=f"{allowing.base_url}/v1", api_key="-", max_retries=0, timeout=120)
        assert ask(client, by_url) == ask(vclient, [{"role": "user", "content": [image_part(RED), words]}])
    finally:
        allowing.stop()
