"""The recipe under `accelerate launch` / `torchrun`: shard generation and scoring, do the rest once.

Every process runs every stage (the trainer needs them all); generation and scoring jobs are split by
rank, each process appends its own part files to the repository (distinct names, so nothing collides),
and a barrier follows. Work that must happen once (static videos, prompts, selection, evaluation
tables, the report, the stage state file) runs on the main process while the others wait.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TypeVar

T = TypeVar("T")


def _state():
    from accelerate import PartialState

    from prefopt.lora_trainer import cpu_only

    return PartialState(cpu=cpu_only())


def world() -> tuple[int, int]:
    """(rank, number of processes); (0, 1) when not launched with several processes."""
    state = _state()
    return state.process_index, state.num_processes


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if world()[1] > 1:
        _state().wait_for_everyone()


def shard(items: Sequence[T]) -> list[T]:
    """This process's share: every world-th item starting at its rank."""
    rank, size = world()
    return list(items[rank::size])


@contextlib.contextmanager
def main_first() -> Iterator[bool]:
    """Run the body on the main process only; every process waits until it is done."""
    try:
        yield is_main()
    finally:
        barrier()
