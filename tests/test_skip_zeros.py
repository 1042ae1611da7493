# amaranth: UnusedElaboratable=no
"""Skipping the first layer's zero input words (CoreParams.skip_zeros): the same bits as the
bit-exact model, and exactly the cycles the cycle model predicts from each sample's words."""

import random

import numpy as np
import pytest

from specbp_hw.backends import CxxrtlTrainer, pack_beats, train_pysim
from specbp_hw.board_sim import SimulatedBoard
from specbp_hw.board_top import BoardTop, initial_weights
from specbp_hw.core import sample_beats
from specbp_hw.cxxrtl import compiler_available
from specbp_hw.cycles import CycleModel, stored_words
from specbp_hw.host import BoardLink, read_params, run_schedule, threshold_register
from specbp_hw.params import CoreParams
from specbp_hw.pysim import run_pysim

from test_core import check_equal, golden_run, run_checked
from test_train import random_data

# layers, K, N (N >= layers[1]: one column block in the first layer), batch, samples, threshold
CASES = [
    ((16, 8, 8, 4), 2, 8, 5, 14, 0.003),
    ((16, 8, 8, 10), 2, 8, 4, 13, 0.003),   # parallel softmax
    ((12, 4, 3), 1, 4, 3, 10, 0.004),
    ((16, 8, 8, 10), 4, 8, 4, 12, 0.004),   # K = 4, 10 classes over two column blocks
    ((8, 4, 4, 2), 4, 4, 1, 7, 0.01),       # batch size 1
]


def sparse_data(layers, K, n, seed):
    """Random images with most words zero, one image all zero and one with no zero word (the
    shortest and the longest passes), so that the stored words vary from sample to sample."""
    rng = np.random.default_rng(seed)
    data = random_data(rng, n, layers[0], layers[-1], repeat=0.5)
    images = data.train_images.copy()
    rows = layers[0] // K
    keep = rng.random((n, rows)) < rng.uniform(0.0, 0.6, size=(n, 1))
    images *= np.repeat(keep, K, axis=1).astype(np.uint8)
    images[1] = 0
    images[2] = np.maximum(data.train_images[2], 1)
    data.train_images = images
    data.test_images = images[:len(data.test_labels)]
    return data


@pytest.mark.parametrize("schedule", ["serial", "speculative", "pipelined"])
@pytest.mark.parametrize("layers, K, N, batch, n, thr", CASES)
def test_skipping_is_bit_exact_and_cycles_match_the_model(layers, K, N, batch, n, thr,
                                                          schedule):
    parallel = layers[-1] == 10 and K == 2
    p = CoreParams(layers=layers, lanes=N, inputs=K, lr=0.05, skip_zeros=True,
                   softmax_ways=10 if parallel else 1, softmax_div_bits=2 if parallel else 1)
    data = sparse_data(layers, K, n, sum(layers) + n)
    words = stored_words(p, data.train_images)
    assert words.min() == 0 and words.max() == p.rows(0)
    threshold = thr if schedule == "speculative" else 0.0
    run, _ = run_checked(p, schedule, batch, data, threshold)
    model = CycleModel(p)
    assert run.step_cycles.tolist() == model.step_cycles(
        schedule, run.kinds.tolist(), batch, data.train_labels.tolist(), words.tolist())
    assert run.counters["update_cycles"] == model.update_cycles(run.kinds.tolist(), batch)


def test_skip_zeros_needs_one_column_block():
    with pytest.raises(ValueError, match="lanes \\(4\\) must be at least layers\\[1\\] \\(8\\)"):
        CoreParams(layers=(16, 8, 4), lanes=4, skip_zeros=True)


def test_packed_beats_are_the_sample_beats():
    p = CoreParams(layers=(16, 8, 8, 4), lanes=8, inputs=2, skip_zeros=True)
    data = sparse_data(p.layers, 2, 6, 5)
    beats = pack_beats(p, data.train_images, data.train_labels, [0, 0, 0, 0, 0, 1])
    K, rb = p.inputs, p.rows(0).bit_length()
    want = []
    for i, image in enumerate(data.train_images):
        for r, pixels, end in sample_beats(p, image):
            want.append((pixels, int(data.train_labels[i]), int(i == 5), r, end))
    got = [([int(b) >> 8 * k & 0xFF for k in range(K)], int(b) >> 8 * K & 0xF,
            int(b) >> 8 * K + 4 & 1, int(b) >> 8 * K + 5 & (1 << rb) - 1,
            int(b) >> 8 * K + 5 + rb & 1) for b in beats]
    assert got == want
    assert sample_beats(p, data.train_images[1]) == [(0, [0, 0], 1)]    # no nonzero pixel


@pytest.mark.skipif(not compiler_available(), reason="needs a C++ compiler")
@pytest.mark.parametrize("schedule", ["speculative", "pipelined"])
def test_compiled_backend_equals_pysim(schedule):
    p = CoreParams(layers=(16, 8, 8, 4), lanes=8, inputs=2, lr=0.05, skip_zeros=True)
    data = sparse_data(p.layers, 2, 14, 11)
    thr = p.fmt.threshold_int(0.003, 4) if schedule == "speculative" else 0
    init, _ = golden_run(p.layers, 5, data, 0.0, p)
    kw = dict(schedule=schedule, threshold=thr, batch=5)
    trainer = CxxrtlTrainer(p)
    try:
        fast = trainer.train(init, data.train_images, data.train_labels, **kw)
    finally:
        trainer.close()
    slow = train_pysim(p, init, data.train_images, data.train_labels, **kw)
    for (w1, b1), (w2, b2) in zip(fast.params, slow.params):
        assert (w1 == w2).all() and (b1 == b2).all()
    for field in ("kinds", "predictions", "step_cycles"):
        assert getattr(fast, field).tolist() == getattr(slow, field).tolist(), field
    assert fast.counters == slow.counters


def test_board_link_streams_every_word_to_a_skipping_core():
    # The board top streams all of a sample's words (with their rows); the core stores the
    # nonzero ones: the same results and step cycles as the sparse beats of run_pysim.
    p = CoreParams(layers=(16, 4, 4), lanes=4, inputs=2, lr=0.05, skip_zeros=True)
    init, data, top = sparse_board(p)
    with SimulatedBoard(top) as board:
        link = BoardLink(board)
        thr = threshold_register(0.004, link.info)
        run = run_schedule(link, data.train_images, data.train_labels, schedule="speculative",
                           threshold=thr, batch=3)
        params = read_params(link)
    ref = run_pysim(p, init, data.train_images, data.train_labels, schedule="speculative",
                    threshold=thr, batch=3)
    check_link_run(run, params, ref)


def sparse_board(p):
    """Initial weights (seed 3), eight sparse samples and a small board top for ``p``."""
    init = initial_weights(p, seed=3)
    data = sparse_data(p.layers, 2, 8, 9)
    top = BoardTop(p, 4, init=init, timeout=200, led_hold=4, result_depth=4,
                   poison_collisions=True)
    return init, data, top


def check_link_run(run, params, ref):
    """A run through the host link (``run_schedule``, then the weights read back) against the
    core's run ``ref``: the same predictions, decisions, step cycles and weights."""
    results = np.array(run["results"])
    assert (results[:, 1] == ref.predictions).all()
    assert (results[:, 2] == ref.kinds).all()
    assert (results[:, 3] == ref.step_cycles).all()
    for (w1, b1), (w2, b2) in zip(params, ref.params):
        assert (w1 == w2).all() and (b1 == b2).all()


def test_build_projection_counts_the_builtin_subsets_words():
    from specbp_hw.build import projections
    from specbp_hw.presets import core_params
    skip = projections(core_params("paper-x2-skip"), 60.0)
    dense = projections(core_params("paper-x2"), 60.0)
    p = core_params("paper-x2-skip")
    model = CycleModel(p)
    n = skip["stored_words_mean"]
    assert 0 < n < p.rows(0)
    # Every step is at least the forward pass of its sample: n words on average.
    assert skip["cycles_per_sample"]["speculative"] >= model.forward_cycles(0) + n
    for s in ("serial", "speculative", "pipelined"):
        assert skip["cycles_per_sample"][s] < dense["cycles_per_sample"][s]


@pytest.mark.parametrize("schedule", ["serial", "speculative", "pipelined"])
def test_skipping_with_random_gaps_and_backpressure(schedule):
    # Sparse beats arriving with gaps, results taken with backpressure: the loader's counts
    # and the engines' read-ahead see samples that finish loading at any time.
    p = CoreParams(layers=(16, 8, 8, 4), lanes=8, inputs=2, lr=0.05, skip_zeros=True)
    data = sparse_data(p.layers, 2, 12, 21)
    thr = 0.003 if schedule == "speculative" else 0.0
    init, ref = golden_run(p.layers, 4, data, thr, p)
    run = run_pysim(p, init, data.train_images, data.train_labels, schedule=schedule,
                    threshold=p.fmt.threshold_int(thr, 4), batch=4, gaps=random.Random(3),
                    poison_collisions=True)
    check_equal(run, ref)
    assert run.counters["samples"] == len(data.train_labels)
