"""The same trainer on several processes: DistributedDataParallel under ``torchrun``.

Used by ``torchrun --nproc-per-node N -m course_utils train ...`` (see :mod:`course_utils.cli`).

What changes when one training run becomes N processes (one per GPU, or N CPU processes):

* **Each process sees 1/N of the data** (:func:`shard_loader`: a ``DistributedSampler``, which
  must be told the epoch -- :class:`SetEpoch` -- or every epoch repeats the same order). The
  effective batch is N × the per-process batch; when it grows by a factor k, the linear scaling rule
  (Goyal et al. 2017, for SGD) multiplies the learning rate by k, and for Adam(W) a square-root rule
  (lr × √k, Malladi et al. 2022) is the usual starting point; the course keeps the effective batch, and
  so the learning rate, unchanged.
* **Gradients are averaged across processes during backward** (DDP's all-reduce), so every
  hook that runs after backward -- gradient clipping above all -- sees the *reduced* gradient:
  ``clip_grad_norm_`` on each process computes the norm of the global average gradient, the same
  number on every rank, as one process with the whole batch would (tested). Clipping each
  process's *local* gradient instead would clip a noisier gradient by a different factor per rank.
  (FSDP shards the gradients themselves, so no rank holds the whole vector. With FSDP2's
  ``fully_shard`` they are DTensors, and the ordinary ``torch.nn.utils.clip_grad_norm_`` all-reduces
  the shards' norms for you; the older ``FullyShardedDataParallel`` wrapper has its own
  ``FSDP.clip_grad_norm_`` for that.)
* **Loss normalisation must be global**: the detector divides its loss by the number of positive
  locations; each process counts only its own, so :func:`prepare` makes the model all-reduce that
  count (:attr:`TinyDetector.num_pos_across_ranks`) -- otherwise N processes train on a
  differently weighted loss than one process with the same images.
* **BatchNorm** normalises with per-process statistics unless converted to ``SyncBatchNorm``
  (``sync_bn=True``; PyTorch runs it on accelerators -- CUDA, XPU, HPU -- not on CPU processes). So
  N processes equal one process with the whole batch only for a network without BN: the CPU tests
  use a detector without BN.
* **Random numbers**: every rank is seeded alike, so the model starts the same everywhere (DDP also
  broadcasts rank 0's weights). The course's training has no random augmentation; a recipe that
  has it must seed each rank's augmentation differently (e.g. ``seed + rank``), or every rank draws
  the same crops.
* **Only rank 0 evaluates, logs and writes checkpoints**; the others wait at a barrier.

Backends: ``gloo`` on CPU, ``nccl`` on CUDA. ``torchrun`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; across machines, start it on every node with
``--nnodes M --node-rank i --rdzv-endpoint HOST:PORT`` and it finds the others (rendezvous).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from .train import Hook

__all__ = ["world", "is_main", "init_from_env", "prepare", "shard_loader", "SetEpoch", "barrier", "cleanup"]


def world() -> tuple[int, int]:
    """``(rank, world_size)``: ``(0, 1)`` outside a distributed run."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0 (and in an ordinary single-process run): the process that logs and saves."""
    return world()[0] == 0


def launched_by_torchrun() -> bool:
    """Whether ``torchrun`` (or another launcher) set ``WORLD_SIZE`` > 1 for this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str | None = None) -> torch.device:
    """Join the process group ``torchrun`` described in the environment; return this process's device.

    ``gloo`` when the device is the CPU, ``nccl`` on CUDA (device ``cuda:LOCAL_RANK``: one GPU per
    process). Checked: the variables torchrun sets are present.
    """
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"init_from_env: {missing} are not set; start the program with torchrun "
                           "(torchrun --nproc-per-node 2 -m course_utils train ...)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")


def prepare(model: nn.Module, device: torch.device, sync_bn: bool = False) -> nn.Module:
    """``model`` on ``device`` wrapped in ``DistributedDataParallel``, its loss normalised across ranks.

    ``sync_bn=True`` converts every BatchNorm to ``SyncBatchNorm`` first (statistics over the whole
    global batch; PyTorch runs it on accelerators -- CUDA, XPU, HPU -- not on the CPU).
    """
    if sync_bn:
        if device.type == "cpu":
            raise ValueError("prepare(sync_bn=True): PyTorch's SyncBatchNorm runs on accelerators (CUDA, XPU, HPU), "
                             "not on CPU processes; on the CPU leave BatchNorm per process (or train a detector with "
                             "batch_norm=False)")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device)
    if hasattr(model, "num_pos_across_ranks"):
        model.num_pos_across_ranks = True
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def shard_loader(dataset: Dataset, batch_size: int, shuffle: bool, seed: int, collate_fn: Any) -> DataLoader:
    """This rank's share of ``dataset``: ``DistributedSampler`` (rank r takes samples r, r + N, ...
    of the epoch's order, padded to equal length), ``batch_size`` samples per step per process."""
    sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn)


class SetEpoch(Hook):
    """Tell a ``DistributedSampler`` the epoch before each one, so the shuffled order changes every epoch
    (the same way on every rank). ``start``: epochs already done (a resumed run)."""

    def __init__(self, sampler: DistributedSampler, start: int = 0) -> None:
        self.sampler, self.start = sampler, start

    def on_train_start(self, state: Any) -> None:
        self.sampler.set_epoch(self.start)

    def on_epoch_end(self, state: Any) -> None:
        self.sampler.set_epoch(self.start + state.epoch + 1)


def barrier() -> None:
    """Wait for every rank (no-op outside a distributed run)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
