"""The C kernel for block-quantized linear layers (quantized_kernel.c), compiled once per machine.

It is compiled for the CPU it runs on (-march=native: AVX2 where there is AVX2, a plain loop
elsewhere) by the C compiler already there, into heylook's cache, keyed by the source, the flags
and the CPU; later loads reuse it. Its OpenMP threads are torch's own (torch's libgomp is loaded
first, so the kernel's resolves to it), so the two never compete for the cores. Where no compiler
is found, `load()` says why and the caller keeps float weights, and says so.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from importlib import resources
from pathlib import Path

from heylook import paths

log = logging.getLogger(__name__)

FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11")
_lock = threading.Lock()
_loaded: ctypes.CDLL | None = None
_failure: str | None = None


class KernelUnavailable(RuntimeError):
    """The kernel cannot be built here; the message says why."""


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def _library_path(source: bytes, compiler: str) -> Path:
    key = hashlib.sha256(
        b"\0".join(
            [
                source,
                " ".join(FLAGS).encode(),
                compiler.encode(),
                platform.machine().encode(),
                _cpu_signature().encode(),
            ]
        )
    ).hexdigest()[:16]
    return paths.cache_dir() / "kernels" / f"quantized-{key}.so"


def _compile(source: bytes, target: Path, compiler: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as work:
        c_file = Path(work) / "quantized_kernel.c"
        c_file.write_bytes(source)
        built = Path(work) / target.name
        done = subprocess.run(
            [compiler, *FLAGS, str(c_file), "-o", str(built), "-lm"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise KernelUnavailable(f"{compiler} failed: {done.stderr.strip()[-500:]}")
        os.replace(built, target)  # whole or absent: another process may be loading it


def _declare(library: ctypes.CDLL) -> ctypes.CDLL:
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    library.heylook_quantized_linear.argtypes = [
        ctypes.c_int, pointer, size, size, pointer, pointer, pointer, pointer, size, pointer, ctypes.c_int,
    ]  # fmt: skip
    library.heylook_quantized_linear.restype = ctypes.c_int
    library.heylook_dequantize.argtypes = [ctypes.c_int, pointer, pointer, pointer, size, size, pointer]
    library.heylook_dequantize.restype = None
    return library


def load() -> ctypes.CDLL:
    """The compiled kernel, built on first use; KernelUnavailable says why it cannot be."""
    global _loaded, _failure
    with _lock:
        if _loaded is not None:
            return _loaded
        if _failure is not None:
            raise KernelUnavailable(_failure)
        try:
            import torch  # noqa: F401  (its libgomp first: the kernel's OpenMP resolves to it)

            compiler = (
                os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
            )
            if compiler is None:
                raise KernelUnavailable(
                    "no C compiler (cc, gcc or clang) was found to build the quantized kernel"
                )
            source = resources.files("heylook.engine").joinpath("quantized_kernel.c").read_bytes()
            target = _library_path(source, compiler)
            if not target.exists():
                log.info("building the quantized linear kernel for this CPU (%s)", target.name)
                _compile(source, target, compiler)
            _loaded = _declare(ctypes.CDLL(str(target)))
            return _loaded
        except (OSError, subprocess.SubprocessError, KernelUnavailable) as error:
            _failure = str(error)
            raise KernelUnavailable(_failure) from error
