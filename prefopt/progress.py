"""Progress bars (rich) for long work: generation, scoring, encoding, training."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None):
        self._progress, self._task = progress, task

    def advance(self, amount: int = 1, **fields: object) -> None:
        if self._progress is not None:
            info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
            self._progress.update(self._task, advance=amount, info=info)


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True, completed: int = 0) -> Iterator[_Bar]:
    """A progress bar with elapsed and remaining time; ``advance(**metrics)`` shows the latest metrics."""
    if not enabled:
        yield _Bar(None, None)
        return
    columns = [
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
    ]
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total, completed=completed, info="")
        yield _Bar(progress, task)


def quiet_third_party_progress() -> None:
    """The CLI shows its own bars; silence diffusers' and transformers' per-call loading bars."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
