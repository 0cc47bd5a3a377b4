"""Reranking: the body in the shape llama-server, vLLM, Jina and Cohere share, as a table; and
/v1/rerank and /rerank in-process on a tiny cross-encoder (BERT with a sequence-classification
head) built here, its scores checked against the model's own forward pass."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from heylook.errors import InvalidRequest
from heylook.protocols import rerank
from heylook.types import Ranking, RerankRequest
from tests.inprocess import InProcessServer, serve_in_process

WORDS = [
    "what",
    "colour",
    "is",
    "the",
    "sky",
    "blue",
    "grass",
    "green",
    "quarterly",
    "revenue",
    "rose",
    "by",
    "four",
    "percent",
    "today",
]
QUERY = "what colour is the sky"
DOCUMENTS = ["the sky is blue", "grass is green", "quarterly revenue rose by four percent"]


def build_cross_encoder(directory: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    tokenizer = BertTokenizerFast(vocab_file=str(directory / "vocab.txt"))
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=1,
    )  # fmt: skip
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"model": "r", "query": "q", "documents": ["a", "b"]}, RerankRequest("r", "q", ("a", "b"))),
        ({"model": "r", "query": "q", "documents": [{"text": "a"}], "top_n": 1, "return_documents": False},
         RerankRequest("r", "q", ("a",), top_n=1, return_documents=False)),
    ],
)  # fmt: skip
def test_rerank_bodies(body: dict, expected: RerankRequest) -> None:
    assert rerank.parse_rerank_request(body) == expected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "r", "query": "q", "documents": []}, "documents"),
        ({"model": "r", "query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
        ({"model": "r", "documents": ["a"]}, "query"),
        ({"model": "r", "query": "q", "documents": [5]}, "documents[0]"),
    ],
)
def test_bad_rerank_bodies_name_the_field(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        rerank.parse_rerank_request(body)
    assert caught.value.param == param


def test_results_are_best_first_and_cut_to_top_n() -> None:
    request = RerankRequest("r", "q", ("a", "b", "c"), top_n=2)
    body = rerank.rerank_reply("rerank-1", request, Ranking([0.1, 0.9, 0.5], prompt_tokens=12))
    assert body["results"] == [
        {"index": 1, "relevance_score": 0.9, "document": {"text": "b"}},
        {"index": 2, "relevance_score": 0.5, "document": {"text": "c"}},
    ]
    assert body["usage"] == {"prompt_tokens": 12, "total_tokens": 12}


@pytest.fixture(scope="module")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))


@pytest.fixture
async def app(
    tmp_path: Path, cross_encoder_dir: Path, tiny_model_dir: Path
) -> AsyncIterator[InProcessServer]:
    models = tmp_path / "models.yaml"
    registry = {"reranker": {"model": str(cross_encoder_dir)}, "tiny": {"model": str(tiny_model_dir)}}
    models.write_text(yaml.safe_dump({"models": registry}))
    async with serve_in_process(models, scripted=False) as served:
        yield served


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/v1/rerank", "/rerank"])
async def test_scores_are_the_models_own(app: InProcessServer, cross_encoder_dir: Path, path: str) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    body = {"model": "reranker", "query": QUERY, "documents": DOCUMENTS}
    reply = (await app.client.post(path, json=body)).json()
    tokenizer = AutoTokenizer.from_pretrained(cross_encoder_dir)
    model = AutoModelForSequenceClassification.from_pretrained(cross_encoder_dir).eval()
    with torch.no_grad():
        logits = model(**tokenizer([QUERY] * 3, DOCUMENTS, padding=True, return_tensors="pt")).logits
    expected = torch.sigmoid(logits[:, 0]).tolist()
    scores = {r["index"]: r["relevance_score"] for r in reply["results"]}
    assert [r["relevance_score"] for r in reply["results"]] == sorted(scores.values(), reverse=True)
    for index, score in scores.items():
        assert abs(score - expected[index]) < 1e-5
    assert reply["results"][0]["document"]["text"] == DOCUMENTS[reply["results"][0]["index"]]
    assert reply["model"] == "reranker" and reply["usage"]["total_tokens"] > 0
    cut = (await app.client.post(path, json={**body, "top_n": 1, "return_documents": False})).json()
    assert cut["results"] == [
        {"index": reply["results"][0]["index"], "relevance_score": reply["results"][0]["relevance_score"]}
    ]


@pytest.mark.anyio
async def test_models_are_used_for_what_they_do(app: InProcessServer) -> None:
    chat = await app.client.post("/v1/rerank", json={"model": "tiny", "query": "q", "documents": ["d"]})
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "model"
    embed = await app.client.post("/v1/embeddings", json={"model": "reranker", "input": "x"})
    assert embed.status_code == 400 and "reranking model" in embed.json()["error"]["message"]
    generate = await app.client.post(
        "/api/generate", json={"model": "reranker", "prompt": "x", "stream": False}
    )
    assert generate.status_code == 400 and "does not support generate" in generate.json()["error"]
    missing = await app.client.post("/rerank", json={"model": "nope", "query": "q", "documents": ["d"]})
    assert missing.status_code == 404
