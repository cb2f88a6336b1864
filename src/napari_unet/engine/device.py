"""Choosing the compute device and reading its free memory.

torch is imported by the functions, so that the panels and the command line can offer
:data:`DEVICE_CHOICES` without importing it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: The devices a user can ask for, in the order the panels and the command line offer them.
DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Return the torch device for ``device``.

    ``"auto"`` (or ``None``) picks CUDA when available, then Apple's MPS, then the CPU. Asking for
    a device that is not available raises ``ValueError`` with a sentence a user can act on.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but no CUDA GPU is available; use 'cpu' or 'auto'")
        return torch.device(name)
    if name == "mps":
        if not _mps_available():
            raise ValueError("device 'mps' was requested but Apple MPS is not available; use 'cpu' or 'auto'")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}")


def _mps_available() -> bool:
    import torch

    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


@cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware: the ``avx512_bf16`` or ``amx_bf16`` flag
    of ``/proc/cpuinfo`` (``False`` where that file does not exist, as on macOS and Windows).

    Only there is bfloat16 autocast on the CPU worth it (a training step of the bundled network
    1.7x faster than in float32 on an AMD EPYC with AVX512-BF16,
    ``benchmarks/bench_cpu_precision.py``); elsewhere oneDNN emulates it.
    """
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return bf16_in_cpuinfo(text)


def bf16_in_cpuinfo(text: str) -> bool:
    """Whether the first ``flags`` line of a ``/proc/cpuinfo`` text names a bfloat16 unit."""
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = line.split(":", 1)[-1].split()
            return "avx512_bf16" in flags or "amx_bf16" in flags
    return False


def autocast_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """The autocast type of a training step, ``None`` for float32.

    On CUDA bfloat16 where the GPU supports it, else float16 (with loss scaling); on a CPU
    with bfloat16 in hardware (:func:`cpu_has_native_bf16`),
    bfloat16. The weights, the optimiser and the loss stay float32.
    """
    import torch

    if not amp:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def free_memory_bytes(device: torch.device) -> int:
    """Bytes that a computation on ``device`` may reasonably use now.

    CUDA: free memory reported by the driver plus what torch's caching allocator holds but does
    not use. CPU and MPS: available system memory (from ``/proc/meminfo`` where present), or 4 GiB.
    """
    import torch

    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        reserved = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + max(reserved, 0))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 1024**3


def release_memory(device: torch.device | None = None) -> None:
    """Give cached device memory back (CUDA's caching allocator; MPS's cache)."""
    import torch

    if torch.cuda.is_available() and (device is None or device.type == "cuda"):
        torch.cuda.empty_cache()
    if device is not None and device.type == "mps" and hasattr(torch, "mps"):
        torch.mps.empty_cache()
