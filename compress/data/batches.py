"""Endless, seeded, resumable training batches: each process's share of one global sample order."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from compress.data.datasets import collate


class GlobalOrderSampler(Sampler[int]):
    """This rank's slice of a seeded, endless sample order, starting at a given step.

    Global step s covers positions [s·B, (s+1)·B) of the concatenated per-epoch permutations;
    rank r takes the r-th of ``world`` equal slices. The order depends only on the seed and the
    global batch, so a resumed run and a DDP run see exactly what a single process would.
    """

    def __init__(
        self, n: int, global_batch: int, seed: int, rank: int, world: int, start_step: int
    ) -> None:
        self.n, self.global_batch, self.seed = n, global_batch, seed
        self.rank, self.world, self.start_step = rank, world, start_step
        self.local = global_batch // world

    def _perm(self, epoch: int) -> torch.Tensor:
        return torch.randperm(
            self.n, generator=torch.Generator().manual_seed(self.seed * 100003 + epoch)
        )

    def __iter__(self) -> Iterator[int]:
        cached = (-1, None)
        for step in itertools.count(self.start_step):
            first = step * self.global_batch + self.rank * self.local
            for pos in range(first, first + self.local):
                epoch = pos // self.n
                if cached[0] != epoch:
                    cached = (epoch, self._perm(epoch))
                yield int(cached[1][pos % self.n])


def batch_stream(
    dataset: Dataset,
    global_batch: int,
    seed: int,
    rank: int,
    world: int,
    start_step: int,
    num_workers: int = 0,
) -> Iterator[dict]:
    """Endless batches of this rank's share, resumable at ``start_step``."""
    local = global_batch // world
    if isinstance(dataset, IterableDataset):  # webdataset shards: each rank streams its own shards
        skip = start_step
        for epoch in itertools.count():
            dataset.set_epoch(epoch)
            loader = DataLoader(
                dataset,
                batch_size=local,
                collate_fn=collate,
                num_workers=num_workers,
                drop_last=True,
            )
            for batch in loader:
                if skip:
                    skip -= 1
                    continue
                yield batch
    else:
        sampler = GlobalOrderSampler(len(dataset), global_batch, seed, rank, world, start_step)
        yield from DataLoader(
            dataset, batch_size=local, sampler=sampler, collate_fn=collate, num_workers=num_workers
        )
