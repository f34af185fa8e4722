"""Progress that a terminal and a redirected log can both read, and ctrl-C that is never lost."""

import logging
import subprocess
import sys

import pytest


def test_progress_without_a_terminal_logs_plain_lines(monkeypatch, caplog):
    import io

    from prefopt import progress

    monkeypatch.setattr(progress.sys, "stderr", io.StringIO())  # not a terminal (a SLURM or nohup log)
    monkeypatch.setattr(progress, "PLAIN_INTERVAL_S", 0.0)
    with caplog.at_level(logging.INFO, logger="prefopt"), progress.progress_bar("generating", 4) as bar:
        for _ in range(4):
            bar.advance(loss=0.5)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("generating: 1/4 (25%), 0:00:00 elapsed, ~0:00:00 left  loss 0.5")
    assert lines[-1].startswith("generating: 4/4 (100%)") and len(lines) == 5


def test_plain_progress_after_a_resume_estimates_from_this_processs_rate(monkeypatch):
    from prefopt import progress

    clock = iter([0.0, 10.0, 10.0])  # the start; one advance 10 s later, and its line
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    lines = []
    monkeypatch.setattr(progress.logger, "info", lambda *args: lines.append(args[0] % args[1:]))
    plain = progress._PlainLines("training", total=100, completed=90, interval=5.0)
    plain.advance(1)  # 1 step in 10 s: 9 steps left ≈ 90 s (the 90 earlier steps must not count)
    assert lines == ["training: 91/100 (91%), 0:00:10 elapsed, ~0:01:30 left"]


def test_a_ctrl_c_python_drops_is_raised_at_the_next_step_of_progress():
    """Python swallows a KeyboardInterrupt raised in an at-fork hook (a ctrl-C while ffmpeg starts): the request is
    kept, and the next step of any progress raises it; the previous handler is back afterwards."""
    import signal

    from prefopt import progress

    before = signal.getsignal(signal.SIGINT)
    with progress.catching_interrupts():
        handler = signal.getsignal(signal.SIGINT)
        try:
            handler(signal.SIGINT, None)  # the interrupt, raised where Python drops it
        except KeyboardInterrupt:
            pass
        with pytest.raises(KeyboardInterrupt), progress.progress_bar("generating", 2) as bar:
            bar.advance()
    assert signal.getsignal(signal.SIGINT) is before
    with progress.progress_bar("after", 1) as bar:  # handled: later work is not stopped by it
        bar.advance()


def test_a_ctrl_c_during_an_at_fork_hook_stops_cleanly_without_a_printed_traceback(tmp_path):
    """A ctrl-C that lands in another library's at-fork hook (filelock's, seen in CI) is kept, not raised there
    (Python would print "Exception ignored" with a traceback and drop it), and raised when the block ends."""
    script = tmp_path / "fork.py"
    script.write_text(
        "import os, signal, sys\n"
        "os.register_at_fork(before=lambda: os.kill(os.getpid(), signal.SIGINT))  # a library's hook\n"
        "from prefopt import progress\n"
        "try:\n"
        "    with progress.catching_interrupts():\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            os._exit(0)\n"
        "        os.waitpid(pid, 0)\n"
        "        print('forked', flush=True)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n")
    _assert_kept_and_raised_after_the_fork(script)


@pytest.mark.parametrize("handled_in", ["frame", "sys._getframe()"], ids=["the hook", "a profiler inside the hook"])
def test_a_ctrl_c_at_the_first_instruction_of_prefopts_own_fork_hook_is_kept(tmp_path, handled_in):
    """The race seen in CI: the ctrl-C is handled inside prefopt's own `before` hook, before it has counted the fork.
    A profile function runs the installed handler at that hook's call, as the interpreter would: with the hook's
    frame, or (coverage or a debugger running) with the profiler's own frame, called from the hook's."""
    script = tmp_path / "fork.py"
    script.write_text(
        "import os, signal, sys\n"
        "from prefopt import progress\n"
        "def at_call(frame, event, arg):\n"
        "    if event == 'call' and frame.f_code is progress._enter_fork.__code__:\n"
        "        sys.setprofile(None)\n"
        f"        signal.getsignal(signal.SIGINT)(signal.SIGINT, {handled_in})\n"
        "try:\n"
        "    with progress.catching_interrupts():\n"
        "        sys.setprofile(at_call)\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            os._exit(0)\n"
        "        sys.setprofile(None)\n"
        "        os.waitpid(pid, 0)\n"
        "        print('forked', flush=True)\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', flush=True)\n")
    _assert_kept_and_raised_after_the_fork(script)


def _assert_kept_and_raised_after_the_fork(script) -> None:
    result = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["forked", "interrupted"], result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
