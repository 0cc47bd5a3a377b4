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

    # issue 18: heylook and llama-server each on its default settings, one at a time, order
    # alternating by round: 1, 8 and 16 streams of 128 tokens; multi-turn time to first token (a
    # ~2,000-token history's second turn against a short prompt); 8 streams of 256 tokens while a
    # ~4,000-token prompt arrives (their inter-token gaps, its TTFT); with a plot:
    .venv/bin/python scripts/bench.py --fast-defaults --rounds 2 \
        --llama-server /tmp/peers/bin/llama-server --plot docs/bench-defaults.png --json /tmp/defaults.json

    # the front door: heylook's alias `pool` over 3 paced OpenAI-compatible upstreams
    # (scripts/paced_upstream.py, stand-ins for GPU boxes: 50 ms to the first token, then 20 ms a
    # token), against the same clients driving the upstreams directly; 8 and 32 streams:
    .venv/bin/python scripts/bench.py --replicas 3 --streams 8 32 --rounds 3 \
        --plot docs/bench-replicas.png --json /tmp/replicas.json

Defaults means `heylook serve --models models.yaml` with no --parallel, and `llama-server -m GGUF
--host --port` with nothing else: -c 0 (the model's training context, 8192 tokens for SmolLM2),
-np -1 (auto: 4 slots sharing one unified KV cache of that size, so one slot may use all of it and
a 5th stream waits for a slot), prompt caching on (cache_prompt), its own thread count (2 here).
--llama-context N adds -c N and --llama-args adds other flags (say "-np 16 -kvu": 16 slots sharing
the 8192 tokens; -np alone turns the unified cache off and splits -c between the slots, so 4,000-token
prompts then need -c of slots x 4,100); the report gives each command line. With its 4 default slots,
llama-server queues streams 5-8, and the long prompt behind them: its long-prompt TTFT includes that
wait, and its streams' gaps in the window show no prefill, which runs only once they are done.
Run it on an idle machine: llama.cpp's threads spin at a barrier each step, so with other work on the
2 cores (a test suite, say) its tokens/s falls by up to 30x, far more than torch's; the run warns.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    import aiohttp
    import psutil

    from peers import RunningPeer

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


def chat_body(
    model: str,
    tokens: int,
    dialect: str = "openai",
    messages: list[dict] | None = None,
    *,
    fixed: bool = True,
) -> dict:
    """A greedy streamed chat request for `tokens` tokens (exactly when `fixed`), as each server spells it."""
    body = {
        "model": model,
        "messages": messages or PROMPT,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
    }
    if dialect == "transformers":
        # transformers serve refuses stream_options and knows no ignore_eos; it takes a generation config.
        config = {"max_new_tokens": tokens, "do_sample": False} | (
            {"min_new_tokens": tokens} if fixed else {}
        )
        body["generation_config"] = json.dumps(config)
        return body
    # Fixed-length streams; heylook, vLLM and llama.cpp's server honour ignore_eos.
    return body | {"stream_options": {"include_usage": True}} | ({"ignore_eos": True} if fixed else {})


@dataclass
class Reply:
    """One streamed completion: when it was asked for, when each piece of content came, what it said."""

    started: float  # time.perf_counter() when the request was made
    arrivals: list[float]  # time.perf_counter() of each chunk carrying content
    finished: float
    text: str
    prompt_tokens: int | None  # as the server counted them (usage), when it says
    completion_tokens: int | None

    @property
    def ttft_s(self) -> float:
        return (self.arrivals[0] if self.arrivals else self.finished) - self.started


async def _timed_chat(client: httpx.AsyncClient, url: str, body: dict) -> Reply:
    started = time.perf_counter()
    arrivals: list[float] = []
    pieces: list[str] = []
    usage: dict = {}
    async with client.stream("POST", f"{url}/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or []:
                if content := (choice.get("delta") or {}).get("content"):
                    arrivals.append(time.perf_counter())
                    pieces.append(content)
    return Reply(
        started=started,
        arrivals=arrivals,
        finished=time.perf_counter(),
        text="".join(pieces),
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )


async def _stream_chat(
    client: httpx.AsyncClient, url: str, model: str, tokens: int, dialect: str = "openai"
) -> Stream:
    reply = await _timed_chat(client, url, chat_body(model, tokens, dialect))
    return Stream(
        ttft_s=reply.ttft_s,
        total_s=reply.finished - reply.started,
        tokens=reply.completion_tokens or len(reply.arrivals),
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
        *concurrency_table(rows),
    ]
    lines += ["", *targets_met(rows)]
    return "\n".join(lines), rows


def concurrency_table(rows: dict) -> list[str]:
    lines = [
        "| server | streams | aggregate tok/s | TTFT p50 ms | TTFT p95 ms | per-stream tok/s | tokens |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, by_n in rows.items():
        for n, row in sorted(by_n.items()):
            lines.append(
                f"| {name} | {n} | {row.aggregate_tps:.1f} | {row.ttft_p50_ms:.0f} | {row.ttft_p95_ms:.0f} | "
                f"{row.per_stream_tps:.1f} | {row.tokens} |"
            )
    return lines


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
    plot_concurrency(axes, rows)
    axes[0].legend(fontsize=8)
    figure.suptitle(f"SmolLM2-135M-Instruct on 2 CPU cores, {tokens}-token streams")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def plot_concurrency(axes, rows: dict) -> None:
    """Aggregate tok/s, TTFT p95 and per-stream tok/s against the number of streams, on three axes."""
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


# --- issue 18: each server on its default settings ----------------------------------------------

CHARS_PER_TOKEN = 4.9  # this prose in SmolLM2's tokenizer, measured; the report gives the server's count

WORDS = {
    "who": [
        "the keeper",
        "an old fisherman",
        "the harbour master",
        "a girl from the village",
        "the ferry captain",
        "a travelling painter",
        "the baker's son",
        "two gulls",
        "the schoolteacher",
        "a stranger in grey",
        "the lifeboat crew",
        "her grandmother",
        "the postman",
        "a retired astronomer",
        "the night watchman",
    ],
    "did": [
        "climbed",
        "watched",
        "mended",
        "counted",
        "remembered",
        "carried",
        "painted",
        "followed",
        "ignored",
        "wrote about",
        "listened to",
        "argued over",
        "searched for",
        "sang about",
        "measured",
    ],
    "what": [
        "the spiral stairs",
        "a broken lantern",
        "the tide tables",
        "a bundle of letters",
        "the foghorn",
        "copper pipes",
        "the northern cliffs",
        "a map of the reef",
        "salt-stained ledgers",
        "the weather vane",
        "a jar of lamp oil",
        "the rowing boat",
        "wet footprints",
        "a silver compass",
        "the signal flags",
    ],
    "how": [
        "slowly",
        "without a word",
        "for the third time that week",
        "before dawn",
        "with great care",
        "in the pouring rain",
        "while the kettle boiled",
        "as the bell rang",
        "against all advice",
        "long after midnight",
        "humming an old tune",
        "by candlelight",
        "in a hurry",
        "half asleep",
    ],
    "then": [
        "Nobody in the village understood why.",
        "The wind kept rising from the west.",
        "It reminded everyone of the winter the harbour froze.",
        "A ship's light blinked far out at sea.",
        "The radio crackled with a distant forecast.",
        "Somewhere below, the waves struck the rocks.",
        "The clock on the landing had stopped at ten past four.",
        "Rain drummed on the iron roof.",
        "The smell of tar and seaweed filled the room.",
        "Even the dog seemed to hold its breath.",
    ],
}


def prose(seed: int, tokens: int) -> str:
    """Varied English prose of about `tokens` tokens, the same for a seed and different across seeds."""
    rng = random.Random(seed)
    sentences: list[str] = []
    while sum(len(s) + 1 for s in sentences) < tokens * CHARS_PER_TOKEN:
        who, did, what, how = (rng.choice(WORDS[k]) for k in ("who", "did", "what", "how"))
        sentence = f"{who[0].upper()}{who[1:]} {did} {what} {how}."
        sentences.append(sentence if rng.random() < 0.7 else f"{sentence} {rng.choice(WORDS['then'])}")
    return " ".join(sentences)


def conversation(seed: int, tokens: int, turns: int = 4) -> list[dict]:
    """A history of `turns` long user and assistant turns, about `tokens` tokens, ending with the user."""
    share = max(16, tokens // (2 * turns) - 25)  # the template and the system prompt: ~25 a message
    messages: list[dict] = []
    for turn in range(turns):
        messages.append(
            {"role": "user", "content": f"Go on with the story: {prose(seed * 100 + 2 * turn, share)}"}
        )
        messages.append({"role": "assistant", "content": prose(seed * 100 + 2 * turn + 1, share)})
    messages.append({"role": "user", "content": "Who do you think rang the bell last night?"})
    return messages


@dataclass
class MultiTurn:
    """A short prompt's TTFT, then a long history's first and second turns on the same server."""

    history_tokens: int | None  # turn 1's prompt, as the server counted it
    short_ttft_s: float
    turn1_ttft_s: float
    turn2_ttft_s: float

    @property
    def ratio(self) -> float:
        return self.turn2_ttft_s / self.short_ttft_s


async def _multi_turn(url: str, model: str, seed: int, history_tokens: int) -> MultiTurn:
    # A connection each: llama-server may close one the client would reuse ("Server disconnected").
    limits = httpx.Limits(max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        short = [{"role": "user", "content": f"In one line, what happens next? {prose(seed, 6)}"}]
        short_reply = await _timed_chat(client, url, chat_body(model, 4, messages=short))
        history = conversation(seed, history_tokens)
        turn1 = await _timed_chat(client, url, chat_body(model, 16, messages=history, fixed=False))
        follow = [
            *history,
            {"role": "assistant", "content": turn1.text},
            {"role": "user", "content": "And what did the keeper do next?"},
        ]
        turn2 = await _timed_chat(client, url, chat_body(model, 4, messages=follow))
    return MultiTurn(turn1.prompt_tokens, short_reply.ttft_s, turn1.ttft_s, turn2.ttft_s)


@dataclass
class MidStream:
    """Streams decoding while a long prompt arrives: their inter-token gaps, and the long prompt's TTFT."""

    long_prompt_tokens: int | None
    long_ttft_s: float
    gaps_window_s: list[float]  # gaps overlapping [long request sent, its first token]
    gaps_all_s: list[float]  # every gap of every running stream
    tokens: list[int]  # content chunks each running stream received


async def _mid_stream(
    url: str, model: str, seed: int, *, streams: int, tokens: int, prompt_tokens: int, delay_s: float = 1.5
) -> MidStream:
    limits = httpx.Limits(max_connections=streams + 2, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        running = [
            asyncio.create_task(_timed_chat(client, url, chat_body(model, tokens))) for _ in range(streams)
        ]
        await asyncio.sleep(delay_s)
        text = f"Read this and say what it is about.\n\n{prose(seed + 10**6, prompt_tokens)}"
        long = await _timed_chat(
            client, url, chat_body(model, 8, messages=[{"role": "user", "content": text}])
        )
        replies = await asyncio.gather(*running)
    opened, closed = long.started, long.started + long.ttft_s
    pairs = [(a, b) for reply in replies for a, b in itertools.pairwise(reply.arrivals)]
    return MidStream(
        long_prompt_tokens=long.prompt_tokens,
        long_ttft_s=long.ttft_s,
        gaps_window_s=[b - a for a, b in pairs if b > opened and a < closed],
        gaps_all_s=[b - a for a, b in pairs],
        tokens=[len(reply.arrivals) for reply in replies],
    )


@dataclass
class Defaults:
    """One server on its defaults, over all rounds."""

    by_streams: dict[int, list[Concurrent]]
    multi_turn: list[MultiTurn] = field(default_factory=list)
    mid_stream: list[MidStream] = field(default_factory=list)


def fast_defaults(peer_list: list, args: argparse.Namespace, log_dir: Path) -> dict[str, Defaults]:
    """Each peer started alone on its defaults, once a round, order alternating: concurrency, then
    multi-turn TTFT, then a long prompt arriving mid-stream. Prompts depend on round and repetition
    only, so every server gets the same ones, and none repeats within a server's run."""
    import peers

    results = {p.name: Defaults({n: [] for n in args.streams}) for p in peer_list}
    for round_number in range(args.rounds):
        for peer in peer_list if round_number % 2 == 0 else reversed(peer_list):
            running = peers.start(peer, max(args.streams), log_dir)
            try:
                measure_defaults(running, results[peer.name], args, round_number)
            finally:
                running.stop()
    return results


def measure_defaults(
    running: RunningPeer, into: Defaults, args: argparse.Namespace, round_number: int
) -> None:
    url, model, name = running.base_url, running.peer.model, running.peer.name

    def note(text: str) -> None:
        print(f"  round {round_number + 1} {name}, {text}", file=sys.stderr, flush=True)

    asyncio.run(_concurrent(url, model, 8, 1))  # warm up
    note(f"started; load average {os.getloadavg()[0]:.2f}")
    for n in args.streams:
        result = asyncio.run(_concurrent(url, model, args.tokens, n))
        into.by_streams[n].append(result)
        note(f"{n} streams: {result.aggregate_tps:.1f} tok/s aggregate")
    for repeat in range(args.repeats):
        seed = round_number * 1000 + repeat + 1
        turn = asyncio.run(_multi_turn(url, model, seed, args.history_tokens))
        into.multi_turn.append(turn)
        note(
            f"multi-turn ({turn.history_tokens} tokens): short {turn.short_ttft_s * 1e3:.0f} ms, "
            f"turn 1 {turn.turn1_ttft_s * 1e3:.0f} ms, turn 2 {turn.turn2_ttft_s * 1e3:.0f} ms"
        )
    mid = asyncio.run(
        _mid_stream(
            url,
            model,
            round_number + 1,
            streams=args.mid_streams,
            tokens=args.mid_tokens,
            prompt_tokens=args.long_prompt_tokens,
        )
    )
    into.mid_stream.append(mid)
    worst = max(mid.gaps_window_s, default=0.0)
    note(
        f"long prompt ({mid.long_prompt_tokens} tokens): TTFT {mid.long_ttft_s * 1e3:.0f} ms, "
        f"worst gap {worst * 1e3:.0f} ms"
    )


def _ms(values: list[float], q: float) -> str:
    return f"{percentile(values, q) * 1e3:.0f}" if values else "-"


def defaults_report(
    results: dict[str, Defaults], args: argparse.Namespace, commands: dict[str, str]
) -> tuple[str, dict]:
    rows = {
        name: {n: summarize(runs) for n, runs in result.by_streams.items() if runs}
        for name, result in results.items()
    }
    lines = [
        f"Each server on its defaults (see scripts/bench.py); {args.rounds} round(s), order alternating:",
        "",
        *(f"- {name}: `{command}`" for name, command in commands.items()),
        "",
        f"Concurrent streams, {args.tokens} greedy tokens each, mean of rounds"
        " (TTFT percentiles over every stream):",
        "",
        *concurrency_table(rows),
        "",
        f"Multi-turn: a ~{args.history_tokens}-token history, turn 1 generates 16 tokens, then turn 2"
        " (history, that reply, a short user message); against a short single-message prompt. Medians over"
        f" {args.repeats} repetition(s) a round, each on a fresh history:",
        "",
        "| server | history tokens | short TTFT ms | turn 1 TTFT ms | turn 2 TTFT ms | turn 2 / short |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results.items():
        turns = result.multi_turn
        if turns:
            counted = [t.history_tokens for t in turns if t.history_tokens]
            lines.append(
                f"| {name} | {round(statistics.median(counted)) if counted else '?'} | "
                f"{statistics.median(t.short_ttft_s for t in turns) * 1e3:.0f} | "
                f"{statistics.median(t.turn1_ttft_s for t in turns) * 1e3:.0f} | "
                f"{statistics.median(t.turn2_ttft_s for t in turns) * 1e3:.0f} | "
                f"{statistics.median(t.ratio for t in turns):.2f} |"
            )
    lines += [
        "",
        f"Long prompt mid-stream: {args.mid_streams} streams of {args.mid_tokens} tokens; 1.5 s after they"
        f" start, a ~{args.long_prompt_tokens}-token prompt (8 tokens). Inter-token gaps of the running"
        " streams, overall and in the window from the long request's arrival to its first token:",
        "",
        "| server | long prompt tokens | long TTFT ms | ITL p50 ms | ITL p95 ms | ITL max ms |"
        " window ITL p95 ms | window ITL max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results.items():
        mids = result.mid_stream
        if mids:
            gaps = [g for m in mids for g in m.gaps_all_s]
            window = [g for m in mids for g in m.gaps_window_s]
            counted = [m.long_prompt_tokens for m in mids if m.long_prompt_tokens]
            lines.append(
                f"| {name} | {round(statistics.median(counted)) if counted else '?'} | "
                f"{statistics.median(m.long_ttft_s for m in mids) * 1e3:.0f} | {_ms(gaps, 0.5)} | "
                f"{_ms(gaps, 0.95)} | {_ms(gaps, 1.0)} | {_ms(window, 0.95)} | {_ms(window, 1.0)} |"
            )
    lines += ["", *defaults_targets(rows, results)]
    return "\n".join(lines), rows


def defaults_targets(rows: dict, results: dict[str, Defaults]) -> list[str]:
    """Issue 18's targets, on each server's defaults."""
    ours, llama = rows.get("heylook", {}), rows.get("llama-server", {})
    checks = []
    if 8 in ours and 8 in llama:
        tps, ttft = ours[8].aggregate_tps / llama[8].aggregate_tps, ours[8].ttft_p95_ms / llama[8].ttft_p95_ms
        checks.append(
            (
                f"8 streams, aggregate vs llama-server {tps:.2f}x (target >= 1x), "
                f"TTFT p95 vs llama-server {ttft:.2f}x (target <= 1x)",
                tps >= 1 and ttft <= 1,
            )
        )
    if "heylook" in results and results["heylook"].multi_turn:
        ratio = statistics.median(t.ratio for t in results["heylook"].multi_turn)
        checks.append(
            (f"multi-turn, TTFT of turn 2 vs a short prompt's: {ratio:.2f}x (target <= 1.5x)", ratio <= 1.5)
        )
    if 1 in ours and 1 in llama:
        ratio = ours[1].per_stream_tps / llama[1].per_stream_tps
        checks.append((f"1 stream, tok/s vs llama-server: {ratio:.2f}x (target >= 0.5x)", ratio >= 0.5))
    return [f"- {'met' if ok else 'NOT met'}: {text}" for text, ok in checks]


def plot_defaults(rows: dict, results: dict[str, Defaults], path: Path, *, tokens: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 3, figsize=(15, 9))
    plot_concurrency(axes[0], rows)
    names = list(results)
    width = 0.8 / max(1, len(names))
    bars = [
        (axes[1][0], "time to first token (ms), median", ["short", "turn 1", "turn 2"], _turn_figures),
        (axes[1][1], "inter-token gap (ms)", ["p95", "max", "window p95", "window max"], _gap_figures),
    ]
    for axis, label, groups, figures in bars:
        for i, name in enumerate(names):
            xs = [g + i * width for g in range(len(groups))]
            axis.bar(xs, figures(results[name]), width, label=name)
        axis.set_xticks([g + width * (len(names) - 1) / 2 for g in range(len(groups))], groups)
        axis.set_ylabel(label)
        axis.grid(alpha=0.3, axis="y")
    axes[1][0].set_yscale("log")
    axes[1][0].set_title("multi-turn", fontsize=10)
    axes[1][1].set_title("running streams while a long prompt arrives", fontsize=10)
    long_ttft = [statistics.median(m.long_ttft_s for m in results[n].mid_stream) * 1e3 for n in names]
    axes[1][2].bar(names, long_ttft, color=[f"C{i}" for i in range(len(names))])
    axes[1][2].set_ylabel("long prompt's time to first token (ms)")
    axes[1][2].grid(alpha=0.3, axis="y")
    axes[0][0].legend(fontsize=8)
    axes[1][0].legend(fontsize=8)
    figure.suptitle(f"SmolLM2-135M-Instruct on 2 CPU cores, each server's defaults, {tokens}-token streams")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _turn_figures(result: Defaults) -> list[float]:
    turns = result.multi_turn
    return [
        statistics.median(getattr(t, f) for t in turns) * 1e3
        for f in ("short_ttft_s", "turn1_ttft_s", "turn2_ttft_s")
    ]


def _gap_figures(result: Defaults) -> list[float]:
    gaps = [g for m in result.mid_stream for g in m.gaps_all_s] or [0.0]
    window = [g for m in result.mid_stream for g in m.gaps_window_s] or [0.0]
    return [percentile(v, q) * 1e3 for v, q in ((gaps, 0.95), (gaps, 1.0), (window, 0.95), (window, 1.0))]


def warn_if_busy(threshold: float = 0.7) -> None:
    """Other work on the cores skews every figure, llama-server's most (see the module's docstring)."""
    load = os.getloadavg()[0]
    if load > threshold:
        print(f"warning: load average {load:.2f} before starting: something else is running", file=sys.stderr)


def run_fast_defaults(args: argparse.Namespace) -> None:
    """heylook with no --parallel against llama-server with no -np (see the module's docstring)."""
    import tempfile

    import peers
    from heylook.models.demo import demo_source, prepare_demo
    from heylook.models.sources import local_gguf

    prepare_demo()
    peer_list = [peers.heylook(parallel_flag=False)]
    if args.llama_server:
        gguf = local_gguf(demo_source())
        assert gguf is not None, "prepare_demo fetched the wheel"
        extra = tuple(args.llama_args.split()) if args.llama_args else ()
        peer_list.append(
            peers.llama_server(
                args.llama_server, gguf, defaults=True, context=args.llama_context, extra=extra
            )
        )
    log_dir = Path(tempfile.mkdtemp(prefix="heylook-bench-"))
    print(f"server logs in {log_dir}", file=sys.stderr)
    warn_if_busy()
    started = time.monotonic()
    results = fast_defaults(peer_list, args, log_dir)
    commands = {p.name: " ".join(p.command).replace(str(ROOT) + "/", "") for p in peer_list}
    text, rows = defaults_report(results, args, commands)
    print(text)
    print(f"\n({time.monotonic() - started:.0f} s of measuring)", file=sys.stderr)
    if args.plot:
        plot_defaults(rows, results, args.plot, tokens=args.tokens)
    if args.json:
        raw = {
            name: {
                "command": commands[name],
                "by_streams": {
                    n: [{"wall_s": r.wall_s, "streams": [asdict(s) for s in r.streams]} for r in runs]
                    for n, runs in result.by_streams.items()
                },
                "multi_turn": [asdict(t) | {"ratio": t.ratio} for t in result.multi_turn],
                "mid_stream": [asdict(m) for m in result.mid_stream],
            }
            for name, result in results.items()
        }
        args.json.write_text(json.dumps(raw, indent=2))


# --- the front door: heylook in front of replicas -----------------------------------------------

PACED_UPSTREAM = ROOT / "scripts" / "paced_upstream.py"


@dataclass(frozen=True)
class FrontDoor:
    """How --replicas runs: the stand-in upstreams' pace, and how long each flow is measured."""

    replicas: int
    tokens: int
    token_ms: float
    ttft_ms: float
    duration_s: float
    strategy: str

    @property
    def cycle_s(self) -> float:
        """One request's time at the pace: its first token, then the rest."""
        return (self.ttft_ms + (self.tokens - 1) * self.token_ms) / 1e3

    def ceiling_tps(self, streams: int) -> float:
        """What `streams` back-to-back clients would get with no time lost anywhere."""
        return streams * self.tokens / self.cycle_s


@dataclass
class PacedReply:
    """One streamed request of a flow: when it was made, when each token came (one entry a token, so
    a chunk carrying several tokens counts each), and which replica served it (through heylook)."""

    started: float
    arrivals: list[float]
    replica: str | None


@dataclass
class Flow:
    """`streams` clients' back-to-back requests one way, measured in the window [opened, closed)."""

    way: str  # "direct" or "through"
    streams: int
    opened: float
    closed: float
    replies: list[PacedReply]
    cpu_s: dict[str, float]  # CPU seconds in the window: "heylook", "upstreams", "client"

    @property
    def window_s(self) -> float:
        return self.closed - self.opened

    @property
    def tokens(self) -> int:
        return sum(self.opened <= t < self.closed for r in self.replies for t in r.arrivals)

    @property
    def aggregate_tps(self) -> float:
        return self.tokens / self.window_s

    @property
    def ttfts_ms(self) -> list[float]:
        """Requests made in the window that got a token."""
        return [
            (r.arrivals[0] - r.started) * 1e3
            for r in self.replies
            if r.arrivals and self.opened <= r.started < self.closed
        ]

    @property
    def gaps_ms(self) -> list[float]:
        """Gaps between one stream's chunks in the window (tokens of one chunk are not gaps)."""
        return [
            (b - a) * 1e3
            for r in self.replies
            for a, b in itertools.pairwise(sorted(set(r.arrivals)))
            if self.opened <= a and b < self.closed
        ]

    def core_share(self, who: str) -> float:
        """CPU seconds per second: 1.0 is one core kept busy."""
        return self.cpu_s[who] / self.window_s


async def _paced_chat(session: aiohttp.ClientSession, url: str, body: dict, stop_at: float) -> PacedReply:
    """One streamed request; it stops reading (closing the connection) at its first token after `stop_at`."""
    started = time.perf_counter()
    arrivals: list[float] = []
    async with session.post(f"{url}/chat/completions", json=body) as response:
        response.raise_for_status()
        replica = response.headers.get("X-Heylook-Replica")
        async for line in response.content:
            if not line.startswith(b"data:") or line.startswith(b"data: [DONE]"):
                continue
            for choice in json.loads(line[5:]).get("choices") or []:
                if content := (choice.get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    arrivals += [now] * max(1, content.count(" "))  # the paced upstream's tokens are " word"
                    if now >= stop_at:
                        return PacedReply(started, arrivals, replica)
    return PacedReply(started, arrivals, replica)


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in processes)


async def _flow(
    way: str,
    targets: list[tuple[str, str]],
    streams: int,
    door: FrontDoor,
    watched: dict[str, list[psutil.Process]],
) -> Flow:
    """`streams` clients, client i on targets[i % len(targets)], starting a cycle/streams apart so
    requests arrive evenly, each making requests back to back; measured once all have started."""
    import aiohttp

    started = time.perf_counter()
    opened = started + door.cycle_s + 0.1
    closed = opened + door.duration_s

    async def client(index: int) -> list[PacedReply]:
        url, model = targets[index % len(targets)]
        await asyncio.sleep(index * door.cycle_s / streams)
        replies = []
        while time.perf_counter() < closed:
            replies.append(await _paced_chat(session, url, chat_body(model, door.tokens), closed))
        return replies

    async def clock() -> dict[str, float]:
        await asyncio.sleep(opened - time.perf_counter())
        before = {who: _cpu_seconds(ps) for who, ps in watched.items()} | {"client": time.process_time()}
        await asyncio.sleep(closed - time.perf_counter())
        after = {who: _cpu_seconds(ps) for who, ps in watched.items()} | {"client": time.process_time()}
        return {who: after[who] - before[who] for who in after}

    connector = aiohttp.TCPConnector(limit=streams + 8)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=600)
    ) as session:
        clients = asyncio.gather(*(client(i) for i in range(streams)))
        cpu, per_client = await asyncio.gather(clock(), clients)
    replies = [reply for replies in per_client for reply in replies]
    return Flow(way, streams, opened, closed, replies, cpu)


def start_paced_upstream(door: FrontDoor, log: Path, timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    """scripts/paced_upstream.py on a free port; its process and base URL, once it answers."""
    from tests.server import free_port

    port = free_port()
    command = [sys.executable, str(PACED_UPSTREAM), "--port", str(port)]
    command += ["--token-ms", str(door.token_ms), "--ttft-ms", str(door.ttft_ms)]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the paced upstream exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process, f"http://127.0.0.1:{port}/v1"
        except httpx.TransportError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"the paced upstream did not answer within {timeout:.0f} s; see {log}")


def pool_yaml(base_urls: list[str], strategy: str) -> str:
    """models.yaml with one alias, `pool`, served by the replicas."""
    replicas = "".join(f"      - base_url: {url}\n" for url in base_urls)
    return f"models:\n  pool:\n    model: demo\n    strategy: {strategy}\n    replicas:\n{replicas}"


def front_door(door: FrontDoor, streams: list[int], rounds: int, log_dir: Path) -> dict[int, list[Flow]]:
    """{streams: flows}: per round and number of streams, a direct flow and one through heylook,
    their order alternating by round."""
    import psutil
    from tests.server import RunningServer, stop_process

    upstreams = [start_paced_upstream(door, log_dir / f"upstream-{i + 1}.log") for i in range(door.replicas)]
    server = None
    try:
        models = log_dir / "models.yaml"
        models.write_text(pool_yaml([url for _, url in upstreams], door.strategy))
        server = RunningServer(models, log_dir / "heylook.log", "--log-level", "warning")
        ways = {
            "direct": [(url, "demo") for _, url in upstreams],
            "through": [(f"{server.base_url}/v1", "pool")],
        }
        watched = {
            "heylook": [psutil.Process(server.process.pid)],
            "upstreams": [psutil.Process(p.pid) for p, _ in upstreams],
        }
        return measure_front_door(door, ways, watched, streams, rounds)
    finally:
        if server is not None:
            server.stop()
        for process, _ in upstreams:
            stop_process(process, 5)


def measure_front_door(
    door: FrontDoor,
    ways: dict[str, list[tuple[str, str]]],
    watched: dict[str, list[psutil.Process]],
    streams: list[int],
    rounds: int,
) -> dict[int, list[Flow]]:
    warm = FrontDoor(door.replicas, 4, door.token_ms, door.ttft_ms, 0.2, door.strategy)
    for targets in ways.values():  # first connections, first requests
        asyncio.run(_flow("warm-up", targets, max(streams), warm, watched))
    results: dict[int, list[Flow]] = {n: [] for n in streams}
    for round_number in range(rounds):
        order = list(ways) if round_number % 2 == 0 else list(reversed(ways))
        for n in streams:
            for way in order:
                flow = asyncio.run(_flow(way, ways[way], n, door, watched))
                results[n].append(flow)
                print(
                    f"  round {round_number + 1}, {n} streams, {way}: {flow.aggregate_tps:.1f} tok/s, "
                    f"TTFT p50 {percentile(flow.ttfts_ms, 0.5):.1f} ms, "
                    f"heylook CPU {flow.core_share('heylook'):.0%} of a core",
                    file=sys.stderr,
                    flush=True,
                )
    return results


@dataclass
class DoorRow:
    """One number of streams: medians over rounds; ratios and differences paired within a round."""

    streams: int
    ceiling_tps: float
    direct_tps: float
    through_tps: float
    ratio: float
    ttft_p50_ms: tuple[float, float]  # direct, through
    added_p50_ms: float
    ttft_p95_ms: tuple[float, float]
    added_p95_ms: float
    gap_p95_ms: tuple[float, float]
    heylook_us_per_token: float
    heylook_share: float  # CPU seconds a second
    upstreams_share: tuple[float, float]
    client_share: tuple[float, float]
    by_replica: dict[str, int]  # requests through heylook each replica served, over all rounds


def _pairs(flows: list[Flow]) -> list[tuple[Flow, Flow]]:
    """(direct, through) flows of the same round."""
    direct = [f for f in flows if f.way == "direct"]
    through = [f for f in flows if f.way == "through"]
    return list(zip(direct, through, strict=True))


def door_row(door: FrontDoor, streams: int, flows: list[Flow]) -> DoorRow:
    pairs = _pairs(flows)

    def median(figure: Callable[[Flow, Flow], float]) -> float:
        return statistics.median(figure(d, t) for d, t in pairs)

    def both(figure: Callable[[Flow], float]) -> tuple[float, float]:
        return median(lambda d, t: figure(d)), median(lambda d, t: figure(t))

    by_replica: dict[str, int] = {}
    for _, through in pairs:
        for reply in through.replies:
            by_replica[reply.replica or "?"] = by_replica.get(reply.replica or "?", 0) + 1
    return DoorRow(
        streams=streams,
        ceiling_tps=door.ceiling_tps(streams),
        direct_tps=median(lambda d, t: d.aggregate_tps),
        through_tps=median(lambda d, t: t.aggregate_tps),
        ratio=median(lambda d, t: t.aggregate_tps / d.aggregate_tps),
        ttft_p50_ms=both(lambda f: percentile(f.ttfts_ms, 0.5)),
        added_p50_ms=median(lambda d, t: percentile(t.ttfts_ms, 0.5) - percentile(d.ttfts_ms, 0.5)),
        ttft_p95_ms=both(lambda f: percentile(f.ttfts_ms, 0.95)),
        added_p95_ms=median(lambda d, t: percentile(t.ttfts_ms, 0.95) - percentile(d.ttfts_ms, 0.95)),
        gap_p95_ms=both(lambda f: percentile(f.gaps_ms, 0.95)),
        heylook_us_per_token=median(lambda d, t: t.cpu_s["heylook"] / t.tokens * 1e6),
        heylook_share=median(lambda d, t: t.core_share("heylook")),
        upstreams_share=both(lambda f: f.core_share("upstreams")),
        client_share=both(lambda f: f.core_share("client")),
        by_replica=dict(sorted(by_replica.items())),
    )


def front_door_report(rows: list[DoorRow], door: FrontDoor, rounds: int) -> str:
    lines = [
        f"{door.replicas} paced upstreams ({door.ttft_ms:g} ms to the first token, then {door.token_ms:g} ms"
        f" a token), {door.tokens}-token streams, back to back, arriving evenly, {door.duration_s:g} s"
        f" measured a flow; alias `pool`, {door.strategy}. Direct: clients round-robin over the"
        f" upstreams; through: all at heylook. Medians of {rounds} round(s), order alternating:",
        "",
        "| streams | direct tok/s | through tok/s | through / direct | TTFT p50 direct ms |"
        " TTFT p50 through ms | added p50 ms | TTFT p95 direct ms | TTFT p95 through ms | added p95 ms |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r.streams} | {r.direct_tps:.1f} | {r.through_tps:.1f} | {r.ratio:.3f}x | "
            f"{r.ttft_p50_ms[0]:.1f} | {r.ttft_p50_ms[1]:.1f} | {r.added_p50_ms:+.1f} | "
            f"{r.ttft_p95_ms[0]:.1f} | {r.ttft_p95_ms[1]:.1f} | {r.added_p95_ms:+.1f} |"
        )
    lines += [
        "",
        "Where the time goes (CPU as a share of one core; the client is this process):",
        "",
        "| streams | pace ceiling tok/s | direct / ceiling | chunk gap p95 direct / through ms |"
        " heylook CPU µs/token | heylook CPU | upstreams CPU direct / through |"
        " client CPU direct / through | requests by replica |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        spread = ", ".join(f"{name} {count}" for name, count in r.by_replica.items())
        lines.append(
            f"| {r.streams} | {r.ceiling_tps:.1f} | {r.direct_tps / r.ceiling_tps:.3f} | "
            f"{r.gap_p95_ms[0]:.1f} / {r.gap_p95_ms[1]:.1f} | {r.heylook_us_per_token:.0f} | "
            f"{r.heylook_share:.0%} | {r.upstreams_share[0]:.0%} / {r.upstreams_share[1]:.0%} | "
            f"{r.client_share[0]:.0%} / {r.client_share[1]:.0%} | {spread} |"
        )
    lines += ["", *front_door_targets(rows)]
    return "\n".join(lines)


def front_door_targets(rows: list[DoorRow]) -> list[str]:
    checks = []
    for r in rows:
        checks.append(
            (f"{r.streams} streams, through / direct {r.ratio:.3f}x (target >= 0.95x)", r.ratio >= 0.95)
        )
        checks.append(
            (
                f"{r.streams} streams, TTFT added p50 {r.added_p50_ms:.1f} ms (target < 5 ms)",
                r.added_p50_ms < 5,
            )
        )
    return [f"- {'met' if ok else 'NOT met'}: {text}" for text, ok in checks]


def plot_front_door(rows: list[DoorRow], door: FrontDoor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    ns = [r.streams for r in rows]
    axes[0].plot(ns, [r.ceiling_tps for r in rows], linestyle="--", color="grey", label="pace ceiling")
    axes[0].plot(ns, [r.direct_tps for r in rows], marker="o", label="direct")
    axes[0].plot(ns, [r.through_tps for r in rows], marker="o", label="through heylook")
    axes[0].set_ylabel("aggregate tokens/s")
    for i, (way, q) in enumerate(itertools.product(("direct", "through heylook"), ("p50", "p95"))):
        figures = [(r.ttft_p50_ms if q == "p50" else r.ttft_p95_ms)[i // 2] for r in rows]
        axes[1].plot(
            ns,
            figures,
            marker="o",
            color=f"C{i // 2}",
            linestyle="-" if q == "p50" else ":",
            label=f"{way} {q}",
        )
    axes[1].set_ylabel("time to first token (ms)")
    for axis in axes:
        axis.set_xlabel("concurrent streams")
        axis.set_xticks(ns)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(
        f"heylook in front of {door.replicas} paced upstreams ({door.token_ms:g} ms a token), "
        f"{door.tokens}-token streams"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def run_front_door(args: argparse.Namespace) -> None:
    """heylook's alias `pool` over N paced upstreams, against the upstreams driven directly."""
    import tempfile

    if args.plot:
        import matplotlib  # noqa: F401 - missing, it fails now rather than after the run

    door = FrontDoor(args.replicas, args.tokens, args.token_ms, args.ttft_ms, args.duration, args.strategy)
    log_dir = Path(tempfile.mkdtemp(prefix="heylook-bench-replicas-"))
    print(f"server logs in {log_dir}", file=sys.stderr)
    warn_if_busy()
    results = front_door(door, args.streams, args.rounds, log_dir)
    rows = [door_row(door, n, flows) for n, flows in results.items()]
    print(front_door_report(rows, door, args.rounds))
    if args.json:
        raw = {
            "run": asdict(door) | {"rounds": args.rounds},
            "rows": [asdict(r) for r in rows],
            "flows": {
                n: [
                    {
                        "way": f.way,
                        "window_s": f.window_s,
                        "tokens": f.tokens,
                        "aggregate_tps": f.aggregate_tps,
                        "cpu_s": f.cpu_s,
                        "ttfts_ms": f.ttfts_ms,
                        "replicas": [r.replica for r in f.replies],
                    }
                    for f in flows
                ]
                for n, flows in results.items()
            },
        }
        args.json.write_text(json.dumps(raw, indent=2))
    if args.plot:
        plot_front_door(rows, door, args.plot)


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
    parser.add_argument(
        "--streams",
        type=int,
        nargs="+",
        help="with --compare (1 4 8 16), --fast-defaults (1 8 16) or --replicas (8 32)",
    )
    parser.add_argument(
        "--fast-defaults", action="store_true", help="issue 18: heylook and llama-server on their defaults"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="with --fast-defaults: multi-turn runs a round"
    )
    parser.add_argument("--history-tokens", type=int, default=2000, help="with --fast-defaults")
    parser.add_argument("--long-prompt-tokens", type=int, default=4000, help="with --fast-defaults")
    parser.add_argument("--mid-streams", type=int, default=8, help="with --fast-defaults")
    parser.add_argument("--mid-tokens", type=int, default=256, help="with --fast-defaults")
    parser.add_argument(
        "--llama-context", type=int, help="with --fast-defaults: give llama-server -c this (else its default)"
    )
    parser.add_argument("--llama-args", help='with --fast-defaults: more llama-server flags, e.g. "-np 8"')
    parser.add_argument(
        "--transformers", help="with --compare: the transformers CLI of a transformers[serving] venv"
    )
    parser.add_argument("--llama-server", help="with --compare or --fast-defaults: llama.cpp's llama-server")
    parser.add_argument(
        "--plot", type=Path, help="with --compare, --fast-defaults or --replicas: write a PNG plot here"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        nargs="?",
        const=3,
        metavar="N",
        help="heylook's alias `pool` in front of N paced upstreams (3) against the upstreams directly",
    )
    parser.add_argument(
        "--duration", type=float, default=8.0, help="with --replicas: seconds each flow is measured"
    )
    parser.add_argument("--token-ms", type=float, default=20.0, help="with --replicas: the upstreams' pace")
    parser.add_argument(
        "--ttft-ms", type=float, default=50.0, help="with --replicas: the upstreams' time to first token"
    )
    parser.add_argument(
        "--strategy",
        default="least-outstanding",
        choices=["least-outstanding", "latency", "weighted", "in-order"],
        help="with --replicas: the pool's strategy",
    )
    parser.add_argument(
        "--embeddings", action="store_true", help="embeddings/s against sentence-transformers' encode"
    )
    args = parser.parse_args()
    if args.embeddings:
        print(run_embeddings(args.rounds))
        return
    if args.replicas is not None:
        args.streams = args.streams or [8, 32]
        run_front_door(args)
        return
    if args.fast_defaults:
        args.streams = args.streams or [1, 8, 16]
        run_fast_defaults(args)
        return
    if args.compare:
        args.streams = args.streams or [1, 4, 8, 16]
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
