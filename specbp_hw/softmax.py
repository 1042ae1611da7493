"""Fixed-point softmax of the output layer, bit-exact with :func:`golden.fixed_model.softmax`.

The arithmetic is specified in ``docs/FIXED_POINT.md``, section "Softmax":

1. ``t_j = max(z) - z_j``;
2. ``v_j = rnd(t_j * LOG2E, act.frac + LOG2E_FRAC - exp_index_bits)``;
3. ``p_j = T[v_j mod 2**exp_index_bits] >> (v_j >> exp_index_bits)``, ``T`` from
   :func:`golden.fixed.exp2_table`;
4. ``S = sum_j p_j``, ``R = floor(2**(exp_frac + recip_frac) / S)``;
5. ``y_j = min(rnd(p_j * R, exp_frac + recip_frac - prob_frac), 2**prob_frac - 1)``.

Every stage is registered. The exponential and scaling stages handle ``ways`` classes per
cycle (one by default); the reciprocal comes from a radix-``2**div_bits`` restoring divider
producing ``div_bits`` quotient bits per cycle (one by default). ``R`` is an exact integer
floor division, so every radix gives the same quotient.
"""

from functools import reduce
from operator import or_

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.fixed import LOG2E, LOG2E_FRAC, FixedFormat, exp2_table

__all__ = ["Softmax", "softmax_latency"]

_MAX_DIV_BITS = 4


def _ceil_div(a, b):
    return -(-a // b)


def _check(fmt, classes, ways, div_bits):
    if not isinstance(fmt, FixedFormat):
        raise TypeError(f"Format must be a FixedFormat, not {fmt!r}")
    if not isinstance(classes, int) or isinstance(classes, bool):
        raise TypeError(f"Number of classes must be an integer, not {classes!r}")
    if not 2 <= classes <= 64:
        raise ValueError(f"Number of classes must be an integer from 2 to 64, not {classes!r}")
    if not isinstance(ways, int) or isinstance(ways, bool):
        raise TypeError(f"Ways must be an integer, not {ways!r}")
    if not 1 <= ways <= classes:
        raise ValueError(f"Ways must be an integer from 1 to the number of classes "
                         f"({classes}), not {ways!r}")
    if not isinstance(div_bits, int) or isinstance(div_bits, bool):
        raise TypeError(f"Divider bits per cycle must be an integer, not {div_bits!r}")
    if not 1 <= div_bits <= _MAX_DIV_BITS:
        raise ValueError(f"Divider bits per cycle must be an integer from 1 to "
                         f"{_MAX_DIV_BITS}, not {div_bits!r}")


def _schedule(fmt, classes, ways, div_bits, table_stage=False):
    """Cycles of every phase, in order; the latency is their sum.

    ``max``: the sequential scan (``classes - 1``) or the comparison tree (two levels per
    cycle); ``issue``: one group of ``ways`` classes per cycle into the exponential pipeline;
    ``drain``: its ``t`` / product / table / shift stages (and the table word's register,
    with ``table_stage``) and the adder tree (two levels per
    cycle, the accumulation of several groups counting as one more level); ``multiples``: the
    divisor multiples ``k * S`` of a radix above 2; ``divide``: one quotient digit per cycle;
    ``scale``: one group per cycle; ``flush``: the round-and-saturate stage.
    """
    groups = _ceil_div(classes, ways)
    if ways == 1:
        max_cycles = classes - 1
    else:
        max_cycles = _ceil_div((classes - 1).bit_length(), 2)
    sum_levels = (ways - 1).bit_length() + (groups > 1)
    return {
        "max": max_cycles,
        "issue": groups,
        "drain": 3 + int(table_stage) + _ceil_div(sum_levels, 2),
        "multiples": int(div_bits > 1),
        "divide": _ceil_div(fmt.recip_frac + 1, div_bits),
        "scale": groups,
        "flush": 1,
    }


def softmax_latency(fmt, classes, *, ways=1, div_bits=1, table_stage=False):
    """:attr:`Softmax.latency` of ``Softmax(fmt, classes, ways=ways, div_bits=div_bits)``,
    without building the component.

    ``max + 2 * groups + 4 + table_stage + ceil(sum_levels / 2) + (div_bits > 1) +
    ceil((recip_frac + 1) / div_bits)``, where ``groups = ceil(classes / ways)``,
    ``max = classes - 1`` if ``ways == 1`` else ``ceil(ceil(log2(classes)) / 2)``, and
    ``sum_levels = ceil(log2(ways)) + (groups > 1)``. With ``ways=1, div_bits=1`` this is
    ``3 * classes + recip_frac + 5``.

    Raises the same exceptions as :class:`Softmax`.
    """
    _check(fmt, classes, ways, div_bits)
    return sum(_schedule(fmt, classes, ways, div_bits, table_stage).values())


def _times(x, k):
    """``x * k`` for a small constant ``k`` as shifts and at most two adders (the non-adjacent
    form of ``k``, which has at most 3 non-zero digits below 16)."""
    terms, shift = [], 0
    while k:
        if k & 1:
            digit = 2 - (k & 3)                      # +1 or -1
            terms.append((digit, x.shift_left(shift)))
            k -= digit
        k >>= 1
        shift += 1
    value = terms[0][1] if terms[0][0] > 0 else -terms[0][1]
    for digit, term in terms[1:]:
        value = value + term if digit > 0 else value - term
    return value


class Softmax(wiring.Component):
    """Fixed-point softmax and argmax of one sample's logits.

    The logits arrive in one beat. The engine finds the maximum, streams the classes, ``ways``
    per cycle, through a registered pipeline ``max - z`` / ``* LOG2E`` / ``2**-f`` table (a
    synchronous ROM) / barrel shift / adder tree and accumulator, divides
    ``2**(exp_frac + recip_frac)`` by the sum with a restoring divider (``div_bits`` quotient
    bits per cycle), and scales the exponentials by the reciprocal, ``ways`` per cycle (a
    multiply, then a round-and-saturate stage).

    With ``ways=1`` the maximum comes from a sequential scan (one class per cycle); otherwise
    from a registered comparison tree over all classes, of 4-input nodes (two binary levels per
    cycle, ``ceil(log4(classes))`` cycles); a later class wins only if strictly greater, which
    keeps the first maximum.
    The sum of a group goes through a registered adder tree, two levels per cycle. A last
    partial group (``ways`` not dividing ``classes``) has its unused lanes forced to ``p = 0``.

    The shift count ``v >> exp_index_bits`` is clamped to ``exp_frac + 1`` (the model clamps it
    to 62): a table entry has ``exp_frac + 1`` bits, so both shifts give 0.

    Parameters
    ----------
    fmt : golden.fixed.FixedFormat
        The logits are in ``fmt.act``; ``exp_index_bits``, ``exp_frac``, ``recip_frac`` and
        ``prob_frac`` set the softmax arithmetic.
    classes : int
        Number of logits per sample, 2 to 64.
    ways : int
        Classes per cycle in the exponential and scaling stages, 1 to ``classes``; ``classes``
        is fully parallel (one pass of the pipeline, one scaling cycle).
    div_bits : int
        Quotient bits per cycle of the divider, 1 to 4.
    table_stage : bool
        Register the exponential table's word before its shift: one cycle more, and no path
        from the table's block RAM through the shifter.

    Members
    -------
    i : ``In(stream.Signature(data.ArrayLayout(signed(fmt.act.width), classes)))``
        One beat carries all the logits of a sample.
    o : ``Out(stream.Signature(data.StructLayout({"y": ..., "prediction": ...})))``
        ``y``: ``data.ArrayLayout(unsigned(prob_frac), classes)``, the probabilities with
        ``prob_frac`` fraction bits (always below ``2**prob_frac`` after the saturation).
        ``prediction``: the index of the first maximum logit (as ``numpy.argmax``),
        ``unsigned((classes - 1).bit_length())``.
    y_new_valid : ``Out(1)``
        High in the cycle at whose clock edge a group of probabilities is scaled into the
        output payload (once per group, ``ceil(classes / ways)`` times per sample, the last
        time in the cycle before ``o.valid`` rises), so that a consumer can fold them as they
        are produced, or register them a cycle before the payload holds them.
    y_new_group : ``Out(range(ceil(classes / ways)))``
        The index ``g`` of that group: ``y_new[j]`` is class ``g * ways + j``.
    y_new : ``Out(data.ArrayLayout(unsigned(prob_frac), ways))``
        That group's probabilities; lanes past the last class (a partial last group) are 0.

    Raises
    ------
    TypeError
        If ``fmt`` is not a :class:`~golden.fixed.FixedFormat`, or ``classes``, ``ways`` or
        ``div_bits`` not an integer.
    ValueError
        If ``classes`` is not in 2..64, ``ways`` not in 1..``classes`` or ``div_bits`` not in
        1..4.

    Notes
    -----
    Latency: ``o.valid`` rises :attr:`latency` cycles (:func:`softmax_latency`) after the clock
    edge of the input transfer: ``3 * classes + recip_frac + 5`` by default (52 for 10 classes
    and the default format), 20 with ``ways=10, div_bits=2``, one more with ``table_stage``. A
    new input is accepted only once the previous output has been taken (``i.ready`` is high
    only while idle). Throughput: at
    most one sample per ``latency + 2`` cycles. The output payload is held stable until its
    transfer, and after it until the next input transfer (``y`` until that input's scaling
    phase): a consumer may read it in place rather than copy it.

    Resources: ``ways`` constant multipliers ``t * LOG2E``, ``ways`` multipliers ``p * R``
    (``exp_frac + 1`` by ``recip_frac + 1`` bits), ``ways`` shifters, a ``ways``-input adder
    tree, and ``ceil(ways / 2)`` copies of the table, each a ``lib.memory.Memory`` ROM with two
    synchronous read ports (one true-dual-port block RAM). ``ways > 1`` adds the comparison
    tree, at most ``2 * (classes - 1)`` comparators. The divider has ``2**div_bits - 1`` subtractors
    and, for ``div_bits > 1``, registered multiples ``k * S`` (shifts and at most two adders
    each). On ECP5, 10 classes with the default format: 2 DSPs, 1 block RAM, ~630 LUTs for the
    default; 20 DSPs, 5 block RAMs, ~1800 LUTs for ``ways=10, div_bits=2``.
    """

    def __init__(self, fmt, classes, *, ways=1, div_bits=1, table_stage=False):
        _check(fmt, classes, ways, div_bits)
        self._table_stage = bool(table_stage)
        self._fmt = fmt
        self._classes = classes
        self._ways = ways
        self._div_bits = div_bits
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(fmt.act.width), classes))),
            "o": Out(stream.Signature(data.StructLayout({
                "y": data.ArrayLayout(unsigned(fmt.prob_frac), classes),
                "prediction": unsigned((classes - 1).bit_length()),
            }))),
            "y_new_valid": Out(1),
            "y_new_group": Out(range(_ceil_div(classes, ways))),
            "y_new": Out(data.ArrayLayout(unsigned(fmt.prob_frac), ways)),
        })

    @property
    def fmt(self):
        return self._fmt

    @property
    def classes(self):
        return self._classes

    @property
    def ways(self):
        return self._ways

    @property
    def div_bits(self):
        return self._div_bits

    @property
    def latency(self):
        """Cycles from the input transfer's clock edge to ``o.valid``
        (:func:`softmax_latency`)."""
        return softmax_latency(self._fmt, self._classes, ways=self._ways,
                               div_bits=self._div_bits, table_stage=self._table_stage)

    def elaborate(self, platform):
        fmt, C, G, D = self._fmt, self._classes, self._ways, self._div_bits
        W = fmt.act.width
        ib, ef, rf, pf = fmt.exp_index_bits, fmt.exp_frac, fmt.recip_frac, fmt.prob_frac
        v_shift = fmt.act.frac + LOG2E_FRAC - ib      # rounding shift of t * LOG2E (>= 2)
        y_shift = ef + rf - pf                        # rounding shift of p * R
        n_max = ef + 1                                # any larger shift gives 0 as well
        s_max = C << ef                               # S <= classes * 2**exp_frac
        groups = _ceil_div(C, G)
        padded = groups * G                           # classes and unused lanes
        last = C - (groups - 1) * G                   # used lanes of the last group
        phases = _schedule(fmt, C, G, D, self._table_stage)

        m = Module()

        # 2**-f table, exp_frac + 1 bits per entry (T[0] = 2**exp_frac). One copy per two ways:
        # a block RAM has two read ports (Yosys maps a copy with more ports to logic).
        init = [int(x) for x in exp2_table(ib, ef)]
        roms = []
        for copy in range(_ceil_div(G, 2)):
            table = memory.Memory(shape=unsigned(ef + 1), depth=1 << ib, init=init)
            m.submodules[f"table{copy}" if G > 2 else "table"] = table
            # A ROM: there is no write port, so transparent_for stays empty (nothing to bypass).
            roms += [table.read_port() for _ in range(min(2, G - 2 * copy))]

        # The logits rotate by a group (no read multiplexer): z_sr[:G] is the group under
        # consideration.
        z_sr = Signal(data.ArrayLayout(signed(W), padded))
        rotate = Signal()
        with m.If(rotate):
            m.d.sync += [z_sr[k].eq(z_sr[(k + G) % padded]) for k in range(padded)]

        zmax = Signal(signed(W))
        pred = Signal.like(self.o.payload.prediction)
        m.d.comb += self.o.payload.prediction.eq(pred)
        count = Signal(range(max(phases.values()) + 1))

        # Maximum over all classes, for ways > 1: a registered comparison tree of 4-input nodes
        # (two binary levels per cycle). A node compares all its pairs at once, so a cycle holds
        # one comparator and a selection, not two comparators in series; a later candidate wins
        # only if strictly greater than every earlier one (the first maximum, as numpy.argmax).
        # The intermediate stages run freely; the last one loads zmax and pred in the MAX state.
        take_max = Signal()
        if G > 1:
            nodes = [(z_sr[k], Const(k, len(pred))) for k in range(C)]
            while len(nodes) > 1:
                last_stage = len(nodes) <= 4
                staged = []
                for base in range(0, len(nodes), 4):
                    group = nodes[base:base + 4]
                    later = {(a, b): group[b][0] > group[a][0]
                             for a in range(len(group)) for b in range(a + 1, len(group))}
                    wins = [Cat(*(later[c, a] for c in range(a)),
                                *(~later[a, b] for b in range(a + 1, len(group)))).all()
                            for a in range(len(group))]
                    if last_stage:
                        z_r, i_r = zmax, pred
                    else:
                        z_r, i_r = Signal(signed(W)), Signal.like(pred)
                    z_v, i_v = group[-1]              # the winners are one-hot

                    for w, (z, i) in zip(wins[:-1], group[:-1]):
                        z_v, i_v = Mux(w, z, z_v), Mux(w, i, i_v)
                    with m.If(take_max if last_stage else 1):
                        m.d.sync += [z_r.eq(z_v), i_r.eq(i_v)]
                    staged.append((z_r, i_r))
                nodes = staged

        # Exponential pipeline, one group of ways lanes per cycle.
        issue = Signal()
        t_valid = Signal()
        prod_valid = Signal()
        rom_valid = Signal()
        p_valid = Signal()
        m.d.sync += [t_valid.eq(issue), prod_valid.eq(t_valid), rom_valid.eq(prod_valid)]
        if self._table_stage:
            romq_valid = Signal()      # the table's word in its register
            m.d.sync += [romq_valid.eq(rom_valid), p_valid.eq(romq_valid)]
        else:
            m.d.sync += p_valid.eq(rom_valid)
        # The unused lanes of the last group get the largest shift, hence p = 0.
        last_issue = Signal()
        pad_t = Signal()
        pad_prod = Signal()
        m.d.sync += [pad_t.eq(last_issue), pad_prod.eq(pad_t)]
        ps = []
        for j in range(G):
            t = Signal(unsigned(W), name=f"t{j}")     # max - z >= 0 fits W bits unsigned
            prod = Signal(unsigned(W + LOG2E.bit_length() + 1), name=f"prod{j}")
            n = Signal(range(n_max + 1), name=f"n{j}")
            p = Signal(unsigned(ef + 1), name=f"p{j}")
            rom = roms[j]
            m.d.sync += [
                t.eq(zmax - z_sr[j]),
                # Adding the rounding half here keeps the ROM address free of any adder.
                prod.eq(t * LOG2E + (1 << (v_shift - 1))),
            ]
            if self._table_stage:
                # The table's word is registered before the shift (a block RAM's output
                # through a shifter into p was the 25F's critical path at d2c2840, 12.6 ns).
                nq = Signal(range(n_max + 1), name=f"nq{j}")
                romq = Signal(unsigned(ef + 1), name=f"romq{j}")
                m.d.sync += [romq.eq(rom.data), nq.eq(n), p.eq(romq >> nq)]
            else:
                m.d.sync += p.eq(rom.data >> n)
            n_full = prod[v_shift + ib:]
            saturate = n_full > n_max
            if j >= last:
                saturate |= pad_prod
            m.d.sync += n.eq(Mux(saturate, n_max, n_full))
            m.d.comb += rom.addr.eq(prod[v_shift:v_shift + ib])
            ps.append(p)

        # The exponentials shift in at the top and out at the bottom, a group at a time.
        p_sr = Signal(data.ArrayLayout(unsigned(ef + 1), padded))
        p_shift = Signal()
        with m.If(p_shift):
            m.d.sync += [p_sr[k].eq(p_sr[k + G]) for k in range(padded - G)]
            m.d.sync += [p_sr[padded - G + j].eq(ps[j]) for j in range(G)]

        # Sum: an adder tree over the lanes, registered every two levels; with several groups
        # the accumulation is its last level.
        total = Signal(range(s_max + 1))
        sums = [(p, 1) for p in ps]                   # (value, lanes summed)
        valid = p_valid
        levels = (G - 1).bit_length() + (groups > 1)
        for level in range(levels):
            if len(sums) > 1:
                paired = [(sums[a][0] + sums[a + 1][0], sums[a][1] + sums[a + 1][1])
                          for a in range(0, len(sums) - 1, 2)]
                sums = paired + sums[len(sums) & ~1:]
            else:
                sums = [(total + sums[0][0], C)]
            if level == levels - 1:
                with m.If(valid):
                    m.d.sync += total.eq(sums[0][0])
            elif level % 2 == 1:
                staged = []
                for value, lanes in sums:
                    reg = Signal(range((lanes << ef) + 1))
                    m.d.sync += reg.eq(value)
                    staged.append((reg, lanes))
                sums = staged
                staged_valid = Signal()
                m.d.sync += staged_valid.eq(valid)
                valid = staged_valid

        # Radix-2**D restoring divider: R = floor(2**(ef + rf) / S), D quotient bits per step.
        # The dividend's top bits form the initial partial remainder, below 2**(ef - 1) < S; its
        # steps * D low bits shift in from `num`, whose low end collects the quotient digits.
        # Each step compares the shifted remainder against all the multiples k * S at once.
        steps = phases["divide"]
        dividend = 1 << (ef + rf)
        rem = Signal(range(s_max))
        num = Signal(steps * D)
        mults = [Const(0), total]
        for k in range(2, 1 << D):
            mult = Signal(range(k * s_max + 1), name=f"mult{k}")
            m.d.sync += mult.eq(_times(total, k))
            mults.append(mult)
        shifted = Signal(range(s_max << D))
        m.d.comb += shifted.eq(Cat(num[-D:], rem))
        diffs = [shifted - mult for mult in mults]
        fits = [diff >= 0 for diff in diffs] + [Const(0)]
        digit_is = [fits[k] & ~fits[k + 1] for k in range(1 << D)]
        rem_next = reduce(or_, [Mux(digit_is[k], diffs[k].as_unsigned()[:len(rem)], 0)
                                for k in range(1 << D)])
        digit = Cat(reduce(or_, [digit_is[k] for k in range(1 << D) if k >> b & 1])
                    for b in range(D))
        div_step = Signal()
        with m.If(div_step):
            m.d.sync += [rem.eq(rem_next), num.eq(Cat(digit, num[:-D]))]
        recip = num[:rf + 1]                          # R <= 2**rf: the top digits are 0

        # Scaling: y = min(rnd(p * R, y_shift), 2**pf - 1), shifted into the output payload.
        scale = Signal()
        y_prod_valid = Signal()
        m.d.sync += y_prod_valid.eq(scale)
        y_add = (1 << (y_shift - 1)) if y_shift > 0 else 0
        y_sr = Signal(data.ArrayLayout(unsigned(pf), padded))
        m.d.comb += [self.o.payload.y[k].eq(y_sr[k]) for k in range(C)]
        for j in range(G):
            y_prod = Signal(unsigned(ef + 1 + rf + 1 + 1), name=f"y_prod{j}")
            m.d.sync += y_prod.eq(p_sr[j] * recip + y_add)
            y_full = y_prod.shift_right(y_shift)
            m.d.comb += self.y_new[j].eq(Mux(y_full[pf:].any(), (1 << pf) - 1, y_full[:pf]))
            with m.If(y_prod_valid):
                m.d.sync += y_sr[padded - G + j].eq(self.y_new[j])
        with m.If(y_prod_valid):
            m.d.sync += [y_sr[k].eq(y_sr[k + G]) for k in range(padded - G)]
        # The group that enters the top of y_sr at this edge, and its index.
        m.d.comb += self.y_new_valid.eq(y_prod_valid)
        with m.If(self.y_new_valid):
            m.d.sync += self.y_new_group.eq(self.y_new_group + 1)
        m.d.comb += p_shift.eq(p_valid | scale)

        def phase(name, next_state):
            """Stay for the phase's cycles, then go to ``next_state``."""
            m.d.sync += count.eq(count + 1)
            with m.If(count == phases[name] - 1):
                m.d.sync += count.eq(0)
                m.next = next_state

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    if G == 1:
                        # Load rotated by one: z[0] is the first maximum candidate, and after
                        # the classes - 1 comparisons the rotation is back to the original
                        # order.
                        m.d.sync += [z_sr[k].eq(self.i.payload[(k + 1) % C]) for k in range(C)]
                        m.d.sync += [zmax.eq(self.i.payload[0]), pred.eq(0)]
                    else:
                        m.d.sync += [z_sr[k].eq(self.i.payload[k]) for k in range(C)]
                    m.d.sync += [
                        count.eq(0),
                        total.eq(0),
                        self.y_new_group.eq(0),
                        rem.eq(dividend >> len(num)),
                        num.eq(dividend & ((1 << len(num)) - 1)),
                    ]
                    m.next = "MAX"
            with m.State("MAX"):
                if G == 1:
                    # z_sr[0] is class count + 1; strictly greater keeps the first maximum.
                    m.d.comb += rotate.eq(1)
                    with m.If(z_sr[0] > zmax):
                        m.d.sync += [zmax.eq(z_sr[0]), pred.eq(count + 1)]
                else:
                    m.d.comb += take_max.eq(1)
                phase("max", "EXP")
            with m.State("EXP"):
                m.d.comb += [rotate.eq(groups > 1), issue.eq(1),
                             last_issue.eq(count == groups - 1)]
                phase("issue", "DRAIN")
            with m.State("DRAIN"):
                phase("drain", "MULTIPLES" if phases["multiples"] else "DIVIDE")
            if phases["multiples"]:
                with m.State("MULTIPLES"):
                    phase("multiples", "DIVIDE")      # the k * S registers load from S
            with m.State("DIVIDE"):
                m.d.comb += div_step.eq(1)
                phase("divide", "SCALE")
            with m.State("SCALE"):
                m.d.comb += scale.eq(1)
                phase("scale", "FLUSH")
            with m.State("FLUSH"):
                m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.next = "IDLE"

        return m
