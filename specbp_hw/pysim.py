"""Train the core in Amaranth's Python simulator and return plain arrays.

Slow (thousands of cycles per second) but needs nothing beyond Amaranth: tests and short runs.
"""

from dataclasses import dataclass
import time

import numpy as np
from amaranth.sim import Simulator

from .core import TrainingCore, sample_beats
from .params import SCHEDULES, CoreParams
from .testing import stream_get, stream_put

__all__ = ["RtlRun", "run_pysim", "schedule_code"]


@dataclass
class RtlRun:
    """What a run of the core produced."""

    params: list          # [(W, b), ...] int64, read back from the weight memory
    kinds: np.ndarray     # per sample: 0 not attempted, 1 accepted, 2 rejected, 3 inference
    predictions: np.ndarray
    step_cycles: np.ndarray
    counters: dict
    grads: list = None    # accumulator words at the end (all zero after a closing update)
    stash: dict = None    # label -> (u0.8 pixel values, hidden activations per layer, y)
    seconds: float = 0.0  # wall time until idle (the ``cycles`` counter's span)


def schedule_code(schedule):
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule {schedule!r}; choose from {', '.join(SCHEDULES)}")
    return SCHEDULES[schedule]


def run_pysim(params, init, images, labels, *, schedule="serial", threshold=0, batch=15,
              infer=False, gaps=None, vcd=None, close=True, last=None,
              poison_collisions=False):
    """Stream ``images``/``labels`` through a :class:`TrainingCore` and collect the results.

    With ``close`` the last sample is marked ``last``: the batch closes after it, as the golden
    model closes an epoch; without it a short final batch stays open in the accumulators (not
    for the pipelined schedule, whose last backward pass would stay pending). ``threshold`` is
    the integer register value (probability LSBs). ``last`` (a boolean per sample) overrides
    ``close``: samples marked close their batch, e.g. the last of each epoch. The counters are
    read as the core becomes idle after the last result, before the weight readback.
    ``poison_collisions`` is passed to the :class:`TrainingCore`.
    """
    if not isinstance(params, CoreParams):
        raise TypeError(f"params must be a CoreParams, not {params!r}")
    core = TrainingCore(params, init=init, poison_collisions=poison_collisions)
    K = params.inputs
    rows0 = params.rows(0)
    n = len(labels)
    if last is None:
        last = [close and i == n - 1 for i in range(n)]
    results = []

    sim = Simulator(core)
    sim.add_clock(1e-6)

    async def producer(ctx):
        ctx.set(core.schedule, schedule_code(schedule))
        ctx.set(core.threshold, threshold)
        ctx.set(core.batch, batch)
        ctx.set(core.infer, int(infer))
        ctx.set(core.wr_en, 0)      # the host weight write port stays unused
        for i in range(n):
            for r, pixels, end in sample_beats(params, images[i]):
                beat = {"pixels": pixels, "label": int(labels[i]), "last": int(last[i])}
                if params.skip_zeros:
                    beat.update(row=r, end=end)
                await stream_put(ctx, core.i, beat, gaps=gaps)

    async def consumer(ctx):
        for _ in range(n):
            results.append(await stream_get(ctx, core.o, gaps=gaps))
        # Stop at the first clock edge after which the core is idle (tick().until() would
        # test the value sampled at the edge, one cycle later), as CXXRTL's run_until does.
        while True:
            await ctx.tick()
            if ctx.get(core.idle):
                break
        out["idle_at"] = time.perf_counter()
        out["counters"] = {name: ctx.get(getattr(core, name)) for name in
                           ("cycles", "samples", "accepted", "rejected", "fwd_busy",
                            "bwd_busy", "update_cycles")}
        # Read back through the host port, as a board host would.
        words = []
        for a in range(params.depth):
            ctx.set(core.rb_addr, a)
            await ctx.tick()
            words.append([int(v) for v in ctx.get(core.rb_data)])
        out["words"] = words
        out["grads"] = [[int(v) for v in ctx.get(core.grads.data[a])]
                        for a in range(params.depth)]
        stash = {}
        wps = params.act_words_per_slot
        for label in range(params.classes):
            if not ctx.get(core.stash_valid) >> label & 1:
                continue
            slot = ctx.get(core.stash_slot[label])
            if params.skip_zeros:
                K = params.inputs
                pixels = [0] * (rows0 * K)
                for i in range(ctx.get(core.stash_words[slot])):
                    word = ctx.get(core.stash_x.data[slot * rows0 + i])
                    pixels[word.row * K:(word.row + 1) * K] = [int(v) for v in word.pix]
            else:
                pixels = [int(v) for r in range(rows0)
                          for v in ctx.get(core.stash_x.data[slot * rows0 + r])]
            words = [[int(v) for v in ctx.get(core.stash_act.data[slot * wps + w])]
                     for w in range(wps)]
            acts = []
            for l in range(params.n_layers):
                flat = [v for w in words[params.act_base(l):params.act_base(l)
                                         + params.act_words(l)] for v in w]
                acts.append(flat[:params.layers[l + 1]])
            stash[label] = (pixels, acts[:-1], acts[-1])
        out["stash"] = stash

    out = {}
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    start = time.perf_counter()
    if vcd:
        with sim.write_vcd(vcd):
            sim.run()
    else:
        sim.run()
    seconds = out["idle_at"] - start
    return RtlRun(params=params.unpack_params(out["words"]),
                  kinds=np.array([r.kind for r in results]),
                  predictions=np.array([r.prediction for r in results]),
                  step_cycles=np.array([r.cycles for r in results]),
                  counters=out["counters"], grads=out["grads"], stash=out["stash"],
                  seconds=seconds)
