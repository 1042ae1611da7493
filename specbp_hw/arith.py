"""Gateware forms of the fixed-point primitives of :mod:`golden.fixed`.

Each returns an Amaranth value computing exactly what its namesake in :mod:`golden.fixed` does
on integers: ``round_shift`` rounds to nearest with ties up (add half, arithmetic shift right),
``saturate`` clamps to a :class:`golden.fixed.Q` format.
"""

from amaranth.hdl import Mux

__all__ = ["round_shift", "saturate"]


def round_shift(v, s):
    """``(v + 2**(s-1)) >> s`` for a constant ``s >= 1`` (``v << -s`` when ``s <= 0``)."""
    if s > 0:
        return (v + (1 << (s - 1))) >> s
    return v << (-s)


def saturate(v, q):
    """Clamp ``v`` to the range of the format ``q``."""
    return Mux(v > q.max, q.max, Mux(v < q.min, q.min, v))
