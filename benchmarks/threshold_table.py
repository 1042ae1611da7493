"""The paper's threshold table: acceptance rate and test accuracy against the threshold.

Trains the golden model (float64 by default, ``--arith fixed`` for the bit-exact one) for
``--epochs`` epochs at each threshold with several seeds and prints, per threshold, the fraction
of training steps whose speculation was accepted (over all epochs), the test accuracy after the
last epoch (mean ± sample sd over seeds) and its difference to the serial run (threshold 0) of
the same seed. Also prints the largest speculation distance seen, mean |y_stash - y|, which can
never exceed 0.2 for 10 classes. Rerun:

    python benchmarks/threshold_table.py --data ../shared/mnist --json thresholds.json
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time

import numpy as np

from golden.config import TrainConfig
from golden.fixed_model import FixedArith
from golden.float_model import FloatArith
from golden.train import train
from specbp_hw.data import resolve

THRESHOLDS = "0,0.005,0.01,0.02,0.05,0.1,0.2,0.25"
_DATA = None


def _init(data_dir):
    global _DATA
    _DATA = resolve(data_dir)


def _run(job):
    arith_name, thr, seed, epochs = job
    cfg = TrainConfig(threshold=thr, seed=seed, epochs=epochs)
    arith = FloatArith(cfg) if arith_name == "float" else FixedArith(cfg)
    # Record the largest distance the compare sees (the metric's observed range).
    seen = [0.0]
    accept = arith.accept

    def spy(y_stash, y, threshold):
        d = np.abs(y_stash - y).mean(axis=1)
        if arith_name == "fixed":
            d = d * 2.0 ** -arith.fmt.prob_frac
        seen[0] = max(seen[0], float(d.max()))
        return accept(y_stash, y, threshold)

    arith.accept = spy
    r = train(arith, cfg, _DATA)
    accepted = sum(e.accepted for e in r.epochs) / epochs
    return job, r.epochs[-1].test_accuracy, accepted, seen[0]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", metavar="DIR")
    p.add_argument("--arith", choices=("float", "fixed"), default="float")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--thresholds", default=THRESHOLDS)
    p.add_argument("--jobs", type=int, default=os.cpu_count())
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    thresholds = [float(t) for t in args.thresholds.split(",")]
    if 0.0 not in thresholds:
        thresholds.insert(0, 0.0)
    print(f"data: {resolve(args.data).source}", flush=True)
    jobs = [(args.arith, t, s, args.epochs) for t in thresholds for s in seeds]
    res = {}
    t0 = time.time()
    with mp.Pool(args.jobs, initializer=_init, initargs=(args.data,)) as pool:
        for job, acc, accepted, dmax in pool.imap_unordered(_run, jobs):
            res[job[1], job[2]] = (acc, accepted, dmax)
            print(f"  thr {job[1]:<6} seed {job[2]}: {100 * acc:.2f}% accepted "
                  f"{100 * accepted:.1f}% [{time.time() - t0:.0f} s]", file=sys.stderr,
                  flush=True)
    print(f"\n{args.arith} model, {args.epochs} epochs, seeds {args.seeds}; accuracy mean ± sd, "
          f"change vs serial of the same seed\n")
    print("| threshold | accepted steps | test accuracy | vs serial | max distance seen |")
    print("|---|---|---|---|---|")
    rows = []
    for t in thresholds:
        accs = [res[t, s][0] for s in seeds]
        acc_rate = statistics.mean(res[t, s][1] for s in seeds)
        diff = statistics.mean(res[t, s][0] - res[0.0, s][0] for s in seeds)
        dmax = max(res[t, s][2] for s in seeds)
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        rows.append({"threshold": t, "accepted": acc_rate, "test_accuracy_mean":
                     statistics.mean(accs), "test_accuracy_sd": sd, "vs_serial": diff,
                     "max_distance": dmax, "per_seed": accs})
        print(f"| {t:g} | {100 * acc_rate:.1f}% | {100 * statistics.mean(accs):.2f} ± "
              f"{100 * sd:.2f}% | {100 * diff:+.2f} pp | "
              + ("—" if t == 0 else f"{dmax:.4f}") + " |")
    print(f"\n{len(jobs)} runs in {time.time() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"arith": args.arith, "epochs": args.epochs, "seeds": seeds,
                       "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
