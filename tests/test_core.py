# amaranth: UnusedElaboratable=no
"""The training core against the bit-exact model: every schedule, exact integers."""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from golden.config import TrainConfig
from golden.fixed import FixedFormat, Q
from golden.fixed_model import FixedArith, pixels as fixed_pixels
from golden.train import ACCEPTED, REJECTED, train
from specbp_hw.core import INFERENCE, TrainingCore
from specbp_hw.params import SCHEDULES, CoreParams
from specbp_hw.pysim import run_pysim
from specbp_hw.testing import stream_get, stream_put

from test_train import random_data

# layers, K (inputs per cycle), N (lanes), batch, samples, threshold giving both decisions
CASES = [
    ((16, 8, 8, 4), 2, 4, 5, 12, 0.003),
    ((16, 8, 8, 10), 2, 8, 5, 13, 0.003),   # with the parallel softmax, see PARALLEL below
    ((12, 4, 3), 1, 4, 3, 10, 0.004),       # output layer padded (3 classes, 4 lanes)
    ((16, 8, 4, 10), 4, 4, 4, 14, 0.004),   # 10 classes over 3 column blocks
    ((8, 4, 4, 2), 4, 2, 1, 7, 0.01),       # batch size 1
]


def golden_run(layers, batch, data, threshold, params):
    cfg = TrainConfig(layers=layers, batch=batch, threshold=threshold, epochs=1, seed=3,
                      lr=params.lr)
    init = FixedArith(cfg, params.fmt).init_params(cfg)
    return init, train(FixedArith(cfg, params.fmt), cfg, data, trace=True)


def check_equal(run, ref):
    assert (run.kinds == ref.trace["kind"]).all()
    assert (run.predictions == ref.trace["prediction"]).all()
    for (w1, b1), (w2, b2) in zip(run.params, ref.params):
        assert (w1 == w2).all() and (b1 == b2).all()
    # The closing update clears every accumulator.
    assert not any(any(word) for word in run.grads)


@pytest.mark.parametrize("schedule", ["serial", "speculative", "pipelined"])
@pytest.mark.parametrize("layers, K, N, batch, n, thr", CASES)
def test_core_is_bit_exact(layers, K, N, batch, n, thr, schedule):
    parallel = layers == (16, 8, 8, 10)
    p = CoreParams(layers=layers, lanes=N, inputs=K, lr=0.05,
                   softmax_ways=10 if parallel else 1, softmax_div_bits=2 if parallel else 1)
    data = random_data(np.random.default_rng(sum(layers) + n), n, layers[0], layers[-1],
                       repeat=0.5)
    threshold = thr if schedule == "speculative" else 0.0
    run, ref = run_checked(p, schedule, batch, data, threshold)
    assert run.counters["samples"] == n
    if schedule == "speculative" and layers == (16, 8, 8, 4):
        assert {ACCEPTED, REJECTED} <= set(ref.trace["kind"].tolist())


def run_checked(p, schedule, batch, data, threshold):
    """The core and the golden model on ``data``: equal weights, decisions and counters.

    With poisoned collisions: a memory word read in the cycle it is written reads inverted, as
    the hardware may read anything then (the memories' no_rw_check); the core never uses such
    a read (these runs have them, on the weights' port B during updates and on the buffers),
    so the run stays bit-exact."""
    init, ref = golden_run(p.layers, batch, data, threshold, p)
    run = run_pysim(p, init, data.train_images, data.train_labels, schedule=schedule,
                    threshold=p.fmt.threshold_int(threshold, p.classes), batch=batch,
                    poison_collisions=True)
    check_equal(run, ref)
    kinds = ref.trace["kind"]
    assert run.counters["accepted"] == (kinds == ACCEPTED).sum()
    assert run.counters["rejected"] == (kinds == REJECTED).sum()
    return run, ref


@pytest.mark.parametrize("poison", [False, True])
def test_sync_read_old_word_or_poison_on_collision(poison):
    """The core's read ports: latency 1, the old word when the word is written in the same
    cycle (what simulation gives; hardware is undefined then), inverted with ``poison``."""
    from amaranth.hdl import Module
    from amaranth.lib import memory
    from specbp_hw.params import sync_read
    m = Module()
    m.submodules.mem = mem = memory.Memory(shape=8, depth=4, init=[1, 2, 3, 4])
    wr = mem.write_port()
    rd = sync_read(m, mem, "rd", poison_from=wr if poison else None)
    got = []

    async def testbench(ctx):
        ctx.set(rd.addr, 2)
        await ctx.tick()
        got.append(ctx.get(rd.data))
        ctx.set(wr.addr, 2)
        ctx.set(wr.data, 0x55)
        ctx.set(wr.en, 1)
        await ctx.tick()            # read and write of word 2 in one cycle
        got.append(ctx.get(rd.data))
        ctx.set(wr.en, 0)
        await ctx.tick()
        got.append(ctx.get(rd.data))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert got == [3, 3 ^ 0xFF if poison else 3, 0x55]


@pytest.mark.parametrize("ways", [3, 4])
def test_speculation_distance_over_softmax_groups(ways):
    """The core folds the distance as the softmax produces y, a group of ``ways`` classes per
    cycle: 10 classes in groups of 3 or 4 leave a partial last group (padding lanes)."""
    layers, n, thr = (16, 8, 8, 10), 13, 0.003
    p = CoreParams(layers=layers, lanes=8, inputs=2, lr=0.05, softmax_ways=ways)
    data = random_data(np.random.default_rng(sum(layers) + n), n, layers[0], layers[-1],
                       repeat=0.5)
    init, ref = golden_run(layers, 5, data, thr, p)
    run = run_pysim(p, init, data.train_images, data.train_labels, schedule="speculative",
                    threshold=p.fmt.threshold_int(thr, layers[-1]), batch=5,
                    poison_collisions=True)
    check_equal(run, ref)
    assert {ACCEPTED, REJECTED} <= set(ref.trace["kind"].tolist())


@pytest.mark.parametrize("schedule", ["serial", "pipelined"])
def test_idle_waits_for_the_last_weight_write(schedule):
    """No update write is pending while ``idle`` is high, so a host may read or write the
    weights from the first idle cycle on; batches end on fused updates, whose last words are
    written after the backward engine is done. Results are taken as soon as offered."""
    p = CoreParams(layers=(16, 8, 8, 4), lanes=4, inputs=2, lr=0.05)
    n = 6
    data = random_data(np.random.default_rng(1), n, 16, 4, repeat=0.5)
    core = TrainingCore(p)
    sim = Simulator(core)
    sim.add_clock(1e-6)
    seen = {"writes": 0, "idle_writes": 0, "idle_after_writes": False}

    async def producer(ctx):
        ctx.set(core.batch, 3)
        ctx.set(core.schedule, SCHEDULES[schedule])
        for i in range(n):
            for r in range(p.rows(0)):
                await stream_put(ctx, core.i, {
                    "pixels": [int(v) for v in data.train_images[i, 2 * r:2 * r + 2]],
                    "label": int(data.train_labels[i]), "last": int(i == n - 1)})

    async def monitor(ctx):
        while True:
            await ctx.tick()
            idle, writing = ctx.get(core.idle), ctx.get(core.upd.writing)
            seen["writes"] += writing
            seen["idle_writes"] += idle & writing
            seen["idle_after_writes"] = bool(idle) and seen["writes"] > 0

    async def consumer(ctx):
        for _ in range(n):
            await stream_get(ctx, core.o)
        await ctx.tick().repeat(8)

    sim.add_testbench(producer, background=True)
    sim.add_testbench(monitor, background=True)
    sim.add_testbench(consumer)
    sim.run()
    assert seen["writes"] > 0 and seen["idle_after_writes"]
    assert seen["idle_writes"] == 0


def test_streams_with_random_gaps_and_backpressure():
    layers, K, N = (16, 8, 8, 4), 2, 4
    p = CoreParams(layers=layers, lanes=N, inputs=K, lr=0.05)
    data = random_data(np.random.default_rng(9), 11, 16, 4, repeat=0.5)
    init, ref = golden_run(layers, 4, data, 0.003, p)
    run = run_pysim(p, init, data.train_images, data.train_labels, schedule="speculative",
                    threshold=p.fmt.threshold_int(0.003, 4), batch=4,
                    gaps=random.Random(1))
    check_equal(run, ref)



class _LongGaps:
    """``gaps`` for :func:`run_pysim` that idles the longest gap before every beat."""

    def random(self):
        return 0.0


def test_speculation_starts_as_each_sample_arrives():
    """Samples that arrive slower than the core steps: the controller waits in WAIT for each
    and starts its speculation in the cycle after its last beat, when the label's stash slot
    and validity must already be the new label's (the core keeps them in registers, ahead of
    r_label)."""
    layers, K, N = (64, 8, 8, 4), 2, 4
    p = CoreParams(layers=layers, lanes=N, inputs=K, lr=0.05)
    data = random_data(np.random.default_rng(12), 12, 64, 4, repeat=0.5)
    init, ref = golden_run(layers, 4, data, 0.003, p)
    run = run_pysim(p, init, data.train_images, data.train_labels, schedule="speculative",
                    threshold=p.fmt.threshold_int(0.003, 4), batch=4, gaps=_LongGaps(),
                    poison_collisions=True)
    check_equal(run, ref)
    # Each sample's load (32 beats, each after an 8-cycle gap) is longer than a step, so
    # every sample is taken as it arrives, not from a buffer filled in advance.
    assert run.counters["cycles"] > 12 * 32 * 9
    kinds = ref.trace["kind"]
    assert {ACCEPTED, REJECTED} <= set(kinds.tolist())

def test_speculation_at_025_is_always_accepted_and_faster():
    layers, K, N = (16, 8, 8, 4), 2, 4
    p = CoreParams(layers=layers, lanes=N, inputs=K, lr=0.05)
    data = random_data(np.random.default_rng(5), 12, 16, 4, repeat=0.5)
    init, ref = golden_run(layers, 5, data, 0.25, p)
    spec = run_pysim(p, init, data.train_images, data.train_labels, schedule="speculative",
                     threshold=p.fmt.threshold_int(0.25, 4), batch=5)
    check_equal(spec, ref)
    first = {}
    for i, label in enumerate(data.train_labels.tolist()):
        first.setdefault(label, i)
    attempted = np.array([i != first[l] for i, l in enumerate(data.train_labels.tolist())])
    assert (spec.kinds[attempted] == ACCEPTED).all() and (spec.kinds[~attempted] == 0).all()
    # Accepted steps overlap the two engines: shorter than the first (serial) steps.
    assert spec.step_cycles[attempted].max() < spec.step_cycles[~attempted].min()


def test_inference_mode_predicts_without_training():
    layers, K, N = (16, 8, 8, 4), 2, 4
    p = CoreParams(layers=layers, lanes=N, inputs=K, lr=0.05)
    data = random_data(np.random.default_rng(2), 6, 16, 4)
    cfg = TrainConfig(layers=layers, seed=3, lr=0.05)
    arith = FixedArith(cfg, p.fmt)
    init = arith.init_params(cfg)
    run = run_pysim(p, init, data.train_images, data.train_labels, infer=True, batch=5)
    assert (run.kinds == INFERENCE).all()
    logits = arith.forward(init, data.train_images).logits
    assert (run.predictions == np.argmax(logits, axis=1)).all()
    for (w1, b1), (w2, b2) in zip(run.params, init):
        assert (w1 == w2).all() and (b1 == b2).all()
    assert run.counters["update_cycles"] == 0


def test_pack_unpack_round_trip():
    p = CoreParams(layers=(16, 8, 4, 10), lanes=4, inputs=4)
    rng = np.random.default_rng(0)
    params = [(rng.integers(-99, 99, (a, b)), rng.integers(-99, 99, b))
              for a, b in zip(p.layers[:-1], p.layers[1:])]
    back = p.unpack_params(p.pack_params(params))
    for (w1, b1), (w2, b2) in zip(params, back):
        assert (w1 == w2).all() and (b1 == b2).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(layers=(784, 10)), "at least one hidden layer"),
    (dict(inputs=3), r"inputs per cycle \(3\) must divide every layer's input size"),
    (dict(lanes=5), r"lanes \(5\) must divide every hidden layer's size"),
    (dict(layers=(784, 16, 17)), "2 to 16 classes"),
    (dict(lanes=0), "lanes must be a positive integer"),
    (dict(max_batch=32), "fmt.max_batch"),
    (dict(softmax_ways=11), "ays"),
    (dict(softmax_div_bits=9), "iv"),
])
def test_params_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CoreParams(**kwargs)


def test_stochastic_rounding_is_refused_in_gateware():
    from golden.fixed import FixedFormat
    with pytest.raises(ValueError, match="nearest rounding only"):
        CoreParams(fmt=FixedFormat(rounding="stochastic", max_batch=16))


def test_core_rejects_wrong_params_type():
    with pytest.raises(TypeError, match="CoreParams"):
        TrainingCore(object())


@pytest.mark.parametrize("schedule, thr", [("serial", 0.0), ("speculative", 0.003)])
def test_open_batch_accumulators_and_stash_are_bit_exact(schedule, thr):
    # 13 samples, batch 5: the third batch stays open, so the accumulators hold three
    # samples' gradients (after accepted, rejected and undone speculations) when compared.
    layers, K, N = (16, 8, 8, 4), 2, 4
    p = CoreParams(layers=layers, lanes=N, inputs=K, lr=0.05)
    data = random_data(np.random.default_rng(5), 13, 16, 4, repeat=0.5)
    cfg = TrainConfig(layers=layers, batch=5, threshold=thr, epochs=1, seed=3, lr=0.05)
    init = FixedArith(cfg, p.fmt).init_params(cfg)
    ref = train(FixedArith(cfg, p.fmt), cfg, data, trace=True, close=False)
    run = run_pysim(p, init, data.train_images, data.train_labels, schedule=schedule,
                    threshold=p.fmt.threshold_int(thr, 4), batch=5, close=False)
    assert (run.kinds == ref.trace["kind"]).all()
    for (w1, b1), (w2, b2) in zip(run.params, ref.params):
        assert (w1 == w2).all() and (b1 == b2).all()
    expected = p.pack_params([(gw, gb) for gw, gb in ref.grads])
    assert any(any(word) for word in expected)
    assert run.grads == expected
    assert sorted(run.stash) == np.flatnonzero(ref.stash.valid).tolist()
    for label, (pixels, acts, y) in run.stash.items():
        assert pixels == fixed_pixels(ref.stash.x[label]).tolist()     # stored as u0.8 values
        for a, ref_a in zip(acts, ref.stash.acts):
            assert a == ref_a[label].tolist()
        assert y == ref.stash.y[label].tolist()


NARROW = dict(weight=Q(14, 11), act=Q(12, 5), delta=Q(12, 9), prob_frac=11, exp_index_bits=6,
              exp_frac=12, recip_frac=14, update=Q(12, 8), max_batch=16)
WIDE = dict(weight=Q(18, 15), act=Q(18, 10), delta=Q(18, 14), prob_frac=16, leak_shift=6,
            max_batch=16)


@pytest.mark.parametrize("fmt_kwargs", [NARROW, WIDE], ids=["narrow", "wide"])
@pytest.mark.parametrize("schedule, thr", [("serial", 0.0), ("speculative", 0.004),
                                           ("pipelined", 0.0)])
def test_core_is_bit_exact_for_other_formats(fmt_kwargs, schedule, thr):
    layers, K, N = (16, 8, 8, 4), 2, 4
    p = CoreParams(layers=layers, lanes=N, inputs=K, lr=0.05, fmt=FixedFormat(**fmt_kwargs))
    data = random_data(np.random.default_rng(11), 12, 16, 4, repeat=0.5)
    init, ref = golden_run(layers, 5, data, thr, p)
    run = run_pysim(p, init, data.train_images, data.train_labels, schedule=schedule,
                    threshold=p.fmt.threshold_int(thr, 4), batch=5)
    check_equal(run, ref)


@pytest.mark.parametrize("schedule, thr", [("serial", 0.0), ("speculative", 0.01),
                                           ("pipelined", 0.0)])
def test_icebreaker_preset_is_bit_exact(schedule, thr):
    """pool7-q9, the iCEBreaker's link preset (1 MAC, 9-bit values, 14-bit weights), on the
    first built-in images pooled to 7x7. Its outputs (8 fraction bits) do not move within so
    few steps from the initial weights, so every speculation here is accepted; full runs
    (python -m specbp_hw.sim --preset pool7-q9) check the rejections too."""
    from specbp_hw.data import load_builtin
    from specbp_hw.presets import core_params
    p = core_params("pool7-q9")
    data = load_builtin().pooled(7).subset(train=14, test=0)
    init, ref = golden_run(p.layers, 5, data, thr, p)
    run = run_pysim(p, init, data.train_images, data.train_labels, schedule=schedule,
                    threshold=p.fmt.threshold_int(thr, p.classes), batch=5,
                    poison_collisions=True)
    check_equal(run, ref)
    kinds = ref.trace["kind"].tolist()
    assert REJECTED not in kinds and (ACCEPTED in kinds) == (schedule == "speculative")


@pytest.mark.parametrize("clip, update", [(0.02, Q(16, 12)), (5.0, Q(12, 11))],
                         ids=["clipped", "saturated"])
@pytest.mark.parametrize("schedule, thr", [("serial", 0.0), ("speculative", 0.003)])
def test_gradient_clip_and_update_saturation_are_bit_exact(clip, update, schedule, thr):
    # The update engine's clip (a clipped word's update is a constant) and, with an update
    # format narrower than the clip (Q(12, 11) holds -1 .. 0.9995, the clip is 5; two gradients
    # of this data exceed 1), its saturation.
    layers, K, N, batch = (16, 8, 8, 4), 2, 4, 5
    fmt = FixedFormat(update=update, max_batch=16)
    p = CoreParams(layers=layers, lanes=N, inputs=K, lr=0.05, clip=clip, fmt=fmt)
    data = random_data(np.random.default_rng(5), 12, 16, 4, repeat=0.5)

    def model(clip):
        cfg = TrainConfig(layers=layers, batch=batch, threshold=thr, epochs=1, seed=3,
                          lr=p.lr, clip=clip)
        return FixedArith(cfg, fmt), cfg

    arith, cfg = model(clip)
    ref = train(arith, cfg, data, trace=True)
    if clip < 1:
        # The clip is active: without it the model ends elsewhere.
        free = train(*model(1e6), data)
        assert any((w1 != w2).any() for (w1, _), (w2, _) in zip(ref.params, free.params))
    run = run_pysim(p, arith.init_params(cfg), data.train_images, data.train_labels,
                    schedule=schedule, threshold=p.fmt.threshold_int(thr, 4), batch=batch)
    check_equal(run, ref)
