"""Start and stop the servers scripts/bench.py compares: heylook and its peers, one at a time.

Each peer is a command that serves the OpenAI API on a loopback port for N concurrent streams;
see ../shared/notes/peers.md for how the peers are installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the tests' launcher helpers, as scripts/bench.py does
from tests.server import free_port, stop_process  # noqa: E402


@dataclass
class Peer:
    """How to serve the demo model for `streams` concurrent streams."""

    name: str
    command: list[str]  # "{port}" and "{streams}" are filled in
    model: str  # the name requests use
    per_streams: bool  # the command depends on the number of streams: restart when it changes
    dialect: str = "openai"  # how requests ask for fixed-length streams (see bench.chat_body)


@dataclass
class RunningPeer:
    peer: Peer
    streams: int
    process: subprocess.Popen
    base_url: str

    def stop(self) -> None:
        stop_process(self.process, 30)


def start(peer: Peer, streams: int, log_dir: Path, timeout: float = 300.0) -> RunningPeer:
    port = free_port()
    command = [part.format(port=port, streams=streams) for part in peer.command]
    log = (log_dir / f"{peer.name.replace(' ', '_')}-{streams}.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=os.environ.copy())
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{peer.name} exited with {process.returncode}; see {log.name}")
        try:
            # /health: all three serve it (transformers serve's /v1/models scans the Hub cache).
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return RunningPeer(peer, streams, process, base_url)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"{peer.name} did not answer within {timeout:.0f} s; see {log.name}")


def heylook(python: str = sys.executable, *, parallel_flag: bool = True) -> Peer:
    """heylook on models.yaml; with `parallel_flag`, `--parallel N` for N streams, else its defaults."""
    command = [python, "-m", "heylook", "serve", "--models", str(ROOT / "models.yaml")]
    command += ["--host", "127.0.0.1", "--port", "{port}"]
    if parallel_flag:
        command += ["--parallel", "{streams}"]
    command += ["--log-level", "warning"]
    return Peer("heylook", command, "smollm2", per_streams=parallel_flag)


def transformers_serve(executable: str, model_dir: Path, *, continuous_batching: bool) -> Peer:
    """`transformers serve` from its own environment (transformers[serving] and a CPU torch)."""
    if shutil.which(executable) is None:
        raise FileNotFoundError(f"no transformers CLI at {executable}: see ../shared/notes/peers.md")
    command = [
        executable,
        "serve",
        str(model_dir),
        "--device",
        "cpu",
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
    ]
    name = "transformers serve"
    if continuous_batching:
        command.append("--continuous-batching")
        name += " --continuous-batching"
    return Peer(name, command, str(model_dir), per_streams=False, dialect="transformers")


def llama_server(
    binary: str,
    gguf: Path,
    *,
    defaults: bool = False,
    context: int | None = None,
    extra: tuple[str, ...] = (),
) -> Peer:
    """llama.cpp's server (the engine inside Ollama) on the same GGUF.

    `-c 4096 -np N`, N slots for N streams; with `defaults`, only the model and the address, plus
    `-c context` when given and `extra` flags: llama-server's own choice of slots, context, threads.
    """
    if shutil.which(binary) is None:
        raise FileNotFoundError(f"no llama-server at {binary}: see ../shared/notes/peers.md")
    command = [binary, "-m", str(gguf), "--host", "127.0.0.1", "--port", "{port}"]
    if defaults:
        command += [*(["-c", str(context)] if context else []), *extra]
        return Peer("llama-server", command, "smollm2", per_streams=False)
    return Peer("llama-server", [*command, "-c", "4096", "-np", "{streams}"], "smollm2", per_streams=True)
