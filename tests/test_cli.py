"""What the command-line programs share: a reader that stops early ends them quietly.

(``--help`` is not a case: argparse already ignores a failed write of its help. The host program
needs a port to print anything; it exits through the same ``specbp_hw.cli.run``.)"""

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("argv", [
    ["specbp_hw.build", "--list"],
    ["specbp_hw.data", "info"],
    ["specbp_hw.sim", "--train", "2", "--test", "1", "--schedule", "serial", "--backend", "pysim",
     "--no-progress"],
])
def test_closed_stdout_ends_quietly(argv):
    """As ``| head -1`` does once it has its line: the pipe's reader is gone before the
    program writes, so its first flush of stdout fails with EPIPE; it exits with status 1 and
    says nothing (no traceback, no "Exception ignored")."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", *argv], stdout=write_end,
                              stderr=subprocess.PIPE, timeout=120)
    finally:
        os.close(write_end)
    assert proc.stderr.decode() == ""
    assert proc.returncode == 1
