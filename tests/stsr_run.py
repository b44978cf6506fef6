"""`stsr ARGS` run by stsr_core.cli.main inside the test process: the command's own code and
answer (exit status, stdout, stderr) without paying a new interpreter's torch import. Tests
of what only a real process shows (signals, locks, kill -9, launchers) start one instead."""
import contextlib
import io
import os

from stsr_core import cli


def main_here(*args, cwd):
    """``stsr ARGS`` in the folder ``cwd``: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main([str(a) for a in args])
            except SystemExit as exc:           # argparse: --help, a bad option
                code = exc.code
    finally:
        os.chdir(here)
    return code, out.getvalue(), err.getvalue()
