"""Progress for long work (generation, scoring, encoding, training) and prefopt's logging.

On a terminal a rich bar shows progress; when stderr is not a terminal (SLURM, nohup, a pipe), a bar would
write nothing until it ends, so a plain line is logged instead every ``PLAIN_INTERVAL_S`` seconds and at
the end: ``prefopt: generating V_s (base): 12/100 (12%), 0:03:10 elapsed, ~0:23:14 left``.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import sys
import threading
import time
from collections.abc import Iterator

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

logger = logging.getLogger("prefopt")
PLAIN_INTERVAL_S = 30.0
_interrupted = False
_kept_unraised = False  # asked for while forking and not raised since


_forking = 0  # > 0 while os.fork runs its at-fork hooks, where Python would drop (and print) a KeyboardInterrupt
_fork_hooks_registered = False


def _enter_fork() -> None:
    global _forking
    _forking += 1


def _leave_fork() -> None:
    global _forking
    _forking = max(0, _forking - 1)


def _child_after_fork() -> None:
    global _forking
    _forking = 0


# A ctrl-C can land inside these hooks before the count goes up or after it went down (seen in CI: at the first
# instruction of the `before` hook); the handler recognises their frames too.
_FORK_HOOK_CODES = frozenset(hook.__code__ for hook in (_enter_fork, _leave_fork, _child_after_fork))


def _inside_fork_window(frame) -> bool:
    """Whether a ctrl-C handled in ``frame`` is inside an at-fork hook: counted, or in one of ours, or in a tracer or
    profiler (coverage, a debugger) called from one of ours."""
    for _ in range(3):
        if _forking > 0 or (frame is not None and frame.f_code in _FORK_HOOK_CODES):
            return True
        frame = frame.f_back if frame is not None else None
    return False


def _register_fork_window() -> None:
    """Count the at-fork window so that a ctrl-C landing there is kept rather than raised. Registered once, after
    filelock (whose hooks are the ones seen to run, via huggingface_hub): at-fork ``before`` hooks run in reverse
    order of registration and ``after`` hooks in order, so ours enclose every hook registered before them."""
    import os

    global _fork_hooks_registered
    if _fork_hooks_registered or not hasattr(os, "register_at_fork"):
        return
    with contextlib.suppress(ImportError):  # not installed: it has no hooks to enclose
        import filelock  # noqa: F401  (registers its hooks at import; ours must come later)
    os.register_at_fork(before=_enter_fork, after_in_parent=_leave_fork, after_in_child=_child_after_fork)
    _fork_hooks_registered = True


@contextlib.contextmanager
def catching_interrupts() -> Iterator[None]:
    """Make ctrl-C stop prefopt cleanly. Python drops, with a printed traceback, a KeyboardInterrupt raised inside
    an at-fork hook (a ctrl-C while ``os.fork`` runs the hooks libraries such as filelock register): there the
    request is only kept, and the next step of progress, the next stage, or the end of the block raises it. Hooks
    registered after the first block entered are not enclosed. The previous handler is back afterwards."""
    import signal

    global _interrupted, _kept_unraised

    def interrupt(signum, frame) -> None:
        global _interrupted, _kept_unraised
        _interrupted = True
        if _inside_fork_window(frame):
            _kept_unraised = True
        else:
            raise KeyboardInterrupt

    _interrupted = _kept_unraised = False
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    _register_fork_window()
    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        yield
        if _kept_unraised:  # asked for while forking, after the last step of progress
            raise KeyboardInterrupt
    finally:
        signal.signal(signal.SIGINT, previous)
        _interrupted = _kept_unraised = False  # handled (or never asked for): progress outside the block runs on


def raise_if_interrupted() -> None:
    global _kept_unraised
    if _interrupted:
        _kept_unraised = False
        raise KeyboardInterrupt


LOGGERS = ("prefopt", "prefopt_plugins", "prefopt_recipes")


def configure_logging(debug: bool = False) -> None:
    """prefopt's loggers print to stderr as ``prefopt: message`` (the CLI calls this once)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("prefopt: %(message)s"))
    for name in LOGGERS:
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(logging.DEBUG if debug else logging.INFO)
    if not debug:
        for name, words in THIRD_PARTY_NOISE:
            logging.getLogger(name).addFilter(lambda record, words=words: words not in str(record.msg))


# Notices other libraries print at import that say nothing about the user's run: torchao (the fp8 extra) makes torch
# warn about torchao's own enums, and diffusers about torchao classes it looks for (both shown with --debug).
THIRD_PARTY_NOISE = (("torch.utils._pytree", "is an Enum subclass and is now natively supported"),
                     ("diffusers.quantizers.torchao.torchao_quantizer", "Unable to import `torchao` Tensor objects"))


def _format_fields(fields: dict[str, object]) -> str:
    return "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())


class _Bar:
    def __init__(self, progress: Progress | None, task: int | None):
        self._progress, self._task = progress, task

    def advance(self, amount: int = 1, **fields: object) -> None:
        raise_if_interrupted()
        if self._progress is not None:
            self._progress.update(self._task, advance=amount, info=_format_fields(fields))


class _PlainLines:
    """Progress as log lines at a steady interval, for logs that are files."""

    def __init__(self, description: str, total: int, completed: int, interval: float):
        self.description, self.total, self.done, self.interval = description, total, completed, interval
        self.initial = completed  # work done before this process (a resume): not part of its rate
        self.started = self.last = time.monotonic()
        self.info = ""

    def advance(self, amount: int = 1, **fields: object) -> None:
        raise_if_interrupted()
        self.done += amount
        self.info = _format_fields(fields)
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self.emit()

    def emit(self) -> None:
        elapsed = time.monotonic() - self.started
        percent = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        left = (f", ~{datetime.timedelta(seconds=round((self.total - self.done) / rate))} left"
                if rate > 0 and self.done < self.total else "")
        info = f"  {self.info}" if self.info else ""
        logger.info("%s: %d/%d%s, %s elapsed%s%s", self.description, self.done, self.total, percent,
                    datetime.timedelta(seconds=round(elapsed)), left, info)


@contextlib.contextmanager
def progress_bar(description: str, total: int, enabled: bool = True, completed: int = 0) -> Iterator[_Bar | _PlainLines]:
    """A progress bar with elapsed and remaining time; ``advance(**metrics)`` shows the latest metrics.
    Without a terminal: plain log lines every ``PLAIN_INTERVAL_S`` seconds and one at the end."""
    if not enabled:
        yield _Bar(None, None)
        return
    if not sys.stderr.isatty():
        plain = _PlainLines(description, total, completed, PLAIN_INTERVAL_S)
        yield plain
        plain.emit()
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
