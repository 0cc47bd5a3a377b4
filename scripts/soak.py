"""Replays the adversarial findings of issue 27 against a live heylook for a while, round after round,
and reports what they cost the server: its resident memory (before, peak while an attack ran,
after), how long its event loop stalled (a probe asks /health every 50 ms throughout: the slowest
answer), the statuses each attack got (a 5xx other than a busy 503 is a finding), and for batches,
lines answered against lines sent (lost or doubled answers are a finding).

    # heylook on the demo model, started here on a free loopback port, for two minutes:
    .venv/bin/python scripts/soak.py --minutes 2 --json /tmp/soak.json

    # a server already running (its pid for the memory figures):
    .venv/bin/python scripts/soak.py --url http://127.0.0.1:11434 --pid 1234 --model smollm2

Every request goes to the loopback address given; each attack is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import random
import string
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.server, the launcher the tests use


def resident_mb(pid: int | None, field: str = "VmRSS") -> float:
    """The process's resident memory now (VmRSS), or its peak since the last reset_peak (VmHWM)."""
    if pid is None:
        return float("nan")
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak(pid: int | None) -> None:
    """Starts the peak (VmHWM) again from what is resident now (Linux: clear_refs 5)."""
    if pid is not None:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


@dataclass
class Outcome:
    attack: str
    rounds: int = 0
    statuses: Counter = field(default_factory=Counter)
    resident_before_mb: float = 0.0
    resident_peak_mb: float = 0.0
    resident_after_mb: float = 0.0
    stall_max_ms: float = 0.0
    seconds: float = 0.0
    lines_sent: int = 0
    lines_answered: int = 0
    lines_failed: int = 0
    notes: list[str] = field(default_factory=list)


class Probe:
    """Asks /health every 50 ms and keeps the slowest answer since it was last read: how long the
    event loop could not answer a trivial request."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.slowest = 0.0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        while True:
            started = time.perf_counter()
            with contextlib.suppress(httpx.HTTPError):
                await self.client.get("/health", timeout=60)
            self.slowest = max(self.slowest, time.perf_counter() - started)
            await asyncio.sleep(0.05)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def read(self) -> float:
        slowest, self.slowest = self.slowest, 0.0
        return slowest

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


# --- the attacks: each sends its requests and returns the statuses it got --------------------------

Attack = Callable[[httpx.AsyncClient, str, Outcome], Awaitable[None]]


async def amplifying_body(client: httpx.AsyncClient, model: str, outcome: Outcome) -> None:
    """A long key over a long list: a body check that builds a path per item grows key x items."""
    key = "k" * 2000
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 1,
        key: [0] * 120_000,
    }
    reply = await client.post("/v1/chat/completions", content=json.dumps(body))
    outcome.statuses[reply.status_code] += 1


async def deep_body(client: httpx.AsyncClient, model: str, outcome: Outcome) -> None:
    nested = "[" * 100_000 + "1" + "]" * 100_000
    body = f'{{"model": {json.dumps(model)}, "messages": {nested}}}'
    reply = await client.post("/v1/chat/completions", content=body)
    outcome.statuses[reply.status_code] += 1


async def made_up_methods(client: httpx.AsyncClient, model: str, outcome: Outcome) -> None:
    for _ in range(200):
        method = "".join(random.choices(string.ascii_uppercase, k=12))
        reply = await client.request(method, f"/{method.lower()}")
        outcome.statuses[reply.status_code] += 1
    scrape = await client.get("/metrics")
    outcome.notes.append(f"/metrics {len(scrape.content)} bytes")


async def distinct_schemas(client: httpx.AsyncClient, model: str, outcome: Outcome) -> None:
    for _ in range(20):
        tag = random.randrange(1 << 30)
        properties = {f"f{tag}_{k}": {"type": "string" if k % 2 else "integer"} for k in range(6)}
        schema = {"type": "object", "properties": properties, "required": [f"f{tag}_0"]}
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 1,
            "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        }
        reply = await client.post("/v1/chat/completions", json=body)
        outcome.statuses[reply.status_code] += 1


async def distinct_tools(client: httpx.AsyncClient, model: str, outcome: Outcome) -> None:
    """A tool set of its own each request: a grammar each, and a prompt (the tools written into it)
    the prefix cache keeps."""
    for _ in range(10):
        tag = random.randrange(1 << 30)
        properties = {f"a{tag}_{k}": {"type": "string" if k % 2 else "number"} for k in range(8)}
        tool = {
            "type": "function",
            "function": {"name": f"t{tag}", "parameters": {"type": "object", "properties": properties}},
        }
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 2,
            "tools": [tool],
            "tool_choice": "required",
        }
        reply = await client.post("/v1/chat/completions", json=body)
        outcome.statuses[reply.status_code] += 1


async def large_body(client: httpx.AsyncClient, model: str, outcome: Outcome) -> None:
    """15 MB of short messages: parsed and checked off the event loop, then refused for length."""
    messages = [{"role": "user", "content": "a few words here"}] * 300_000
    body = json.dumps({"model": model, "messages": messages, "max_tokens": 1}).encode()
    reply = await client.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    outcome.statuses[reply.status_code] += 1


async def many_choices(client: httpx.AsyncClient, model: str, outcome: Outcome) -> None:
    """Clients asking n=8 each, and a short chat among them: how long it waits."""

    async def ask(n: int) -> int:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "n": n}
        return (await client.post("/v1/chat/completions", json=body, timeout=600)).status_code

    flood = [asyncio.create_task(ask(8)) for _ in range(6)]
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    outcome.statuses[await ask(1)] += 1
    outcome.notes.append(f"a short chat among them waited {time.perf_counter() - started:.1f} s")
    for status in await asyncio.gather(*flood):
        outcome.statuses[status] += 1


async def odd_ids(client: httpx.AsyncClient, model: str, outcome: Outcome) -> None:
    for path in (f"/v1/files/{'f' * 300}", f"/v1/batches?limit={'9' * 4400}", f"/v1/batches/{'b' * 300}"):
        outcome.statuses[(await client.get(path)).status_code] += 1
    body = {"input_file_id": "f" * 300, "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    outcome.statuses[(await client.post("/v1/batches", json=body)).status_code] += 1


async def huge_prompt(client: httpx.AsyncClient, model: str, outcome: Outcome) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "word " * 3_000_000}], "max_tokens": 1}
    started = time.perf_counter()
    reply = await client.post("/v1/chat/completions", json=body, timeout=600)
    outcome.statuses[reply.status_code] += 1
    outcome.notes.append(
        f"a 15 MB prompt answered {reply.status_code} in {time.perf_counter() - started:.1f} s"
    )


async def batch_with_bad_lines(client: httpx.AsyncClient, model: str, outcome: Outcome) -> None:
    """Good lines among bad ones (a lone surrogate, a 100k-deep line, a raw U+2028 inside a string):
    every line must come back once, answered or failed, and the good ones answered."""
    good = [
        {
            "custom_id": f"good-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": f"Say {i}\u2028now"}],
                "max_tokens": 2,
            },
        }
        for i in range(6)
    ]
    lines = [json.dumps(line, ensure_ascii=False) for line in good]
    lines.insert(
        2,
        '{"custom_id": "bad-surrogate-\\ud800", "method": "POST", "url": "/v1/chat/completions", "body": {}}',
    )
    deep = "[" * 100_000 + "]" * 100_000
    lines.insert(4, '{"custom_id": "bad-deep", "method": "POST", "url": "/v1/chat/completions", "body": '
                 f'{{"model": {json.dumps(model)}, "messages": {deep}}}}}')  # fmt: skip
    data = ("\n".join(lines) + "\n").encode()
    upload = await client.post(
        "/v1/files", files={"file": ("soak.jsonl", io.BytesIO(data))}, data={"purpose": "batch"}
    )
    outcome.statuses[upload.status_code] += 1
    if upload.status_code != 200:
        outcome.notes.append(f"upload refused: {upload.text[:200]}")
        return
    body = {
        "input_file_id": upload.json()["id"],
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    batch = await client.post("/v1/batches", json=body)
    outcome.statuses[batch.status_code] += 1
    if batch.status_code != 200:
        return
    outcome.lines_sent += len(lines)
    deadline = time.monotonic() + 300
    state = batch.json()
    while (
        state["status"] not in ("completed", "failed", "expired", "cancelled") and time.monotonic() < deadline
    ):
        await asyncio.sleep(0.5)
        state = (await client.get(f"/v1/batches/{state['id']}")).json()
    ids: Counter = Counter()
    for key in ("output_file_id", "error_file_id"):
        if state.get(key):
            text = (await client.get(f"/v1/files/{state[key]}/content")).text
            for line in filter(None, text.split("\n")):
                ids[json.loads(line)["custom_id"]] += 1
                outcome.lines_answered += key == "output_file_id"
                outcome.lines_failed += key == "error_file_id"
    doubled = [name for name, count in ids.items() if count > 1]
    missing = len(lines) - len(ids)
    outcome.notes.append(f"batch {state['status']}: {len(ids)} of {len(lines)} lines came back")
    if state["status"] == "failed" and not ids:
        outcome.notes.append(f"FAILED WHOLE: {json.dumps(state.get('errors'))[:300]}")
    if doubled or missing:
        outcome.notes.append(f"LOST {missing}, DOUBLED {doubled}")


ATTACKS: dict[str, Attack] = {
    "amplifying_body": amplifying_body,
    "deep_body": deep_body,
    "made_up_methods": made_up_methods,
    "distinct_schemas": distinct_schemas,
    "distinct_tools": distinct_tools,
    "large_body": large_body,
    "many_choices": many_choices,
    "odd_ids": odd_ids,
    "huge_prompt": huge_prompt,
    "batch_with_bad_lines": batch_with_bad_lines,
}


async def soak(
    url: str, pid: int | None, model: str, seconds: float, chosen: list[str], rounds_mb: list[float]
) -> list[Outcome]:
    """Runs the chosen attacks in turn until `seconds` have passed; `rounds_mb` gets the server's
    resident memory after each round, to show whether it levels."""
    outcomes = {name: Outcome(name) for name in chosen}
    async with (
        httpx.AsyncClient(base_url=url, timeout=300) as client,
        httpx.AsyncClient(base_url=url) as probing,
    ):
        await client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1},
        )
        probe = Probe(probing)
        probe.start()
        deadline = time.monotonic() + seconds
        rounds = 0
        while rounds == 0 or time.monotonic() < deadline:
            rounds += 1
            for name in chosen:
                outcome = outcomes[name]
                before = resident_mb(pid)
                if outcome.rounds == 0:
                    outcome.resident_before_mb = before
                probe.read()
                reset_peak(pid)
                started = time.perf_counter()
                try:
                    await ATTACKS[name](client, model, outcome)
                except httpx.HTTPError as error:
                    outcome.statuses[type(error).__name__] += 1
                outcome.seconds += time.perf_counter() - started
                outcome.rounds += 1
                outcome.stall_max_ms = max(outcome.stall_max_ms, probe.read() * 1e3)
                outcome.resident_peak_mb = max(outcome.resident_peak_mb, resident_mb(pid, "VmHWM"))
                outcome.resident_after_mb = resident_mb(pid)
                if rounds > 1 and time.monotonic() > deadline:
                    break
            rounds_mb.append(resident_mb(pid))
        await probe.stop()
    return list(outcomes.values())


def report(outcomes: list[Outcome]) -> str:
    rows = [
        "| attack | rounds | statuses | resident MB before / peak / after | loop stall max | notes |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(o.statuses.items(), key=str))
        memory = f"{o.resident_before_mb:.0f} / {o.resident_peak_mb:.0f} / {o.resident_after_mb:.0f}"
        notes = "; ".join(dict.fromkeys(o.notes))
        rows.append(
            f"| {o.attack} | {o.rounds} | {statuses} | {memory} | {o.stall_max_ms:.0f} ms | {notes} |"
        )
    return "\n".join(rows)


def findings(outcomes: list[Outcome]) -> list[str]:
    """What the run shows is wrong: a 5xx or a connection error, a lost or doubled batch line."""
    found = []
    for o in outcomes:
        # A 503 is the busy answer (with Retry-After), by design; any other 5xx is a finding.
        bad = {k: v for k, v in o.statuses.items() if not isinstance(k, int) or (k >= 500 and k != 503)}
        if bad:
            found.append(f"{o.attack}: {bad}")
        found += [f"{o.attack}: {note}" for note in o.notes if note.startswith(("LOST", "FAILED"))]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", help="a running heylook (loopback); without it one is started on the demo model"
    )
    parser.add_argument("--pid", type=int, help="the running server's pid, for its resident memory")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--attacks", nargs="+", choices=sorted(ATTACKS), default=list(ATTACKS))
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument(
        "--serve-args", default="", help="extra flags for the started server, e.g. '--prefix-cache-mb 256'"
    )
    args = parser.parse_args()
    stop: Callable[[], None] = lambda: None  # noqa: E731
    url, pid = args.url, args.pid
    if url is None:
        from tests.server import RunningServer

        home = Path(tempfile.mkdtemp(prefix="heylook-soak-"))
        server = RunningServer(
            ROOT / "models.yaml",
            home / "serve.log",
            *args.serve_args.split(),
            env={"HEYLOOK_BATCHES": str(home / "batches")},
        )
        url, pid, stop = server.base_url, server.process.pid, server.stop
        print(f"heylook on {url} (pid {pid}), log {home / 'serve.log'}", file=sys.stderr)
    try:
        rounds_mb: list[float] = []
        outcomes = asyncio.run(soak(url, pid, args.model, args.minutes * 60, args.attacks, rounds_mb))
    finally:
        stop()
    print(report(outcomes))
    print("resident MB after each round: " + ", ".join(f"{mb:.0f}" for mb in rounds_mb))
    found = findings(outcomes)
    for line in found:
        print(f"FINDING {line}")
    if args.json:
        args.json.write_text(
            json.dumps(
                [asdict(o) | {"statuses": {str(k): v for k, v in o.statuses.items()}} for o in outcomes],
                indent=1,
            )
        )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
