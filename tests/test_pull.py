"""`pull_model` against a real HTTP fake of the Hub, downloading into a temporary HF cache."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest

from heylook.errors import InvalidRequest
from heylook.models import pull
from heylook.models.pull import PullFailed, PullProgress, PullTarget, parse_pull_name, pull_model
from heylook.models.sources import resolve
from heylook.registry.model_source import ModelSource
from tests.fake_hub import FakeHub, git_blob_oid

REPO = "org/tiny"
TINY_FILES = {
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "model.safetensors",
}
# What a real repo holds besides: none of it should be downloaded.
EXTRA_FILES = {
    "README.md": b"# tiny\n",
    ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
    "pytorch_model.bin": b"\0" * 1000,
    "model.gguf": b"GGUF" + b"\0" * 100,
    "onnx/model.onnx": b"\0" * 100,
    "original/consolidated.pth": b"\0" * 100,
    "original/params.json": b"{}",
    "flax_model.msgpack": b"\0" * 100,
}
GGUF_FILES = ["model-Q2_K.gguf", "model-Q4_K_M.gguf", "model-Q8_0.gguf", "mmproj-model-f16.gguf"]


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """huggingface_hub reads these constants at call time; conftest made the process offline."""
    cache = tmp_path / "hf-cache"
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    # Small reads, so progress and resumption are visible on a file of a few hundred KB.
    monkeypatch.setattr(hf_constants, "DOWNLOAD_CHUNK_SIZE", 16 * 1024)
    return cache


@pytest.fixture
def hub(tmp_path: Path, hf_cache: Path, tiny_model_dir: Path) -> Iterator[FakeHub]:
    with FakeHub(tmp_path / "hub") as hub:
        hub.add_repo(REPO, tiny_model_dir)
        hub.add_repo(REPO, EXTRA_FILES)
        yield hub


def run_pull(name: str, hub: FakeHub | str) -> tuple[ModelSource, list[PullProgress]]:
    events: list[PullProgress] = []
    endpoint = hub if isinstance(hub, str) else hub.endpoint
    source = pull_model(parse_pull_name(name), events.append, endpoint=endpoint)
    return source, events


def file_events(events: list[PullProgress]) -> dict[str, list[PullProgress]]:
    by_digest: dict[str, list[PullProgress]] = {}
    for event in events:
        if event.digest is not None:
            by_digest.setdefault(event.digest, []).append(event)
    return by_digest


def fetched_names(hub: FakeHub) -> set[str]:
    """Files whose bodies were fetched, named by their path in REPO."""
    state = hub.state(REPO)
    by_sha = {e.sha256: e.path for e in state.files.values()}
    names = set()
    for request in hub.file_gets():
        if request.path.startswith("/cdn/"):
            names.add(by_sha[request.path.removeprefix("/cdn/")])
        else:
            names.add(request.path.split("/resolve/", 1)[1].split("/", 1)[1])
    return names


# --- names ---


@pytest.mark.parametrize(
    ("name", "repo_id", "revision", "gguf_tag"),
    [
        ("org/name", "org/name", None, None),
        ("org/name:v1.0", "org/name", "v1.0", None),
        ("org/name:refs/pr/1", "org/name", "refs/pr/1", None),
        ("org/name:latest", "org/name", None, None),
        ("Org-1/Name_2.5B", "Org-1/Name_2.5B", None, None),
        ("org/name:" + "a" * 40, "org/name", "a" * 40, None),
        ("hf.co/org/name-GGUF", "org/name-GGUF", None, None),
        ("hf.co/org/name-GGUF:Q4_K_M", "org/name-GGUF", None, "Q4_K_M"),
        ("hf.co/org/name-GGUF:latest", "org/name-GGUF", None, None),
        ("huggingface.co/org/name:IQ3_XS", "org/name", None, "IQ3_XS"),
        ("https://huggingface.co/org/name", "org/name", None, None),
        ("HF.CO/org/name:main", "org/name", None, "main"),
    ],
)
def test_parse_pull_name(name: str, repo_id: str, revision: str | None, gguf_tag: str | None) -> None:
    assert parse_pull_name(name) == PullTarget(name, repo_id, revision, gguf_tag)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "llama3",
        "llama3:8b",
        "org/",
        "/name",
        "org//name",
        "org/name/extra",
        "org/name:",
        "org/na me",
        "org/name:bad tag",
        "org/name:../main",
        "org/na--me",
        "hf.co/llama3",
        "hf.co/org/name:",
        "example.com/org/name",
        "org/name:a:b",
    ],
)
def test_parse_pull_name_rejects_what_is_not_a_repo_id(name: str) -> None:
    with pytest.raises(InvalidRequest, match="not a Hugging Face repo id") as caught:
        parse_pull_name(name)
    assert caught.value.param == "model"
    assert caught.value.status == 400


# --- a safetensors repo ---


def test_pulls_what_transformers_needs_and_resolves_offline(
    hub: FakeHub, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, _ = run_pull(REPO, hub)

    commit = hub.state(REPO).commit
    assert source == ModelSource(REPO, revision=commit)
    assert fetched_names(hub) == TINY_FILES
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    directory = resolve(source)
    assert directory.name == commit
    assert {p.name for p in directory.iterdir()} == TINY_FILES
    for name in TINY_FILES:
        assert (directory / name).read_bytes() == (tiny_model_dir / name).read_bytes()
    # The branch is recorded too, as `hf download` leaves it: an entry without a revision resolves.
    assert resolve(ModelSource(REPO)) == directory

    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory)
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def test_progress_is_ollama_shaped_and_rises_to_each_file_size(hub: FakeHub, tiny_model_dir: Path) -> None:
    hub.chunk_delay = 0.02  # ~0.2 s for the weights: several throttle windows
    events: list[PullProgress] = []
    threads: set[int] = set()

    def on_progress(event: PullProgress) -> None:
        events.append(event)
        threads.add(threading.get_ident())

    pull_model(parse_pull_name(REPO), on_progress, endpoint=hub.endpoint)

    assert threads == {threading.get_ident()}  # so a route may use anyio.from_thread in it

    assert events[0] == PullProgress("pulling manifest")
    assert [e.status for e in events[-3:]] == ["verifying sha256 digest", "writing manifest", "success"]
    per_file = file_events(events)
    assert len(per_file) == len(TINY_FILES)
    state = hub.state(REPO)
    for name in TINY_FILES:
        entry = state.files[name]
        digest = f"sha256:{entry.sha256}" if entry.lfs else entry.git_oid
        lines = per_file[digest]
        size = (tiny_model_dir / name).stat().st_size
        assert {e.status for e in lines} == {f"pulling {digest.removeprefix('sha256:')[:12]}"}
        assert {e.total for e in lines} == {size}
        completed = [e.completed for e in lines]
        assert completed == sorted(completed)
        assert completed[0] == 0
        assert completed[-1] == size
    assert state.files["config.json"].git_oid == git_blob_oid((tiny_model_dir / "config.json").read_bytes())
    # The weights arrive in 16 KB reads; progress is throttled, yet shows the middle of the transfer.
    weights = [e.completed for e in per_file[f"sha256:{state.files['model.safetensors'].sha256}"]]
    chunks = -(-state.files["model.safetensors"].size // hub.chunk_size)
    assert any(0 < c < weights[-1] for c in weights)
    assert len(weights) < chunks


def test_a_second_pull_downloads_nothing(hub: FakeHub) -> None:
    first, _ = run_pull(REPO, hub)
    hub.clear_requests()

    second, events = run_pull(REPO, hub)

    assert second == first
    assert [(r.method, r.path) for r in hub.requests] == [("GET", f"/api/models/{REPO}")]
    for lines in file_events(events).values():
        assert len(lines) == 1
        assert lines[0].completed == lines[0].total


def test_a_dropped_connection_resumes_with_a_range_request(hub: FakeHub, tiny_model_dir: Path) -> None:
    hub.drop_once(REPO, "model.safetensors", after_bytes=100_000)

    source, events = run_pull(REPO, hub)

    weights = [r for r in hub.file_gets() if r.path.startswith("/cdn/")]
    assert weights[0].range is None
    resumed_from = [int(r.range.removeprefix("bytes=").rstrip("-")) for r in weights[1:] if r.range]
    assert len(resumed_from) == 1
    assert 0 < resumed_from[0] <= 100_000
    path = resolve(source) / "model.safetensors"
    assert path.read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    for lines in file_events(events).values():
        completed = [e.completed for e in lines]
        assert completed == sorted(completed)


def test_a_damaged_download_fails_and_the_next_pull_fetches_it_again(hub: FakeHub) -> None:
    hub.corrupt_once(REPO, "model.safetensors")
    with pytest.raises(PullFailed, match=r"model\.safetensors.*damaged") as caught:
        run_pull(REPO, hub)
    assert caught.value.status == 502

    hub.clear_requests()
    source, _ = run_pull(REPO, hub)
    assert fetched_names(hub) == {"model.safetensors"}
    assert resolve(source).is_dir()


def test_the_hf_co_tag_names_a_revision_when_the_repo_has_no_gguf(
    hub: FakeHub, hf_cache: Path, tiny_model_dir: Path
) -> None:
    commit = hub.add_repo("org/plain", tiny_model_dir)
    hub.add_ref("org/plain", "v1")

    source, _ = run_pull("hf.co/org/plain:v1", hub)

    assert source == ModelSource("org/plain", revision=commit)
    assert (hf_cache / "models--org--plain" / "refs" / "v1").read_text() == commit
    assert "/api/models/org/plain/revision/v1" in [r.path for r in hub.requests]


def test_without_a_tag_a_repo_with_both_gives_safetensors(hub: FakeHub) -> None:
    source, _ = run_pull(f"hf.co/{REPO}", hub)
    assert source.gguf_file is None
    assert fetched_names(hub) == TINY_FILES


def test_with_a_tag_a_repo_with_both_gives_the_gguf(hub: FakeHub) -> None:
    source, _ = run_pull(f"hf.co/{REPO}:model", hub)
    assert source.gguf_file == "model.gguf"
    assert fetched_names(hub) == {"model.gguf"}


# --- GGUF repos ---


@pytest.fixture
def gguf_hub(hub: FakeHub) -> FakeHub:
    hub.add_repo("org/many-GGUF", {name: f"GGUF {name}".encode() for name in [*GGUF_FILES, "README.md"]})
    hub.add_repo("org/one-GGUF", {"model.Q8_0.gguf": b"GGUF one", "README.md": b"#"})
    hub.add_repo("org/words-GGUF", {"m-Q4_K.gguf": b"GGUF a", "m-Q4_K_S.gguf": b"GGUF b"})
    return hub


@pytest.mark.parametrize(
    ("name", "chosen"),
    [
        ("hf.co/org/many-GGUF", "model-Q4_K_M.gguf"),
        ("hf.co/org/many-GGUF:latest", "model-Q4_K_M.gguf"),
        ("hf.co/org/many-GGUF:q8_0", "model-Q8_0.gguf"),
        ("hf.co/org/many-GGUF:Q2_K", "model-Q2_K.gguf"),
        ("org/many-GGUF", "model-Q4_K_M.gguf"),
        ("hf.co/org/one-GGUF", "model.Q8_0.gguf"),
        ("hf.co/org/words-GGUF:Q4_K", "m-Q4_K.gguf"),
    ],
)
def test_gguf_choice(gguf_hub: FakeHub, name: str, chosen: str) -> None:
    repo_id = parse_pull_name(name).repo_id
    source, _ = run_pull(name, gguf_hub)

    commit = gguf_hub.state(repo_id).commit
    assert source == ModelSource(repo_id, revision=commit, gguf_file=chosen)
    assert len(gguf_hub.file_gets()) == 1
    assert Path(
        hf_constants.HF_HUB_CACHE, f"models--{repo_id.replace('/', '--')}", "snapshots", commit, chosen
    ).is_file()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "hf.co/org/many-GGUF:Q5_K_M",
            r"'Q5_K_M' matches none of the GGUF files in org/many-GGUF: .*model-Q2_K\.gguf",
        ),
        ("hf.co/org/words-GGUF", r"several GGUF files and none is Q4_K_M.*m-Q4_K\.gguf, m-Q4_K_S\.gguf"),
        ("hf.co/org/many-GGUF:model", r"'model' matches several GGUF files"),
        ("org/weights-elsewhere", r"neither safetensors nor GGUF weights; heylook needs one of them"),
    ],
)
def test_gguf_choices_that_fail_say_what_there_is(gguf_hub: FakeHub, name: str, message: str) -> None:
    gguf_hub.add_repo("org/weights-elsewhere", {"config.json": b"{}", "pytorch_model.bin": b"\0" * 10})
    with pytest.raises(PullFailed, match=message) as caught:
        run_pull(name, gguf_hub)
    assert caught.value.status == 400
    assert gguf_hub.file_gets() == []


# --- failures ---


@pytest.mark.parametrize(
    ("name", "status", "message"),
    [
        ("org/absent", 404, r"repo org/absent not found on http://127\.0\.0\.1:\d+"),
        (f"{REPO}:no-such-branch", 404, r"org/tiny has no revision 'no-such-branch' on [^;]+$"),
        (
            f"{REPO}:Q4_K_M",
            404,
            r"'Q4_K_M'.*; for a GGUF quantization pull hf\.co/org/tiny:Q4_K_M",
        ),
        ("hf.co/org/plain:Q4_K_M", 404, r"org/plain holds no GGUF files and has no revision 'Q4_K_M'"),
    ],
)
def test_what_the_hub_does_not_have_is_404(
    hub: FakeHub, tiny_model_dir: Path, name: str, status: int, message: str
) -> None:
    hub.add_repo("org/plain", tiny_model_dir)
    with pytest.raises(PullFailed, match=message) as caught:
        run_pull(name, hub)
    assert caught.value.status == status


def test_a_gated_repo_names_hf_token_and_never_shows_it(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.gate(REPO)
    with pytest.raises(PullFailed, match=r"gated.*HF_TOKEN") as caught:
        run_pull(REPO, hub)
    assert caught.value.status == 401

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token_0123456789")
    with pytest.raises(PullFailed, match=r"gated.*HF_TOKEN") as caught:
        run_pull(REPO, hub)
    assert caught.value.status == 403
    assert "hf_not_a_real" not in caught.value.message
    assert any(r.headers.get("authorization") for r in hub.requests)


def test_an_unreachable_hub_is_502_naming_the_endpoint(hf_cache: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with pytest.raises(PullFailed, match=f"could not reach the Hub at {endpoint}: ConnectError") as caught:
        run_pull(REPO, endpoint)
    assert caught.value.status == 502


def test_a_hub_that_never_answers_is_502(hf_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pull, "API_TIMEOUT_S", 0.3)
    with socket.socket() as sock:  # accepts connections (the kernel does) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(PullFailed, match=f"the Hub at {endpoint} timed out") as caught:
            run_pull(REPO, endpoint)
    assert caught.value.status == 502


def test_offline_mode_says_so(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PullFailed, match="HF_HUB_OFFLINE") as caught:
        run_pull(REPO, hub)
    assert caught.value.status == 503
    assert hub.requests == []


def test_an_error_raised_by_on_progress_stops_the_pull_unchanged(hub: FakeHub) -> None:
    class ClientLeft(Exception):
        pass

    def on_progress(event: PullProgress) -> None:
        if event.total and 0 < (event.completed or 0) < event.total:  # inside a file's download
            raise ClientLeft

    hub.chunk_delay = 0.02
    with pytest.raises(ClientLeft):
        pull_model(parse_pull_name(REPO), on_progress, endpoint=hub.endpoint)
    # The abandoned download stops at its next read; nothing unverified enters the cache.
    weights = hub.state(REPO).files["model.safetensors"]
    blobs = Path(hf_constants.HF_HUB_CACHE, "models--org--tiny", "blobs")
    assert not (blobs / weights.sha256).exists()


def test_an_interrupted_pull_is_resumed_by_the_next_one(hub: FakeHub, tiny_model_dir: Path) -> None:
    """The partial file outlives the pull that was interrupted (huggingface_hub's own would not)."""
    weights = hub.state(REPO).files["model.safetensors"]

    def stop_midway(event: PullProgress) -> None:
        if event.digest == f"sha256:{weights.sha256}" and (event.completed or 0) > 40_000:
            raise KeyboardInterrupt  # the user pressed Ctrl-C

    hub.chunk_delay = 0.01
    with pytest.raises(KeyboardInterrupt):
        pull_model(parse_pull_name(REPO), stop_midway, endpoint=hub.endpoint)
    blobs = Path(hf_constants.HF_HUB_CACHE, "models--org--tiny", "blobs")
    partial = blobs / f"{weights.sha256}.heylook-partial"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and partial.exists() and partial.stat().st_size < 40_000:
        time.sleep(0.02)
    kept = partial.stat().st_size
    assert 40_000 <= kept < weights.size
    hub.clear_requests()
    hub.chunk_delay = 0.0

    source, _ = run_pull(REPO, hub)

    [resumed] = [r for r in hub.file_gets() if r.path.startswith("/cdn/") and r.range]
    assert int(resumed.range.removeprefix("bytes=").rstrip("-")) >= kept
    assert (resolve(source) / "model.safetensors").read_bytes() == (
        tiny_model_dir / "model.safetensors"
    ).read_bytes()
    assert not partial.exists()
