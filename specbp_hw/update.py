"""Batch update: ``w <- sat(w - round(round(clip(G)) * LR))`` and the accumulators cleared.

Arithmetic: ``docs/FIXED_POINT.md`` ("Batch update"), bit-exact with
:meth:`golden.fixed_model.FixedArith.update` (nearest rounding). One linear sweep over every
weight/accumulator word, ``K x N`` parameters per cycle: ``depth + PIPE`` cycles, one more
with ``fmax_stages`` (the start is registered).
"""

from amaranth.hdl import *
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from .arith import (case_table, clip_finish, clip_narrow, clip_operands, clip_parts,
                    sub_round_saturate)
from .dsp import registered_product
from .params import CoreParams, addr_width, lookahead, next_loader
from .replica import replicate

__all__ = ["UpdateEngine"]


class UpdateEngine(wiring.Component):
    """Applies the accumulated gradients to the weights and clears the accumulators.

    Members
    -------
    start : In(1)
        Pulse: sweep all words.
    done : Out(1)
        Pulse after the last word is written.
    busy : Out(1)
    """

    PIPE = 4  # issue -> data/clip -> multiply -> write

    def __init__(self, params):
        if not isinstance(params, CoreParams):
            raise TypeError(f"params must be a CoreParams, not {params!r}")
        self._p = p = params
        aw = addr_width(p.depth)
        super().__init__({
            "start": In(1),
            "done": Out(1),
            "busy": Out(1),
            "w_rd": In(memory.ReadPort.Signature(addr_width=aw, shape=p.weight_word)),
            "w_wr": In(memory.WritePort.Signature(addr_width=aw, shape=p.weight_word)),
            "g_rd": In(memory.ReadPort.Signature(addr_width=aw, shape=p.grad_word)),
            "g_wr": In(memory.WritePort.Signature(addr_width=aw, shape=p.grad_word)),
            # Fused batch boundary: final sums from the backward engine's sweep (the core reads
            # the word's weights on w_rd at f_addr in the f_valid cycle).
            "f_valid": In(1),
            "f_addr": In(range(p.depth)),
            "f_kind": In(range(2 * p.n_layers)),
            "f_g": In(p.grad_word),
            "writing": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        p = self._p
        fmt = p.fmt
        L = p.n_layers
        lr = fmt.lr_int(p.lr)
        shift = fmt.update.frac + fmt.lr_frac - fmt.weight.frac

        # Parameter kinds: (layer, bias row?) -> accumulator fraction bits.
        kinds = []
        for l in range(L):
            err_frac = fmt.error_fmt(l, L).frac
            kinds += [p.grad_frac(l), err_frac]   # weight rows, bias row

        addr = Signal(range(p.depth + 1))
        layer = Signal(range(L))
        row = Signal(range(max(p.rows(l) for l in range(L)) + 1))
        col = Signal(range(max(p.cols(l) for l in range(L))))
        issuing = Signal()
        v1, v2, v3 = Signal(), Signal(), Signal()
        f1, f2, f3 = Signal(), Signal(), Signal()      # the word came from a fused sweep
        addr1, addr2, addr3 = (Signal(range(p.depth), name=f"addr{i}") for i in (1, 2, 3))
        w2 = Signal.like(self.w_rd.data)
        w3 = Signal.like(self.w_rd.data)
        gq2 = Signal(data.ArrayLayout(signed(fmt.update.width), p.block))

        # Stage 0 -> 1: the word to update, registered (g1) before the clip. It comes from the
        # engine's own sweep (the accumulators are read with the next address, so that their
        # word arrives in its issue cycle) or from a fused sweep (``f_*``). The weights, needed
        # a stage later, are read with the issue address or, for a fused word, at ``f_addr``.
        addr_n = lookahead(m, addr)
        # With fmax_stages ``addr + 1`` is a register beside the counter (loaded with the
        # counter's next value plus one), so the accumulators' read address, the counter's next
        # value, is a choice among registers: through the increment's carry chain it ended on
        # the accumulators' block RAMs among the 85F's longest paths at 5932f18 (10.95 ns).
        if p.fmax_stages:
            addr_inc = Signal(range(p.depth + 2), init=1)
            m.d.sync += addr_inc.eq(addr_n + 1)
        else:
            addr_inc = None
        g1 = Signal.like(self.g_rd.data)
        with m.If(issuing | self.f_valid):
            m.d.sync += g1.as_value().eq(Mux(self.f_valid, self.f_g.as_value(),
                                             self.g_rd.data.as_value()))
        m.d.comb += [self.w_rd.addr.eq(addr), self.w_rd.en.eq(1),
                     self.g_rd.addr.eq(addr_n), self.g_rd.en.eq(1)]
        # The word's parameter kind. With fmax_stages "this row is its layer's bias row" is a
        # register loaded beside the row counter (the sweep's ``bias``), not a compare of it:
        # the kind chooses the clip's constants, which are registered (below), and the row's
        # compare before that choice was the 85F's critical path when they were first
        # registered (c40d012, 86.31 MHz).
        at_bias = Signal() if p.fmax_stages else None
        own_kind = 2 * layer + (at_bias if p.fmax_stages
                                else row == Array(Const(p.rows(l)) for l in range(L))[layer])
        # With fmax_stages the clip takes two stages (1 and 1b, below): the stage-1b copies
        # of the valid bit, the word's address and flag, and its weights (``*_1b``) stand
        # between stages 1 and 2. Without them stage 2 takes stage 1's.
        R = p.fmax_stages
        v1b, f1b, addr1b, w1b = ((Signal(name="v1b"), Signal(name="f1b"),
                                  Signal.like(addr1, name="addr1b"),
                                  Signal.like(self.w_rd.data, name="w1b", reset_less=True)) if R
                                 else (v1, f1, addr1, self.w_rd.data))
        if R:
            m.d.sync += [v1b.eq(v1), f1b.eq(f1), addr1b.eq(addr1), w1b.eq(self.w_rd.data)]
        m.d.sync += [
            v1.eq(issuing | self.f_valid), f1.eq(self.f_valid),
            addr1.eq(Mux(self.f_valid, self.f_addr, addr)),
            v2.eq(v1b), addr2.eq(addr1b), f2.eq(f1b), v3.eq(v2), addr3.eq(addr2), f3.eq(f2),
            w2.eq(w1b), w3.eq(w2),
        ]
        # The stage registers load only when their stage holds a word (clock enables). The
        # engine is idle between batch boundaries, and the compiled simulation (write_cxxrtl
        # -noproc) skips logic under a false condition: the paper core simulates about 1.5x
        # faster for it.
        # Stage 1: clip to +-clip, round to the update format: one circuit for every kind of
        # parameter, its constants chosen by the kind (clip_narrow).
        # Every lane has its own copy of the stage-1 kind and valid bit (replicate): one
        # register steering all lanes' clips was the 64-MAC core's critical path (d353efe,
        # 16 ns of routing in 19 on the 85F). The lane's later valid bits follow its own copy.
        cases = [(round(p.clip * (1 << frac)), frac - fmt.update.frac) for frac in kinds]
        apart = platform is not None     # copies for a board, one register in simulation
        kind0 = Mux(self.f_valid, self.f_kind, own_kind)
        kind1 = replicate(m, "kind1", kind0, p.block, apart=apart)
        # With ``fmax_stages`` the clip's adder and compares take their constants from
        # registers loaded with the kind (a copy per lane), not from a choice by ``kind1``
        # in front of them: the 85F's critical path at 6f2486b with seed 2 ran from ``kind1``
        # through that choice and the compare's carry chain into ``gq2`` (10.73 ns).
        operands = [None] * p.block
        if p.fmax_stages:
            lanes = {}
            for key, values in clip_operands(cases).items():
                lanes[key] = replicate(m, f"clip_{key}", case_table(values, kind0), p.block,
                                       apart=apart)
            operands = [{key: lanes[key][i] for key in lanes} for i in range(p.block)]
        lane_v1 = replicate(m, "v1", issuing | self.f_valid, p.block, apart=apart)
        if R:
            # Stage 1 -> 1b: the clip's adder and compares, registered; stage 1b -> 2: the
            # choice of the shift and of the clipped constants by the kind (a stage-1b copy).
            # In one stage, from the constants' registers through a compare's carry chain and
            # the choices into gq2, they were the 85F's critical path at 4469bd7 (10.52 and
            # 10.69 ns, seeds 1 and 2). One cycle more per update sweep.
            kind1b = [Signal.like(kind1[i], name=f"kind1b_{i}") for i in range(p.block)]
            m.d.sync += [kind1b[i].eq(kind1[i]) for i in range(p.block)]
            lane_v1b = replicate(m, "v1b", v1, p.block, apart=apart)
        for i in range(p.block):
            lane_v2, lane_v3 = Signal(name=f"v2_{i}"), Signal(name=f"v3_{i}")
            m.d.sync += [lane_v2.eq(lane_v1b[i] if R else lane_v1[i]), lane_v3.eq(lane_v2)]
            if R:
                total, over, under = clip_parts(m, g1[i], kind1[i], cases, f"gq{i}",
                                                operands[i])
                parts = (Signal.like(total, name=f"gq{i}_total1b"),
                         Signal(name=f"gq{i}_over1b"), Signal(name=f"gq{i}_under1b"))
                with m.If(lane_v1[i]):
                    m.d.sync += [r.eq(x) for r, x in zip(parts, (total, over, under))]
                with m.If(lane_v1b[i]):
                    m.d.sync += gq2[i].eq(clip_finish(m, *parts, kind1b[i], cases, fmt.update,
                                                      f"gq{i}"))
            else:
                with m.If(lane_v1[i]):
                    m.d.sync += gq2[i].eq(clip_narrow(m, g1[i], kind1[i], cases, fmt.update,
                                                      f"gq{i}", operands[i]))
            # Stage 2: times the learning rate (on an ECP5 board, in a DSP block's output
            # register).
            raw3 = registered_product(m, f"raw3_{i}", gq2[i], lr, en=lane_v2,
                                      platform=platform)
            # Stage 3: round, subtract, saturate (one subtraction: sub_round_saturate); write
            # back and clear the accumulator. The result is zero when nothing is written (an
            # AND per bit in hardware; the compiled simulation skips the subtraction on the
            # other cycles).
            new_w = Signal(signed(fmt.weight.width), name=f"new_w{i}")
            with m.If(lane_v3):
                m.d.comb += new_w.eq(sub_round_saturate(w3[i], raw3, shift, fmt.weight))
            if p.fmax_stages:
                new_w4 = Signal.like(new_w, name=f"new_w4_{i}")
                m.d.sync += new_w4.eq(new_w)
                m.d.comb += self.w_wr.data[i].eq(new_w4)
            else:
                m.d.comb += self.w_wr.data[i].eq(new_w)
            m.d.comb += self.g_wr.data[i].eq(0)
        # With ``fmax_stages`` the new weights are registered (stage 4) before their write:
        # from the product's register through the subtraction, the saturation and across the
        # die into a weight block RAM's write port was the 85F's critical path at c22c243
        # (11.47 ns, the product in its DSP block's output register). It costs the sweep a
        # cycle. The accumulators are still cleared in stage 3.
        if p.fmax_stages:
            v4, addr4 = Signal(), Signal.like(addr3, name="addr4")
            m.d.sync += [v4.eq(v3), addr4.eq(addr3)]
            m.d.comb += [self.w_wr.addr.eq(addr4), self.w_wr.en.eq(v4), self.writing.eq(v4)]
        else:
            v4 = Const(0)
            m.d.comb += [self.w_wr.addr.eq(addr3), self.w_wr.en.eq(v3), self.writing.eq(v3)]
        # A fused sweep has cleared the accumulator itself.
        m.d.comb += [self.g_wr.addr.eq(addr3), self.g_wr.en.eq(v3 & ~f3)]

        m.d.comb += self.done.eq(0)
        # With fmax_stages the start is registered: the controller's decision (a result taken
        # at a batch's end) reaches one flip-flop, not the sweep's counters and every lane's
        # parameter kind (the 85F's critical path with nextpnr's heap placer at e434ddb, 12 ns
        # of routing).
        if p.fmax_stages:
            started = Signal()
            m.d.sync += started.eq(self.start)
        else:
            started = self.start
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += addr_n.eq(0)     # the first word is read before the start
                if p.fmax_stages:
                    m.d.comb += self.busy.eq(started)
                with m.If(started):
                    m.d.sync += [layer.eq(0), row.eq(0), col.eq(0), issuing.eq(1)]
                    if p.fmax_stages:
                        m.d.sync += at_bias.eq(p.rows(0) == 0)
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.If(issuing):
                    p.sweep(m, layer, row, col, addr, issuing, next_loader(m, (addr, addr_n)),
                            bias=at_bias, inc=addr_inc)
                with m.Elif(~(v1 | v1b | v2 | v3 | v4)):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m
