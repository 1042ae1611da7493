"""Simulation speed of the training core: CXXRTL against Amaranth's simulator, side by side.

    python benchmarks/sim_speed.py [--data DIR] [--samples N] [--pysim-samples N] [--repeat R]
                                   [--cold] [--epoch]

Both simulators run the paper configuration (784-16-16-10, 16 MACs per engine) on the same
MNIST samples from the same initial weights; the figure is simulated clock cycles per second of
wall time for the streaming run itself (build and checks excluded), median of ``--repeat``
runs. ``--cold`` builds the CXXRTL simulation into an empty cache and reports the build time.
``--epoch`` then trains one full epoch of the training set in each schedule through
``python -m specbp_hw.sim`` machinery (no per-batch check) and reports its wall time.
"""

import argparse
import statistics
import sys
import tempfile
import time

from golden.config import TrainConfig
from golden.fixed_model import FixedArith
from specbp_hw.backends import CxxrtlTrainer, train_pysim
from specbp_hw.data import resolve
from specbp_hw.params import CoreParams


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", metavar="DIR")
    ap.add_argument("--samples", type=int, default=300, help="CXXRTL samples per schedule")
    ap.add_argument("--pysim-samples", type=int, default=20, help="pysim samples (serial)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="build into an empty cache")
    ap.add_argument("--epoch", action="store_true", help="also run a full epoch per schedule")
    args = ap.parse_args()

    p = CoreParams()
    data = resolve(args.data)
    print(f"data: {data.source}")
    cfg = TrainConfig(layers=p.layers, lr=p.lr, clip=p.clip, threshold=0.25, epochs=1)
    init = FixedArith(cfg, p.fmt).init_params(cfg)
    cache = tempfile.mkdtemp(prefix="specbp-cold-") if args.cold else None
    t0 = time.perf_counter()
    trainer = CxxrtlTrainer(p, cache_dir=cache)
    build = time.perf_counter() - t0
    print(f"CXXRTL build: {build:.1f} s ({'cache hit' if trainer.cache_hit else 'cold'})")
    thr = {"serial": 0, "speculative": p.fmt.threshold_int(0.25, p.classes), "pipelined": 0}

    def cx_rate(schedule, n):
        d = data.subset(train=n, test=0)
        rates = []
        for _ in range(args.repeat):
            run = trainer.train(init, d.train_images, d.train_labels, schedule=schedule,
                                threshold=thr[schedule], batch=15)
            rates.append(run.sim_cycles / run.sim_seconds)
        return run, statistics.median(rates)

    rows = []
    for schedule in ("serial", "speculative", "pipelined"):
        run, rate = cx_rate(schedule, args.samples)
        rows.append((schedule, run.sim_cycles, rate))
        print(f"cxxrtl {schedule:<12} {args.samples} samples, {run.sim_cycles:,} cycles: "
              f"{rate:,.0f} cycles/s (median of {args.repeat})", flush=True)
    d = data.subset(train=args.pysim_samples, test=0)
    py = []
    for _ in range(args.repeat):
        run = train_pysim(p, init, d.train_images, d.train_labels, schedule="serial",
                          threshold=0, batch=15)
        py.append(run.sim_cycles / run.sim_seconds)
    py_rate = statistics.median(py)
    print(f"pysim  serial       {args.pysim_samples} samples, {run.sim_cycles:,} cycles: "
          f"{py_rate:,.0f} cycles/s (median of {args.repeat}, elaboration excluded)")
    cx_serial = rows[0][2]
    print(f"\nCXXRTL / pysim (serial schedule): {cx_serial / py_rate:,.0f}x")
    if args.epoch:
        n = len(data.train_labels)
        total = build
        for schedule in ("serial", "speculative", "pipelined"):
            t = time.perf_counter()
            run = trainer.train(init, data.train_images, data.train_labels, schedule=schedule,
                                threshold=thr[schedule], batch=15)
            dt = time.perf_counter() - t
            total += dt
            print(f"epoch {schedule:<12} {n} samples, {run.sim_cycles:,} cycles in {dt:.1f} s "
                  f"({run.sim_cycles / run.sim_seconds:,.0f} cycles/s)", flush=True)
        print(f"full epoch, all three schedules, build included: {total:.1f} s")
    trainer.close()


if __name__ == "__main__":
    sys.exit(main())
