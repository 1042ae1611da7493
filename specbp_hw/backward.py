"""Backward engine: output error, deltas through the layers, gradient accumulation.

Arithmetic: ``docs/FIXED_POINT.md`` ("Backward pass"), bit-exact with
:meth:`golden.fixed_model.FixedArith.backward`.

One backward pass over stash slot ``s`` has three phases:

1. *fetch*: the slot's hidden activations and ``e_out = y - onehot(label)`` come into local
   registers, one stash word (N values) per cycle;
2. *delta*: for each layer from the last down to the second,
   ``e = W d`` walks the layer's weight words (``K x N`` products per cycle, summed over the N
   lanes), narrowed to the delta format and multiplied by the leaky-ReLU derivative. Only the
   small layers are read: the first layer's weights are never needed here;
3. *gradient*: one linear sweep over every accumulator word, ``G += a (x) d`` (``K x N``
   products per cycle, read-modify-write), the bias rows with input 1. With ``skip_zeros``
   the first layer's rows are only the slot's stored (nonzero) words and the bias row: a zero
   input adds nothing to its row's accumulators.

The gradient phase can subtract instead (``negate``): because the accumulators hold exact
integers and never overflow, subtracting the same products restores them bit for bit. That is
how a rejected speculation is undone (its deltas are still in the engine). The delta and
gradient phases share one ``K x N`` multiplier array.
"""

from amaranth.hdl import *
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from .arith import narrow_scaled, tree_sum
from .dsp import registered_product
from .params import LANE_GROUP, CoreParams, addr_width, lookahead, next_loader, read_ahead
from .replica import replicate

__all__ = ["BackwardEngine"]


class BackwardEngine(wiring.Component):
    """Backward passes over a stash slot, into the gradient accumulators.

    Parameters
    ----------
    params : CoreParams

    Members
    -------
    start : In(1)
        Pulse: run with ``slot``, ``label`` and the phase flags ``delta`` (fetch and delta
        phases) and ``grad`` (gradient phase, subtracting when ``negate``).
    count : In (with ``skip_zeros``)
        The stored words of ``slot``, taken with ``start``.
    done : Out(1)
        Pulse at the end.
    y : Out
        The fetched slot's softmax output, from the end of the fetch until the next one (the
        low bits of the output error ``y - onehot(label)``, which is what the engine keeps).
    busy : Out(1)
    """

    def __init__(self, params):
        if not isinstance(params, CoreParams):
            raise TypeError(f"params must be a CoreParams, not {params!r}")
        self._p = p = params
        fmt = p.fmt
        ports = {"count": In(range(p.rows(0) + 1))} if p.skip_zeros else {}
        super().__init__({
            **ports,
            "start": In(1),
            "slot": In(range(p.slots)),
            "label": In(range(p.classes)),
            "delta": In(1),
            "grad": In(1),
            "negate": In(1),
            "fuse": In(1),
            "done": Out(1),
            "busy": Out(1),
            "y": Out(data.ArrayLayout(unsigned(fmt.prob_frac), p.classes)),
            "w_rd": In(memory.ReadPort.Signature(addr_width=addr_width(p.depth),
                                                 shape=p.weight_word)),
            "act_rd": In(memory.ReadPort.Signature(
                addr_width=addr_width(p.slots * p.act_words_per_slot), shape=p.act_word)),
            "x_rd": In(memory.ReadPort.Signature(addr_width=addr_width(p.stash_x_depth),
                                                 shape=p.x_word)),
            "g_rd": In(memory.ReadPort.Signature(addr_width=addr_width(p.depth),
                                                 shape=p.grad_word)),
            "g_wr": In(memory.WritePort.Signature(addr_width=addr_width(p.depth),
                                                  shape=p.grad_word)),
            # Fused batch boundary: the sweep hands each word's final sums to the update.
            "fu_valid": Out(1),
            "fu_addr": Out(range(p.depth)),
            "fu_kind": Out(range(2 * p.n_layers)),
            "fu_g": Out(p.grad_word),
        })

    @property
    def params(self):
        return self._p

    def elaborate(self, platform):
        m = Module()
        p = self._p
        fmt = p.fmt
        K, N, L = p.inputs, p.lanes, p.n_layers
        dw = max(fmt.delta.width, fmt.prob_frac + 1)

        label = Signal.like(self.label)
        do_grad = Signal()
        negate = Signal()
        fuse = Signal()

        # Local copies of the slot's activations (outputs of each hidden layer).
        acts = [Signal(data.ArrayLayout(signed(fmt.act.width), p.layers[l + 1]),
                       name=f"acts{l}") for l in range(L - 1)]
        # Deltas at the output of each weight layer, padded to whole column blocks (the padding
        # is never written: 0). The output layer's, e = y - onehot(label), are loaded by the
        # fetch; y < 2**prob_frac, so e is y with its bits from prob_frac up all set for the
        # label's class and clear for the others, and y is e's low bits.
        deltas = [Signal(data.ArrayLayout(signed(dw), p.cols(l) * N), name=f"d{l}")
                  for l in range(L)]
        m.d.comb += [self.y[j].eq(deltas[L - 1][j][:fmt.prob_frac]) for j in range(p.classes)]

        # ---- fetch -------------------------------------------------------------------------
        wps = p.act_words_per_slot
        fidx = Signal(range(wps + 1))
        fv = Signal()
        fword = Signal(range(wps))
        a_base = Signal(range(p.slots * wps))      # the slot's first stash activation word
        m.d.comb += [self.act_rd.addr.eq(a_base + fidx), self.act_rd.en.eq(1)]
        m.d.sync += fv.eq(0)
        with m.If(fv):
            for l in range(L):
                for c in range(p.cols(l)):
                    with m.If(fword == p.act_base(l) + c):
                        for n in range(N):
                            j = c * N + n
                            if l < L - 1:
                                m.d.sync += acts[l][j].eq(self.act_rd.data[n])
                            elif j < p.classes:
                                high = (label == j).replicate(dw - fmt.prob_frac)
                                m.d.sync += deltas[l][j].eq(
                                    Cat(self.act_rd.data[n][:fmt.prob_frac], high))

        # ---- shared multiplier array ------------------------------------------------------
        # Its operands are registers (stage 1): the weight word or the inputs ``op_a``, and the
        # d values of the issued column block ``dsel``.
        mode_grad = Signal()
        op_a = Signal(data.ArrayLayout(signed(max(p.input_width, fmt.weight.width)), K * N))
        dsel = Signal(data.ArrayLayout(signed(dw), N))
        # The products' registers are the DSP blocks' own on an ECP5 board.
        prod = [registered_product(m, f"prod{i}", op_a[i], dsel[i % N], platform=platform)
                for i in range(K * N)]

        # Issue-stage counters shared by the delta and gradient phases. The weights are read
        # with the counters' next values, so their words arrive in the issue cycle (stage 0)
        # and go through a register before the multipliers; the accumulators are read with
        # ``addr`` itself (their word is needed a stage later). With ``fmax_stages`` the
        # weights too are read with ``addr`` (flip-flops into the block RAMs' address pins:
        # the next-address choice into the weights' block RAMs was the 85F's critical path at
        # 4d3cccf, 12.86 ns), and a delta layer's weight word goes through a stage D of its own
        # before the operands. The stash pixels are read ahead (below).
        R = p.fmax_stages
        layer = Signal(range(L))
        row = Signal(range(max(p.rows(l) for l in range(L)) + 1))
        col = Signal(range(max(p.cols(l) for l in range(L))))
        addr = Signal(range(p.depth))
        addr_n, row_n = lookahead(m, addr), lookahead(m, row)
        # With ``fmax_stages`` a register ``at_bias`` holds whether ``row`` is its layer's bias
        # row, loaded wherever ``row`` is (``bias_n``, beside ``row_n``): the compare of
        # ``row`` with the layer's row count, in the decision that chooses ``row``'s next
        # value, was the 85F's critical path (``row`` into itself: 11.21 ns at 6f2486b,
        # 10.57 at ce83824, 12.40 at f1b3991, seed 1, most of it routing).
        at_bias = Signal() if R else None
        bias_n = lookahead(m, at_bias) if R else None

        def row_to(value, bias):
            # row's next value, and with fmax_stages whether it is the layer's bias row
            m.d.comb += row_n.eq(value)
            if R:
                m.d.comb += bias_n.eq(bias)
        x_base = Signal(range(p.slots * p.rows(0)))     # the slot's first stash pixel word
        issuing = Signal()
        v1, v2, v3 = Signal(), Signal(), Signal()
        first1, first2 = Signal(), Signal()
        last1, last2 = Signal(), Signal()
        bias1 = Signal()
        layer1 = Signal.like(layer)  # the gradient sweep crosses layers without draining
        row1, row2, row3 = (Signal.like(row, name=f"row{i}") for i in (1, 2, 3))
        addr1, addr2 = Signal.like(addr), Signal.like(addr)
        layer2, bias2 = Signal.like(layer), Signal()
        gdat2 = Signal.like(self.g_rd.data)

        rows = Array(Const(p.rows(l)) for l in range(L))
        cols = Array(Const(p.cols(l)) for l in range(L))

        m.d.comb += [
            self.w_rd.addr.eq(addr if R else addr_n), self.w_rd.en.eq(1),
            self.g_rd.addr.eq(addr), self.g_rd.en.eq(1),
        ]

        # Stash pixels, two words ahead of the sweep: the word at the block RAM's output goes
        # through a register ``x_q`` (placed by the RAM) before the multiplier operands, so
        # no path runs from the RAM across the die to the operands. ``xaddr`` is a counter of
        # its own (the read address from flip-flops, not from the sweep's next-value logic):
        # while the sweep is in layer 0 it holds the word of the row issued two cycles later,
        # ``xcol`` that row's column block. The words of the first two issue cycles are read
        # in the two cycles before the first. It stops advancing at the bias row (and goes back
        # to the slot's first word after layer 0), so it reads at most three words past a
        # slot's last (their data is not used; see CoreParams.stash_x_depth).
        c0 = p.cols(0)
        r1, r2 = 1 // c0, 2 // c0       # rows issued one and two cycles after the first
        xaddr = Signal(range(p.stash_x_depth))
        xcol = Signal(range(c0))
        x_q = Signal(p.value_word)
        m.d.comb += [self.x_rd.addr.eq(xaddr), self.x_rd.en.eq(1)]
        S = p.skip_zeros
        if S:
            # Skipping zero words: the slot holds ``count`` words (pixels and row) one after
            # the other, and the sweep's layer 0 issues only those rows and the bias row. The
            # words are read three ahead: at the issue of word j, ``x_q`` holds its pixels,
            # ``xq1`` word j + 1 (whose row is the next issue's row and accumulator word), the
            # memory's output word j + 2, and ``xaddr`` addresses j + 3. ``more1``: word j + 1
            # exists (else the next row is the bias row); ``rem``: the words after j. Three
            # cycles (XP0 to XP2) before each sweep fill this pipeline.
            count = Signal(range(p.rows(0) + 1))
            xq1, rem, more1, nxt, advance = read_ahead(m, p, self.x_rd, x_q, xaddr, addr)
            assert c0 == 1 and p.base(0) == 0
        else:
            m.d.sync += x_q.eq(self.x_rd.data)

        def x_prime(first):
            # ``xaddr`` and ``xcol`` for the first gradient issue in the next cycle.
            m.d.sync += [xaddr.eq(first + r2), xcol.eq(2 % c0)]
        # The gradient sweep's inputs in the layers after the first come from a shift register
        # ``hin``, not from a choice among the layer's activations by the row counter (the
        # 85F's critical path at d353efe and at 11fcc13: ``row`` through that choice into
        # ``op_a``). In layer 0 it loads the activations of layer 1's input, then the bias
        # row's inputs (1, then zeros); each row of a later layer shifts it by K at its last
        # column block, and the bias row loads the next layer's. So ``hin[k]`` is input k of
        # the row being issued.
        hin_len = max(p.layers[l] for l in range(1, L)) + K
        hin = Signal(data.ArrayLayout(signed(p.input_width), hin_len))

        def hin_load(l):
            values = [*acts[l - 1], 1, *([0] * (hin_len - p.layers[l] - 1))]
            return [hin[j].eq(v) for j, v in enumerate(values)]

        with m.If(layer == 0):
            m.d.sync += hin_load(1)
        with m.Elif(issuing & (col == cols[layer] - 1)):
            with m.If(at_bias if R else row == rows[layer]):
                for l in range(1, L - 1):
                    with m.If(layer == l):
                        m.d.sync += hin_load(l + 1)
            with m.Else():
                m.d.sync += [hin[j].eq(hin[j + K]) for j in range(hin_len - K)]

        # Stage 0 (gradient phase) or D (delta phase) -> 1: the operands. In the gradient
        # phase every lane of input k multiplies ``a_k``: a stash pixel (layer 0) or a local
        # activation (``hin``), 1 on the bias row. In the delta phase the weight word, with
        # ``fmax_stages`` that of the row issued a cycle earlier, with that column
        # block and row (stage D).
        if R:
            vd = Signal()
            cold, rowd = Signal.like(col, name="col_d"), Signal.like(row, name="row_d")
            m.d.sync += [vd.eq(issuing & ~mode_grad), cold.eq(col), rowd.eq(row)]
            iv, icol, irow = Signal(), Signal.like(col), Signal.like(row)
            m.d.comb += [iv.eq(Mux(mode_grad, issuing, vd)),
                         icol.eq(Mux(mode_grad, col, cold)), irow.eq(Mux(mode_grad, row, rowd))]
        else:
            vd, iv, icol, irow = Const(0), issuing, col, row
        with m.If(iv):
            for l in range(L):
                with m.If(layer == l):
                    dblocks = Array(Cat(*(deltas[l][c * N + n] for n in range(N)))
                                    for c in range(p.cols(l)))
                    m.d.sync += dsel.as_value().eq(dblocks[icol])
            for k in range(K):
                a_k = Signal(signed(p.input_width), name=f"a{k}")
                with m.If(layer == 0):
                    m.d.comb += a_k.eq(Mux(row == p.rows(0), 1 if k == 0 else 0, x_q[k]))
                with m.Else():
                    m.d.comb += a_k.eq(hin[k])
                for n in range(N):
                    m.d.sync += op_a[k * N + n].eq(Mux(mode_grad, a_k,
                                                       self.w_rd.data[k * N + n]))
        m.d.sync += [
            v1.eq(iv), first1.eq(icol == 0), last1.eq(icol == cols[layer] - 1),
            bias1.eq(at_bias if R else row == rows[layer]), row1.eq(irow), addr1.eq(addr),
            layer1.eq(layer),
            v2.eq(v1), first2.eq(first1), last2.eq(last1), row2.eq(row1), addr2.eq(addr1),
            layer2.eq(layer1), bias2.eq(bias1),
            gdat2.eq(self.g_rd.data),
        ]

        # ---- delta phase: the sum over the lanes, then the narrowing ----------------------
        # With more than LANE_GROUP lanes the products are summed in two stages, so that
        # neither is one adder of N + 1 operands (Yosys makes one multi-operand adder of any
        # plain sum): stage 2 sums groups of LANE_GROUP lanes, stage 3 adds the groups' sums to
        # the accumulator, stage 4 narrows. With fewer lanes stage 2 adds the lanes' products
        # to the accumulator and stage 3 narrows. The sums are exact integers, so the order of
        # the terms does not change them.
        prod_w = prod[0].shape().width
        eacc_w = prod_w + (max(p.layers) + 1).bit_length() + 1
        eacc = Signal(data.ArrayLayout(signed(eacc_w), K))
        if p.delta_sum_stages == 2:
            groups = [range(g, min(g + LANE_GROUP, N)) for g in range(0, N, LANE_GROUP)]
            psum = Signal(data.ArrayLayout(signed(prod_w + (LANE_GROUP - 1).bit_length()),
                                           K * len(groups)))
            first3, last3, v4 = Signal(name="first3"), Signal(name="last3"), Signal(name="v4")
            row4 = Signal.like(row, name="row4")
            with m.If(v2 & ~mode_grad):
                for k in range(K):
                    for j, lanes in enumerate(groups):
                        m.d.sync += psum[k * len(groups) + j].eq(
                            tree_sum(prod[k * N + n] for n in lanes))
            m.d.sync += [v3.eq(v2 & ~mode_grad), first3.eq(first2), last3.eq(last2),
                         row3.eq(row2)]
            with m.If(v3):
                for k in range(K):
                    total = tree_sum(psum[k * len(groups) + j] for j in range(len(groups)))
                    m.d.sync += eacc[k].eq(Mux(first3, 0, eacc[k]) + total)
            m.d.sync += [v4.eq(v3 & last3), row4.eq(row3)]
            v_nar, row_nar = v4, row4
            drain = [issuing, vd, v1, v2, v3]
        else:
            with m.If(v2 & ~mode_grad):
                for k in range(K):
                    total = tree_sum(prod[k * N + n] for n in range(N))
                    m.d.sync += eacc[k].eq(Mux(first2, 0, eacc[k]) + total)
            m.d.sync += [v3.eq(v2 & last2 & ~mode_grad), row3.eq(row2)]
            v_nar, row_nar = v3, row3
            drain = [issuing, vd, v1, v2]
        # The delta of layer l-1 from e = W_l d_l: d_l has prob_frac fraction bits at the
        # output layer, delta.frac elsewhere. narrow_scaled computes e and its leaky scaling
        # side by side; a shift below 1 is aligned to s = 1 first (round_shift(v << j, s)
        # equals round_shift(v, s - j) for s >= 1).
        # With ``fmax_stages`` the narrowed pair is registered before the choice by the sign
        # and the write into the row's deltas (the 85F's critical path at b1fa0a8 ran from the
        # accumulator through the rounding and saturation into the deltas, 12.07 ns): one
        # cycle more per delta layer.
        def write_deltas(l, k, row_w, e, e_leak):
            for r in range(p.rows(l)):
                with m.If(row_w == r):
                    i = r * K + k
                    pos = acts[l - 1][i] > 0
                    m.d.sync += deltas[l - 1][i].eq(Mux(pos, e, e_leak))
        if R:
            v_w, row_w = Signal(), Signal.like(row_nar, name="row_w")
            e_q = [Signal(signed(fmt.delta.width), name=f"e_q{k}") for k in range(K)]
            el_q = [Signal(signed(fmt.delta.width), name=f"el_q{k}") for k in range(K)]
            m.d.sync += [v_w.eq(v_nar), row_w.eq(row_nar)]
            drain.append(v_nar)
        for l in range(1, L):
            f_d = fmt.prob_frac if l == L - 1 else fmt.delta.frac
            shift = fmt.weight.frac + f_d - fmt.delta.frac
            extra = max(0, 1 - shift)
            with m.If(v_nar & (layer == l)):
                for k in range(K):
                    e, e_leak = narrow_scaled(m, eacc[k] << extra, shift + extra, fmt.delta,
                                              fmt.leak_shift, f"e{l}_{k}")
                    if R:
                        m.d.sync += [e_q[k].eq(e), el_q[k].eq(e_leak)]
                    else:
                        write_deltas(l, k, row_nar, e, e_leak)
            if R:
                with m.If(v_w & (layer == l)):
                    for k in range(K):
                        write_deltas(l, k, row_w, e_q[k], el_q[k])

        # ---- gradient phase: stage 2 read-modify-write --------------------------------------
        # With ``fuse`` (the last pass of a batch) the final sums go to the update engine and
        # the accumulators are cleared in the same write: no separate update sweep.
        # Subtracting is adding the complement and a carry in: one adder, not an adder, a
        # subtracter and a choice between them (Yosys makes the 1-bit term its carry input).
        # Every lane has its own copies of ``negate`` and ``fuse`` (replicate), loaded a cycle
        # after the pass's start sets them: the first read-modify-write of a pass comes at
        # least three cycles after its start, and the previous pass's last one before it.
        # With ``fmax_stages`` the write is registered (stage 3): from the product's register
        # (a DSP block's output) through the adder across the die into a gradient block RAM's
        # write port was the 85F's critical path at c22c243 with seed 2 (10.70 ns) and the
        # 25F's (10.41 ns). It costs no cycle: the sweep's words are written in address order,
        # a following pass or update sweep starts reading from its first words two cycles or
        # more after this sweep's done, and its last write is the sweep's last word, one cycle
        # after the done.
        g_data = Signal.like(self.g_wr.data)
        if R:
            g_v3, g_addr3 = Signal(), Signal.like(addr2, name="g_addr3")
            g_data3 = Signal.like(self.g_wr.data, name="g_data3")
            m.d.sync += [g_v3.eq(v2 & mode_grad), g_addr3.eq(addr2), g_data3.eq(g_data)]
            m.d.comb += [self.g_wr.addr.eq(g_addr3), self.g_wr.en.eq(g_v3),
                         self.g_wr.data.eq(g_data3)]
        else:
            m.d.comb += [self.g_wr.addr.eq(addr2), self.g_wr.en.eq(v2 & mode_grad),
                         self.g_wr.data.eq(g_data)]
        apart = platform is not None     # copies for a board, one register in simulation
        lane_negate = replicate(m, "negate", negate, K * N, apart=apart)
        lane_fuse = replicate(m, "fuse", fuse, K * N, apart=apart)
        for i in range(K * N):
            term = Mux(lane_negate[i], ~prod[i], prod[i])
            m.d.comb += self.fu_g[i].eq(gdat2[i] + term + lane_negate[i])
            m.d.comb += g_data[i].eq(Mux(lane_fuse[i], 0, self.fu_g[i]))
        m.d.comb += [
            self.fu_valid.eq(v2 & mode_grad & fuse), self.fu_addr.eq(addr2),
            self.fu_kind.eq(2 * layer2 + bias2),
        ]

        # ---- control ------------------------------------------------------------------------
        m.d.comb += self.done.eq(0)
        # A delta layer ends with its narrowing stage's write; the next layer's deltas are read
        # (registered) from the cycle after it, so the next layer may issue right after that
        # write.
        layer_done = ~Cat(*drain).any()
        # The gradient sweep's last write is at stage 2 (with fmax_stages 3, in the cycle after
        # the done, to the sweep's last word); a following pass reads no accumulator before
        # the cycle after it (with fmax_stages none but its first words).
        sweep_done = ~(issuing | v1)
        # Waiting for a start (IDLE, DONE), the engine reads the first stash pixel word of the
        # slot at its input: a gradient-only pass needs it (in x_q) in its first issue cycle,
        # two cycles after the start. (Not under the start condition: the controller decides
        # to start late in the cycle.) The other stash pixel reads follow ``xaddr``; outside
        # the gradient sweep it holds the pass's first word, and a delta pass primes it at the
        # end of its last delta layer, in the two cycles before its gradient sweep.
        x_first = p.slot_bases(p.rows(0))[self.slot]
        if not S:
            m.d.sync += xaddr.eq(x_base)

        def accept_start():
            # Taken in IDLE and in DONE, so that a controller may start the next pass in the
            # cycle that reports the end of this one.
            # The counters' first values, whether or not a pass starts (a gradient-only pass
            # issues from word 0, a delta pass sets them again after its fetch).
            row_to(0, 0)
            m.d.comb += addr_n.eq(0)
            if not S:
                # (Skipping zero words, a pass reads its first word in XP0, from ``xaddr``:
                # the start decision reaches no block RAM address.)
                m.d.comb += self.x_rd.addr.eq(x_first)
            # The pass's settings. With fmax_stages they are taken in every cycle of waiting,
            # not only with the start: the controller drives them, as it decides to start, from
            # its registers, and the start then reaches only the state and the registers that
            # depend on the kind of pass. (Under the start they were the end of the 85F core's
            # critical path, from the forward engine's end through the controller's decision
            # into these registers' enables: 10.69 ns at 7b073be.) Nothing reads them while
            # the engine waits: the previous pass's last accumulator write is before DONE.
            settings = [x_base.eq(x_first),
                        a_base.eq(p.slot_bases(wps)[self.slot]), label.eq(self.label),
                        do_grad.eq(self.grad), negate.eq(self.negate & ~self.delta),
                        fuse.eq(self.fuse & self.grad), fidx.eq(0)]
            if S:
                settings.append(count.eq(self.count))
            if R:
                m.d.sync += settings
            with m.If(self.start):
                if not R:
                    m.d.sync += settings
                with m.If(self.delta):
                    m.next = "FETCH"
                with m.Else():
                    if S:
                        m.d.sync += [mode_grad.eq(1), xaddr.eq(x_first)]
                        m.next = "XP0"
                    else:
                        m.d.sync += [mode_grad.eq(1), layer.eq(0), col.eq(0),
                                     xaddr.eq(x_first + r1)]
                        m.next = "PRIME"

        with m.FSM():
            with m.State("IDLE"):
                accept_start()
            with m.State("FETCH"):
                m.d.comb += self.busy.eq(1)
                m.d.sync += [fidx.eq(fidx + 1), fv.eq(fidx < wps), fword.eq(fidx)]
                with m.If(fidx == wps):
                    m.next = "ERROR"
            with m.State("ERROR"):
                # The last fetched word (the output error) lands at the end of this cycle.
                m.d.comb += self.busy.eq(1)
                m.d.sync += [mode_grad.eq(0), layer.eq(L - 1), col.eq(0), issuing.eq(1)]
                row_to(0, 0)
                m.d.comb += addr_n.eq(p.base(L - 1))
                m.next = "DELTA"
            with m.State("DELTA"):
                m.d.comb += self.busy.eq(1)
                if not S:
                    with m.If(~Cat(*drain[:-1]).any()):
                        # The last two cycles of a layer's drain (overridden below at the end
                        # of the last delta layer).
                        m.d.sync += xaddr.eq(x_base + r1)
                with m.If(issuing):
                    # Rows of the layer, column blocks inside; the bias row is skipped.
                    m.d.comb += addr_n.eq(addr + 1)
                    with m.If(col == cols[layer] - 1):
                        m.d.sync += col.eq(0)
                        row_to(row + 1, row == rows[layer] - 1)
                        with m.If(row == rows[layer] - 1):
                            m.d.sync += issuing.eq(0)
                    with m.Else():
                        m.d.sync += col.eq(col + 1)
                with m.Elif(layer_done):
                    with m.If(layer == 1):
                        with m.If(do_grad):
                            if S:
                                m.d.sync += [mode_grad.eq(1), xaddr.eq(x_base)]
                                m.next = "XP0"
                            else:
                                m.d.sync += [mode_grad.eq(1), layer.eq(0), col.eq(0),
                                             issuing.eq(1)]
                                row_to(0, 0)
                                m.d.comb += addr_n.eq(0)
                                x_prime(x_base)
                                m.next = "GRAD"
                        with m.Else():
                            m.next = "DONE"
                    with m.Else():
                        base = Array(Const(p.base(l)) for l in range(L))
                        m.d.sync += [layer.eq(layer - 1), col.eq(0), issuing.eq(1)]
                        row_to(0, 0)
                        m.d.comb += addr_n.eq(base[layer - 1])
            with m.State("PRIME"):
                # A gradient-only pass: the cycle between its start and its first issue, in
                # which the stash pixel word after its first is read.
                m.d.comb += self.busy.eq(1)
                m.d.sync += issuing.eq(1)
                x_prime(x_base)
                m.next = "GRAD"
            if S:
                with m.State("XP0"):
                    # Word 0 is read.
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += [xaddr.eq(xaddr + 1), rem.eq(count)]
                    m.next = "XP1"
                with m.State("XP1"):
                    # Word 0 at the memory's output, word 1 read.
                    m.d.comb += self.busy.eq(1)
                    m.d.sync += [xq1.eq(self.x_rd.data), xaddr.eq(xaddr + 1),
                                 more1.eq(rem != 0)]
                    m.next = "XP2"
                with m.State("XP2"):
                    # Word 0 in xq1: the first issue's row.
                    # (nxt is the bias row exactly when no word follows.)
                    row_to(nxt, ~more1)
                    m.d.comb += [self.busy.eq(1), addr_n.eq(nxt)]
                    m.d.sync += [*advance(), layer.eq(0), col.eq(0), issuing.eq(1)]
                    m.next = "GRAD"
            with m.State("GRAD"):
                m.d.comb += self.busy.eq(1)
                with m.If(issuing):
                    if R:
                        p.sweep(m, layer, row, col, addr, issuing,
                                next_loader(m, (addr, addr_n), (row, row_n),
                                            (at_bias, bias_n)), bias=at_bias)
                    else:
                        p.sweep(m, layer, row, col, addr, issuing,
                                next_loader(m, (addr, addr_n), (row, row_n)))
                    # xaddr is the word of row(t + 2); it stops advancing at the bias row (no
                    # row after it needs a pixel word).
                    with m.If((layer == 0) & (~at_bias if R else row != p.rows(0))):
                        if S:
                            # The next listed row, or the bias row after the last.
                            row_to(nxt, ~more1)
                            m.d.comb += addr_n.eq(nxt)
                            m.d.sync += advance()
                        elif c0 == 1:
                            m.d.sync += xaddr.eq(xaddr + 1)
                        else:
                            with m.If(xcol == c0 - 1):
                                m.d.sync += [xcol.eq(0), xaddr.eq(xaddr + 1)]
                            with m.Else():
                                m.d.sync += [xcol.eq(xcol + 1), xaddr.eq(xaddr)]
                with m.Elif(sweep_done):
                    m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += [self.busy.eq(1), self.done.eq(1)]
                m.next = "IDLE"
                accept_start()
        return m
