"""``python -m golden``: train the float or the bit-exact fixed-point golden model.

Prints one row per epoch (test accuracy, training loss, the fractions of steps whose speculation
was accepted, rejected or not attempted) and, with ``--json FILE``, writes the same figures.
"""

import argparse
import json
import sys
import time

from specbp_hw.data import DataError, resolve

from .config import TrainConfig
from .fixed import FixedFormat, Q
from .fixed_model import FixedArith
from .float_model import FloatArith
from .train import train


def _q(text):
    try:
        width, frac = (int(v) for v in text.split("."))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected WIDTH.FRAC such as 16.13, not {text!r}") from None
    try:
        return Q(width, frac)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser():
    p = argparse.ArgumentParser(
        prog="python -m golden",
        description="Train the golden models of speculative backpropagation (paper config: "
                    "784-16-16-10, leaky ReLU, softmax, batch 15, lr 0.01, clip 5).")
    p.add_argument("--arith", choices=("float", "fixed"), default="float",
                   help="float64 reference or bit-exact fixed point (default: float)")
    p.add_argument("--data", metavar="DIR",
                   help="directory with the MNIST IDX files (default: $SPECBP_MNIST_DIR, the "
                        "cache, then the built-in 5k subset)")
    p.add_argument("--train", type=int, metavar="N", help="use the first N training samples")
    p.add_argument("--test", type=int, metavar="N", help="use the first N test samples")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--threshold", type=float, default=0.25,
                   help="speculation threshold on mean |y_stash - y|; 0 = serial (default 0.25)")
    p.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    p.add_argument("--batch", type=int, default=15)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--hidden", default="16,16",
                   help="hidden layer sizes, comma separated (default 16,16)")
    fx = p.add_argument_group("fixed point (with --arith fixed)")
    d = FixedFormat()
    fx.add_argument("--weight", type=_q, default=d.weight, metavar="W.F",
                    help=f"weight format, total and fraction bits (default "
                         f"{d.weight.width}.{d.weight.frac})")
    fx.add_argument("--act", type=_q, default=d.act, metavar="W.F",
                    help=f"activation format (default {d.act.width}.{d.act.frac})")
    fx.add_argument("--delta", type=_q, default=d.delta, metavar="W.F",
                    help=f"delta format (default {d.delta.width}.{d.delta.frac})")
    fx.add_argument("--rounding", choices=("nearest", "stochastic"), default=d.rounding,
                    help=f"weight-update rounding (default {d.rounding})")
    p.add_argument("--json", metavar="FILE", help="write the per-epoch figures as JSON")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        hidden = tuple(int(v) for v in args.hidden.split(",") if v.strip())
    except ValueError:
        return _fail(f"--hidden takes comma-separated integers, not {args.hidden!r}")
    try:
        data = resolve(args.data)
        if args.train is not None or args.test is not None:
            data = data.subset(train=args.train, test=args.test)
        cfg = TrainConfig(layers=(data.train_images.shape[1], *hidden, 10),
                          threshold=args.threshold, epochs=args.epochs, seed=args.seed,
                          batch=args.batch, lr=args.lr)
        if args.arith == "fixed":
            fmt = FixedFormat(weight=args.weight, act=args.act, delta=args.delta,
                              rounding=args.rounding)
            arith = FixedArith(cfg, fmt)
            what = f"fixed point: {fmt.describe()}"
        else:
            arith = FloatArith(cfg)
            what = "float64"
    except (DataError, ValueError, TypeError) as e:
        return _fail(str(e))

    print(f"data: {data.source}")
    print(f"model: {'-'.join(map(str, cfg.layers))}, {what}, batch {cfg.batch}, lr {cfg.lr}, "
          f"threshold {cfg.threshold}" + (" (serial)" if not cfg.speculative else "")
          + f", seed {cfg.seed}")
    print(f"{'epoch':>5} {'test acc':>9} {'loss':>8} {'accepted':>9} {'rejected':>9} "
          f"{'not att.':>9} {'seconds':>8}")
    t0 = time.perf_counter()

    def on_epoch(e):
        print(f"{e.epoch:>5} {100 * e.test_accuracy:>8.2f}% {e.loss:>8.4f} "
              f"{100 * e.accepted:>8.2f}% {100 * e.rejected:>8.2f}% "
              f"{100 * e.not_attempted:>8.2f}% {e.seconds:>8.2f}", flush=True)

    result = train(arith, cfg, data, on_epoch=on_epoch)
    if args.json:
        doc = {"arith": args.arith, "data": data.source, "layers": list(cfg.layers),
               "threshold": cfg.threshold, "seed": cfg.seed, "batch": cfg.batch, "lr": cfg.lr,
               "format": fmt.describe() if args.arith == "fixed" else None,
               "seconds": time.perf_counter() - t0,
               "epochs": [e.as_dict() for e in result.epochs]}
        try:
            with open(args.json, "w") as f:
                json.dump(doc, f, indent=2)
        except OSError as e:
            return _fail(f"cannot write {args.json}: {e.strerror}")
    return 0


def _fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
