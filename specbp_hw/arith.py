"""Gateware forms of the fixed-point primitives of :mod:`golden.fixed`.

Each returns an Amaranth value computing exactly what its namesake in :mod:`golden.fixed` does
on integers: ``round_shift`` rounds to nearest with ties up (add half, arithmetic shift right),
``saturate`` clamps to a :class:`golden.fixed.Q` format, ``sub_round_saturate`` is the
update's ``saturate(w - round_shift(v, s))`` as one subtraction. ``pixel_value`` is the input
conversion of :func:`golden.fixed_model.pixels`. ``narrow_leaky`` is the forward
pass's narrowing and leaky ReLU (:func:`golden.fixed_model.leaky` of ``Q.narrow``) and
``narrow_scaled`` the backward pass's narrowing and its scaling by the leak, both in a form
with less logic depth. ``clip_narrow`` is the update's clip and narrowing of a gradient whose
fraction bits depend on its layer, one circuit for every layer.
"""

from amaranth.hdl import Array, C, Cat, Const, Mux, Signal, Value, signed

from golden.fixed import round_shift as round_shift_int

__all__ = ["pixel_value", "round_shift", "saturate", "sub_round_saturate", "narrow_leaky",
           "narrow_scaled", "clip_operands", "clip_narrow", "clip_parts", "clip_finish",
           "case_table"]


def pixel_value(p):
    """The u0.8 input of a uint8 pixel ``p`` (:func:`golden.fixed_model.pixels`):
    ``p + (p >> 7)`` = round(256 p / 255), 9 bits."""
    return p + p[7]


def tree_sum(values):
    """The sum of ``values`` as a balanced tree of two-input adders: ``ceil(log2(n))`` adders
    deep, where Python's ``sum`` builds a chain ``n - 1`` deep. Amaranth widens each sum by a
    bit, so the result is exact either way.

    What this changes in hardware depends on the synthesis tool, not on the depth of the
    expression: Yosys (``alumacc``) merges a sum of plain operands, tree or chain, into one
    multi-operand adder (``$macc``: a carry-save tree of LUTs and one carry chain). The
    speculation distance's ten terms and the threshold make one ``$macc`` of 11 addends in
    either form. The backward engine's 16-lane sum plus its accumulator became two in series
    as a chain (the first three products, then the other 13 with that and the accumulator:
    3 and 15 addends) and is one of 17 as a tree (``paper-x2``, Yosys 0.70, at commits 2bc3726
    and d42f062)."""
    values = list(values)
    if not values:
        raise ValueError("tree_sum needs at least one value")
    while len(values) > 1:
        pairs = [values[i] + values[i + 1] for i in range(0, len(values) - 1, 2)]
        values = pairs + values[len(values) & ~1:]
    return values[0]


def round_shift(v, s):
    """``(v + 2**(s-1)) >> s`` for a constant ``s >= 1`` (``v << -s`` when ``s <= 0``)."""
    if s > 0:
        return (v + (1 << (s - 1))) >> s
    return v << (-s)


def saturate(v, q):
    """Clamp ``v`` to the range of the format ``q``.

    A signed ``v`` wider than ``q`` is tested by its bits instead of by two compares with
    constants: it fits when its bits from ``q``'s sign bit up are all equal. That is a tree of
    LUTs beside the value's sign; the compares were two carry chains (Yosys maps a compare
    with a constant onto one)."""
    v = Value.cast(v)
    if not v.shape().signed or len(v) <= q.width:
        return Mux(v > q.max, q.max, Mux(v < q.min, q.min, v))
    top, sign = v[q.width - 1:], v[-1]
    return Mux(~sign & top.any(), q.max, Mux(sign & ~top.all(), q.min, v[:q.width].as_signed()))


def sub_round_saturate(w, v, s, q):
    """``saturate(w - round_shift(v, s), q)`` with one subtraction instead of an adder and a
    subtractor in series: for ``s >= 1``, ``w - floor((v + h) / 2**s)`` with ``h = 2**(s-1)``
    is ``floor((w * 2**s + h - 1 - v) / 2**s)`` (as ``-floor(x / d) = floor((d - 1 - x) / d)``
    for integers), and ``w * 2**s + h - 1`` is ``w`` with the constant ``h - 1`` in its low
    ``s`` bits, no adder."""
    if s <= 0:
        return saturate(w - (v << -s), q)
    w = Value.cast(w)
    d = Cat(C((1 << (s - 1)) - 1, s), w).as_signed() - v
    return saturate(d[s:].as_signed(), q)


def _narrow_parts(m, v, s, q, leak, name):
    """The side-by-side pieces of ``saturate(round_shift(v, s), q)`` and of its rounding by
    ``leak``: ``rounded``, ``leaked`` (``round_shift(round_shift(v, s), leak)`` is
    ``(v + 2**(s-1) + 2**(s+leak-1)) >> (s + leak)``: nested floor divisions) and the tests
    ``over``, ``under`` and ``pos`` of the rounded value, as compares of ``v`` with constants."""
    assert s >= 1 and leak >= 1 and q.min < 0 < q.max
    half = 1 << (s - 1)
    r = round_shift(v, s)
    lk = (v + (half + (1 << (s + leak - 1)))) >> (s + leak)
    rounded = Signal(r.shape(), name=f"{name}_rounded")
    leaked = Signal(lk.shape(), name=f"{name}_leaked")
    over, under, pos = (Signal(name=f"{name}_{n}") for n in ("over", "under", "pos"))
    m.d.comb += [
        rounded.eq(r),
        leaked.eq(lk),
        over.eq(v >= ((q.max + 1) << s) - half),      # round_shift(v, s) > q.max
        under.eq(v < (q.min << s) - half),            # round_shift(v, s) < q.min
        pos.eq(v >= (1 << s) - half),                 # round_shift(v, s) > 0
    ]
    return rounded, leaked, over, under, pos


def narrow_leaky(m, v, s, q, leak, name):
    """``(z, a)``: ``z = saturate(round_shift(v, s), q)`` and its leaky ReLU ``a`` (``z`` where
    ``z > 0``, else ``round_shift(z, leak)``), for constants ``s >= 1`` and ``leak >= 1``.

    The compares and both roundings work on ``v`` side by side instead of one after another
    (:func:`_narrow_parts`). The intermediates are named signals ``{name}_...``, assigned in
    ``m.d.comb`` in the caller's current control context.
    """
    rounded, leaked, over, under, pos = _narrow_parts(m, v, s, q, leak, name)
    z = Mux(over, q.max, Mux(under, q.min, rounded))
    a = Mux(over, q.max, Mux(under, round_shift_int(q.min, leak), Mux(pos, rounded, leaked)))
    return z, a


def narrow_scaled(m, v, s, q, leak, name):
    """``(z, zl)``: ``z = saturate(round_shift(v, s), q)`` and ``zl = round_shift(z, leak)``,
    for constants ``s >= 1`` and ``leak >= 1``, side by side as in :func:`narrow_leaky` (the
    backward pass picks one of them by the sign of a stored activation)."""
    rounded, leaked, over, under, _ = _narrow_parts(m, v, s, q, leak, name)
    z = Mux(over, q.max, Mux(under, q.min, rounded))
    zl = Mux(over, round_shift_int(q.max, leak), Mux(under, round_shift_int(q.min, leak), leaked))
    return z, zl


def _clip_align(cases):
    return max(0, -min(s for _, s in cases))


def clip_operands(cases):
    """The per-case constants that :func:`clip_narrow` chooses by ``sel`` before its adder and
    compares: ``{"addend": ..., "c": ..., "neg_c": ...}``, each a list with one integer per
    case. A caller may register ``values[sel]`` a cycle ahead and pass the registers as
    ``clip_narrow``'s ``operands``."""
    align = _clip_align(cases)
    return {"addend": [(1 << (s + align - 1)) if s + align > 0 else 0 for _, s in cases],
            "c": [c for c, _ in cases], "neg_c": [-c for c, _ in cases]}


def clip_narrow(m, v, sel, cases, q, name, operands=None):
    """``saturate(round_shift(clip(v, -c, c), s), q)`` with ``(c, s) = cases[sel]``: constants
    ``c >= 0`` and ``s`` for each value of the signal ``sel``.

    One circuit serves every case, instead of one per case and a choice among their results:
    a single rounding adder (``v + 2**(s-1)``, the addend chosen by ``sel``; a shift below 1
    is aligned as in :func:`narrow_scaled`) followed by a choice of the shift, and one pair of
    compares of ``v`` with the chosen ``c`` and ``-c``. A clipped value's result is a constant
    of its case. The intermediates are named signals ``{name}_...``, assigned in ``m.d.comb``
    in the caller's current control context. ``operands``: values (registers) holding the
    adder's and the compares' constants of case ``sel`` (the keys of :func:`clip_operands`),
    instead of a choice by ``sel`` in front of the adder and the compares.

    It is :func:`clip_finish` of :func:`clip_parts`; a caller may register the parts between
    the two (a pipeline stage).
    """
    total, over, under = clip_parts(m, v, sel, cases, name, operands)
    return clip_finish(m, total, over, under, sel, cases, q, name)


def clip_parts(m, v, sel, cases, name, operands=None):
    """The first half of :func:`clip_narrow`: ``(total, over, under)``, the rounding adder's
    sum and the two compares (named signals assigned in ``m.d.comb``)."""
    assert cases and all(c >= 0 for c, _ in cases)
    align = _clip_align(cases)
    total = Signal(signed(len(v) + align + 1), name=f"{name}_total")
    over, under = Signal(name=f"{name}_over"), Signal(name=f"{name}_under")
    if operands is None:
        operands = {key: case_table(values, sel)
                    for key, values in clip_operands(cases).items()}
    m.d.comb += [
        total.eq((v << align) + operands["addend"]),
        over.eq(v > operands["c"]),
        under.eq(v < operands["neg_c"]),
    ]
    return total, over, under


def clip_finish(m, total, over, under, sel, cases, q, name):
    """The second half of :func:`clip_narrow`, from its parts (:func:`clip_parts`) and the
    case ``sel``: the choice of the shift, the saturation, and the clipped cases' constants."""
    align = _clip_align(cases)
    shifts = [s + align for _, s in cases]          # round_shift(v << align, t) for t >= 0
    his, los = [], []
    for c, s in cases:
        his.append(q.saturate(round_shift_int(c, s)))
        los.append(q.saturate(round_shift_int(-c, s)))
    # Without saturation, an unclipped value's rounding lies between its case's constants.
    needs_sat = any(h != round_shift_int(c, s) or lo != round_shift_int(-c, s)
                    for (c, s), h, lo in zip(cases, his, los))
    rounded = Signal(signed(len(total)), name=f"{name}_rounded")
    with m.Switch(sel):
        for i, t in enumerate(shifts):
            with m.Case(i):
                m.d.comb += rounded.eq(total >> t)
    inside = saturate(rounded, q) if needs_sat else rounded
    return Mux(over, case_table(his, sel), Mux(under, case_table(los, sel), inside))


def case_table(values, sel):
    """``values[sel]``: a table of integer constants indexed by the signal ``sel``."""
    width = max(int(x).bit_length() for x in values) + 1
    return Array(Const(int(x), signed(width)) for x in values)[sel]
