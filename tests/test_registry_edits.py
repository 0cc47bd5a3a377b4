"""Edits to models.yaml keep the user's file: comments, key order, quoting; nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from heylook.errors import InvalidRequest, ModelNotFound
from heylook.registry.aliases import RegistryError, load_registry
from heylook.registry.edits import AliasExists, add_alias, add_aliases, copy_alias, delete_alias

HAND_WRITTEN = """\
# Top comment, kept.
models:
  # The one I use most.
  writer:
    options:  # sampling
      temperature: 0.7   # a bit creative
      stop: ["</s>", 'END']
    model: org/writer    # key order is mine: options before model
  coder:
    model: org/coder
    description: "quoted, on purpose"

# a trailing note
"""


@pytest.fixture
def path(tmp_path: Path) -> Path:
    file = tmp_path / "models.yaml"
    file.write_text(HAND_WRITTEN)
    return file


def test_an_edit_and_its_undo_leave_the_file_as_it_was(path: Path) -> None:
    add_alias(path, "extra", {"model": "org/extra", "options": {"temperature": 0.1}})
    assert load_registry(path).get("extra").options.temperature == 0.1
    delete_alias(path, "extra")
    assert path.read_text() == HAND_WRITTEN
    copy_alias(path, "coder", "coder-2")
    delete_alias(path, "coder-2")
    assert path.read_text() == HAND_WRITTEN


def test_an_added_alias_goes_last_and_everything_else_stays(path: Path) -> None:
    add_alias(path, "extra", {"model": "org/extra"})
    text = path.read_text()
    assert text.startswith(HAND_WRITTEN.split("\n# a trailing note")[0])
    assert list(load_registry(path).aliases) == ["writer", "coder", "extra"]
    for kept in (
        "# Top comment, kept.",
        "# a bit creative",
        "'END'",
        '"quoted, on purpose"',
        "# a trailing note",
    ):
        assert kept in text


def test_refusals_leave_the_file_alone(path: Path) -> None:
    with pytest.raises(AliasExists):
        add_alias(path, "coder", {"model": "org/other"}, replace=False)
    with pytest.raises(AliasExists):
        copy_alias(path, "writer", "coder", replace=False)
    with pytest.raises(ModelNotFound):
        delete_alias(path, "nobody")
    with pytest.raises(InvalidRequest, match="unknown key 'modle'"):  # the edit's fault: a 400
        add_alias(path, "bad", {"modle": "org/x"})
    assert path.read_text() == HAND_WRITTEN
    assert not list(path.parent.glob(".models.yaml.*")), "no temporary file left behind"


def test_a_broken_hand_edit_is_reported_not_overwritten(path: Path) -> None:
    path.write_text("models:\n  a:\n    modle: x\n")
    with pytest.raises(RegistryError, match=r"models\.yaml:3: alias 'a'"):
        add_alias(path, "b", {"model": "org/b"})
    assert path.read_text() == "models:\n  a:\n    modle: x\n"


def test_a_batch_skips_taken_names_unless_replacing(path: Path) -> None:
    _, written = add_aliases(
        path, {"coder": {"model": "org/new"}, "fresh": {"model": "org/fresh"}}, replace=False
    )
    assert written == ["fresh"]
    assert load_registry(path).get("coder").source.model == "org/coder"
    _, written = add_aliases(path, {"coder": {"model": "org/new"}}, replace=True)
    assert written == ["coder"] and load_registry(path).get("coder").source.model == "org/new"


def test_a_missing_file_is_created(tmp_path: Path) -> None:
    path = tmp_path / "new" / "models.yaml"
    add_alias(path, "a", {"model": "org/a"})
    assert list(load_registry(path).aliases) == ["a"]


@pytest.mark.parametrize("text", ["", "\n", "# only a comment\n", "models:\n"])
def test_an_empty_file_is_an_empty_registry_to_edit(tmp_path: Path, text: str) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(text)
    with pytest.raises(ModelNotFound, match="no models are configured"):
        copy_alias(path, "a", "b")
    add_alias(path, "a", {"model": "org/a"})
    copy_alias(path, "a", "b")
    assert list(load_registry(path).aliases) == ["a", "b"]
    assert path.read_text().startswith(text.strip("\n"))  # a comment there stays
