"""OpenAI's `n` counted against a model's places as n requests (issue 27): a request for n replies
takes n of the places (--parallel plus --max-queue), so requests for several replies fill the
model as that many requests would, and a short chat behind them is answered (or told to come back)
as it would be behind n=1 requests, never queued behind every choice; more replies than the model
has places are a 400 naming `n`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heylook.errors import InvalidRequest, ServerBusy
from heylook.router import Lease
from tests.server import RunningServer
from tests.test_router import machine_router

HI = [{"role": "user", "content": "hi"}]
PARALLEL, QUEUE = 2, 1  # the router's: three places
PLACES = PARALLEL + QUEUE
# The server's: two places, both generating (a request waiting in a queue has no first chunk to read).
SERVED = 2


@given(st.lists(st.tuples(st.booleans(), st.integers(1, PLACES + 1)), max_size=30))
@settings(deadline=None, max_examples=60)
def test_places_held_never_pass_the_bound(steps: list[tuple[bool, int]]) -> None:
    """Acquire n places or release the oldest lease, in any order: a request is admitted exactly
    when its n places are free, and n past every place is a 400 naming `n`."""

    async def run() -> None:
        router, _ = machine_router(parallel=PARALLEL, max_queue=QUEUE)
        held: list[Lease] = []
        for acquire, n in steps:
            if not acquire:
                if held:
                    router.release(held.pop(0))
                continue
            taken = sum(lease.places for lease in held)
            if n > PLACES:
                with pytest.raises(InvalidRequest) as caught:
                    await router.acquire("a", n)
                assert (caught.value.status, caught.value.param) == (400, "n")
            elif taken + n > PLACES:
                with pytest.raises(ServerBusy):
                    await router.acquire("a", n)
            else:
                held.append(await router.acquire("a", n))
            (resident,) = router.residents().values()
            assert resident.leases == sum(lease.places for lease in held) <= PLACES

    anyio.run(run)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("choices")
    models = folder / "models.yaml"
    models.write_text(f"models:\n  tiny:\n    model: {tiny_model_dir}\n")
    running = RunningServer(
        models, folder / "server.log", "--parallel", str(SERVED), "--max-queue", "0", "--preload", "tiny"
    )
    yield running
    running.stop()


def chat(server: RunningServer, n: int = 1, timeout: float = 10, **more: object) -> httpx.Response:
    body = {"model": "tiny", "messages": HI, "max_tokens": 4, "n": n, **more}
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=timeout)


def holding(server: RunningServer, stack: ExitStack, n: int) -> None:
    """A long streamed request for n replies, generating (its first chunk read) until `stack` closes."""
    long = {"model": "tiny", "messages": HI, "n": n, "max_tokens": 30_000, "ignore_eos": True, "stream": True}
    reply = stack.enter_context(
        httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=long, timeout=30)
    )
    assert reply.status_code == 200
    lines = reply.iter_lines()
    next(line for line in lines if line.startswith("data:"))
    stack.callback(lines.close)


def short_chat_behind(server: RunningServer, holders: list[int]) -> tuple[int, float]:
    """A short chat's status and wait, sent while long requests for `holders` replies generate."""
    with ExitStack() as stack:
        for n in holders:
            holding(server, stack, n)
        started = time.monotonic()
        status = chat(server).status_code
        return status, time.monotonic() - started


def test_n_fills_the_model_as_n_requests_do(server: RunningServer) -> None:
    # As many replies ahead of it either way: one request for all of them, or one request each.
    as_requests = short_chat_behind(server, [1] * SERVED)
    as_choices = short_chat_behind(server, [SERVED])
    assert as_requests[0] == as_choices[0] == 503, (as_requests, as_choices)
    assert as_choices[1] < 5, f"the short chat waited {as_choices[1]:.1f} s behind {SERVED} choices"
    # A place left: the short chat gets in and is answered, whether the others are requests or choices.
    assert short_chat_behind(server, [SERVED - 1])[0] == 200


def test_more_replies_than_places_are_a_400_naming_n(server: RunningServer) -> None:
    reply = chat(server, n=SERVED + 1)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == "n" and f"{SERVED} replies at most" in error["message"]
    reply = chat(server, n=SERVED)
    assert reply.status_code == 200 and len(reply.json()["choices"]) == SERVED
