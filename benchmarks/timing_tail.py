"""List every timing endpoint of a routed build that misses (or nearly misses) its clock.

nextpnr's reports name one critical path per clock; each cut of that path so far uncovered
another of about the same length (docs/BUILD.md). ``python -m specbp_hw.build`` asks nextpnr
for its detailed JSON report, which holds every endpoint's arrival time after routing; this
script ranks the endpoints, grouped by register or by block and port kind
(:mod:`specbp_hw.timing_report`), so that one build shows the whole tail a clock has to
clear. Rerun:

    python benchmarks/timing_tail.py build/ulx3s-85f/top.report.json
    python benchmarks/timing_tail.py build/ulx3s-85f/top.report.json --margin 1.0 --top 60

"over": endpoints whose arrival exceeds the period; "near": within ``--margin`` of it. A
block RAM's or DSP block's input has a setup time that the arrival does not include.
"""

import argparse
import json
import sys
from pathlib import Path

from specbp_hw.timing_report import endpoint_groups


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python benchmarks/timing_tail.py",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("report", help="nextpnr's JSON report (top.report.json)")
    ap.add_argument("--clock", help="clock net name (default: the report's slowest)")
    ap.add_argument("--margin", type=float, default=0.5, metavar="NS",
                    help="also list groups within this much of the period (default 0.5)")
    ap.add_argument("--top", type=int, default=40, metavar="N",
                    help="groups to list at most (default 40)")
    args = ap.parse_args(argv)
    try:
        report = json.loads(Path(args.report).read_text())
    except OSError as e:
        print(f"error: cannot read {args.report}: {e.strerror}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as e:
        print(f"error: {args.report} is not JSON ({e.msg} at line {e.lineno}): give the "
              f"top.report.json nextpnr wrote in the build directory", file=sys.stderr)
        return 2
    fmax = report.get("fmax") if isinstance(report, dict) else None
    if not fmax:
        print(f"error: {args.report} is not a nextpnr report with a clock (no 'fmax')",
              file=sys.stderr)
        return 2
    clock = args.clock or min(fmax, key=lambda c: fmax[c]["constraint"])
    if clock not in fmax:
        print(f"error: no clock {clock!r} in the report; it has {', '.join(fmax)}",
              file=sys.stderr)
        return 2
    groups = endpoint_groups(report, clock)
    if groups is None:
        print(f"error: {args.report} has no per-endpoint timing: nextpnr wrote it without "
              f"--detailed-timing-report; rebuild with python -m specbp_hw.build",
              file=sys.stderr)
        return 2
    period = 1000.0 / fmax[clock]["constraint"]
    ranked = sorted(groups.items(), key=lambda kv: -max(kv[1]))
    total = sum(len(v) for v in groups.values())
    over = sum(1 for v in groups.values() for t in v if t > period)
    print(f"clock {clock}: {period:.2f} ns ({1000 / period:g} MHz), achieved "
          f"{fmax[clock]['achieved']:.2f} MHz; {total} endpoints in {len(groups)} groups, "
          f"{over} endpoints in {sum(1 for v in groups.values() if max(v) > period)} groups "
          f"over the period")
    print(f"{'latest ns':>9s} {'over':>5s} {'near':>5s} {'of':>5s}  group")
    for group, times in ranked[:args.top]:
        if max(times) <= period - args.margin:
            break
        n_over = sum(1 for t in times if t > period)
        n_near = sum(1 for t in times if period - args.margin < t <= period)
        print(f"{max(times):9.2f} {n_over:5d} {n_near:5d} {len(times):5d}  {group}")
    return 0


if __name__ == "__main__":
    from specbp_hw.cli import run
    run(main)
