"""Perplexity of a model as heylook runs it, with each kind of linear weights, over one text.

    # the demo model (its Q4_1 GGUF as heylook converts it), float32 / float16 / int8 / 4-bit
    # blocks, over 2,048 tokens of this repository's README from character 0 (and from 12,000):
    .venv/bin/python scripts/perplexity.py --text README.md --tokens 2048 --offset 0 12000

Every window is one forward pass of `--tokens` tokens (no stride): the mean negative log-likelihood
of each token given those before it in the window. The weights are what heylook's CPU fast path
makes of the model (engine/cpu_linear.py, engine/quantized_linear.py): compare them with each
other, and with llama.cpp's `llama-perplexity -c N` on the GGUF itself.
"""

from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from heylook.engine import cpu_linear, quantized_linear
from heylook.models.demo import prepare_demo

KINDS = ("float32", "float16", "int8", "int4")


def perplexity(model: torch.nn.Module, ids: torch.Tensor) -> float:
    with torch.inference_mode():
        logits = model(ids.unsqueeze(0)).logits[0, :-1].float()
    loss = torch.nn.functional.cross_entropy(logits, ids[1:])
    return math.exp(loss.item())


def served(model: torch.nn.Module, kind: str) -> torch.nn.Module:
    model = copy.deepcopy(model)
    if kind == "float16":
        cpu_linear.pack_linears(model)
    elif kind in ("int8", "int4"):
        quantized_linear.quantize_linears(model, kind)  # type: ignore[arg-type]
        quantized_linear.quantize_embeddings(model)  # as the loader does after them
    return model


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model-dir", type=Path, help="a transformers model folder (default: the demo model)"
    )
    parser.add_argument("--text", type=Path, default=Path("README.md"))
    parser.add_argument("--tokens", type=int, default=2048)
    parser.add_argument("--offset", type=int, nargs="+", default=[0], help="characters into the text")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    args = parser.parse_args()
    directory = args.model_dir or prepare_demo()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    base = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    text = args.text.read_text()
    windows = [torch.tensor(tokenizer(text[o:]).input_ids[: args.tokens]) for o in args.offset]
    print(f"| linear layers | {' | '.join(f'perplexity from character {o}' for o in args.offset)} |")
    print(f"| --- | {' | '.join('---:' for _ in args.offset)} |")
    reference: list[float] = []
    for kind in args.kinds:
        model = served(base, kind)
        values = [perplexity(model, ids) for ids in windows]
        reference = reference or values
        cells = [f"{v:.2f} ({(v / r - 1) * 100:+.1f}%)" for v, r in zip(values, reference, strict=True)]
        print(f"| {kind} | {' | '.join(cells)} |", flush=True)


if __name__ == "__main__":
    main()
