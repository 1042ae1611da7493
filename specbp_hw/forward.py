"""Forward engine: all layers, leaky ReLU, the fixed-point softmax and the prediction.

Arithmetic: ``docs/FIXED_POINT.md`` ("Forward pass"), bit-exact with
:func:`golden.fixed_model.forward_layer` and :func:`golden.fixed_model.softmax`.

Schedule. For each layer, for each column block ``c`` of N neurons, the engine walks the
``rows + 1`` rows of the block (K inputs per row; the last row is the bias, with input
``2**frac_in`` on element 0): one weight word per cycle, ``K x N`` products per cycle. Column
blocks follow each other without bubbles; the next layer starts issuing in the cycle after the
previous layer's last block is written. The output layer's logits then go through the softmax.
With ``skip_zeros`` the first layer walks only the sample's stored (nonzero) input words and
its bias row. Exact cycles: :meth:`specbp_hw.cycles.CycleModel.forward_cycles`.
"""

from amaranth.hdl import *
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from .arith import narrow_leaky, tree_sum
from .dsp import registered_product
from .params import CoreParams, addr_width, lookahead, read_ahead
from .replica import replicate
from .softmax import Softmax

__all__ = ["ForwardEngine"]


class ForwardEngine(wiring.Component):
    """Forward passes over the sample in one half of the input buffer.

    Parameters
    ----------
    params : CoreParams

    Members
    -------
    start : In(1)
        Pulse: run a forward pass over input-buffer half ``half``, stashing activations and
        ``y`` into stash slot ``slot`` (when ``stash`` is high).
    done : Out(1)
        Pulse when ``y`` and ``prediction`` are valid; they hold until the next start.
    y_new_valid, y_new_group, y_new : Out
        The softmax's probabilities as they are produced, a group of ``softmax_ways`` at a
        time (:class:`~specbp_hw.softmax.Softmax`); the last group comes in the cycle before
        ``y`` is valid, at least two cycles before ``done``.
    busy : Out(1)
    w_rd : In(ReadPort.Signature)
        Weight memory read port (synchronous, latency 1).
    x_rd : In(ReadPort.Signature)
        Input buffer read port: word ``half * rows_0 + r`` holds pixels ``r*K .. r*K+K-1`` as
        u0.8 values (:func:`specbp_hw.arith.pixel_value`); with ``skip_zeros`` the half's
        ``count`` stored words, each with its row (:attr:`CoreParams.x_word`).
    count : In (with ``skip_zeros``)
        The stored words of half ``half``, taken with ``start``.
    act_wr : In(WritePort.Signature)
        Stash activation memory write port (word = N values).
    """

    def __init__(self, params):
        if not isinstance(params, CoreParams):
            raise TypeError(f"params must be a CoreParams, not {params!r}")
        self._p = p = params
        fmt = p.fmt
        self._softmax = Softmax(fmt, p.classes, ways=p.softmax_ways,
                                div_bits=p.softmax_div_bits, table_stage=p.fmax_stages)
        ports = {"count": In(range(p.rows(0) + 1))} if p.skip_zeros else {}
        super().__init__({
            **ports,
            "start": In(1),
            "half": In(1),
            "slot": In(range(p.slots)),
            "stash": In(1),
            "done": Out(1),
            "busy": Out(1),
            "y": Out(data.ArrayLayout(unsigned(fmt.prob_frac), p.classes)),
            "y_new_valid": Out(1),
            "y_new_group": Out(range(-(-p.classes // p.softmax_ways))),
            "y_new": Out(data.ArrayLayout(unsigned(fmt.prob_frac), p.softmax_ways)),
            "prediction": Out(range(p.classes)),
            "w_rd": In(memory.ReadPort.Signature(addr_width=addr_width(p.depth),
                                                 shape=p.weight_word)),
            "x_rd": In(memory.ReadPort.Signature(addr_width=addr_width(p.xbuf_depth),
                                                 shape=p.x_word)),
            "act_wr": In(memory.WritePort.Signature(
                addr_width=addr_width(p.slots * p.act_words_per_slot), shape=p.act_word)),
        })

    @property
    def params(self):
        return self._p

    @property
    def softmax_latency(self):
        return self._softmax.latency

    def elaborate(self, platform):
        m = Module()
        p = self._p
        fmt = p.fmt
        K, N, L = p.inputs, p.lanes, p.n_layers
        m.submodules.softmax = softmax = self._softmax

        # Per-layer constants, indexed by the layer counter.
        rows = Array(Const(p.rows(l)) for l in range(L))
        cols = Array(Const(p.cols(l)) for l in range(L))
        act_base = Array(Const(p.act_base(l)) for l in range(L))

        # Local activations: the outputs of every hidden layer, inputs of the next.
        hidden = [p.layers[l + 1] for l in range(L - 1)]
        acts = [Signal(data.ArrayLayout(signed(fmt.act.width), n), name=f"acts{l}")
                for l, n in enumerate(hidden)]
        logits = Signal(data.ArrayLayout(signed(fmt.act.width), p.cols(L - 1) * N))

        # Issue stage.
        layer = Signal(range(L))
        col = Signal(range(max(p.cols(l) for l in range(L))))
        row = Signal(range(max(p.rows(l) for l in range(L)) + 1))
        addr = Signal.like(self.w_rd.addr)
        issuing = Signal()
        a_base = Signal(range(p.slots * p.act_words_per_slot))   # the stash slot's first word
        half = Signal()
        stash = Signal()

        # The memories are addressed with the issue counters' next values (``*_n``), so a word
        # arrives in the cycle its address is issued (stage 0) and is registered before it is
        # used. With ``fmax_stages`` they are addressed with the counters themselves
        # (flip-flops, no logic between them and the block RAMs' address pins: the 85F's
        # critical path was the next-address choice into the weights' block RAMs across the
        # die, in most builds since d353efe), so the word of the row issued in stage 0 arrives
        # a cycle later, in a stage D, with that row's tests copied into registers.
        addr_n, row_n, half_n = (lookahead(m, s) for s in (addr, row, half))
        R = p.fmax_stages

        def stage_d(sig, name):
            # ``sig`` as stage D sees it: a cycle late with fmax_stages, else itself.
            if not R:
                return sig
            reg = Signal.like(sig, name=name)
            m.d.sync += reg.eq(sig)
            return reg
        # The issue counters' tests and next addresses, kept in registers beside them, so that
        # the weights' read address is a choice among registers: no compare or adder between
        # the layer counter and the block RAMs (the 85F's critical path at commit 8269e91), nor
        # a table indexed by it (the next layer's base and the last-layer test are registers
        # too: the critical path at 6556229).
        row_end = Signal()                  # row == rows[layer]: the bias row
        row0 = Signal()                     # row == 0
        col_end = Signal()                  # col == cols[layer] - 1: the layer's last block
        addr_row = Signal.like(addr)        # addr + cols[layer]: the block's next row
        addr_col = Signal.like(addr)        # base[layer] + col + 1: the next block's first row
        addr_next = Signal.like(addr)       # base[layer + 1]: the next layer's first word
        last_layer = Signal()               # layer == L - 1
        next_base = Array(Const(p.base(l + 1) if l + 1 < L else 0) for l in range(L))
        first_col_end = Array(Const(p.cols(l) == 1) for l in range(L))
        first_addr_row = Array(Const(p.base(l) + p.cols(l)) for l in range(L))
        first_addr_col = Array(Const(p.base(l) + 1) for l in range(L))

        def enter_layer(l):
            # The counters' registers for the first row of layer l's first block.
            return [row_end.eq(0), row0.eq(1), col_end.eq(first_col_end[l]),
                    addr_row.eq(first_addr_row[l]),
                    addr_col.eq(first_addr_col[l]), addr_next.eq(next_base[l]),
                    last_layer.eq(l == L - 1)]

        # Pipeline registers. Stage D (fmax_stages; else stage 0 itself): the issued row's
        # words. Stage 1: operands. Stage 2: products. Stage 3: sums.
        vd, row0d, row_endd = (stage_d(s, f"{s.name}_d") for s in (issuing, row0, row_end))
        cold = stage_d(col, "col_d")
        v1, v2, v3 = Signal(), Signal(), Signal()
        first1, first2 = Signal(), Signal()
        last1, last2 = Signal(), Signal()
        col1, col2, col3 = (Signal.like(col, name=f"col{i}") for i in (1, 2, 3))
        # Layer 0's sums and the hidden layers' differ in fraction bits by d. With fmax_stages
        # the operand with fewer is shifted left by |d| as it is chosen (wiring), so that every
        # sum has the same fraction bits and the narrowing needs no choice of alignment by the
        # layer (a multiplexer per bit before its rounding adder, on the 85F's critical path
        # at 5d889db). The products and sums are the same values scaled by 2**|d|.
        shifts = (fmt.PIXEL_FRAC + fmt.weight.frac - fmt.act.frac,
                  fmt.act.frac + fmt.weight.frac - fmt.act.frac)
        d = shifts[0] - shifts[1]
        up0, uph = (max(0, -d), max(0, d)) if R else (0, 0)
        x_width = p.input_width + up0 + uph
        x1 = Signal(data.ArrayLayout(signed(x_width), K))
        w1 = Signal.like(self.w_rd.data, reset_less=True)     # see below
        acc_width = x_width + fmt.weight.width + (max(p.layers[:-1]) + 1).bit_length() + 1
        acc = Signal(data.ArrayLayout(signed(acc_width), N))

        m.d.comb += [
            self.w_rd.addr.eq(addr if R else addr_n),
            self.w_rd.en.eq(1),
            self.x_rd.en.eq(1),
        ]
        S = p.skip_zeros
        if S:
            # Skipping zero words: the half holds ``count`` words (pixels and row) one after
            # the other. They are read three ahead of the issue: at the issue of word j,
            # ``xpix`` holds word j's pixels, ``xq1`` word j + 1 (whose row is the next
            # weight address), the memory's output word j + 2, and ``xa`` addresses j + 3.
            # ``more1``: word j + 1 exists (else the next row is the bias row); ``rem``: the
            # words after j. Two cycles (PRIME1, PRIME2) after the start fill the pipeline.
            xa = Signal(range(p.xbuf_depth))
            xpix = Signal(p.value_word)
            xq1, rem, more1, nxt, advance = read_ahead(m, p, self.x_rd, xpix, xa, addr)
            m.d.comb += self.x_rd.addr.eq(xa)
            xpixd = stage_d(xpix, "xpix_d")
            assert p.cols(0) == 1 and p.base(0) == 0
        else:
            # The bias row reads the word after the half's last (its data is not used).
            m.d.comb += self.x_rd.addr.eq(half * p.rows(0) + row if R
                                          else half_n * p.rows(0) + row_n)

        # Stage D -> 1: the operands. The inputs come from the input buffer's word (layer 0) or
        # the local activations (hidden layers); the bias row's input is 1. A hidden layer's
        # first row takes its inputs from the activations, each at a fixed index, and the
        # other rows from a shift register ``hin`` that the first row loads with the rest
        # and each row shifts by K: no choice among the activations by the row counter (the
        # 85F netlist at commit 771abc5 had the row counter into ``x1`` 8th in benchmarks/
        # path_estimate.py, 11.7 ns).
        hin_len = max(p.layers[l] for l in range(1, L)) - K
        hin = Signal(data.ArrayLayout(signed(fmt.act.width), max(hin_len, 1)))
        # On a board the weights' word is registered in every cycle, as the update engine's
        # (fmax_stages) and the link's readback copies of the same block RAM outputs are, so
        # that Yosys merges the three into one register: three registers of those outputs,
        # 5.8 ns from the clock in nextpnr's ECP5 model, could not all sit beside the block
        # RAMs (a route of 4.2 ns into the forward's copy and the link's, 10.05 ns, on the 85F
        # at 4469bd7). Only stage 1 uses w1, the cycle after each stage D. The three are
        # reset-less, or the core's reset and the link's would keep them apart.
        if platform is not None:
            m.d.sync += w1.eq(self.w_rd.data)
        with m.If(vd):
            if platform is None:
                m.d.sync += w1.eq(self.w_rd.data)
            for k in range(K):
                x = Signal(signed(x_width), name=f"x{k}")
                with m.If(layer == 0):
                    pixel = xpixd[k] if S else self.x_rd.data[k]
                    m.d.comb += x.eq(Mux(row_endd, (1 << fmt.PIXEL_FRAC + up0) if k == 0 else 0,
                                         pixel << up0))
                for l in range(1, L):
                    with m.If(layer == l):
                        rest = hin[k] if p.rows(l) > 1 else 0
                        m.d.comb += x.eq(Mux(row_endd, (1 << fmt.act.frac + uph) if k == 0 else 0,
                                             Mux(row0d, acts[l - 1][k], rest) << uph))
                m.d.sync += x1[k].eq(x)
            with m.If(~row_endd & (layer != 0)):
                with m.If(row0d):
                    for l in range(1, L):
                        with m.If(layer == l):
                            m.d.sync += [hin[j].eq(acts[l - 1][j + K])
                                         for j in range(p.layers[l] - K)]
                with m.Else():
                    m.d.sync += [hin[j].eq(hin[j + K]) for j in range(hin_len - K)]
        m.d.sync += [
            v1.eq(vd), first1.eq(row0d), last1.eq(row_endd), col1.eq(cold),
            v2.eq(v1), first2.eq(first1), last2.eq(last1), col2.eq(col1),
            v3.eq(v2 & last2), col3.eq(col2),
        ]

        # Stage 1 -> 2: products (on an ECP5 board, the DSP blocks' output registers).
        prod = [registered_product(m, f"prod{k * N + n}", x1[k], w1[k * N + n],
                                   platform=platform)
                for k in range(K) for n in range(N)]

        # The registers that steer every lane's accumulator and narrowing have a copy per lane
        # (replicate), loaded as the register is: the valid and first-row bits of stage 2 and
        # the valid bit and column of stage 3. The layer and its tests are copied a cycle late:
        # the layer changes only while the pipeline is empty, at least three cycles before the
        # next stage 3.
        apart = platform is not None     # copies for a board, one register in simulation
        lane_v2 = replicate(m, "v2", v1, N, apart=apart)
        lane_first2 = replicate(m, "first2", first1, N, apart=apart)
        lane_v3 = replicate(m, "v3", v2 & last2, N, apart=apart)
        lane_col3 = replicate(m, "col3", col2, N, apart=apart)
        lane_layer = replicate(m, "layer", layer, N, apart=apart)
        if not R:
            lane_layer0 = replicate(m, "layer0", layer == 0, N, apart=apart)
        lane_hidden = replicate(m, "hidden", layer != L - 1, N, apart=apart)

        # Stage 2 -> 3: accumulate over rows.
        for n in range(N):
            with m.If(lane_v2[n]):
                total = tree_sum(prod[k * N + n] for k in range(K))
                m.d.sync += acc[n].eq(Mux(lane_first2[n], 0, acc[n]) + total)

        # Stage 3: narrow (round to nearest, saturate), leaky ReLU; the block goes to the local
        # activations (or logits) at once and to the stash a cycle later.
        z = Signal(data.ArrayLayout(signed(fmt.act.width), N))
        a = Signal(data.ArrayLayout(signed(fmt.act.width), N))
        # Without fmax_stages the sum with fewer fraction bits is shifted left here, by the
        # layer, so that both narrow with one shift s (round_shift(v << k, s) equals
        # round_shift(v, s - k) for s >= 1; a format whose shifts are below 1 is shifted
        # further, to s = 1); with them the operands were aligned. narrow_leaky does the
        # compares and roundings side by side. In simulation z and a are zero outside stage 3,
        # so that the compiled simulation (write_cxxrtl -noproc) skips the lanes on the other
        # cycles; on a board they are not gated (the gate's AND per bit sat before the rounding
        # adder, with a route from the lane's copy of v3: the 85F's critical path at 5d889db).
        # Every register that takes them loads only at the lane's stage 3.
        extra = max(0, 1 - max(shifts))
        s = max(shifts) + extra
        for n in range(N):
            with m.If(lane_v3[n] if not apart else 1):
                if R:
                    aligned = Signal(signed(acc_width + extra), name=f"aligned{n}")
                    m.d.comb += aligned.eq(acc[n] << extra)
                else:
                    aligned = Signal(signed(acc_width + abs(d) + extra), name=f"aligned{n}")
                    m.d.comb += aligned.eq(Mux(lane_layer0[n], acc[n] << (max(0, -d) + extra),
                                               acc[n] << (max(0, d) + extra)))
                z_n, a_n = narrow_leaky(m, aligned, s, fmt.act, fmt.leak_shift, f"narrow{n}")
                m.d.comb += [z[n].eq(z_n), a[n].eq(a_n)]
        hidden_out = Signal()
        m.d.comb += hidden_out.eq(layer != L - 1)
        # A hidden block goes to the stash a cycle after stage 3, from registers (the local
        # activations take it at stage 3): no block RAM input on the narrowing's path.
        v4 = Signal()
        wr_addr4 = Signal.like(self.act_wr.addr)
        wr_data4 = Signal.like(self.act_wr.data)
        m.d.sync += v4.eq(v3 & hidden_out & stash)
        with m.If(v4):
            m.d.comb += [self.act_wr.addr.eq(wr_addr4), self.act_wr.data.eq(wr_data4),
                         self.act_wr.en.eq(1)]
        with m.If(v3 & hidden_out):
            m.d.sync += wr_addr4.eq(a_base + act_base[layer] + col3)
        for n in range(N):
            with m.If(lane_v3[n]):
                with m.If(lane_hidden[n]):
                    m.d.sync += wr_data4[n].eq(a[n])
                    for l in range(L - 1):
                        with m.If(lane_layer[n] == l):
                            for c in range(p.cols(l)):
                                with m.If(lane_col3[n] == c):
                                    m.d.sync += acts[l][c * N + n].eq(a[n])
                with m.Else():
                    for c in range(p.cols(L - 1)):
                        with m.If(lane_col3[n] == c):
                            m.d.sync += logits[c * N + n].eq(z[n])

        # The next layer may issue from the cycle after the last block's write (stage 3): its
        # inputs are registered from the local activations one cycle after issue.
        layer_done = ~(vd | v1 | v2 | issuing)
        m.d.comb += self.done.eq(0)
        for c in range(p.classes):
            m.d.comb += softmax.i.payload[c].eq(logits[c])
        # y and the prediction are the softmax's output, read in place: it holds them until
        # its next input, which comes after the next start.
        m.d.comb += [self.y.eq(softmax.o.payload.y),
                     self.prediction.eq(softmax.o.payload.prediction)]
        m.d.comb += [self.y_new_valid.eq(softmax.y_new_valid),
                     self.y_new_group.eq(softmax.y_new_group), self.y_new.eq(softmax.y_new)]
        y_words = p.cols(L - 1)
        y_col = Signal(range(y_words + 1))
        # With fmax_stages ``done`` is a register, set the cycle before (when the last y word
        # comes next): decoded from the state and y_col it began the 85F core's critical path,
        # the controller's start of the backward engine after the pass (10.69 ns at 7b073be).
        done_next = Signal()
        if R:
            done_q = Signal()
            m.d.sync += done_q.eq(done_next)
        with m.FSM():
            with m.State("IDLE"):
                # The first words are read whether or not the engine is started (the start
                # comes late in the cycle): the counters load their first values meanwhile.
                m.d.comb += [row_n.eq(0), addr_n.eq(p.base(0)), half_n.eq(self.half)]
                if S:
                    m.d.comb += self.x_rd.addr.eq(self.half * p.rows(0))
                with m.If(self.start):
                    m.d.sync += [layer.eq(0), col.eq(0),
                                 a_base.eq(p.slot_bases(p.act_words_per_slot)[self.slot]),
                                 stash.eq(self.stash), *enter_layer(0)]
                    if S:
                        m.d.sync += [xa.eq(self.half * p.rows(0) + 1), rem.eq(self.count)]
                        m.next = "PRIME1"
                    else:
                        m.d.sync += issuing.eq(1)
                        m.next = "RUN"
            if S:
                with m.State("PRIME1"):
                    # Word 0 at the memory's output.
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += [xq1.eq(self.x_rd.data), xa.eq(xa + 1), more1.eq(rem != 0)]
                    m.next = "PRIME2"
                with m.State("PRIME2"):
                    # Word 0 in xq1: the first issue's weight word is read.
                    m.d.comb += [self.busy.eq(1), addr_n.eq(nxt)]
                    m.d.sync += [*advance(), issuing.eq(1), row_end.eq(~more1)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += self.busy.eq(1)
                with m.If(issuing):
                    with m.If(row_end):
                        m.d.comb += row_n.eq(0)
                        m.d.sync += [row_end.eq(0), row0.eq(1)]
                        with m.If(col_end):
                            m.d.sync += issuing.eq(0)
                        with m.Else():
                            m.d.sync += [col.eq(col + 1), col_end.eq(col + 2 == cols[layer]),
                                         addr_col.eq(addr_col + 1),
                                         addr_row.eq(addr_col + cols[layer])]
                            m.d.comb += addr_n.eq(addr_col)
                    with m.Else():
                        m.d.comb += [row_n.eq(row + 1), addr_n.eq(addr_row)]
                        m.d.sync += [row_end.eq(row + 1 == rows[layer]), row0.eq(0),
                                     addr_row.eq(addr_row + cols[layer])]
                        if S:
                            with m.If(layer == 0):
                                m.d.comb += addr_n.eq(nxt)
                                m.d.sync += [*advance(), row_end.eq(~more1)]
                with m.Elif(layer_done):
                    with m.If(last_layer):
                        m.next = "SOFTMAX"
                    with m.Else():
                        m.d.sync += [layer.eq(layer + 1), col.eq(0), issuing.eq(1),
                                     *enter_layer(layer + 1)]
                        m.d.comb += [row_n.eq(0), addr_n.eq(addr_next)]
            with m.State("SOFTMAX"):
                m.d.comb += [self.busy.eq(1), softmax.i.valid.eq(1)]
                with m.If(softmax.i.ready):
                    m.next = "WAIT_Y"
            with m.State("WAIT_Y"):
                m.d.comb += [self.busy.eq(1), softmax.o.ready.eq(1)]
                with m.If(softmax.o.valid):
                    m.d.sync += y_col.eq(0)
                    m.d.comb += done_next.eq(y_words == 1)
                    m.next = "WRITE_Y"
            with m.State("WRITE_Y"):
                m.d.comb += self.busy.eq(1)
                # y goes into the stash slot after the hidden activations, N values a word.
                word = Signal(data.ArrayLayout(signed(fmt.act.width), N))
                for c in range(y_words):
                    with m.If(y_col == c):
                        for n in range(N):
                            if c * N + n < p.classes:
                                m.d.comb += word[n].eq(self.y[c * N + n])
                m.d.comb += [
                    self.act_wr.addr.eq(a_base + p.act_base(L - 1) + y_col),
                    self.act_wr.data.eq(word),
                    self.act_wr.en.eq(stash),
                ]
                m.d.sync += y_col.eq(y_col + 1)
                if y_words > 1:
                    m.d.comb += done_next.eq(y_col == y_words - 2)
                with m.If(y_col == y_words - 1):
                    if not R:
                        m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        if R:
            m.d.comb += self.done.eq(done_q)
        return m
