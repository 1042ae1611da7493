"""Fixed-point softmax of the output layer, bit-exact with :func:`golden.fixed_model.softmax`.

The arithmetic is specified in ``docs/FIXED_POINT.md``, section "Softmax":

1. ``t_j = max(z) - z_j``;
2. ``v_j = rnd(t_j * LOG2E, act.frac + LOG2E_FRAC - exp_index_bits)``;
3. ``p_j = T[v_j mod 2**exp_index_bits] >> (v_j >> exp_index_bits)``, ``T`` from
   :func:`golden.fixed.exp2_table`;
4. ``S = sum_j p_j``, ``R = floor(2**(exp_frac + recip_frac) / S)``;
5. ``y_j = min(rnd(p_j * R, exp_frac + recip_frac - prob_frac), 2**prob_frac - 1)``.

The datapath is sequential over the classes: every stage is registered and handles one class
per cycle, the reciprocal comes from a restoring divider producing one quotient bit per cycle.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.fixed import LOG2E, LOG2E_FRAC, FixedFormat, exp2_table

__all__ = ["Softmax"]


class Softmax(wiring.Component):
    """Fixed-point softmax and argmax of one sample's logits.

    The logits arrive in one beat. The engine finds the maximum (one class per cycle), streams
    the classes through a registered pipeline ``max - z`` / ``* LOG2E`` / ``2**-f`` table (a
    synchronous ROM) / barrel shift / accumulate, divides ``2**(exp_frac + recip_frac)`` by the
    sum with a restoring divider (one quotient bit per cycle), and scales every exponential by
    the reciprocal (one class per cycle, a multiply then a round-and-saturate stage).

    The shift count ``v >> exp_index_bits`` is clamped to ``exp_frac + 1`` (the model clamps it
    to 62): a table entry has ``exp_frac + 1`` bits, so both shifts give 0.

    Parameters
    ----------
    fmt : golden.fixed.FixedFormat
        The logits are in ``fmt.act``; ``exp_index_bits``, ``exp_frac``, ``recip_frac`` and
        ``prob_frac`` set the softmax arithmetic.
    classes : int
        Number of logits per sample, 2 to 64.

    Members
    -------
    i : ``In(stream.Signature(data.ArrayLayout(signed(fmt.act.width), classes)))``
        One beat carries all the logits of a sample.
    o : ``Out(stream.Signature(data.StructLayout({"y": ..., "prediction": ...})))``
        ``y``: ``data.ArrayLayout(unsigned(prob_frac), classes)``, the probabilities with
        ``prob_frac`` fraction bits (always below ``2**prob_frac`` after the saturation).
        ``prediction``: the index of the first maximum logit (as ``numpy.argmax``),
        ``unsigned((classes - 1).bit_length())``.

    Raises
    ------
    TypeError
        If ``fmt`` is not a :class:`~golden.fixed.FixedFormat`, or ``classes`` not an integer.
    ValueError
        If ``classes`` is not in 2..64.

    Notes
    -----
    Latency: ``o.valid`` rises :attr:`latency` ``= 3 * classes + recip_frac + 5`` cycles after
    the clock edge of the input transfer (``classes - 1`` max search, ``classes`` issue and 4
    drain cycles of the exponential pipeline, ``recip_frac + 1`` divider steps, ``classes``
    issue and 1 drain cycle of the scaling). A new input is accepted only once the previous
    output has been taken (``i.ready`` is high only while idle). Throughput: at most one sample
    per ``latency + 2`` cycles. The output payload is held stable until its transfer.
    """

    def __init__(self, fmt, classes):
        if not isinstance(fmt, FixedFormat):
            raise TypeError(f"Format must be a FixedFormat, not {fmt!r}")
        if not isinstance(classes, int) or isinstance(classes, bool):
            raise TypeError(f"Number of classes must be an integer, not {classes!r}")
        if not 2 <= classes <= 64:
            raise ValueError(f"Number of classes must be an integer from 2 to 64, not "
                             f"{classes!r}")
        self._fmt = fmt
        self._classes = classes
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(signed(fmt.act.width), classes))),
            "o": Out(stream.Signature(data.StructLayout({
                "y": data.ArrayLayout(unsigned(fmt.prob_frac), classes),
                "prediction": unsigned((classes - 1).bit_length()),
            }))),
        })

    @property
    def fmt(self):
        return self._fmt

    @property
    def classes(self):
        return self._classes

    @property
    def latency(self):
        """Cycles from the input transfer's clock edge to ``o.valid``:
        ``3 * classes + recip_frac + 5``."""
        return 3 * self._classes + self._fmt.recip_frac + 5

    def elaborate(self, platform):
        fmt, C = self._fmt, self._classes
        W = fmt.act.width
        ib, ef, rf, pf = fmt.exp_index_bits, fmt.exp_frac, fmt.recip_frac, fmt.prob_frac
        v_shift = fmt.act.frac + LOG2E_FRAC - ib      # rounding shift of t * LOG2E (>= 2)
        y_shift = ef + rf - pf                        # rounding shift of p * R
        n_max = ef + 1                                # any larger shift gives 0 as well
        s_max = C << ef                               # S <= classes * 2**exp_frac
        drain = 4                                     # stages after the issue of t

        m = Module()

        # 2**-f table, exp_frac + 1 bits per entry (T[0] = 2**exp_frac).
        m.submodules.table = table = memory.Memory(
            shape=unsigned(ef + 1), depth=1 << ib, init=[int(x) for x in exp2_table(ib, ef)])
        # A ROM: there is no write port, so transparent_for stays empty (nothing to bypass).
        rom = table.read_port()

        # The logits rotate (no read multiplexer): z_sr[0] is the class under consideration.
        z_sr = Signal(data.ArrayLayout(signed(W), C))
        rotate = Signal()
        with m.If(rotate):
            m.d.sync += [z_sr[k].eq(z_sr[(k + 1) % C]) for k in range(C)]

        zmax = Signal(signed(W))
        pred = self.o.payload.prediction
        count = Signal(range(max(C, rf + 1, drain)))

        # Exponential pipeline, one class per cycle.
        issue = Signal()
        t = Signal(unsigned(W))                       # max - z >= 0 fits W bits unsigned
        t_valid = Signal()
        prod = Signal(unsigned(W + LOG2E.bit_length() + 1))
        prod_valid = Signal()
        n = Signal(range(n_max + 1))
        rom_valid = Signal()
        p = Signal(unsigned(ef + 1))
        p_valid = Signal()
        m.d.sync += [
            t.eq(zmax - z_sr[0]),
            t_valid.eq(issue),
            # Adding the rounding half here keeps the ROM address free of any adder.
            prod.eq(t * LOG2E + (1 << (v_shift - 1))),
            prod_valid.eq(t_valid),
            rom_valid.eq(prod_valid),
            p.eq(rom.data >> n),
            p_valid.eq(rom_valid),
        ]
        n_full = prod[v_shift + ib:]
        m.d.sync += n.eq(Mux(n_full > n_max, n_max, n_full))
        m.d.comb += rom.addr.eq(prod[v_shift:v_shift + ib])

        # The exponentials shift in at the top and out at the bottom.
        p_sr = Signal(data.ArrayLayout(unsigned(ef + 1), C))
        p_shift = Signal()
        with m.If(p_shift):
            m.d.sync += [p_sr[k].eq(p_sr[k + 1]) for k in range(C - 1)]
            m.d.sync += p_sr[C - 1].eq(p)
        total = Signal(range(s_max + 1))
        with m.If(p_valid):
            m.d.sync += total.eq(total + p)

        # Restoring divider: R = floor(2**(ef + rf) / S). The partial remainder starts at
        # 2**(ef - 1) < S, then rf + 1 zero bits of the dividend shift in; it stays below S.
        rem = Signal(range(s_max))
        recip = Signal(unsigned(rf + 1))
        div_step = Signal()
        rem2 = Signal(range(2 * s_max))
        m.d.comb += rem2.eq(rem.shift_left(1))
        with m.If(div_step):
            with m.If(rem2 >= total):
                m.d.sync += rem.eq(rem2 - total)
            with m.Else():
                m.d.sync += rem.eq(rem2)
            m.d.sync += recip.eq(Cat(rem2 >= total, recip[:-1]))

        # Scaling: y = min(rnd(p * R, y_shift), 2**pf - 1), shifted into the output payload.
        scale = Signal()
        y_prod = Signal(unsigned(ef + 1 + rf + 1 + 1))
        y_prod_valid = Signal()
        y_add = (1 << (y_shift - 1)) if y_shift > 0 else 0
        m.d.sync += [
            y_prod.eq(p_sr[0] * recip + y_add),
            y_prod_valid.eq(scale),
        ]
        y_full = y_prod.shift_right(y_shift)
        y_sr = self.o.payload.y
        with m.If(y_prod_valid):
            m.d.sync += [y_sr[k].eq(y_sr[k + 1]) for k in range(C - 1)]
            m.d.sync += y_sr[C - 1].eq(Mux(y_full[pf:].any(), (1 << pf) - 1, y_full[:pf]))
        m.d.comb += p_shift.eq(p_valid | scale)

        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    # Load rotated by one: z[0] is the first maximum candidate, and after the
                    # classes - 1 comparisons the rotation is back to the original order.
                    m.d.sync += [z_sr[k].eq(self.i.payload[(k + 1) % C]) for k in range(C)]
                    m.d.sync += [
                        zmax.eq(self.i.payload[0]),
                        pred.eq(0),
                        count.eq(0),
                        total.eq(0),
                        rem.eq(1 << (ef - 1)),
                    ]
                    m.next = "MAX"
            with m.State("MAX"):
                # z_sr[0] is class count + 1; strictly greater keeps the first maximum.
                m.d.comb += rotate.eq(1)
                with m.If(z_sr[0] > zmax):
                    m.d.sync += [zmax.eq(z_sr[0]), pred.eq(count + 1)]
                m.d.sync += count.eq(count + 1)
                with m.If(count == C - 2):
                    m.d.sync += count.eq(0)
                    m.next = "EXP"
            with m.State("EXP"):
                m.d.comb += [rotate.eq(1), issue.eq(1)]
                m.d.sync += count.eq(count + 1)
                with m.If(count == C - 1):
                    m.d.sync += count.eq(0)
                    m.next = "DRAIN"
            with m.State("DRAIN"):
                m.d.sync += count.eq(count + 1)
                with m.If(count == drain - 1):
                    m.d.sync += count.eq(0)
                    m.next = "DIVIDE"
            with m.State("DIVIDE"):
                m.d.comb += div_step.eq(1)
                m.d.sync += count.eq(count + 1)
                with m.If(count == rf):
                    m.d.sync += count.eq(0)
                    m.next = "SCALE"
            with m.State("SCALE"):
                m.d.comb += scale.eq(1)
                m.d.sync += count.eq(count + 1)
                with m.If(count == C - 1):
                    m.d.sync += count.eq(0)
                    m.next = "FLUSH"
            with m.State("FLUSH"):
                m.next = "DONE"
            with m.State("DONE"):
                m.d.comb += self.o.valid.eq(1)
                with m.If(self.o.ready):
                    m.next = "IDLE"

        return m
