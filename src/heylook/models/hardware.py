"""What memory this machine has: every NVIDIA GPU's through NVML, else the system's RAM."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviceMemory:
    device: str  # "cuda:0", "cpu": torch's name for it
    name: str
    total_bytes: int
    free_bytes: int


def detect_memory() -> list[DeviceMemory]:
    """The GPUs NVML sees, then the CPU's RAM (always last)."""
    return [*gpu_memory(), cpu_memory()]


def gpu_memory() -> list[DeviceMemory]:
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:  # no driver, no library, no GPU: a CPU machine
        return []
    try:
        devices = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            devices.append(DeviceMemory(f"cuda:{index}", name, int(memory.total), int(memory.free)))
        return devices
    except pynvml.NVMLError as error:
        log.warning("NVML could not read the GPUs' memory: %s", error)
        return []
    finally:
        pynvml.nvmlShutdown()


def cpu_memory() -> DeviceMemory:
    """RAM the kernel says can be had without swapping (MemAvailable), not merely unused RAM."""
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        fields = {}
        for line in meminfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields[key] = int(value.split()[0]) * 1024
        return DeviceMemory(
            "cpu", "CPU RAM", fields["MemTotal"], fields.get("MemAvailable", fields["MemFree"])
        )
    page = os.sysconf("SC_PAGE_SIZE")
    total = os.sysconf("SC_PHYS_PAGES") * page
    return DeviceMemory("cpu", "CPU RAM", total, os.sysconf("SC_AVPHYS_PAGES") * page)


def free_bytes(device: str) -> int:
    """Free memory on a device as torch names it ("cuda", "cuda:1", "cpu")."""
    if device.startswith("cuda"):
        index = device.partition(":")[2] or "0"
        for gpu in gpu_memory():
            if gpu.device == f"cuda:{index}":
                return gpu.free_bytes
        return 0
    return cpu_memory().free_bytes
