"""A simulated training epoch at a build's Fmax: the time a board's core takes for one epoch.

Reads a build report (``python -m specbp_hw.build --board NAME --json REPORT``), simulates one
epoch of the report's preset on a data set with the compiled simulator (``python -m
specbp_hw.sim``: every schedule, exact cycles, bit-exact checks after every batch unless
``--no-check``) and prints, per schedule, the epoch's cycles and its seconds at the report's
Fmax. Unlike the build's projection, which is one step's cycles times 60,000 (or, for a preset
that skips zero words, the cycle model over the built-in subset), these are the cycles of the
whole epoch as the RTL ran it. Rerun:

    python benchmarks/epoch_time.py build/ulx3s-85f/report.json --data ../shared/mnist
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

from specbp_hw import sim

SCHEDULES = ("serial", "speculative", "pipelined")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report", help="a build report (python -m specbp_hw.build --json FILE)")
    p.add_argument("--data", metavar="DIR", help="MNIST directory (default: the simulator's)")
    p.add_argument("--threshold", type=float, default=0.25,
                   help="speculation threshold (default 0.25, as in the paper)")
    p.add_argument("--train", type=int, metavar="N",
                   help="only the first N training samples (a shorter run)")
    p.add_argument("--no-check", action="store_true",
                   help="no bit-exact comparison with the fixed-point model")
    args = p.parse_args(argv)
    try:
        report = json.loads(Path(args.report).read_text())
        preset, fmax = report["preset"], float(report["fmax_mhz"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"error: {args.report} is not a build report with a preset and an Fmax ({e})",
              file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sim.json"
        argv = ["--preset", preset, "--threshold", str(args.threshold), "--json", str(out),
                "--no-progress", "--check" if not args.no_check else "--no-check"]
        if args.data:
            argv += ["--data", args.data]
        if args.train:
            argv += ["--train", str(args.train)]
        status = sim.main(argv)
        if status != 0 or not out.exists():
            print("error: the simulation failed (see above)", file=sys.stderr)
            return 1
        result = json.loads(out.read_text())
    print(f"\n{report['board']} ({report['device']}), preset {preset}, Fmax {fmax:.2f} MHz; "
          f"{result['train_samples']:,} samples of {result['data']}")
    print(f"{'schedule':<12}{'cycles':>14}{'cyc/sample':>12}{'epoch s':>10}{'bit-exact':>11}")
    for s in SCHEDULES:
        r = result["schedules"][s]
        exact = {True: "yes", False: "NO", None: "-"}[r["bit_exact"]]
        print(f"{s:<12}{r['cycles']:>14,}{r['cycles'] / result['train_samples']:>12.1f}"
              f"{r['cycles'] / (fmax * 1e6):>10.4f}{exact:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
