"""A GGUF converted once into heylook's cache: float16 linear weights on disk, loaded as float32,
and its source quantization reported where Ollama's clients look (issue 28)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
import torch
from safetensors import safe_open

from heylook.models.convert import CONVERSION_FORMAT, SOURCE_FILE, converted_dir_for, quantization_name
from heylook.models.loader import converted_gguf_options
from heylook.types import LoadOptions
from tests.server import RunningServer


@pytest.mark.parametrize(
    ("file_type", "name"),
    [(3, "Q4_1"), (2, "Q4_0"), (15, "Q4_K_M"), (18, "Q6_K"), (7, "Q8_0"), (1, "F16"), (0, "F32"),
     (None, ""), (9999, "file type 9999")],
)  # fmt: skip
def test_quantization_names_are_llama_cpps(file_type: int | None, name: str) -> None:
    assert quantization_name(file_type) == name


def test_the_cache_key_names_the_conversion_format(tmp_path: Path) -> None:
    gguf = tmp_path / "m.Q4_1.gguf"
    gguf.write_bytes(b"GGUF")
    assert converted_dir_for(gguf).name.startswith(f"m.Q4_1-v{CONVERSION_FORMAT}-")


@pytest.mark.parametrize(
    ("dtype", "converted", "expected"),
    [("auto", True, torch.float32), ("auto", False, "auto"), ("bfloat16", True, torch.bfloat16)],
)
def test_a_converted_gguf_left_to_auto_loads_as_float32(
    tmp_path: Path, dtype: str, converted: bool, expected: object
) -> None:
    if converted:
        (tmp_path / SOURCE_FILE).write_text('{"quantization": "Q4_1", "file_type": 3}')
    load = LoadOptions(dtype=dtype)  # type: ignore[arg-type]
    start = {"dtype": "auto" if dtype == "auto" else getattr(torch, dtype)}
    assert converted_gguf_options(start, load, tmp_path)["dtype"] == expected


def test_the_demo_conversion_stores_linear_weights_as_float16(demo_model_dir: Path) -> None:
    with safe_open(str(demo_model_dir / "model.safetensors"), "pt") as weights:
        dtypes = {name: weights.get_slice(name).get_dtype() for name in weights.keys()}  # noqa: SIM118
    linear = {n: d for n, d in dtypes.items() if n.endswith("proj.weight")}
    assert linear and set(linear.values()) == {"F16"}
    others = {d for n, d in dtypes.items() if n not in linear}  # embeddings and norms stay float32
    assert others == {"F32"}
    assert json.loads((demo_model_dir / "config.json").read_text())["dtype"] == "float16"
    assert json.loads((demo_model_dir / SOURCE_FILE).read_text())["quantization"] == "Q4_1"


def test_a_live_server_reports_what_runs_and_what_the_file_held(server: RunningServer) -> None:
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        shown = client.post("/api/show", json={"model": "smollm2"}).json()
        # The Q4_1 GGUF runs as 4-bit blocks with a scale and an offset: Q4_1's own layout.
        assert shown["details"]["quantization_level"] == "Q4_1"
        assert shown["model_info"]["general.file_type"] == 3
        assert shown["model_info"]["heylook.source_quantization"] == "Q4_1"
        client.post("/api/generate", json={"model": "smollm2", "prompt": ""}).raise_for_status()
        running = client.get("/api/ps").json()["models"]
        [demo] = [m for m in running if m["name"] == "smollm2:latest"]
        assert demo["details"]["quantization_level"] == "Q4_1"
