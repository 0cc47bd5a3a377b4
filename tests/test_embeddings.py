"""Embeddings on both APIs: the pure translation as tables, the pooling, the shipped all-MiniLM-L6-v2
against sentence-transformers' own `encode`, and a real server driven by the clients RAG
pipelines use (openai, ollama, LangChain's OpenAIEmbeddings and OllamaEmbeddings)."""

from __future__ import annotations

import base64
import json
import math
import struct
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from heylook.errors import InvalidRequest, ModelLoadFailed
from heylook.models.kind import encoder_config, model_kind
from heylook.protocols import embeddings
from heylook.types import Embeddings, EmbedRequest, EncoderConfig
from tests.conftest import demo_entry
from tests.inprocess import InProcessServer, serve_in_process
from tests.server import RunningServer

SKY = "The sky is blue today."
PARAPHRASE = "Today the sky looks blue."
UNRELATED = "Quarterly revenue rose by four percent."


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


# --- translation, as tables ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "inputs", "encoding", "dimensions", "truncate"),
    [
        ({"model": "m", "input": "hi"}, ("hi",), "float", None, True),
        ({"model": "m", "input": ["a", "b"]}, ("a", "b"), "float", None, True),
        ({"model": "m", "input": [1, 2, 3]}, ((1, 2, 3),), "float", None, True),
        ({"model": "m", "input": [[1, 2], [3]]}, ((1, 2), (3,)), "float", None, True),
        ({"model": "m", "input": "x", "encoding_format": "base64"}, ("x",), "base64", None, True),
        ({"model": "m", "input": "x", "dimensions": 8.0, "truncate": False}, ("x",), "float", 8, False),
    ],
)
def test_openai_requests(
    body: dict, inputs: tuple, encoding: str, dimensions: int | None, truncate: bool
) -> None:
    request, encoding_format = embeddings.parse_openai_request(body)
    assert request == EmbedRequest("m", inputs, truncate=truncate, dimensions=dimensions)
    assert encoding_format == encoding


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "input"),
        ({"model": "m", "input": []}, "input"),
        ({"model": "m", "input": [[]]}, "input[0]"),
        ({"model": "m", "input": [-1]}, "input[0]"),
        ({"model": "m", "input": ["a", 1]}, "input"),
        ({"model": "m", "input": 5}, "input"),
        ({"model": "m", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "m", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"model": "m", "input": ["x"] * 2049}, "input"),
    ],
)
def test_bad_openai_requests_name_the_field(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        embeddings.parse_openai_request(body)
    assert caught.value.param == param


def test_base64_is_little_endian_float32() -> None:
    result = Embeddings(vectors=[[0.5, -1.25, 3.0]], prompt_tokens=4)
    body = embeddings.openai_reply("m", result, "base64")
    raw = base64.b64decode(body["data"][0]["embedding"])
    assert struct.unpack("<3f", raw) == (0.5, -1.25, 3.0)
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert embeddings.openai_reply("m", result, "float")["data"][0] == {
        "object": "embedding",
        "index": 0,
        "embedding": [0.5, -1.25, 3.0],
    }


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"model": "m", "input": "hi"}, EmbedRequest("m", ("hi",))),
        ({"model": "m", "input": ["a", "b"], "truncate": False},
         EmbedRequest("m", ("a", "b"), truncate=False)),
        ({"model": "m", "input": "a", "keep_alive": "1m", "dimensions": 3},
         EmbedRequest("m", ("a",), dimensions=3, keep_alive=60.0)),
        ({"model": "m", "input": "a", "options": {"temperature": 0}}, EmbedRequest("m", ("a",))),
    ],
)  # fmt: skip
def test_ollama_embed_requests(body: dict, expected: EmbedRequest) -> None:
    assert embeddings.parse_ollama_embed(body) == expected


def test_ollama_replies() -> None:
    result = Embeddings(vectors=[[0.1, 0.2]], prompt_tokens=3, load_ns=5, total_ns=9)
    assert embeddings.ollama_embed_reply("m", result) == {
        "model": "m",
        "embeddings": [[0.1, 0.2]],
        "total_duration": 9,
        "load_duration": 5,
        "prompt_eval_count": 3,
    }
    assert embeddings.ollama_embeddings_reply(result) == {"embedding": [0.1, 0.2]}
    assert embeddings.parse_ollama_embeddings({"model": "m", "prompt": "p"}) == EmbedRequest("m", ("p",))
    with pytest.raises(InvalidRequest, match="'input'"):
        embeddings.parse_ollama_embed({"model": "m", "input": []})


# --- what a folder holds, and how it pools -------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "files", "kind"),
    [
        ({"architectures": ["BertModel"]}, {"config.json", "modules.json"}, "embed"),
        ({"architectures": ["BertModel"]}, {"config.json"}, "embed"),
        ({"architectures": ["XLMRobertaForSequenceClassification"]}, {"config.json"}, "rerank"),
        ({"architectures": ["LlamaForCausalLM"]}, {"config.json"}, "generate"),
        ({"architectures": ["Qwen2ForCausalLM"]}, {"config.json", "modules.json"}, "embed"),
        ({}, {"config.json"}, "generate"),
    ],
)
def test_model_kind(config: dict, files: set[str], kind: str) -> None:
    assert model_kind(config, files) == kind


def write_pipeline(
    folder: Path, modules: list[dict[str, Any]], pooling: dict[str, bool] | None = None
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 128}')
    if pooling is not None:
        (folder / "1_Pooling").mkdir()
        (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    return folder


ST = "sentence_transformers.models."


def test_encoder_config_follows_the_pipeline(tmp_path: Path) -> None:
    transformer = {"path": "", "type": ST + "Transformer"}
    pooling = {"path": "1_Pooling", "type": ST + "Pooling"}
    normalize = {"path": "2_Normalize", "type": ST + "Normalize"}
    cls = write_pipeline(tmp_path / "cls", [transformer, pooling], {"pooling_mode_cls_token": True})
    assert encoder_config(cls) == EncoderConfig(pooling="cls", normalize=False, max_length=128)
    mean = write_pipeline(
        tmp_path / "mean", [transformer, pooling, normalize], {"pooling_mode_mean_tokens": True}
    )
    assert encoder_config(mean) == EncoderConfig(pooling="mean", normalize=True, max_length=128)
    dense = write_pipeline(tmp_path / "dense", [transformer, {"path": "2_Dense", "type": ST + "Dense"}])
    with pytest.raises(ModelLoadFailed, match="Dense"):
        encoder_config(dense)
    bare = tmp_path / "bare"
    bare.mkdir()
    assert encoder_config(bare) == EncoderConfig()


def test_pooling_ignores_padding() -> None:
    import torch

    from heylook.engine.encoder import pool, truncated

    states = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]], [[5.0, 6.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert pool(states, mask, "mean").tolist() == [[2.0, 3.0], [5.0, 6.0]]
    assert pool(states, mask, "cls").tolist() == [[1.0, 2.0], [5.0, 6.0]]
    assert pool(states, mask, "max").tolist() == [[3.0, 4.0], [5.0, 6.0]]
    assert pool(states, mask, "lasttoken").tolist() == [[3.0, 4.0], [5.0, 6.0]]
    assert truncated([3.0, 4.0, 12.0], 2) == [0.6, 0.8]


# --- the shipped model against sentence-transformers ---------------------------------------------------


@pytest.fixture(scope="module")
def minilm(embedding_model_dir: Path) -> Iterator[Any]:
    from heylook.models.loader import load_model
    from heylook.registry.model_source import ModelSource

    loaded = load_model(ModelSource(str(embedding_model_dir)), name="all-minilm")
    yield loaded
    loaded.close()


@pytest.mark.anyio
async def test_vectors_match_sentence_transformers(minilm: Any, embedding_model_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from heylook.embed import token_ids

    long = " ".join(["word"] * 600)  # past the model's 256 tokens: cut, as sentence-transformers cuts
    # Past 4,096 characters, only the text's head is tokenized (embed._text_ids): the same tokens.
    longer = "lorem ipsum dolor sit amet " * 400
    texts = [SKY, PARAPHRASE, UNRELATED, "héllo wörld 🙂", long, longer, "x"]
    reference = SentenceTransformer(str(embedding_model_dir), device="cpu").encode(texts)
    assert minilm.kind == "embed"
    encoder = minilm.encoder()
    ids = token_ids(minilm.tokenizer, tuple(texts), encoder.config.max_length, True, minilm.vocab_size)
    vectors = await encoder.encode(ids)
    for ours, theirs in zip(vectors, reference, strict=True):
        assert cosine(ours, theirs.tolist()) >= 0.9999
        assert math.isclose(sum(v * v for v in ours), 1.0, rel_tol=1e-5)


@pytest.mark.anyio
async def test_concurrent_requests_share_batches_and_get_what_they_get_alone(minilm: Any) -> None:
    import anyio

    from heylook.embed import token_ids

    encoder = minilm.encoder()
    texts = [f"sentence number {i} about {'cats' if i % 2 else 'the stock market'}" for i in range(40)]
    ids = token_ids(minilm.tokenizer, tuple(texts), 256, True, minilm.vocab_size)
    alone = [(await encoder.encode([one]))[0] for one in ids]
    together: list[list[list[float]]] = [[] for _ in range(8)]

    async def ask(part: int) -> None:
        together[part] = await encoder.encode(ids[part * 5 : part * 5 + 5])

    async with anyio.create_task_group() as group:
        for part in range(8):
            group.start_soon(ask, part)
    flat = [vector for part in together for vector in part]
    for a, b in zip(alone, flat, strict=True):
        assert cosine(a, b) >= 0.99999


# --- a real server, driven by the clients ---------------------------------------------------------------


@pytest.fixture(scope="module")
def embedding_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, embedding_model_dir: Path
) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("embedding-server")
    registry = {
        "models": {
            "all-minilm": demo_entry("all-minilm"),
            "tiny": {"model": str(tiny_model_dir)},
            "far": {"provider": "openai", "model": "x", "base_url": "http://127.0.0.1:9/v1"},
        }
    }
    (root / "models.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
    running = RunningServer(root / "models.yaml", root / "server.log")
    yield running
    running.stop()


def test_the_openai_sdk_embeds(embedding_server: RunningServer) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{embedding_server.base_url}/v1", api_key="x", max_retries=0)
    # The SDK asks for base64 unless told otherwise, and decodes it.
    reply = client.embeddings.create(model="all-minilm", input=[SKY, PARAPHRASE, UNRELATED])
    sky, paraphrase, unrelated = (item.embedding for item in reply.data)
    assert len(sky) == 384 and reply.model == "all-minilm" and reply.usage.prompt_tokens > 10
    assert cosine(sky, paraphrase) > cosine(sky, unrelated) + 0.3
    floats = client.embeddings.create(model="all-minilm", input=SKY, encoding_format="float")
    assert cosine(floats.data[0].embedding, sky) > 0.99999
    short = client.embeddings.create(model="all-minilm", input=SKY, dimensions=64).data[0].embedding
    assert len(short) == 64 and math.isclose(sum(v * v for v in short), 1.0, rel_tol=1e-5)
    assert cosine(short, sky[:64]) > 0.99999
    # A model that generates embeds too (mean pooling, normalised).
    tiny = client.embeddings.create(model="tiny", input="hello").data[0].embedding
    assert len(tiny) == 32 and math.isclose(sum(v * v for v in tiny), 1.0, rel_tol=1e-5)


def test_the_ollama_client_embeds(embedding_server: RunningServer) -> None:
    import ollama

    client = ollama.Client(host=embedding_server.base_url)
    reply = client.embed(model="all-minilm", input=[SKY, UNRELATED])
    assert len(reply.embeddings) == 2 and len(reply.embeddings[0]) == 384
    assert reply.prompt_eval_count and reply.total_duration
    one = client.embed(model="all-minilm", input=SKY).embeddings[0]
    assert cosine(one, reply.embeddings[0]) > 0.99999
    older = client.embeddings(model="all-minilm", prompt=SKY).embedding
    assert cosine(older, one) > 0.99999
    shown = client.show("all-minilm")
    assert shown.capabilities == ["embedding"]
    with pytest.raises(ollama.ResponseError, match="does not support chat") as caught:
        client.chat(model="all-minilm", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 400


def test_langchain_embeds_on_both_apis(embedding_server: RunningServer) -> None:
    from langchain_ollama import OllamaEmbeddings
    from langchain_openai import OpenAIEmbeddings

    native = OllamaEmbeddings(model="all-minilm", base_url=embedding_server.base_url)
    # tiktoken's vocabularies are downloaded, so LangChain's own token counting stays off.
    compatible = OpenAIEmbeddings(
        model="all-minilm", base_url=f"{embedding_server.base_url}/v1", api_key="x",
        check_embedding_ctx_length=False,
    )  # fmt: skip
    for embedder in (native, compatible):
        documents = embedder.embed_documents([SKY, UNRELATED])
        query = embedder.embed_query(PARAPHRASE)
        assert cosine(query, documents[0]) > cosine(query, documents[1])


def test_litellm_embeds_on_both_apis(
    embedding_server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its price list is fetched from GitHub unless told to use the copy it ships.
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    url = embedding_server.base_url
    native = litellm.embedding(model="ollama/all-minilm", input=[SKY, UNRELATED], api_base=url)
    compatible = litellm.embedding(
        model="openai/all-minilm", input=[PARAPHRASE], api_base=f"{url}/v1", api_key="x"
    )
    sky, unrelated = (item["embedding"] for item in native.data)
    paraphrase = compatible.data[0]["embedding"]
    assert len(sky) == len(paraphrase) == 384
    assert cosine(paraphrase, sky) > cosine(paraphrase, unrelated)


def test_llamaindex_embeds(embedding_server: RunningServer) -> None:
    from llama_index.embeddings.ollama import OllamaEmbedding

    embedder = OllamaEmbedding(model_name="all-minilm", base_url=embedding_server.base_url)
    sky, unrelated = embedder.get_text_embedding_batch([SKY, UNRELATED])
    query = embedder.get_query_embedding(PARAPHRASE)
    assert len(query) == 384
    assert cosine(query, sky) > cosine(query, unrelated)


@pytest.mark.parametrize("api", ["ollama", "openai"])
def test_what_open_webui_sends_for_a_file_attachment(embedding_server: RunningServer, api: str) -> None:
    """Open WebUI's RAG embeds a file's chunks in batches, exactly so (its retrieval/utils.py):
    /api/embed with truncate, or /embeddings under the OpenAI base URL; an empty Bearer key when
    none is set, its user headers, and the optional prefix field (RAG_EMBEDDING_PREFIX_FIELD_NAME)."""
    import requests  # what Open WebUI sends with (it keeps the empty key's trailing space, as httpx will not)

    chunks = [SKY, UNRELATED, PARAPHRASE]
    headers = {
        "Content-Type": "application/json", "Authorization": "Bearer ",
        "X-OpenWebUI-User-Name": "Ada", "X-OpenWebUI-User-Id": "1", "X-OpenWebUI-User-Role": "user",
    }  # fmt: skip
    body: dict[str, Any] = {"input": chunks, "model": "all-minilm", "prefix": "search_document: "}
    if api == "ollama":
        response = requests.post(
            f"{embedding_server.base_url}/api/embed", headers=headers, json={**body, "truncate": True}
        )
        assert response.status_code == 200, response.text
        vectors = response.json()["embeddings"]
    else:
        response = requests.post(f"{embedding_server.base_url}/v1/embeddings", headers=headers, json=body)
        assert response.status_code == 200, response.text
        vectors = [item["embedding"] for item in response.json()["data"]]
    sky, unrelated, paraphrase = vectors
    assert cosine(paraphrase, sky) > cosine(paraphrase, unrelated)


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/v1/embeddings", {"model": "all-minilm", "input": []}, 400, "input"),
        ("/v1/embeddings", {"model": "all-minilm", "input": [[1, 99999999]]}, 400, "input"),
        ("/v1/embeddings", {"model": "all-minilm", "input": "x", "dimensions": 385}, 400, "dimensions"),
        ("/v1/embeddings", {"model": "all-minilm", "input": ["a", "b " * 300], "truncate": False}, 400,
         "input[1]"),
        ("/v1/embeddings", {"model": "nope", "input": "x"}, 404, "model"),
        ("/v1/embeddings", {"model": "far", "input": "x"}, 502, None),  # goes upstream, which is down
        ("/api/embed", {"model": "all-minilm", "input": []}, 400, None),
        ("/api/embed", {"model": "all-minilm", "input": "word " * 300, "truncate": False}, 400, None),
        ("/api/embeddings", {"model": "all-minilm"}, 400, None),
    ],
)  # fmt: skip
def test_bad_input_is_refused_in_each_apis_shape(
    embedding_server: RunningServer, path: str, body: dict, status: int, param: str | None
) -> None:
    response = httpx.post(f"{embedding_server.base_url}{path}", json=body, timeout=60)
    assert response.status_code == status, response.text
    if path.startswith("/api/"):
        assert isinstance(response.json()["error"], str)
    else:
        assert response.json()["error"]["param"] == param
    assert httpx.get(f"{embedding_server.base_url}/health").status_code == 200


# --- in-process: a 10 MB input ---------------------------------------------------------------------------


@pytest.fixture
async def embedding_app(tmp_path: Path, embedding_model_dir: Path) -> AsyncIterator[InProcessServer]:
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models": {"all-minilm": demo_entry("all-minilm")}}))
    async with serve_in_process(models, scripted=False) as app:
        yield app


@pytest.mark.anyio
async def test_a_ten_megabyte_input_is_cut_or_refused(embedding_app: InProcessServer) -> None:
    huge = "lorem ipsum " * (10 * 2**20 // 12)
    refused = await embedding_app.client.post(
        "/api/embed", json={"model": "all-minilm", "input": huge, "truncate": False}, timeout=300
    )
    assert refused.status_code == 400 and "truncate" in refused.json()["error"]
    cut = await embedding_app.client.post(
        "/api/embed", json={"model": "all-minilm", "input": huge}, timeout=300
    )
    assert cut.status_code == 200 and cut.json()["prompt_eval_count"] == 256


def test_the_readme_examples(embedding_server: RunningServer) -> None:
    from tests.test_readme import DOCUMENTED_URL, code_blocks, python_examples, run_example

    curls = [b for b in code_blocks("sh") if "/v1/embeddings" in b and "/api/embed" in b]
    for line in curls[0].replace("\\\n", " ").splitlines():
        done = subprocess.run(
            ["sh", "-c", line.replace(DOCUMENTED_URL, embedding_server.base_url)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0 and '"embedding' in done.stdout, done.stdout + done.stderr
    example = next(block for block in python_examples("openai") if "embeddings.create" in block)
    assert run_example(example, embedding_server) == ["2 384"]
