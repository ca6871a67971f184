"""Data-parallel training under ``torchrun``: one process per device, gradients averaged (DDP).

``torchrun --nproc_per_node=N kgllm train pretrain ...`` runs the training engine in N processes:
each trains on its share of every batch and the gradients are averaged, so a step sees the same
examples as a single process would with the same ``batch_size``. The process group uses gloo on
CPU and NCCL on GPUs (``RunConfig.ddp_backend``). Process 0 trains the tokenizer and writes the
results; the others wait for it where they need what it wrote.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

BACKENDS = ("auto", "gloo", "nccl")


def world_size() -> int:
    """Processes of this run (``WORLD_SIZE``, set by torchrun); 1 when started on its own."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Whether this process writes the run's files (rank 0, or not distributed)."""
    return int(os.environ.get("RANK", "0")) == 0


def backend_for(device: str, backend: str = "auto") -> str:
    """``auto``: NCCL for a CUDA device, gloo otherwise."""
    if backend == "auto":
        return "nccl" if torch.device(device).type == "cuda" else "gloo"
    return backend


def start(device: str, backend: str = "auto") -> None:
    """Join torchrun's process group (once), when there is more than one process."""
    if world_size() == 1 or dist.is_initialized():
        return
    chosen = backend_for(device, backend)
    if chosen == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(chosen)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def shared_float(value: float) -> float:
    """Process 0's ``value`` in every process: decisions taken on a clock must agree."""
    if not dist.is_initialized():
        return value
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())
