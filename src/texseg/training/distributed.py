"""Data-parallel training on torch.distributed: the few collectives the loop needs.

A run started by ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` in the
environment) trains one model on every rank with DistributedDataParallel: gloo on CPU,
NCCL on CUDA. Every decision that ends or shapes the run is *agreed* (the loss used to
detect divergence, the training time that spends the budget, a stop signal), so all
ranks take the same steps and stop at the same one; rank 0 alone evaluates and writes
the run directory. Without torchrun everything here is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from texseg.errors import TexsegError


class DistributedError(TexsegError):
    """A rank lost contact with the others (one died, or the network failed)."""


@dataclass(frozen=True)
class Distributed:
    """This process's place in a data-parallel run (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that evaluates, prints and writes the run directory."""
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums of ``values`` over the ranks (the same answer on every rank)."""
        if not self.active:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        self._call(dist.all_reduce, t)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world_size
        self._call(dist.all_gather_object, out, obj)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        self._call(dist.broadcast_object_list, box, 0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            self._call(dist.barrier)

    def _call(self, fn: Any, *args: Any) -> None:
        try:
            fn(*args)
        except (RuntimeError, ValueError) as e:  # DistBackendError and friends: a peer is gone
            detail = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise DistributedError(f"rank {self.rank} lost contact with the other ranks ({detail}); "
                                   "the run keeps its last checkpoint") from None


def _collective_device() -> torch.device:
    # NCCL reduces CUDA tensors only; gloo CPU ones.
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def from_environment(device_type: str, timeout_seconds: float) -> Distributed:
    """Join the process group that torchrun describes in the environment (or stay alone).

    Args:
        device_type: ``"cpu"`` (gloo) or ``"cuda"`` (NCCL, one GPU per rank: ``cuda:LOCAL_RANK``).
        timeout_seconds: how long a rank waits for the others before failing (never a hang).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo",
                                timeout=timedelta(seconds=timeout_seconds))
    return Distributed(rank, world, local)


def close(d: Distributed) -> None:
    """Leave the process group (after a final barrier, so rank 0 has written everything)."""
    if d.active and dist.is_initialized():
        try:
            d.barrier()
        finally:
            dist.destroy_process_group()
