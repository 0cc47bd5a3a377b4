"""Benchmark streamed chat completions: any OpenAI-compatible server, and raw transformers generate.

For each target it measures one stream at a time (time to first token, decode tokens/s), then N
concurrent streams (aggregate tokens/s, time to first token p50/p95, per-stream tokens/s).
Single-stream runs alternate between targets, round after round, because these machines are noisy.

    # heylook on the demo model against model.generate on the same weights, in one run:
    .venv/bin/python scripts/bench.py --heylook-demo --raw-demo --tokens 128 --concurrency 1 4 --rounds 3

    # any server speaking the OpenAI API:
    .venv/bin/python scripts/bench.py --target vllm http://127.0.0.1:8000/v1 my-model

    # embeddings/s: heylook's /v1/embeddings on all-MiniLM-L6-v2 against sentence-transformers'
    # in-process encode on the same weights, 32 texts per batch:
    .venv/bin/python scripts/bench.py --embeddings --rounds 7

    # heylook against its peers, each started alone for 1, 4, 8 and 16 concurrent streams
    # (see ../shared/notes/peers.md to install them), with a plot:
    .venv/bin/python scripts/bench.py --compare --streams 1 4 8 16 --rounds 2 \
        --transformers /tmp/peers/tserve/bin/transformers --llama-server /tmp/peers/bin/llama-server \
        --plot docs/bench-concurrency.png --json /tmp/compare.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.server, the same launcher the tests use

PROMPT = [{"role": "user", "content": "Write a long story about a lighthouse keeper and a storm."}]


@dataclass
class Stream:
    """One streamed completion, timed from the moment the request was made."""

    ttft_s: float
    total_s: float
    tokens: int

    @property
    def decode_tps(self) -> float:
        """Tokens after the first, over the time after the first: the steady decoding rate."""
        return (self.tokens - 1) / (self.total_s - self.ttft_s) if self.tokens > 1 else 0.0


@dataclass
class Concurrent:
    streams: list[Stream]
    wall_s: float

    @property
    def aggregate_tps(self) -> float:
        return sum(s.tokens for s in self.streams) / self.wall_s


@dataclass
class Target:
    name: str
    single: Callable[[int], Stream]
    concurrent: Callable[[int, int], Concurrent] | None = None
    singles: list[Stream] = field(default_factory=list)
    by_concurrency: dict[int, Concurrent] = field(default_factory=dict)


# --- an OpenAI-compatible server ---------------------------------------------------------------


def chat_body(model: str, tokens: int, dialect: str = "openai") -> dict:
    """A greedy streamed chat request for exactly `tokens` tokens, as each server spells it."""
    body = {"model": model, "messages": PROMPT, "max_tokens": tokens, "temperature": 0, "stream": True}
    if dialect == "transformers":
        # transformers serve refuses stream_options and knows no ignore_eos; it takes a generation config.
        body["generation_config"] = json.dumps(
            {"min_new_tokens": tokens, "max_new_tokens": tokens, "do_sample": False}
        )
        return body
    # Fixed-length streams; heylook, vLLM and llama.cpp's server honour ignore_eos.
    return body | {"stream_options": {"include_usage": True}, "ignore_eos": True}


async def _stream_chat(
    client: httpx.AsyncClient, url: str, model: str, tokens: int, dialect: str = "openai"
) -> Stream:
    body = chat_body(model, tokens, dialect)
    started = time.perf_counter()
    first = None
    pieces = 0
    usage_tokens = None
    async with client.stream("POST", f"{url}/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if chunk.get("usage"):
                usage_tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices") or []:
                if (choice.get("delta") or {}).get("content"):
                    first = first or time.perf_counter()
                    pieces += 1
    total = time.perf_counter() - started
    return Stream(
        ttft_s=(first or time.perf_counter()) - started, total_s=total, tokens=usage_tokens or pieces
    )


def openai_target(name: str, url: str, model: str) -> Target:
    url = url.rstrip("/")

    def single(tokens: int) -> Stream:
        return asyncio.run(_concurrent(url, model, tokens, 1)).streams[0]

    def concurrent(tokens: int, n: int) -> Concurrent:
        return asyncio.run(_concurrent(url, model, tokens, n))

    return Target(name, single, concurrent)


async def _concurrent(url: str, model: str, tokens: int, n: int, dialect: str = "openai") -> Concurrent:
    limits = httpx.Limits(max_connections=n + 1)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        started = time.perf_counter()
        streams = await asyncio.gather(*(_stream_chat(client, url, model, tokens, dialect) for _ in range(n)))
        return Concurrent(list(streams), time.perf_counter() - started)


# --- raw transformers, in this process ---------------------------------------------------------


def raw_generate_target(model_dir: Path) -> Target:
    """model.generate on the same weights: no server, no HTTP, the floor of overhead."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.generation.streamers import BaseStreamer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()

    class Clock(BaseStreamer):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._prompt_seen = False

        def put(self, value: torch.Tensor) -> None:
            if self._prompt_seen:  # generate puts the prompt first
                self.times.append(time.perf_counter())
            self._prompt_seen = True

        def end(self) -> None:
            pass

    def single(tokens: int) -> Stream:
        clock = Clock()
        started = time.perf_counter()
        # The prompt is templated and tokenized inside the timing, as a server must do.
        text = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False)
        inputs = tokenizer(text, add_special_tokens=False, return_tensors="pt")
        with torch.inference_mode():
            model.generate(
                **inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, streamer=clock
            )
        return Stream(
            ttft_s=clock.times[0] - started, total_s=clock.times[-1] - started, tokens=len(clock.times)
        )

    return Target("raw generate", single)


# --- heylook against its peers, one server at a time ---------------------------------------------


def compare(peer_list: list, *, streams: list[int], tokens: int, rounds: int, log_dir: Path) -> dict:
    """{peer name: {streams: [Concurrent per round]}}; peers take turns, order alternating by round."""
    import peers

    results: dict[str, dict[int, list[Concurrent]]] = {p.name: {n: [] for n in streams} for p in peer_list}
    for round_number in range(rounds):
        for peer in peer_list if round_number % 2 == 0 else reversed(peer_list):
            running = None
            try:
                for n in streams:
                    if running is None or (peer.per_streams and running.streams != n):
                        if running is not None:
                            running.stop()
                        running = peers.start(peer, n, log_dir)
                        asyncio.run(_concurrent(running.base_url, peer.model, 8, 1, peer.dialect))  # warm up
                    result = asyncio.run(_concurrent(running.base_url, peer.model, tokens, n, peer.dialect))
                    results[peer.name][n].append(result)
                    print(
                        f"  round {round_number + 1} {peer.name}, {n} streams: "
                        f"{result.aggregate_tps:.1f} tok/s aggregate",
                        file=sys.stderr,
                        flush=True,
                    )
            finally:
                if running is not None:
                    running.stop()
    return results


@dataclass
class Row:
    """One peer at one number of streams, over all rounds."""

    aggregate_tps: float  # mean over rounds
    ttft_p50_ms: float  # over every stream of every round
    ttft_p95_ms: float
    per_stream_tps: float  # mean decode rate of a stream
    tokens: int  # mean tokens per stream actually received


def summarize(runs: list[Concurrent]) -> Row:
    streams = [s for run in runs for s in run.streams]
    ttfts = [s.ttft_s * 1e3 for s in streams]
    return Row(
        aggregate_tps=statistics.mean(run.aggregate_tps for run in runs),
        ttft_p50_ms=percentile(ttfts, 0.5),
        ttft_p95_ms=percentile(ttfts, 0.95),
        per_stream_tps=statistics.mean(s.decode_tps for s in streams),
        tokens=round(statistics.mean(s.tokens for s in streams)),
    )


def compare_report(results: dict, *, tokens: int, rounds: int) -> tuple[str, dict]:
    rows = {name: {n: summarize(runs) for n, runs in by_n.items() if runs} for name, by_n in results.items()}
    lines = [
        f"{tokens}-token streams, mean of {rounds} rounds (TTFT percentiles over every stream):",
        "",
        "| server | streams | aggregate tok/s | TTFT p50 ms | TTFT p95 ms | per-stream tok/s | tokens |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, by_n in rows.items():
        for n, row in sorted(by_n.items()):
            lines.append(
                f"| {name} | {n} | {row.aggregate_tps:.1f} | {row.ttft_p50_ms:.0f} | {row.ttft_p95_ms:.0f} | "
                f"{row.per_stream_tps:.1f} | {row.tokens} |"
            )
    lines += ["", *targets_met(rows)]
    return "\n".join(lines), rows


def targets_met(rows: dict) -> list[str]:
    """Issue 7's targets, as ratios against the peers measured in the same run."""
    ours, llama = rows.get("heylook", {}), rows.get("llama-server", {})
    served = [
        by_n[8].aggregate_tps for name, by_n in rows.items() if name.startswith("transformers") and 8 in by_n
    ]
    checks = []
    if 8 in ours and served:
        ratio = ours[8].aggregate_tps / max(served)
        checks.append(
            (f"8 streams, aggregate vs transformers serve's best: {ratio:.2f}x (target >= 2x)", ratio >= 2)
        )
    if 8 in ours and 8 in llama:
        ratio = ours[8].aggregate_tps / llama[8].aggregate_tps
        checks.append((f"8 streams, aggregate vs llama-server: {ratio:.2f}x (target >= 1x)", ratio >= 1))
        ratio = ours[8].ttft_p95_ms / llama[8].ttft_p95_ms
        checks.append((f"8 streams, TTFT p95 vs llama-server: {ratio:.2f}x (target <= 1x)", ratio <= 1))
    if 1 in ours and 1 in llama:
        ratio = ours[1].per_stream_tps / llama[1].per_stream_tps
        checks.append((f"1 stream, tok/s vs llama-server: {ratio:.2f}x (target >= 0.5x)", ratio >= 0.5))
    return [f"- {'met' if ok else 'NOT met'}: {text}" for text, ok in checks]


def plot(rows: dict, path: Path, *, tokens: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = [
        ("aggregate_tps", "aggregate tokens/s", False),
        ("ttft_p95_ms", "time to first token p95 (ms)", True),
        ("per_stream_tps", "tokens/s per stream", False),
    ]
    for axis, (field_name, label, log_scale) in zip(axes, panels, strict=True):
        for name, by_n in rows.items():
            ns = sorted(by_n)
            axis.plot(ns, [getattr(by_n[n], field_name) for n in ns], marker="o", label=name)
        axis.set_xlabel("concurrent streams")
        axis.set_ylabel(label)
        axis.set_xticks(sorted({n for by_n in rows.values() for n in by_n}))
        if log_scale:
            axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"SmolLM2-135M-Instruct on 2 CPU cores, {tokens}-token streams")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def run_compare(args: argparse.Namespace) -> None:
    import tempfile

    import peers
    from heylook.models.demo import demo_source, prepare_demo
    from heylook.models.sources import local_gguf

    model_dir = prepare_demo()
    peer_list = [peers.heylook()]
    if args.transformers:
        peer_list.append(peers.transformers_serve(args.transformers, model_dir, continuous_batching=False))
        peer_list.append(peers.transformers_serve(args.transformers, model_dir, continuous_batching=True))
    if args.llama_server:
        gguf = local_gguf(demo_source())
        assert gguf is not None, "prepare_demo fetched the wheel"
        peer_list.append(peers.llama_server(args.llama_server, gguf))
    log_dir = Path(tempfile.mkdtemp(prefix="heylook-bench-"))
    print(f"server logs in {log_dir}", file=sys.stderr)
    results = compare(
        peer_list, streams=args.streams, tokens=args.tokens, rounds=args.rounds, log_dir=log_dir
    )
    text, rows = compare_report(results, tokens=args.tokens, rounds=args.rounds)
    print(text)
    if args.plot:
        plot(rows, args.plot, tokens=args.tokens)
    if args.json:
        raw = {
            name: {
                n: [{"wall_s": r.wall_s, "streams": [asdict(s) for s in r.streams]} for r in runs]
                for n, runs in by_n.items()
            }
            for name, by_n in results.items()
        }
        args.json.write_text(json.dumps(raw, indent=2))


# --- running and reporting ---------------------------------------------------------------------


def start_heylook_demo(extra_args: list[str]) -> tuple[Target, Callable[[], None]]:
    from tests.server import RunningServer

    log = Path("/tmp/heylook-bench-server.log")
    server = RunningServer(ROOT / "models.yaml", log, "--log-level", "warning", *extra_args)
    name = " ".join(["heylook", *extra_args])
    return openai_target(name, f"{server.base_url}/v1", "smollm2"), server.stop


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run(targets: list[Target], *, tokens: int, rounds: int, concurrency: list[int]) -> None:
    for target in targets:  # warm up: first load, first allocations
        target.single(8)
    for round_number in range(rounds):
        for target in targets if round_number % 2 == 0 else reversed(targets):
            stream = target.single(tokens)
            target.singles.append(stream)
            print(
                f"  round {round_number + 1} {target.name:>14}: ttft {stream.ttft_s * 1e3:7.1f} ms, "
                f"decode {stream.decode_tps:6.2f} tok/s ({stream.tokens} tokens)",
                file=sys.stderr,
            )
    for n in concurrency:
        for target in targets:
            if target.concurrent is not None and n > 1:
                target.by_concurrency[n] = target.concurrent(tokens, n)
                aggregate = target.by_concurrency[n].aggregate_tps
                print(f"  {n} streams {target.name:>14}: {aggregate:.2f} tok/s", file=sys.stderr)


def report(targets: list[Target], *, tokens: int) -> str:
    lines = [
        f"Single stream, {tokens} tokens, median of {len(targets[0].singles)} rounds:",
        "",
        "| target | decode tok/s | time to first token (ms) | decode vs first | TTFT minus first's (ms) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    base = targets[0]
    base_tps = statistics.median(s.decode_tps for s in base.singles)
    base_ttft = statistics.median(s.ttft_s for s in base.singles)
    for target in targets:
        tps = statistics.median(s.decode_tps for s in target.singles)
        ttft = statistics.median(s.ttft_s for s in target.singles)
        ratio, delta_ms = tps / base_tps, (ttft - base_ttft) * 1e3
        lines.append(f"| {target.name} | {tps:.2f} | {ttft * 1e3:.1f} | {ratio:.3f}x | {delta_ms:+.1f} |")
    concurrent = [(t, n, c) for t in targets for n, c in sorted(t.by_concurrency.items())]
    if concurrent:
        lines += [
            "",
            f"Concurrent streams, {tokens} tokens each:",
            "",
            "| target | streams | aggregate tok/s | TTFT p50 (ms) | TTFT p95 (ms) | per-stream tok/s |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for target, n, result in concurrent:
            ttfts = [s.ttft_s * 1e3 for s in result.streams]
            per_stream = statistics.mean(s.decode_tps for s in result.streams)
            lines.append(
                f"| {target.name} | {n} | {result.aggregate_tps:.2f} | {percentile(ttfts, 0.5):.0f} | "
                f"{percentile(ttfts, 0.95):.0f} | {per_stream:.2f} |"
            )
    return "\n".join(lines)


def embedding_texts(count: int) -> list[str]:
    """Sentences of 5 to 60 words, the same on every run."""
    words = ["the", "sky", "is", "blue", "and", "grass", "grows", "green", "while", "markets", "rise"]
    return [" ".join(words[(i + j) % len(words)] for j in range(5 + (i * 7) % 56)) for i in range(count)]


def run_embeddings(rounds: int, count: int = 512, batch: int = 32) -> str:
    """Embeddings per second, heylook's /v1/embeddings against sentence-transformers' encode in
    this process, given the same texts the same way: all at once (one request; one encode call,
    which sorts them by length into batches of `batch`), and `batch` at a time (a request or an
    encode call each); heylook also with 8 such requests at once. Rounds alternate."""
    from concurrent.futures import ThreadPoolExecutor

    from sentence_transformers import SentenceTransformer
    from tests.server import RunningServer

    from heylook.models.demo import EMBEDDING_ALIAS, prepare_demo

    texts = embedding_texts(count)
    batches = [texts[i : i + batch] for i in range(0, count, batch)]
    reference = SentenceTransformer(str(prepare_demo(EMBEDDING_ALIAS)), device="cpu")
    log = Path("/tmp/heylook-bench-embeddings.log")
    server = RunningServer(ROOT / "models.yaml", log, "--log-level", "warning")
    url = f"{server.base_url}/v1/embeddings"

    def post(inputs: list[str]) -> None:
        reply = httpx.post(url, json={"model": EMBEDDING_ALIAS, "input": inputs}, timeout=600)
        reply.raise_for_status()

    def encode_batches() -> None:
        for inputs in batches:
            reference.encode(inputs, batch_size=batch)

    def post_batches() -> None:
        for inputs in batches:
            post(inputs)

    def post_together() -> None:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(post, batches))

    ways = {
        ("all at once", "sentence-transformers"): lambda: reference.encode(texts, batch_size=batch),
        ("all at once", "heylook"): lambda: post(texts),
        (f"{batch} at a time", "sentence-transformers"): encode_batches,
        (f"{batch} at a time", "heylook"): post_batches,
        (f"{batch} at a time", "heylook, 8 requests at once"): post_together,
    }
    rates: dict[tuple[str, str], list[float]] = {key: [] for key in ways}
    try:
        post(batches[0])  # loads the model
        reference.encode(batches[0], batch_size=batch)
        for _ in range(rounds):
            for key, way in ways.items():
                started = time.perf_counter()
                way()
                rates[key].append(count / (time.perf_counter() - started))
    finally:
        server.stop()
    lines = [
        f"all-MiniLM-L6-v2, {count} texts of 5-60 words, batches of {batch}, median of {rounds} rounds:",
        "| texts given | who | embeddings/s | vs sentence-transformers |",
        "| --- | --- | ---: | ---: |",
    ]
    for (given, who), values in rates.items():
        peer = statistics.median(rates[(given, "sentence-transformers")])
        rate = statistics.median(values)
        lines.append(f"| {given} | {who} | {rate:.0f} | {rate / peer:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--target",
        nargs=3,
        action="append",
        default=[],
        metavar=("NAME", "BASE_URL", "MODEL"),
        help="an OpenAI-compatible server, e.g. heylook http://127.0.0.1:11434/v1 smollm2",
    )
    parser.add_argument(
        "--heylook-demo",
        action="append",
        nargs="?",
        const="",
        default=[],
        metavar="FLAGS",
        help='start heylook on the demo model and add it; repeat with flags: --heylook-demo="--parallel 4"',
    )
    parser.add_argument("--raw", type=Path, help="add raw model.generate on this model directory")
    parser.add_argument("--raw-demo", action="store_true", help="add raw model.generate on the demo model")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--compare", action="store_true", help="heylook against its peers, one at a time")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4, 8, 16], help="with --compare")
    parser.add_argument(
        "--transformers", help="with --compare: the transformers CLI of a transformers[serving] venv"
    )
    parser.add_argument("--llama-server", help="with --compare: llama.cpp's llama-server binary")
    parser.add_argument("--plot", type=Path, help="with --compare: write a PNG plot here")
    parser.add_argument(
        "--embeddings", action="store_true", help="embeddings/s against sentence-transformers' encode"
    )
    args = parser.parse_args()
    if args.embeddings:
        print(run_embeddings(args.rounds))
        return
    if args.compare:
        run_compare(args)
        return

    targets: list[Target] = []
    stops: list[Callable[[], None]] = []
    if args.raw_demo or args.raw:
        if args.raw_demo:
            from heylook.models.demo import prepare_demo

            args.raw = prepare_demo()
        targets.append(raw_generate_target(args.raw))
    for flags in args.heylook_demo:
        target, stop = start_heylook_demo(flags.split())
        targets.append(target)
        stops.append(stop)
    targets += [openai_target(*spec) for spec in args.target]
    if not targets:
        parser.error("nothing to measure: give --target, --heylook-demo, --raw or --raw-demo")
    try:
        run(targets, tokens=args.tokens, rounds=args.rounds, concurrency=args.concurrency)
    finally:
        for stop in stops:
            stop()
    print(report(targets, tokens=args.tokens))
    if args.json:
        figures = {
            t.name: {
                "single": [asdict(s) | {"decode_tps": s.decode_tps} for s in t.singles],
                "concurrent": {
                    n: {
                        "wall_s": c.wall_s,
                        "aggregate_tps": c.aggregate_tps,
                        "streams": [asdict(s) for s in c.streams],
                    }
                    for n, c in t.by_concurrency.items()
                },
            }
            for t in targets
        }
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
