# amaranth: UnusedElaboratable=no
"""The forward engine alone against golden.fixed_model's forward pass, exact integers."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import memory
from amaranth.sim import Simulator

from golden.config import TrainConfig
from golden.fixed import FixedFormat, Q
from golden.fixed_model import FixedArith
from specbp_hw.cycles import CycleModel
from specbp_hw.forward import ForwardEngine
from specbp_hw.params import CoreParams
from specbp_hw.testing import pulse_and_wait


def run_forward(p, params, images):
    """Forward passes of ``images`` through the engine; stashed activations, y, prediction."""
    m = Module()
    m.submodules.fwd = fwd = ForwardEngine(p)
    m.submodules.weights = weights = memory.Memory(shape=p.weight_word, depth=p.depth,
                                                   init=p.pack_params(params))
    m.submodules.xbuf = xbuf = memory.Memory(shape=p.pixel_word, depth=2 * p.rows(0), init=[])
    m.submodules.acts = acts = memory.Memory(shape=p.act_word,
                                             depth=p.slots * p.act_words_per_slot, init=[])
    w_rd, x_rd, a_wr = weights.read_port(), xbuf.read_port(), acts.write_port()
    m.d.comb += [w_rd.addr.eq(fwd.w_rd.addr), fwd.w_rd.data.eq(w_rd.data),
                 x_rd.addr.eq(fwd.x_rd.addr), fwd.x_rd.data.eq(x_rd.data),
                 a_wr.addr.eq(fwd.act_wr.addr), a_wr.data.eq(fwd.act_wr.data),
                 a_wr.en.eq(fwd.act_wr.en)]
    out = []
    K, rows0, wps = p.inputs, p.rows(0), p.act_words_per_slot

    async def bench(ctx):
        for i, image in enumerate(images):
            half, slot = i % 2, i % p.slots
            for r in range(rows0):
                ctx.set(xbuf.data[half * rows0 + r], [int(v) for v in image[r * K:(r + 1) * K]])
            ctx.set(fwd.half, half)
            ctx.set(fwd.slot, slot)
            ctx.set(fwd.stash, 1)
            cycles = await pulse_and_wait(ctx, fwd.start, fwd.done)
            words = [[int(v) for v in ctx.get(acts.data[slot * wps + w])] for w in range(wps)]
            out.append((words, [int(v) for v in ctx.get(fwd.y)], ctx.get(fwd.prediction),
                        cycles))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("layers, K, N, fmt, ways, div_bits", [
    ((16, 8, 8, 4), 2, 4, FixedFormat(max_batch=16), 1, 1),
    ((16, 8, 8, 4), 1, 8, FixedFormat(max_batch=16), 4, 2),
    ((24, 4, 8, 10), 4, 4, FixedFormat(max_batch=16), 10, 2),
    ((16, 8, 3), 8, 2, FixedFormat(weight=Q(14, 11), act=Q(12, 5), delta=Q(12, 9),
                                   prob_frac=11, exp_frac=12, recip_frac=14, exp_index_bits=6,
                                   update=Q(12, 8), max_batch=16), 1, 1),
    ((16, 8, 5), 2, 8, FixedFormat(weight=Q(18, 15), act=Q(18, 10), max_batch=16), 5, 3),
])
def test_forward_engine_is_bit_exact(layers, K, N, fmt, ways, div_bits):
    p = CoreParams(layers=layers, lanes=N, inputs=K, fmt=fmt, lr=0.05, softmax_ways=ways,
                   softmax_div_bits=div_bits)
    cfg = TrainConfig(layers=layers, seed=7, lr=0.05)
    arith = FixedArith(cfg, fmt)
    rng = np.random.default_rng(len(layers) + K + N)
    # Larger random weights than the initialisation, to reach saturation and negative logits.
    params = [(rng.integers(-3 << fmt.weight.frac, 3 << fmt.weight.frac, (a, b)),
               rng.integers(-1 << fmt.weight.frac, 1 << fmt.weight.frac, b))
              for a, b in zip(layers[:-1], layers[1:])]
    params = [(np.clip(w, fmt.weight.min, fmt.weight.max), b) for w, b in params]
    images = rng.integers(0, 256, size=(5, layers[0]), dtype=np.uint8)
    ref = arith.forward(params, images)
    got = run_forward(p, params, images)
    model = CycleModel(p)
    for i, (words, y, prediction, cycles) in enumerate(got):
        for l, a in enumerate(ref.acts):
            flat = [v for w in words[p.act_base(l):p.act_base(l) + p.act_words(l)] for v in w]
            assert flat[:layers[l + 1]] == a[i].tolist()
        assert y == ref.y[i].tolist()
        y_stashed = [v for w in words[p.act_base(p.n_layers - 1):] for v in w][:p.classes]
        assert y_stashed == ref.y[i].tolist()
        assert prediction == int(np.argmax(ref.logits[i]))
        assert cycles == model.forward   # start cycle to done cycle, inclusive
