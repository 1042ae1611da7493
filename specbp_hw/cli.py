"""What the command-line programs share: how they exit."""

import os
import sys

__all__ = ["run"]


def run(main):
    """Exit with ``main()``'s status, quietly when stdout's reader has gone.

    A reader that stops early (``python -m specbp_hw.build --list | head -2``) closes the pipe,
    and the next write or the interpreter's last flush raises ``BrokenPipeError``: that is how
    the reader said it has enough, not an error of the program, so it ends with status 1 and
    no traceback (the recipe of the Python documentation's note on SIGPIPE).
    """
    try:
        try:
            status = main()
        finally:        # also after argparse's --help, which exits through SystemExit
            sys.stdout.flush()
    except BrokenPipeError:
        # stdout's flush at exit would raise again: point it at /dev/null first.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        status = 1
    sys.exit(status)
