"""Precision study: fixed-point formats against the float64 model, serial and speculative.

For each format (weights / activations / deltas / update-gradient widths, rounding mode) trains
the bit-exact fixed-point model for ``--epochs`` epochs with several seeds in both schedules
(threshold 0 and ``--threshold``), and the float64 model with the same seeds; prints a Markdown
table of final test accuracy (mean and sample standard deviation over seeds) and the gap to float
(mean over seeds of fixed minus float, same seed). Rerun:

    python benchmarks/precision_study.py --data ../shared/mnist --json precision.json
    python benchmarks/precision_study.py --data ../shared/mnist --layers 49,8,10 \
        --json precision_pool7.json       # the pooled network of the iCEBreaker's presets
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time

from golden.config import TrainConfig
from golden.fixed import FixedFormat, Q
from golden.fixed_model import FixedArith
from golden.float_model import FloatArith
from golden.train import train
from specbp_hw.data import resolve
from specbp_hw.presets import parse_layers

D = FixedFormat()
FORMATS = {
    "default: W16.13 A16.9 D16.12 U16.12 nearest": D,
    "W16.13 stochastic": D.replace(rounding="stochastic"),
    "W18.15 nearest": D.replace(weight=Q(18, 15)),
    "W18.15 stochastic": D.replace(weight=Q(18, 15), rounding="stochastic"),
    "W14.11 nearest": D.replace(weight=Q(14, 11)),
    "W14.11 stochastic": D.replace(weight=Q(14, 11), rounding="stochastic"),
    "W12.9 stochastic": D.replace(weight=Q(12, 9), rounding="stochastic"),
    "A12.5": D.replace(act=Q(12, 5)),
    "A16.8": D.replace(act=Q(16, 8)),
    "D12.9": D.replace(delta=Q(12, 9)),
    "D12.11": D.replace(delta=Q(12, 11)),
    "U12.8": D.replace(update=Q(12, 8)),
    # Every format narrower at once (FixedFormat.uniform): what a smaller part would build.
    "all 14 bits": FixedFormat.uniform(14),
    "all 12 bits": FixedFormat.uniform(12),
    "all 11 bits": FixedFormat.uniform(11),
    "all 10 bits": FixedFormat.uniform(10),
    "all 10 bits stochastic": FixedFormat.uniform(10, rounding="stochastic"),
    "all 10 bits but W14.11": FixedFormat.uniform(10, weight=Q(14, 11)),
    "all 10 bits but W12.9": FixedFormat.uniform(10, weight=Q(12, 9)),
    # The precision q9w14 (preset pool7-q9, the iCEBreaker's).
    "all 9 bits but W14.11 U10.6": FixedFormat.uniform(9, weight=Q(14, 11), update=Q(10, 6)),
    "all 8 bits but W14.11 U10.6": FixedFormat.uniform(8, weight=Q(14, 11), update=Q(10, 6)),
}

# Controls: float64 again with every initial weight moved by a constant. 1e-9 shows how far two
# runs drift when their arithmetic differs at all; 1e-4 (about one LSB of s2.13) how far an
# unbiased perturbation of quantisation size alone moves the final accuracy.
CONTROLS = {"control: float, init + 1e-9": 1e-9, "control: float, init + 1e-4": 1e-4}
_DATA = None


class _PerturbedFloat(FloatArith):
    def __init__(self, cfg, eps):
        super().__init__(cfg)
        self.eps = eps

    def init_params(self, cfg):
        return [(w + self.eps, b) for w, b in super().init_params(cfg)]


def _run(job):
    name, thr, seed, epochs, layers = job
    cfg = TrainConfig(layers=layers, threshold=thr, seed=seed, epochs=epochs)
    if name == "float":
        arith = FloatArith(cfg)
    elif name in CONTROLS:
        arith = _PerturbedFloat(cfg, CONTROLS[name])
    else:
        arith = FixedArith(cfg, FORMATS[name])
    r = train(arith, cfg, _DATA)
    return job, r.epochs[-1].test_accuracy, sum(e.accepted for e in r.epochs) / epochs


def _init(data_dir, inputs):
    global _DATA
    _DATA = resolve(data_dir).for_inputs(inputs)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", metavar="DIR")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threshold", type=float, default=0.25)
    p.add_argument("--formats", help="comma-separated subset of the format names")
    p.add_argument("--layers", default="784,16,16,10",
                   help="layer sizes (default the paper's); fewer inputs than 784 pool the "
                        "images (49: 7x7, the pool7 preset's)")
    p.add_argument("--jobs", type=int, default=os.cpu_count())
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    names = list(CONTROLS) + (list(FORMATS) if not args.formats else args.formats.split(","))
    layers = parse_layers(args.layers)
    print(f"data: {resolve(args.data).for_inputs(layers[0]).source}", flush=True)
    print(f"network: {'-'.join(map(str, layers))}", flush=True)
    jobs = [(n, thr, s, args.epochs, layers) for n in ["float"] + names
            for thr in (0.0, args.threshold) for s in seeds]
    t0 = time.time()
    res = {}
    with mp.Pool(args.jobs, initializer=_init, initargs=(args.data, layers[0])) as pool:
        for job, acc, accepted in pool.imap_unordered(_run, jobs):
            res[job[:3]] = (acc, accepted)
            print(f"  {job[0]:48s} thr {job[1]:<5} seed {job[2]}: {100 * acc:.2f}%  "
                  f"[{time.time() - t0:.0f} s]", file=sys.stderr, flush=True)

    def stats(name, thr):
        accs = [res[name, thr, s][0] for s in seeds]
        gaps = [res[name, thr, s][0] - res["float", thr, s][0] for s in seeds]
        sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
        return statistics.mean(accs), sd, statistics.mean(gaps), min(gaps)

    print(f"\nTest accuracy after {args.epochs} epochs, seeds {args.seeds} "
          f"(mean ± sd; gap = fixed - float, same seed, mean [worst])\n")
    print(f"| format | serial | gap | speculative (thr {args.threshold}) | gap |")
    print("|---|---|---|---|---|")
    table = []
    for name in ["float"] + names:
        row = {"format": name}
        cells = []
        for key, thr in (("serial", 0.0), ("speculative", args.threshold)):
            m, sd, gap, worst = stats(name, thr)
            row[key] = {"mean": m, "sd": sd, "gap_mean": gap, "gap_worst": worst,
                        "per_seed": [res[name, thr, s][0] for s in seeds]}
            cells += [f"{100 * m:.2f} ± {100 * sd:.2f}",
                      "—" if name == "float" else f"{100 * gap:+.2f} [{100 * worst:+.2f}]"]
        table.append(row)
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\n{len(jobs)} runs in {time.time() - t0:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"layers": list(layers), "epochs": args.epochs, "seeds": seeds,
                       "threshold": args.threshold,
                       "rows": table}, f, indent=2)


if __name__ == "__main__":
    main()
