"""The vectorised schedule against a sample-by-sample reading of ALGORITHM.md."""

from types import SimpleNamespace

import numpy as np
import pytest

from golden.config import TrainConfig, init_params
from golden.fixed import FixedFormat
from golden.fixed_model import FixedArith
from golden.float_model import FloatArith
from golden.train import ACCEPTED, NOT_ATTEMPTED, REJECTED, train


def naive_train(arith, cfg, data):
    """ALGORITHM.md one sample at a time, written for clarity, not speed."""
    params = arith.init_params(cfg)
    stash = {}
    kinds = []
    for _ in range(cfg.epochs):
        acc, count = None, 0
        n = len(data.train_labels)
        for i in range(n):
            x, label = data.train_images[i:i + 1], int(data.train_labels[i])
            fwd = arith.forward(params, x)
            own = (x, fwd.acts, fwd.pos, fwd.y)
            src, kind = own, NOT_ATTEMPTED
            if cfg.threshold > 0 and label in stash:
                if arith.accept(stash[label][3], fwd.y, cfg.threshold)[0]:
                    src, kind = stash[label], ACCEPTED
                else:
                    kind = REJECTED
            g = arith.backward(params, *src, np.array([label]))
            acc = g if acc is None else [(a + gw, b + gb) for (a, b), (gw, gb) in zip(acc, g)]
            stash[label] = own
            kinds.append(kind)
            count += 1
            if count == cfg.batch or i == n - 1:
                params = arith.update(params, acc)
                acc, count = None, 0
    return params, np.array(kinds), stash


def random_data(rng, n, inputs, classes, *, repeat=0.0, n_test=20):
    """Random images; with ``repeat`` > 0 some samples copy the last one of their label, so
    that small thresholds see both accepted and rejected speculations."""
    images = rng.integers(0, 256, size=(n, inputs), dtype=np.uint8)
    labels = rng.integers(0, classes, size=n).astype(np.uint8)
    last = {}
    for i in range(n):
        if labels[i] in last and rng.random() < repeat:
            images[i] = images[last[labels[i]]]
        last[labels[i]] = i
    return SimpleNamespace(train_images=images, train_labels=labels,
                           test_images=images[:n_test], test_labels=labels[:n_test])


CASES = [
    # layers, batch, samples, threshold (near the median distance of the case: both decisions)
    ((24, 8, 6, 4), 5, 37, 0.0),
    ((24, 8, 6, 4), 5, 37, 0.009),
    ((30, 7, 5), 1, 23, 0.0056),
    ((16, 6, 5, 4, 3), 4, 30, 0.007),
    ((50, 12, 10), 15, 61, 0.003),
    ((50, 12, 10), 15, 61, 0.25),
]


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("layers, batch, n, threshold", CASES)
def test_fixed_schedule_is_bit_exact_with_sample_by_sample(layers, batch, n, threshold,
                                                           rounding):
    rng = np.random.default_rng(sum(layers) + n)
    data = random_data(rng, n, layers[0], layers[-1], repeat=0.5)
    cfg = TrainConfig(layers=layers, batch=batch, threshold=threshold, epochs=2, seed=3,
                      lr=0.05)
    fmt = FixedFormat(rounding=rounding)
    fast = train(FixedArith(cfg, fmt), cfg, data, trace=True)
    params, kinds, stash = naive_train(FixedArith(cfg, fmt), cfg, data)
    assert (fast.trace["kind"] == kinds).all()
    if 0 < threshold < 0.2:
        assert {ACCEPTED, REJECTED} <= set(kinds.tolist())
    for (w1, b1), (w2, b2) in zip(fast.params, params):
        assert w1.dtype == np.int64 and (w1 == w2).all() and (b1 == b2).all()
    for label, (x, acts, pos, y) in stash.items():
        assert fast.stash.valid[label]
        assert (fast.stash.x[label] == x[0]).all() and (fast.stash.y[label] == y[0]).all()
        for s, a in zip(fast.stash.acts, acts):
            assert (s[label] == a[0]).all()
        for s, p in zip(fast.stash.pos, pos):
            assert (s[label] == p[0]).all()
    assert fast.stash.valid.sum() == len(stash)


@pytest.mark.parametrize("layers, batch, n, threshold", CASES)
def test_float_schedule_matches_sample_by_sample(layers, batch, n, threshold):
    rng = np.random.default_rng(sum(layers) + n)
    data = random_data(rng, n, layers[0], layers[-1], repeat=0.5)
    cfg = TrainConfig(layers=layers, batch=batch, threshold=threshold, epochs=2, seed=3)
    fast = train(FloatArith(cfg), cfg, data, trace=True)
    params, kinds, _ = naive_train(FloatArith(cfg), cfg, data)
    assert (fast.trace["kind"] == kinds).all()
    for (w1, b1), (w2, b2) in zip(fast.params, params):
        # Only the order of float additions differs (batched vs one by one).
        np.testing.assert_allclose(w1, w2, rtol=0, atol=1e-12)
        np.testing.assert_allclose(b1, b2, rtol=0, atol=1e-12)


def test_small_thresholds_give_both_decisions():
    # Guard that the cases above exercise accepted and rejected steps, not only one kind.
    rng = np.random.default_rng(7)
    data = random_data(rng, 200, 24, 4, repeat=0.5)
    cfg = TrainConfig(layers=(24, 8, 6, 4), batch=5, threshold=0.0045, epochs=1, seed=3,
                      lr=0.05)
    for arith in (FloatArith(cfg), FixedArith(cfg)):
        kinds = train(arith, cfg, data, trace=True).trace["kind"]
        counts = np.bincount(kinds, minlength=3)
        assert counts[ACCEPTED] > 10 and counts[REJECTED] > 10
        assert counts[NOT_ATTEMPTED] == 4  # the first sample of each label


def test_threshold_zero_is_serial_and_never_speculates():
    rng = np.random.default_rng(1)
    data = random_data(rng, 40, 24, 4, repeat=0.9)
    cfg = TrainConfig(layers=(24, 8, 4), batch=4, threshold=0.0, epochs=1)
    r = train(FixedArith(cfg), cfg, data, trace=True)
    assert (r.trace["kind"] == NOT_ATTEMPTED).all()
    assert r.epochs[0].accepted == r.epochs[0].rejected == 0.0


def test_threshold_above_02_accepts_every_attempt():
    # mean |p - q| over 10 classes <= 0.2 for any two probability vectors.
    rng = np.random.default_rng(2)
    data = random_data(rng, 300, 24, 10)
    for arith_cls in (FloatArith, FixedArith):
        cfg = TrainConfig(layers=(24, 8, 10), batch=15, threshold=0.2000001, epochs=1)
        kinds = train(arith_cls(cfg), cfg, data, trace=True).trace["kind"]
        assert not (kinds == REJECTED).any()
        assert (kinds == NOT_ATTEMPTED).sum() == len(set(data.train_labels.tolist()))


def test_epoch_stats_fractions_add_up():
    rng = np.random.default_rng(3)
    data = random_data(rng, 50, 24, 4, repeat=0.5)
    cfg = TrainConfig(layers=(24, 8, 4), batch=7, threshold=0.05, epochs=3)
    for e in train(FixedArith(cfg), cfg, data).epochs:
        assert e.accepted + e.rejected + e.not_attempted == pytest.approx(1.0)
        assert 0.0 <= e.test_accuracy <= 1.0 and e.loss > 0 and e.steps == 50


def test_init_params_is_the_papers_draw():
    params = init_params((784, 16, 16, 10), seed=0)
    for w, b in params:
        for v in (w, b):
            assert v.min() >= -10 and v.max() <= 10 and not (v == 0).any()
    assert [w.shape for w, _ in params] == [(784, 16), (16, 16), (16, 10)]
    again = init_params((784, 16, 16, 10), seed=0)
    assert all((w == w2).all() for (w, _), (w2, _) in zip(params, again))


def test_fixed_init_rounds_hundredths_to_the_weight_format():
    cfg = TrainConfig()
    fixed = FixedArith(cfg).init_params(cfg)
    ints = init_params(cfg.layers, cfg.seed)
    f = FixedFormat().weight.frac
    for (wq, _), (w, _) in zip(fixed, ints):
        assert (np.abs(wq - w / 100 * (1 << f)) <= 0.5).all()


def test_out_of_range_label_and_wrong_width_are_refused():
    rng = np.random.default_rng(4)
    data = random_data(rng, 10, 24, 4)
    cfg = TrainConfig(layers=(24, 8, 3), epochs=1)
    with pytest.raises(ValueError, match="Label 3 is out of range for 3 classes"):
        train(FixedArith(cfg), cfg, data)
    cfg = TrainConfig(layers=(20, 8, 4), epochs=1)
    with pytest.raises(ValueError, match="24 inputs per sample, the network 20"):
        train(FloatArith(cfg), cfg, data)


@pytest.mark.parametrize("kwargs, match", [
    (dict(layers=(784,)), "at least two"),
    (dict(layers=(784, 0, 10)), "at least two positive"),
    (dict(layers=(784, 16, 1)), "at least 2 classes"),
    (dict(batch=0), "Batch size"),
    (dict(epochs=0), "Epochs"),
    (dict(threshold=-0.1), "Threshold"),
    (dict(lr=0), "Learning rate"),
    (dict(clip=0), "Clip"),
    (dict(leak=1.5), "slope"),
])
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


def test_batch_beyond_accumulator_sizing_is_refused():
    with pytest.raises(ValueError, match="exceeds the format's max_batch"):
        FixedArith(TrainConfig(batch=100), FixedFormat(max_batch=64))
