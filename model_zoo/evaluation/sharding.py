"""Which images this process evaluates: all of them, or under ``torchrun --nproc-per-node N``
(env ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK``) every N-th image still to do from its rank on."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

from .coco_data import CocoImage


@dataclass(frozen=True)
class Shard:
    rank: int
    world_size: int
    local_rank: int
    distributed: bool  # started by torchrun (its ranks meet at barriers, even with one rank)

    @classmethod
    def from_env(cls) -> Shard:
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return ONE_PROCESS
        return cls(
            rank=int(os.environ["RANK"]),
            world_size=int(os.environ["WORLD_SIZE"]),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            distributed=True,
        )

    def take(self, images: Sequence[CocoImage]) -> list[CocoImage]:
        """This rank's share: every ``world_size``-th image from ``rank``."""
        return list(images[self.rank :: self.world_size])


ONE_PROCESS = Shard(rank=0, world_size=1, local_rank=0, distributed=False)
