# amaranth: UnusedElaboratable=no
"""The backward engine alone against golden.fixed_model's backward pass, exact integers."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import memory
from amaranth.sim import Simulator

from golden.config import TrainConfig
from golden.fixed import FixedFormat, Q
from golden.fixed_model import FixedArith, pixels
from specbp_hw.backward import BackwardEngine
from specbp_hw.cycles import CycleModel
from specbp_hw.params import CoreParams
from specbp_hw.testing import pulse_and_wait


def run_backward(p, params, image, acts, y, label, image2):
    """A full pass over one stashed sample, then its undo, then a gradient-only pass over
    another slot that holds ``image2``; accumulators after each, cycles."""
    m = Module()
    m.submodules.bwd = bwd = BackwardEngine(p)
    m.submodules.weights = weights = memory.Memory(shape=p.weight_word, depth=p.depth,
                                                   init=p.pack_params(params))
    m.submodules.grads = grads = memory.Memory(shape=p.grad_word, depth=p.depth, init=[])
    m.submodules.sx = sx = memory.Memory(shape=p.value_word, depth=p.stash_x_depth,
                                         init=[])
    m.submodules.sa = sa = memory.Memory(shape=p.act_word,
                                         depth=p.slots * p.act_words_per_slot, init=[])
    w_rd, g_rd, g_wr = weights.read_port(), grads.read_port(), grads.write_port()
    x_rd, a_rd = sx.read_port(), sa.read_port()
    m.d.comb += [w_rd.addr.eq(bwd.w_rd.addr), bwd.w_rd.data.eq(w_rd.data),
                 g_rd.addr.eq(bwd.g_rd.addr), bwd.g_rd.data.eq(g_rd.data),
                 g_wr.addr.eq(bwd.g_wr.addr), g_wr.data.eq(bwd.g_wr.data),
                 g_wr.en.eq(bwd.g_wr.en),
                 x_rd.addr.eq(bwd.x_rd.addr), bwd.x_rd.data.eq(x_rd.data),
                 a_rd.addr.eq(bwd.act_rd.addr), bwd.act_rd.data.eq(a_rd.data)]
    K, N, rows0, wps = p.inputs, p.lanes, p.rows(0), p.act_words_per_slot
    slot, slot2 = p.slots - 1, p.slots - 2
    out = {}

    async def run(ctx, delta, negate, slot=slot):
        ctx.set(bwd.slot, slot)
        ctx.set(bwd.label, label)
        ctx.set(bwd.delta, delta)
        ctx.set(bwd.grad, 1)
        ctx.set(bwd.negate, negate)
        cycles = await pulse_and_wait(ctx, bwd.start, bwd.done)
        return cycles, [[int(v) for v in ctx.get(grads.data[a])] for a in range(p.depth)]

    async def bench(ctx):
        for r in range(rows0):
            ctx.set(sx.data[slot * rows0 + r], [int(v) for v in pixels(image[r * K:(r + 1) * K])])
            ctx.set(sx.data[slot2 * rows0 + r],
                    [int(v) for v in pixels(image2[r * K:(r + 1) * K])])
        values = list(acts) + [y]
        for l, v in enumerate(values):
            padded = list(v) + [0] * (p.act_words(l) * N - len(v))
            for c in range(p.act_words(l)):
                ctx.set(sa.data[slot * wps + p.act_base(l) + c], padded[c * N:(c + 1) * N])
        out["full"] = await run(ctx, delta=1, negate=0)
        out["undo"] = await run(ctx, delta=0, negate=1)
        # A gradient-only pass reads the slot it is started with from its first word on.
        out["other"] = await run(ctx, delta=0, negate=0, slot=slot2)

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("layers, K, N, fmt", [
    ((16, 8, 8, 4), 2, 4, FixedFormat(max_batch=16)),
    ((16, 8, 8, 4), 1, 8, FixedFormat(max_batch=16)),
    ((24, 4, 8, 10), 4, 4, FixedFormat(max_batch=16)),
    ((16, 8, 3), 8, 2, FixedFormat(weight=Q(14, 11), act=Q(12, 5), delta=Q(12, 9),
                                   prob_frac=11, exp_frac=12, recip_frac=14, exp_index_bits=6,
                                   update=Q(12, 8), max_batch=16)),
    ((16, 8, 5), 2, 8, FixedFormat(weight=Q(18, 15), act=Q(18, 10), delta=Q(18, 14),
                                   prob_frac=16, max_batch=16)),
    # Integer weights: the delta shifts are 0 (hidden) and prob_frac - delta.frac = -1
    # (output), aligned to 1 before the narrowing.
    ((16, 8, 5), 2, 4, FixedFormat(weight=Q(8, 0), delta=Q(16, 13), prob_frac=12,
                                   max_batch=16)),
])
@pytest.mark.parametrize("stages", [False, True])
def test_backward_engine_is_bit_exact_and_undo_restores(layers, K, N, fmt, stages):
    p = CoreParams(layers=layers, lanes=N, inputs=K, fmt=fmt, lr=0.05, fmax_stages=stages)
    cfg = TrainConfig(layers=layers, seed=5, lr=0.05)
    arith = FixedArith(cfg, fmt)
    rng = np.random.default_rng(sum(layers) + K)
    params = [(rng.integers(fmt.weight.min, fmt.weight.max, (a, b)),
               rng.integers(fmt.weight.min // 2, fmt.weight.max // 2, b))
              for a, b in zip(layers[:-1], layers[1:])]
    image, image2 = rng.integers(0, 256, size=(2, 1, layers[0]), dtype=np.uint8)
    fwd = arith.forward(params, image)
    label = int(rng.integers(0, layers[-1]))
    ref = arith.backward(params, image, fwd.acts, fwd.pos, fwd.y, np.array([label]))
    got = run_backward(p, params, image[0], [a[0] for a in fwd.acts], fwd.y[0], label,
                       image2[0])
    cycles, words = got["full"]
    assert words == p.pack_params(ref)
    assert any(any(w) for w in words)
    assert cycles == CycleModel(p).backward
    cycles, words = got["undo"]
    assert not any(any(w) for w in words)
    assert cycles == CycleModel(p).undo
    # The deltas do not depend on the input image: the same ones times image2's pixels.
    ref2 = arith.backward(params, image2, fwd.acts, fwd.pos, fwd.y, np.array([label]))
    cycles, words = got["other"]
    assert words == p.pack_params(ref2)
    assert cycles == CycleModel(p).undo
