"""``python -m specbp_hw.sim``: train the core cycle-accurately and compare the schedules.

For one hardware configuration and one data set, each schedule (serial, speculative, pipelined)
trains the RTL in a simulator; the run reports cycles, speedups, acceptance, the test accuracy
of the weights the RTL trained, the accuracy of the float golden model under the same
configuration and seed, and whether the RTL stayed bit-exact with the fixed-point model.

Checking (``--check``) runs the bit-exact fixed-point model alongside: every step's decision
(accepted / rejected / not attempted) and prediction, the weights after every complete batch
(read from the simulated weight memory while the run continues, without disturbing its timing)
and the final weights must be equal integers.
"""

import argparse
import hashlib
import json
import math
import os
import sys
import time

import numpy as np

from golden.config import TrainConfig
from golden.fixed_model import FixedArith
from golden.float_model import FloatArith
from golden.train import ACCEPTED, NOT_ATTEMPTED, REJECTED, evaluate, train

from .cycles import CycleModel, stored_words
from .data import DataError, resolve
from .params import SCHEDULES
from .presets import PRECISIONS, PRESETS, core_params, parse_layers

__all__ = ["main", "run_tasks"]

# Amaranth's simulator on the paper configuration, this machine (README, "Simulation speed");
# used only to estimate how long a pysim run would take before refusing it.
PYSIM_CYCLES_PER_SECOND = 2500
PYSIM_LIMIT_SECONDS = 600
# --check is on by default up to this many training steps (all epochs).
CHECK_DEFAULT_STEPS = 20_000


class UsageError(Exception):
    """A problem with the command line or the environment; one line for the user."""


# -- reference models ------------------------------------------------------------------------

def _digest(params):
    h = hashlib.sha256()
    for w, b in params:
        h.update(np.ascontiguousarray(w, np.int64).tobytes())
        h.update(np.ascontiguousarray(b, np.int64).tobytes())
    return h.digest()


def _golden_threshold(schedule, threshold):
    """The golden models' threshold for a schedule: 0 (never speculate) except for the
    speculative schedule. As in the core, threshold 0 never speculates."""
    return threshold if schedule == "speculative" else 0.0


def train_config(params, *, batch, threshold, epochs, seed):
    return TrainConfig(layers=params.layers, lr=params.lr, clip=params.clip, batch=batch,
                       threshold=threshold, epochs=epochs, seed=seed)


class Reference:
    """The fixed-point model's run of one schedule: decisions, predictions, per-batch digests."""

    def __init__(self, params, data, cfg):
        arith = FixedArith(cfg, params.fmt)
        self.init = arith.init_params(cfg)
        self.digests = []
        result = train(FixedArith(cfg, params.fmt), cfg, data, trace=True,
                       on_batch=lambda p: self.digests.append(_digest(p)))
        self.kinds = result.trace["kind"]
        self.predictions = result.trace["prediction"]
        self.params = result.params
        self.test_accuracy = result.epochs[-1].test_accuracy


def compare(run, ref):
    """First difference between an RTL run and the fixed-point model, or None."""
    if run.mismatch:
        return run.mismatch
    for what, a, b in (("decision", run.kinds, ref.kinds),
                       ("prediction", run.predictions, ref.predictions)):
        diff = np.flatnonzero(np.asarray(a) != np.asarray(b))
        if diff.size:
            i = int(diff[0])
            return f"{what} of step {i} differs: RTL {int(a[i])}, model {int(b[i])}"
    for l, ((w1, b1), (w2, b2)) in enumerate(zip(run.params, ref.params)):
        if not ((w1 == w2).all() and (b1 == b2).all()):
            n = int((w1 != w2).sum() + (b1 != b2).sum())
            return f"final weights of layer {l} differ in {n} places"
    return None


# -- one schedule ----------------------------------------------------------------------------

class Progress:
    """A one-line progress report on stderr for runs longer than a couple of seconds."""

    def __init__(self, label, total, enabled=True):
        self.label, self.total, self.enabled = label, total, enabled
        self.start = time.perf_counter()
        self.last = 0.0
        self.tty = sys.stderr.isatty()
        self.shown = False

    def __call__(self, done, cycles):
        now = time.perf_counter()
        elapsed = now - self.start
        if not self.enabled or elapsed < 2 or now - self.last < (0.5 if self.tty else 15):
            return
        self.last = now
        rate = done / elapsed
        eta = (self.total - done) / rate if rate else float("inf")
        width = 24
        filled = int(width * done / max(self.total, 1))
        line = (f"{self.label:<12} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} "
                f"samples, {rate:,.0f} samples/s, {cycles / elapsed:,.0f} cycles/s, "
                f"ETA {eta:,.0f} s")
        if self.tty:
            print("\r" + line, end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)
        self.shown = True

    def close(self):
        if self.shown and self.tty:
            print("\r" + " " * 100 + "\r", end="", file=sys.stderr, flush=True)


def run_schedule(trainer, backend, params, data, *, schedule, threshold, batch, epochs, seed,
                 check, vcd=None, progress=True, float_cache=None):
    """Train one schedule on the RTL; returns the report dict of that schedule."""
    from .backends import train_pysim
    gthr = _golden_threshold(schedule, threshold)
    cfg = train_config(params, batch=batch, threshold=gthr, epochs=epochs, seed=seed)
    init = FixedArith(cfg, params.fmt).init_params(cfg)
    ref = Reference(params, data, cfg) if check else None
    images, labels = data.train_images, data.train_labels
    reg = params.fmt.threshold_int(threshold, params.classes) if schedule == "speculative" else 0
    total = len(labels) * epochs
    bar = Progress(schedule, total, progress)
    fixed = FixedArith(cfg, params.fmt)
    epoch_acc = {}

    def on_epoch(e, got):
        epoch_acc[e] = evaluate(fixed, got, data.test_images, data.test_labels)

    if backend == "cxxrtl":
        def on_batch(b, got):
            if b < len(ref.digests) and _digest(got) != ref.digests[b]:
                return f"weights after batch {b} differ from the fixed-point model"
            return None
        run = trainer.train(init, images, labels, schedule=schedule, threshold=reg,
                            batch=batch, epochs=epochs, on_batch=on_batch if check else None,
                            on_epoch=on_epoch if epochs > 1 else None, vcd=vcd, progress=bar)
    else:
        run = train_pysim(params, init, images, labels, schedule=schedule, threshold=reg,
                          batch=batch, epochs=epochs, vcd=vcd[0] if vcd else None)
    bar.close()
    mismatch = compare(run, ref) if check else None
    rtl_acc = evaluate(fixed, run.params, data.test_images, data.test_labels)
    epoch_acc[epochs - 1] = rtl_acc
    key = (gthr, batch, epochs, seed)
    if float_cache is not None and key in float_cache:
        float_epochs = float_cache[key]
    else:
        fcfg = cfg.replace(threshold=gthr)
        float_epochs = [e.test_accuracy for e in train(FloatArith(fcfg), fcfg, data).epochs]
        if float_cache is not None:
            float_cache[key] = float_epochs
    float_acc = float_epochs[-1]
    kinds = np.asarray(run.kinds)
    steps = np.asarray(run.step_cycles)
    c = run.counters
    n = len(labels)
    per_epoch = [{
        "epoch": e + 1,
        "test_accuracy": epoch_acc.get(e),
        "float_test_accuracy": float_epochs[e],
        "step_cycles_mean": float(steps[e * n:(e + 1) * n].mean()),
        "accepted": int((kinds[e * n:(e + 1) * n] == ACCEPTED).sum()),
        "rejected": int((kinds[e * n:(e + 1) * n] == REJECTED).sum()),
    } for e in range(epochs)]

    def mean_of(kind):
        sel = kinds == kind
        return float(steps[sel].mean()) if sel.any() else None

    cycles = int(c["cycles"])
    return {
        "cycles": cycles,
        "samples": int(c["samples"]),
        "accepted": int(c["accepted"]),
        "rejected": int(c["rejected"]),
        "not_attempted": int((kinds == NOT_ATTEMPTED).sum()),
        "cycles_per_sample": cycles / max(int(c["samples"]), 1),
        "step_cycles_mean": {"accepted": mean_of(ACCEPTED), "rejected": mean_of(REJECTED),
                             "serial": mean_of(NOT_ATTEMPTED)},
        "acceptance_rate": int(c["accepted"]) / max(total, 1),
        "update_cycles": int(c["update_cycles"]),
        "fwd_busy": int(c["fwd_busy"]),
        "bwd_busy": int(c["bwd_busy"]),
        "utilization": {"forward": int(c["fwd_busy"]) / max(cycles, 1),
                        "backward": int(c["bwd_busy"]) / max(cycles, 1),
                        "update": int(c["update_cycles"]) / max(cycles, 1)},
        "test_accuracy": rtl_acc,
        "float_test_accuracy": float_acc,
        "fixed_test_accuracy": ref.test_accuracy if check else None,
        "bit_exact": (mismatch is None) if check else None,
        "mismatch": mismatch,
        "checked_batches": run.checked_batches,
        "threshold": threshold if schedule == "speculative" else 0.0,
        "threshold_register": reg,
        "sim_cycles": int(run.sim_cycles),
        "sim_seconds": run.sim_seconds,
        "sim_cycles_per_second": run.sim_cycles / run.sim_seconds if run.sim_seconds else None,
        "epochs": per_epoch,
    }


def run_tasks(trainer, backend, params, data, tasks, *, batch, epochs, seed, check, vcd=None,
              progress=True, jobs=1):
    """Run ``tasks`` (``(schedule, threshold)`` pairs); returns their reports in order.

    With ``jobs > 1`` (compiled backend only) the tasks run in that many worker processes on
    the same cached library; each report's simulation speed is its own process's.
    """
    def vcd_for(i, schedule):
        if vcd is None:
            return None
        unique = sum(t[0] == schedule for t in tasks) == 1
        label = schedule if unique else f"{schedule}-{tasks[i][1]:g}"
        path = vcd[0] if len(tasks) == 1 else _suffixed(vcd[0], label)
        return (path, *vcd[1:])

    common = dict(batch=batch, epochs=epochs, seed=seed, check=check)
    if jobs > 1 and backend == "cxxrtl" and len(tasks) > 1:
        import concurrent.futures
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")
        out = [None] * len(tasks)
        with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = {pool.submit(_worker, str(trainer.library_path), params, data, schedule,
                                   threshold, vcd_for(i, schedule), common): i
                       for i, (schedule, threshold) in enumerate(tasks)}
            for future in concurrent.futures.as_completed(futures):
                i = futures[future]
                out[i] = future.result()
                if progress:
                    print(f"{tasks[i][0]} (threshold {tasks[i][1]:g}) done: "
                          f"{out[i]['sim_cycles']:,} cycles in {out[i]['sim_seconds']:.1f} s",
                          file=sys.stderr, flush=True)
        return out
    float_cache = {}
    return [run_schedule(trainer, backend, params, data, schedule=schedule, threshold=threshold,
                         vcd=vcd_for(i, schedule), progress=progress, float_cache=float_cache,
                         **common)
            for i, (schedule, threshold) in enumerate(tasks)]


def _worker(library, params, data, schedule, threshold, vcd, common):
    from .backends import CxxrtlTrainer
    trainer = CxxrtlTrainer.from_library(params, library)
    try:
        return run_schedule(trainer, "cxxrtl", params, data, schedule=schedule,
                            threshold=threshold, vcd=vcd, progress=False, **common)
    finally:
        trainer.close()


def _suffixed(path, schedule):
    root, ext = os.path.splitext(path)
    return f"{root}.{schedule}{ext or '.vcd'}"


# -- output ----------------------------------------------------------------------------------

def _pct(v):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.2f}%"


def _num(v, fmt="{:.1f}"):
    return "-" if v is None else fmt.format(v)


def _exact(v):
    return "not checked" if v is None else ("yes" if v else "NO")


def format_table(results):
    head = (f"{'schedule':<12}{'cycles':>12}{'cyc/sample':>11}{'accepted':>10}{'rejected':>10}"
            f"{'serial':>9}{'speedup':>9}{'accept':>9}{'RTL acc':>9}{'float acc':>10}"
            f"{'bit-exact':>13}")
    sub = (f"{'':<12}{'':>12}{'':>11}{'cyc/step':>10}{'cyc/step':>10}{'cyc/step':>9}"
           f"{'':>9}{'rate':>9}{'(test)':>9}{'(test)':>10}{'':>13}")
    lines = [head, sub]
    for name, r in results.items():
        m = r["step_cycles_mean"]
        lines.append(
            f"{name:<12}{r['cycles']:>12,}{r['cycles_per_sample']:>11.1f}"
            f"{_num(m['accepted']):>10}{_num(m['rejected']):>10}{_num(m['serial']):>9}"
            f"{_num(r.get('speedup'), '{:.3f}x'):>9}{_pct(r['acceptance_rate']):>9}"
            f"{_pct(r['test_accuracy']):>9}{_pct(r['float_test_accuracy']):>10}"
            f"{_exact(r['bit_exact']):>13}")
    return "\n".join(lines)


def format_engines(results):
    lines = [f"{'schedule':<12}{'forward busy':>14}{'backward busy':>15}{'update':>12}"
             f"{'sim cycles/s':>14}"]
    for name, r in results.items():
        u = r["utilization"]
        lines.append(f"{name:<12}{_pct(u['forward']):>14}{_pct(u['backward']):>15}"
                     f"{_pct(u['update']):>12}{_num(r['sim_cycles_per_second'], '{:,.0f}'):>14}")
    return "\n".join(lines)


def plot(path, results, sweep=None):
    """A PNG: cycles per sample and accuracy per schedule (per epoch when there are several),
    or, for a threshold sweep, speedup, acceptance and accuracies against the threshold."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if sweep is not None:
        _plot_sweep(plt, path, results["serial"], sweep)
        return
    epochs = len(next(iter(results.values()))["epochs"])
    panels = 2 + (epochs > 1)
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 4.2))
    names = list(results)
    colors = {"serial": "#7f7f7f", "speculative": "#1f77b4", "pipelined": "#2ca02c"}
    ax = axes[0]
    vals = [results[n]["cycles_per_sample"] for n in names]
    bars = ax.bar(names, vals, color=[colors.get(n, "#9467bd") for n in names])
    for b, n in zip(bars, names):
        sp = results[n].get("speedup")
        ax.annotate(f"{b.get_height():.0f}" + (f"\n{sp:.2f}x" if sp else ""),
                    (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                    va="bottom", fontsize=9)
    ax.set_ylabel("cycles per training sample")
    ax.set_title("Cycles per sample (RTL)")
    ax.set_ylim(0, max(vals) * 1.25)
    ax = axes[1]
    x = np.arange(len(names))
    ax.bar(x - 0.2, [100 * results[n]["test_accuracy"] for n in names], 0.4, label="RTL")
    ax.bar(x + 0.2, [100 * results[n]["float_test_accuracy"] for n in names], 0.4,
           label="float golden")
    ax.set_xticks(x, names)
    lo = min(min(results[n]["test_accuracy"], results[n]["float_test_accuracy"])
             for n in names) * 100
    ax.set_ylim(max(0, lo - 5), 100)
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy after training")
    ax.legend(loc="upper right")
    if epochs > 1:
        ax = axes[2]
        for n in names:
            ep = results[n]["epochs"]
            x = [e["epoch"] for e in ep]
            color = colors.get(n, "#9467bd")
            rtl = [(e["epoch"], 100 * e["test_accuracy"]) for e in ep
                   if e["test_accuracy"] is not None]
            if rtl:
                ax.plot(*zip(*rtl), "o-", color=color, label=f"{n} RTL")
            ax.plot(x, [100 * e["float_test_accuracy"] for e in ep], "x--", color=color,
                    alpha=0.7, label=f"{n} float")
        ax.set_xticks(range(1, epochs + 1))
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("Accuracy per epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_sweep(plt, path, serial, sweep):
    fig, axes = plt.subplots(1, 2, figsize=(10.4, 4.2))
    t = [s["threshold"] for s in sweep]
    ax = axes[0]
    ax.plot(t, [s["speedup"] for s in sweep], "o-", label="speedup vs serial")
    ax.axhline(1, color="#7f7f7f", lw=0.8, ls=":")
    ax.set_ylabel("speedup (x)")
    ax2 = ax.twinx()
    ax2.plot(t, [100 * s["acceptance_rate"] for s in sweep], "s--", color="#ff7f0e",
             label="accepted steps (%)")
    ax2.set_ylabel("accepted (%)")
    ax2.set_ylim(0, 100)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    ax.set_title("Speculative schedule: cycles (RTL)")
    ax = axes[1]
    ax.plot(t, [100 * s["test_accuracy"] for s in sweep], "o-", label="RTL")
    ax.plot(t, [100 * s["float_test_accuracy"] for s in sweep], "x--", label="float golden")
    ax.axhline(100 * serial["test_accuracy"], color="#7f7f7f", lw=0.8, ls=":",
               label="serial (RTL)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy")
    ax.legend(fontsize=8)
    for ax in axes:
        ax.set_xscale("symlog", linthresh=max(min([v for v in t if v > 0], default=1e-3), 1e-6))
        ax.set_xlim(left=min(t), right=max(t) * 1.3 if max(t) > 0 else 1)
        ax.set_xlabel("threshold (mean |y_stash - y|)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- command line ----------------------------------------------------------------------------

def _thresholds(text):
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers such as 0,0.01,0.05, not {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one threshold")
    return values


def _window(text):
    try:
        first, count = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected FIRST:COUNT cycles such as 0:2000, not {text!r}") from None
    if first < 0 or count < 1:
        raise argparse.ArgumentTypeError("FIRST must be >= 0 and COUNT >= 1")
    return first, count


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m specbp_hw.sim",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train the speculative-backpropagation core cycle-accurately in a "
                    "simulation of its RTL and compare the schedules: serial (forward, then "
                    "backward), speculative (a backward pass on the label's stashed sample "
                    "runs alongside the forward pass and is kept if the outputs agree within "
                    "the threshold) and pipelined (forward of one sample alongside the "
                    "backward of the previous one).",
        epilog="presets:\n" + "\n".join(f"  {n:<10} {v.description}"
                                        for n, v in PRESETS.items())
               + "\nprecisions:\n" + "\n".join(f"  {n:<10} {f.describe()}"
                                              for n, f in PRECISIONS.items()))
    d = p.add_argument_group("data and training")
    d.add_argument("--data", metavar="DIR",
                   help="directory with the MNIST IDX files (default: $SPECBP_MNIST_DIR, the "
                        "download cache, then the built-in 4000/1000 subset)")
    d.add_argument("--train", type=int, metavar="N", help="train on the first N samples")
    d.add_argument("--test", type=int, metavar="N", help="test on the first N samples")
    d.add_argument("--epochs", type=int, default=1, help="passes over the training set "
                   "(default 1)")
    d.add_argument("--schedule", default="all", choices=(*SCHEDULES, "all"),
                   help="schedule(s) to run (default all)")
    d.add_argument("--threshold", type=float, default=0.25,
                   help="speculation threshold on the mean |y_stash - y| over the classes, "
                        "0..1 (default 0.25, the paper's)")
    d.add_argument("--sweep-threshold", type=_thresholds, metavar="T1,T2,...",
                   help="run the speculative schedule at each threshold (and serial once) and "
                        "report speedup, acceptance and accuracy against threshold")
    d.add_argument("--batch", type=int, default=15, help="batch size (default 15)")
    d.add_argument("--seed", type=int, default=0, help="weight initialisation seed (default 0)")
    h = p.add_argument_group("hardware")
    h.add_argument("--preset", default="paper", help="named configuration (default paper; "
                   "see the list below)")
    h.add_argument("--precision", help="fixed-point formats (default: the preset's, q16)")
    h.add_argument("--layers", metavar="784,H,...,10", help="layer sizes, overriding the "
                   "preset's")
    h.add_argument("--lanes", type=int, metavar="N", help="neurons computed side by side")
    h.add_argument("--inputs", type=int, metavar="K", help="inputs consumed per cycle")
    h.add_argument("--softmax-ways", type=int, metavar="W", help="softmax classes per cycle")
    h.add_argument("--softmax-div-bits", type=int, metavar="B",
                   help="softmax divider quotient bits per cycle")
    h.add_argument("--skip-zeros", action="store_true", default=None,
                   help="skip the first layer's all-zero input words (the same results in "
                        "fewer cycles; needs lanes >= the first hidden layer)")
    h.add_argument("--fmax-stages", action="store_true", default=None,
                   help="the register stages for a faster clock (the same results, a few "
                        "cycles more a step; the board presets have them)")
    s = p.add_argument_group("simulation and output")
    s.add_argument("--backend", choices=("cxxrtl", "pysim"), default="cxxrtl",
                   help="compiled CXXRTL (default; needs a C++ compiler) or Amaranth's Python "
                        "simulator (slow: short runs only)")
    s.add_argument("--check", action=argparse.BooleanOptionalAction, default=None,
                   help="compare with the bit-exact fixed-point model after every batch "
                        f"(default: on up to {CHECK_DEFAULT_STEPS:,} training steps)")
    s.add_argument("--vcd", metavar="FILE", help="write a waveform of a window of cycles (one "
                   "file per schedule: FILE.<schedule>.vcd when several run)")
    s.add_argument("--vcd-window", type=_window, default=(0, 2000), metavar="FIRST:COUNT",
                   help="cycles to record with --vcd (default 0:2000; pysim records the "
                        "whole run)")
    s.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    s.add_argument("--plot", metavar="FILE.png", help="write a PNG of the figures")
    s.add_argument("--cache-dir", metavar="DIR", help="CXXRTL build cache (default "
                   "~/.cache/specbp_hw/cxxrtl)")
    s.add_argument("--jobs", type=int, metavar="N", help="schedules simulated side by side in "
                   "worker processes (cxxrtl; default: one per CPU core)")
    s.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    return p


def _params_from(args):
    layers = parse_layers(args.layers) if args.layers else None
    return core_params(args.preset, precision=args.precision, layers=layers, lanes=args.lanes,
                       inputs=args.inputs, softmax_ways=args.softmax_ways,
                       softmax_div_bits=args.softmax_div_bits, skip_zeros=args.skip_zeros,
                       fmax_stages=args.fmax_stages)


def _validate(args, params, data):
    if not 0 <= args.threshold <= 1:
        raise UsageError(f"--threshold must be between 0 and 1 (a mean probability "
                         f"difference), not {args.threshold}")
    for t in args.sweep_threshold or ():
        if not 0 <= t <= 1:
            raise UsageError(f"--sweep-threshold values must be between 0 and 1, not {t}")
    if args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, not {args.epochs}")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, not {args.jobs}")
    if not 1 <= args.batch <= params.max_batch:
        raise UsageError(f"--batch must be 1..{params.max_batch} (the accumulators are sized "
                         f"for {params.max_batch}), not {args.batch}")
    if args.check and args.batch < 2 and args.backend == "cxxrtl":
        raise UsageError("--check compares weights between batches, which needs --batch 2 "
                         "or more; use --no-check with --batch 1")
    top = int(max(data.train_labels.max(initial=0), data.test_labels.max(initial=0)))
    if top >= params.classes:
        raise UsageError(f"the data has label {top} but the network only {params.classes} "
                         f"classes; use --layers ...,{top + 1}")
    if len(data.train_labels) == 0:
        raise UsageError("no training samples: --train must be at least 1")


def _estimate_cycles(params, schedules, n):
    model = CycleModel(params)
    per = {"serial": model.serial_step, "speculative": model.accepted_step,
           "pipelined": model.accepted_step}
    return sum(per.get(s, model.serial_step) * n for s in schedules)


def _make_trainer(args, params, schedules, steps):
    """The CXXRTL trainer, or None with a note for pysim (fallback); UsageError if neither."""
    from .backends import CxxrtlTrainer
    from .cxxrtl import CxxrtlError
    estimate = _estimate_cycles(params, schedules, steps) / PYSIM_CYCLES_PER_SECOND
    if args.backend == "pysim":
        if estimate > PYSIM_LIMIT_SECONDS:
            print(f"note: pysim will take about {estimate / 60:,.0f} minutes "
                  f"({PYSIM_CYCLES_PER_SECOND:,} cycles/s); --backend cxxrtl is much faster",
                  file=sys.stderr)
        return None, "pysim"
    try:
        print("building the CXXRTL simulation (cached after the first time; a cold build "
              "takes about half a minute, plus about 40 s the first time YoWASP runs on a "
              "machine)...", file=sys.stderr, flush=True)
        trainer = CxxrtlTrainer(params, cache_dir=args.cache_dir)
        return trainer, "cxxrtl"
    except CxxrtlError as e:
        if estimate > PYSIM_LIMIT_SECONDS:
            raise UsageError(f"compiled simulation unavailable ({e}); the Amaranth simulator "
                             f"would take about {estimate / 60:,.0f} minutes for this run, so "
                             f"it is not started: install g++ or use --train N for a shorter "
                             f"run") from None
        print(f"warning: compiled simulation unavailable ({e}); falling back to pysim (about "
              f"{estimate:,.0f} s)", file=sys.stderr)
        return None, "pysim"


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except (UsageError, DataError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _main(args):
    t_start = time.perf_counter()
    params = _params_from(args)
    data = resolve(args.data)
    if args.train is not None or args.test is not None:
        data = data.subset(train=args.train, test=args.test)
    data = data.for_inputs(params.layers[0])       # pooled for a smaller input layer
    _validate(args, params, data)
    steps = len(data.train_labels) * args.epochs
    check = args.check if args.check is not None else steps <= CHECK_DEFAULT_STEPS
    if args.sweep_threshold:
        schedules = ["serial", "speculative"]
    else:
        schedules = list(SCHEDULES) if args.schedule == "all" else [args.schedule]
    sweep_runs = len(args.sweep_threshold or ())
    trainer, backend = _make_trainer(args, params, schedules, steps * max(1, sweep_runs))
    model = CycleModel(params)
    print(f"data: {data.source}")
    print(f"core: {'-'.join(map(str, params.layers))}, {params.inputs} x {params.lanes} MACs "
          f"per engine, {params.fmt.describe()}; preset {args.preset}")
    print(f"run: {len(data.train_labels)} training samples x {args.epochs} epoch(s), batch "
          f"{args.batch}, threshold {args.threshold}, seed {args.seed}; backend {backend}"
          + (f" ({'cached build' if trainer.cache_hit else 'built'} in "
             f"{trainer.build_seconds:.1f} s)" if trainer else ""))
    if not check:
        print("check: off (no comparison with the fixed-point model; --check turns it on)")
    elif backend == "cxxrtl" and args.batch >= 2:
        print("check: bit-exact comparison with the fixed-point model after every batch")
    else:
        # Weights are read between batches only by the compiled backend, and only when no
        # update can be under way as a result arrives (batches of 2 or more).
        print("check: bit-exact comparison with the fixed-point model of every decision and "
              "prediction and of the final weights (weights between batches need the cxxrtl "
              "backend and --batch 2 or more)")
    vcd = (args.vcd, *args.vcd_window) if args.vcd else None
    if args.sweep_threshold:
        tasks = [("serial", 0.0)] + [("speculative", t) for t in args.sweep_threshold]
    else:
        tasks = [(s, args.threshold if s == "speculative" else 0.0) for s in schedules]
    jobs = args.jobs if args.jobs is not None else min(os.cpu_count() or 1, len(tasks))
    if backend == "cxxrtl" and jobs > 1 and len(tasks) > 1:
        print(f"parallel: {min(jobs, len(tasks))} worker processes", file=sys.stderr)
    try:
        reports = run_tasks(trainer, backend, params, data, tasks, batch=args.batch,
                            epochs=args.epochs, seed=args.seed, check=check, vcd=vcd,
                            progress=not args.no_progress, jobs=jobs)
    finally:
        if trainer is not None:
            trainer.close()
    sweep = None
    if args.sweep_threshold:
        results = {"serial": reports[0]}
        sweep = reports[1:]
        for r in sweep:
            r["speedup"] = results["serial"]["cycles"] / r["cycles"]
    else:
        results = dict(zip(schedules, reports))
    if "serial" in results:
        for r in results.values():
            r["speedup"] = results["serial"]["cycles"] / r["cycles"]
    all_runs = list(results.values()) + (sweep or [])
    sim_cycles = sum(r["sim_cycles"] for r in all_runs)
    sim_seconds = sum(r["sim_seconds"] for r in all_runs)
    speed = sim_cycles / sim_seconds if sim_seconds else None
    print()
    print(format_table(results))
    if sweep:
        print()
        print(f"{'threshold':>10}{'cycles':>12}{'speedup':>9}{'accepted':>10}{'RTL acc':>9}"
              f"{'float acc':>10}{'bit-exact':>13}")
        for r in sweep:
            print(f"{r['threshold']:>10g}{r['cycles']:>12,}{r['speedup']:>8.3f}x"
                  f"{_pct(r['acceptance_rate']):>10}{_pct(r['test_accuracy']):>9}"
                  f"{_pct(r['float_test_accuracy']):>10}{_exact(r['bit_exact']):>13}")
    if args.epochs > 1:
        print()
        print(f"{'schedule':<12}{'epoch':>6}{'cyc/step':>10}{'accepted':>10}{'rejected':>10}"
              f"{'RTL acc':>9}{'float acc':>10}")
        for name, r in results.items():
            for e in r["epochs"]:
                print(f"{name:<12}{e['epoch']:>6}{e['step_cycles_mean']:>10.1f}"
                      f"{e['accepted']:>10}{e['rejected']:>10}{_pct(e['test_accuracy']):>9}"
                      f"{_pct(e['float_test_accuracy']):>10}")
    print()
    print(format_engines(results))
    if params.skip_zeros:
        words = stored_words(params, data.train_images)
        print(f"\ncycle model, skipping zero words (n: a sample's stored words, mean "
              f"{words.mean():.1f} of {params.rows(0)} here): forward "
              f"{model.forward_cycles(0)} + n, backward {model.backward_cycles(0)} + n, undo "
              f"{model.undo_cycles(0)} + n, update {model.update} cycles")
    else:
        print(f"\ncycle model: forward {model.forward}, backward {model.backward}, serial step "
              f"{model.serial_step}, accepted step {model.accepted_step} cycles")
    if speed:
        print(f"simulation: {sim_cycles:,} cycles in {sim_seconds:.1f} s = {speed:,.0f} "
              f"cycles/s ({backend}); total wall time {time.perf_counter() - t_start:.1f} s")
    bad = [n for n, r in results.items() if r["bit_exact"] is False] + \
          [f"threshold {r['threshold']}" for r in sweep or [] if r["bit_exact"] is False]
    for r in all_runs:
        if r["mismatch"]:
            print(f"MISMATCH: {r['mismatch']}", file=sys.stderr)
    doc = {
        "backend": backend,
        "sim_cycles_per_second": speed,
        "sim_cycles": sim_cycles,
        "sim_seconds": sim_seconds,
        "build_seconds": trainer.build_seconds if trainer else None,
        "build_cache_hit": trainer.cache_hit if trainer else None,
        "data": data.source,
        "train_samples": len(data.train_labels),
        "test_samples": len(data.test_labels),
        "epochs": args.epochs,
        "batch": args.batch,
        "threshold": args.threshold,
        "seed": args.seed,
        "check": check,
        "preset": args.preset,
        "core": {"layers": list(params.layers), "inputs": params.inputs,
                 "lanes": params.lanes, "format": params.fmt.describe(),
                 "softmax_ways": params.softmax_ways,
                 "softmax_div_bits": params.softmax_div_bits,
                 "skip_zeros": params.skip_zeros, "fmax_stages": params.fmax_stages},
        "cycle_model": {"forward": model.forward, "backward": model.backward,
                        "serial_step": model.serial_step,
                        "accepted_step": model.accepted_step,
                        **({"forward_without_words": model.forward_cycles(0),
                            "backward_without_words": model.backward_cycles(0)}
                           if params.skip_zeros else {})},
        "schedules": results,
    }
    if sweep is not None:
        doc["sweep"] = sweep
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=2)
        except OSError as e:
            raise UsageError(f"cannot write {args.json}: {e.strerror}") from None
    if args.plot:
        try:
            plot(args.plot, results, sweep)
        except OSError as e:
            raise UsageError(f"cannot write {args.plot}: {e.strerror}") from None
    return 1 if bad else 0


if __name__ == "__main__":
    from .cli import run
    run(main)
