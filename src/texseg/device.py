"""Resolving the user's device choice."""

from __future__ import annotations

import os
from pathlib import Path

import torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn ``None | 'auto' | 'cpu' | 'cuda' | 'cuda:N' | torch.device`` into a usable device.

    ``None`` means CPU; ``'auto'`` means CUDA when available, else CPU.

    Raises:
        ValueError: for an unknown device string, or CUDA requested where there is none.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}"
        ) from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'; got {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' was requested but CUDA is not available here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} does not exist; this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    return dev


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds training up on ``device``.

    CUDA: when the GPU supports bf16. CPU: only with AMX or AVX512-BF16 instructions;
    elsewhere bf16 is emulated and slower than fp32.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:  # private probes, so guard against their absence in other torch versions
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:
        return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting ('auto', 'fp32', 'bf16'); None for fp32."""
    if precision == "fp32" or (precision == "auto" and not fast_bf16(device)):
        return None
    return torch.bfloat16


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory that can still be allocated on ``device`` (None if unknown).

    CUDA: free device memory. CPU: :func:`cpu_available_bytes`.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return cpu_available_bytes()


def cpu_available_bytes() -> int | None:
    """Memory this process can still allocate: the smallest of what the machine, the process and its container allow.

    * MemAvailable of /proc/meminfo (the machine);
    * the soft ``RLIMIT_AS`` (``ulimit -v``, ``prlimit --as``) minus the address space in use
      (VmSize), since every allocation counts against it;
    * ``memory.max - memory.current`` of this process's cgroup (v2) and its parents, or
      ``memory.limit_in_bytes - memory.usage_in_bytes`` (v1): a container's limit.

    None where none of them can be read (not Linux).
    """
    found = [v for v in (_meminfo_available(), _rlimit_as_available(), _cgroup_available()) if v is not None]
    return max(0, min(found)) if found else None


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _rlimit_as_available() -> int | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    return soft - (_status_kib("VmSize") or 0) * 1024


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) and unreadable values: None


def _cgroup_available(root: Path = Path("/sys/fs/cgroup"), cgroup_file: Path = Path("/proc/self/cgroup")
                      ) -> int | None:
    """Headroom under the memory limit of this process's cgroup and its parents (v2, else v1)."""
    try:
        lines = cgroup_file.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    best: int | None = None
    for line in lines:
        _, controllers, rel = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2: "0::/path"
            files, base = ("memory.max", "memory.current"), root
        elif "memory" in controllers.split(","):  # v1: "N:memory:/path"
            files, base = ("memory.limit_in_bytes", "memory.usage_in_bytes"), root / "memory"
        else:
            continue
        folder = base / rel.lstrip("/")
        while True:  # a parent's limit binds as well
            limit, used = _read_int(folder / files[0]), _read_int(folder / files[1])
            if limit is not None and used is not None and limit < 2**60:  # v1 writes "no limit" as ~2**63
                best = limit - used if best is None else min(best, limit - used)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return best


def check_memory(needed: int, device: torch.device, what: str,
                 advice: str = "use a smaller `image_size` or `batch_size`") -> None:
    """Refuse up front a request that cannot fit, instead of crashing halfway.

    Args:
        needed: estimated bytes.
        device: where they would be allocated.
        what: the request, for the message.
        advice: what to change; fields in backticks become the command's flags on the CLI.

    Raises:
        ValueError: ``what`` needs more than the memory available on ``device``
            (:func:`available_memory_bytes`: process and container limits included).
    """
    available = available_memory_bytes(device)
    if available is not None and needed > available:
        raise ValueError(
            f"{what} needs about {needed / 2**30:.1f} GiB but only {available / 2**30:.1f} GiB "
            f"is available on {device}; {advice}"
        )


# CPU instruction sets that decide texseg's CPU path (fp32 vs fast bf16).
RELEVANT_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_description() -> dict[str, object]:
    """The CPU's model name, its relevant instruction sets and what torch's kernels use.

    Returns:
        ``{"model": str, "flags": [present flags of RELEVANT_CPU_FLAGS], "capability": str,
        "cores": int}``; the model and flags are empty where /proc/cpuinfo is not readable.
    """
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return {"model": model, "flags": [f for f in RELEVANT_CPU_FLAGS if f in flags],
            "capability": torch.backends.cpu.get_cpu_capability(), "cores": os.cpu_count() or 1}
