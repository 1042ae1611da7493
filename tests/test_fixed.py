"""Fixed-point primitives against exact rational arithmetic."""

from decimal import Decimal, getcontext
from fractions import Fraction
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from golden.fixed import (FixedFormat, Lfsr32, LOG2E, LOG2E_FRAC, Q, exp2_table, round_shift,
                          saturate)
from golden.fixed_model import leaky, pixels, softmax

FMT = FixedFormat()


@given(st.integers(-(1 << 40), 1 << 40), st.integers(1, 30))
def test_round_shift_is_nearest_ties_up(v, s):
    r = round_shift(v, s)
    exact = Fraction(v, 1 << s)
    assert abs(r - exact) <= Fraction(1, 2)
    if abs(r - exact) == Fraction(1, 2):
        assert r > exact  # ties towards +infinity
    assert round_shift(np.array([v], np.int64), s)[0] == r


@given(st.integers(-(1 << 20), 1 << 20), st.integers(-8, 0))
def test_round_shift_left(v, s):
    assert round_shift(v, s) == v * (1 << -s)


@given(st.integers(2, 40).flatmap(lambda w: st.tuples(st.just(w), st.integers(0, w - 1))),
       st.integers(-(1 << 45), 1 << 45), st.integers(0, 20))
def test_q_narrow_rounds_then_saturates(wf, v, frac_in):
    q = Q(*wf)
    r = q.narrow(v, frac_in)
    assert q.min <= r <= q.max
    exact = Fraction(v, 1 << frac_in) * (1 << q.frac)
    if q.min + 1 <= exact <= q.max - 1:
        assert abs(r - exact) <= Fraction(1, 2)
    elif exact > q.max:
        assert r == q.max
    elif exact < q.min:
        assert r == q.min


@pytest.mark.parametrize("width, frac", [(1, 0), (49, 3), (16, 16), (16, -1), (16.0, 3)])
def test_q_rejects_bad_parameters(width, frac):
    with pytest.raises(ValueError, match="must be"):
        Q(width, frac)


def test_uniform_formats():
    assert FixedFormat.uniform(16) == FixedFormat()
    f = FixedFormat.uniform(10, max_batch=16)
    assert (f.weight, f.act, f.delta, f.update) == (Q(10, 7), Q(10, 3), Q(10, 6), Q(10, 6))
    assert (f.prob_frac, f.exp_frac, f.recip_frac, f.max_batch) == (9, 10, 11, 16)
    assert FixedFormat.uniform(8).exp_frac == 8
    assert FixedFormat.uniform(10, weight=Q(14, 11)).weight == Q(14, 11)
    with pytest.raises(ValueError, match="Uniform width must be an integer from 8 to 24, not 7"):
        FixedFormat.uniform(7)


def test_saturate_scalar_and_array():
    assert saturate(5, -3, 3) == 3 and saturate(-5, -3, 3) == -3
    assert (saturate(np.array([-5, 0, 5]), -3, 3) == [-3, 0, 3]).all()


def test_pixels_are_exactly_rounded():
    p = np.arange(256, dtype=np.uint8)
    exact = [Fraction(int(v) * 256, 255) for v in p]
    assert [int(v) for v in pixels(p)] == [math.floor(e + Fraction(1, 2)) for e in exact]


@given(st.integers(-(1 << 15), (1 << 15) - 1))
def test_leaky_relu(z):
    a = int(leaky(np.array([z], np.int64), FMT)[0])
    if z > 0:
        assert a == z
    else:
        assert abs(a - Fraction(z, 1 << FMT.leak_shift)) <= Fraction(1, 2)


@pytest.mark.parametrize("index_bits, frac", [(8, 16), (6, 12), (10, 18)])
def test_exp2_table_against_50_digit_decimal(index_bits, frac):
    getcontext().prec = 50
    n = 1 << index_bits
    table = exp2_table(index_bits, frac)
    for f in range(n):
        exact = (Decimal(2) ** (Decimal(-f) / n)) * (1 << frac)
        assert int(table[f]) == int(exact.to_integral_value(rounding="ROUND_HALF_UP"))


def test_log2e_constant():
    assert abs(Fraction(LOG2E, 1 << LOG2E_FRAC) - Fraction(math.log2(math.e))) <= \
        Fraction(1, 1 << (LOG2E_FRAC + 1))


def softmax_error_bound(fmt, classes):
    """A priori bound on |y_fixed - softmax(z)| for logits z exactly representable.

    Each exponential 2**-v is computed as T[f] >> n with:
    - v rounded to exp_index_bits fraction bits: |error| <= 2**-(ib+1) in the exponent, plus the
      LOG2E constant's error |dL| * t, and t * exp(-t) <= 1/e bounds that term's absolute
      effect; relative error of the term <= ln2 * (2**-(ib+1)) + small;
    - the table entry rounded: relative error <= 2**-exp_frac (entries are >= 2**(exp_frac-1));
    - the shift truncates: absolute error < 2**-exp_frac per term.
    With delta the relative bound, y_j / s_j lies within (1 +- delta) / (1 -+ delta) and the
    truncations move numerator and denominator by at most classes * 2**-exp_frac (S >= 1). The
    reciprocal floor loses at most S / 2**(exp_frac + recip_frac), the final rounding half an LSB
    and the saturation one LSB of prob_frac.
    """
    dl = abs(LOG2E / (1 << LOG2E_FRAC) - math.log2(math.e))
    delta = (math.log(2) * (2.0 ** -(fmt.exp_index_bits + 1) + dl / math.e)
             + 2.0 ** -fmt.exp_frac)
    return (2 * delta / (1 - delta) + (classes + 1) * 2.0 ** -fmt.exp_frac
            + classes * 2.0 ** -fmt.recip_frac + 1.5 * 2.0 ** -fmt.prob_frac)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(FMT.act.min, FMT.act.max), min_size=10, max_size=10))
def test_softmax_within_its_error_bound(logits):
    z = np.array([logits], np.int64)
    y = softmax(FMT, z)[0]
    zf = np.array(logits, np.float64) * 2.0 ** -FMT.act.frac
    ref = np.exp(zf - zf.max())
    ref /= ref.sum()
    err = np.abs(y * 2.0 ** -FMT.prob_frac - ref).max()
    bound = softmax_error_bound(FMT, 10)
    assert bound < 0.004  # the bound itself is small enough to be useful
    assert err <= bound
    assert (y >= 0).all() and (y <= (1 << FMT.prob_frac) - 1).all()


@settings(max_examples=200, deadline=None)
@given(st.integers(1 << 16, 10 << 16))
def test_reciprocal_is_floor_division(s):
    k = FMT.exp_frac + FMT.recip_frac
    r = (1 << k) // s
    assert Fraction(r) <= Fraction(1 << k, s) < r + 1


def test_lfsr_jump_equals_single_steps():
    lfsr = Lfsr32(0x1234567)
    states = lfsr.states(50)
    s = 0x1234567
    for got in states:
        s = Lfsr32.step(s, Lfsr32.STEPS)
        assert int(got) == s
    assert lfsr.state == s
    more = lfsr.states(7)  # carries on from where it stopped
    assert int(more[0]) == Lfsr32.step(s, Lfsr32.STEPS)


def test_lfsr_is_maximal_length_locally():
    # Polynomial x^32+x^22+x^2+x+1 is primitive: no state repeats and none is zero early on.
    seen = set()
    s = 1
    for _ in range(200_000):
        s = Lfsr32.step(s)
        assert s and s not in seen
        seen.add(s)


@pytest.mark.parametrize("seed", [0, -1, 1 << 32, 1.5])
def test_lfsr_rejects_bad_seed(seed):
    with pytest.raises(ValueError, match="nonzero 32-bit"):
        Lfsr32(seed)


def test_stochastic_rounding_is_unbiased():
    # (v + r) >> s with r from the LFSR's low s bits: the mean over many draws approaches v/2**s.
    s = 12
    r = Lfsr32(0xACE1ACE1).states(200_000) & np.uint32((1 << s) - 1)
    for v in (1, 1000, 4095, -7, -3000):
        mean = ((v + r.astype(np.int64)) >> s).mean()
        # Bernoulli(p) mean over 2e5 draws: sd <= 0.5 / sqrt(2e5) = 0.0011; allow 5 sd.
        assert abs(mean - v / (1 << s)) < 0.0056


@pytest.mark.parametrize("kwargs, match", [
    (dict(rounding="up"), "Rounding must be"),
    (dict(weight=(16, 13)), "must be a Q format"),
    (dict(leak_shift=0), "leak_shift must be"),
    (dict(max_batch=0), "max_batch must be"),
    (dict(lfsr_seed=0), "nonzero 32-bit"),
    (dict(update=Q(8, 2), lr_frac=4), "at least weight.frac"),
])
def test_format_rejects_bad_parameters(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        FixedFormat(**kwargs)


def test_accumulator_widths_cover_the_worst_case():
    fmt = FixedFormat(max_batch=15)
    # Layer 0: |x| <= 256 (u0.8 of 1.0), |delta| <= 2**15, 15 samples.
    assert fmt.grad_width(0, 3) == (256 * (1 << 15) * 15).bit_length() + 1
    assert fmt.grad_frac(0, 3) == 8 + fmt.delta.frac
    assert fmt.grad_frac(2, 3) == fmt.act.frac + fmt.prob_frac


def test_threshold_and_lr_integers():
    assert FMT.threshold_int(0.25, 10) == round(2.5 * (1 << FMT.prob_frac))
    # Every mean distance is <= 0.2, so threshold 0.25 is above every possible sum.
    assert FMT.threshold_int(0.25, 10) > 2 * ((1 << FMT.prob_frac) - 1)
    assert FMT.lr_int(0.01) == round(0.01 * (1 << FMT.lr_frac))
    with pytest.raises(ValueError, match="not representable"):
        FMT.lr_int(1e-9)
