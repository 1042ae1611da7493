"""Resources, Fmax and projected epoch times of every board's build, as a Markdown table.

Builds each board of ``boards/`` with its own preset and clock (``python -m specbp_hw.build
--board NAME``), one after the other (one synthesis or place-and-route at a time), and prints
one row per board: device, preset, top (``link``: the core behind the UART host link; ``core``:
the measurement wrapper), LUTs (iCE40: logic cells), flip-flops, block RAMs, DSPs,
the Fmax nextpnr achieved against the target, cycles per training sample and the projected
60,000-sample epoch (batch 15, every speculation accepted) at that Fmax for each schedule.
Rerun:

    python benchmarks/board_table.py                  # build every board (minutes to an hour)
    python benchmarks/board_table.py --reuse          # use build/BOARD/report.json if present
    python benchmarks/board_table.py --force          # also run what the fit check refuses
    python benchmarks/board_table.py --boards icebreaker ulx3s-25f --seed 2
    python benchmarks/board_table.py --boards ulx3s-85f:paper-skip@100   # another preset, clock

A board given as ``BOARD:PRESET[@MHZ]`` is built with that preset (and target clock) instead
of its own, in ``build/BOARD-PRESET[-MHZ]``.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

from specbp_hw.boards import load_boards

SCHEDULES = ("serial", "speculative", "pipelined")


def parse_entry(entry):
    """``(board, preset or None, clock MHz or None, directory name)`` of a ``--boards`` entry,
    ``BOARD`` or ``BOARD:PRESET[@MHZ]``."""
    board, colon, variant = entry.partition(":")
    preset, at, clock = variant.partition("@")
    if not board or (colon and not preset) or (at and not _is_number(clock)):
        raise SystemExit(f"error: bad board entry {entry!r}; use BOARD or BOARD:PRESET[@MHZ]")
    name = "-".join(x for x in (board, preset, clock) if x)
    return board, preset or None, float(clock) if clock else None, name


def _is_number(text):
    try:
        return float(text) > 0
    except ValueError:
        return False


def build_board(entry, out_root, seed, reuse, force):
    """The report of ``entry``'s build (a dict), building it unless ``reuse`` finds one."""
    board, preset, clock, name = parse_entry(entry)
    out = Path(out_root) / name
    report = out / "report.json"
    if reuse and report.exists():
        return json.loads(report.read_text())
    cmd = [sys.executable, "-m", "specbp_hw.build", "--board", board, "--seed", str(seed),
           "--out", str(out), "--json", str(report)] + (["--force"] if force else [])
    cmd += ["--preset", preset] if preset else []
    cmd += ["--clock", f"{clock:g}"] if clock else []
    print(f"building {entry} ...", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        msg = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(msg, file=sys.stderr)
        return {"board": entry, "error": msg.removeprefix("error: ")}
    return json.loads(report.read_text())


def row(r):
    if "error" in r:
        error = r["error"].replace("|", "\\|")    # nextpnr's region text has a pipe
        return f"| {r['board']} | build failed: {error} |" + " |" * 10
    u = r["utilization"]

    def use(key):
        return f"{u[key]['used']} / {u[key]['available']}" if key in u else "-"

    met = "" if r["timing_met"] else " (fails)"
    cps = " / ".join(f"{r['cycles_per_sample'][s]:g}" for s in SCHEDULES)
    epoch = " / ".join(f"{r['projected_epoch_seconds'][s]:.3f}" for s in SCHEDULES)
    layers = "-".join(map(str, r["layers"]))
    return (f"| {r['board']} | {r['device']} | {r['preset']} ({layers}, "
            f"{r['inputs']}x{r['lanes']}) | {r.get('top', 'core')} | {use('logic')} | {use('ff')} | {use('bram')} | "
            f"{use('dsp')} | {r['fmax_mhz']:.1f}{met} / {r['target_mhz']:g} | {cps} | {epoch} | "
            f"{r['build_seconds']['total'] / 60:.1f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--boards", nargs="*", metavar="BOARD[:PRESET[@MHZ]]",
                   help="boards to build (default: all, each with its own preset and clock)")
    p.add_argument("--out", default="build", help="build root (default build/)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--reuse", action="store_true",
                   help="reuse build/BOARD/report.json where it exists")
    p.add_argument("--force", action="store_true",
                   help="run the tools even where the fit check refuses (to measure by how "
                   "much a part is exceeded)")
    args = p.parse_args()
    boards = args.boards or list(load_boards())
    for b in boards:
        parse_entry(b)                  # every entry checked before the first build
    reports = [build_board(b, args.out, args.seed, args.reuse, args.force) for b in boards]
    print("| board | device | preset (network, K x N) | top | LUTs (iCE40: LCs) | FFs | "
          "block RAM | DSP | Fmax / target MHz | cycles per sample (serial / speculative / "
          "pipelined) | epoch s at Fmax (serial / speculative / pipelined) | build min |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in reports:
        print(row(r))
    return 0 if all("error" not in r for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
