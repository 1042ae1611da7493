"""Cycle figures of the training core for the paper configuration, from the cycle model.

The model (specbp_hw.cycles.CycleModel) is checked against the RTL's per-step cycles and update
counter exactly in tests/test_cycles.py, tests/test_core_mnist.py, tests/test_forward.py and
tests/test_backward.py. Prints, per parallelism, the MAC bounds F* and B*, the cycles of each
step type against the issue's 1.15 bounds, and the whole-epoch speedups against serial for
60,000 samples, batch 15, every speculation accepted (threshold 0.25). Rerun:

    python benchmarks/cycle_table.py
"""

import argparse

from specbp_hw.cycles import CycleModel
from specbp_hw.params import CoreParams

CONFIGS = [(1, 16, 1, 1), (2, 16, 1, 1), (2, 16, 10, 2), (4, 16, 1, 1), (4, 16, 10, 2),
           (8, 16, 10, 2)]


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=60000)
    p.add_argument("--batch", type=int, default=15)
    args = p.parse_args()
    print("| MACs (K x N), softmax ways/div_bits | F* / B* | forward / backward | serial step "
          "(/(F*+B*)) | accepted step (/max) | pipelined step (/max) | update | epoch speedup, "
          "speculative | epoch speedup, pipelined |")
    print("|---|---|---|---|---|---|---|---|---|")
    for K, N, ways, div_bits in CONFIGS:
        m = CycleModel(CoreParams(inputs=K, lanes=N, softmax_ways=ways,
                                  softmax_div_bits=div_bits))
        fb, mx = m.f_star + m.b_star, max(m.f_star, m.b_star)
        serial = m.epoch_cycles("serial", args.samples, args.batch)
        spec = m.epoch_cycles("speculative", args.samples, args.batch)
        pipe = m.epoch_cycles("pipelined", args.samples, args.batch)
        print(f"| {K * N} ({K} x {N}), {ways}/{div_bits} | {m.f_star:g} / {m.b_star:g} | "
              f"{m.forward} / {m.backward} | {m.serial_step} ({m.serial_step / fb:.3f}) | "
              f"{m.accepted_step} ({m.accepted_step / mx:.3f}) | {m.pipelined_step} "
              f"({m.pipelined_step / mx:.3f}) | {m.update} | {serial / spec:.3f}x | "
              f"{serial / pipe:.3f}x |")


if __name__ == "__main__":
    main()
