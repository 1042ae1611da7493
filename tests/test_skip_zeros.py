# amaranth: UnusedElaboratable=no
"""Skipping the first layer's zero input words (CoreParams.skip_zeros): the same bits as the
bit-exact model, and exactly the cycles the cycle model predicts from each sample's words."""

import numpy as np
import pytest

from golden.train import ACCEPTED, REJECTED
from specbp_hw.cycles import CycleModel, stored_words
from specbp_hw.params import CoreParams
from specbp_hw.pysim import run_pysim

from test_core import check_equal, golden_run
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
    init, ref = golden_run(layers, batch, data, threshold, p)
    run = run_pysim(p, init, data.train_images, data.train_labels, schedule=schedule,
                    threshold=p.fmt.threshold_int(threshold, layers[-1]), batch=batch,
                    poison_collisions=True)
    check_equal(run, ref)
    kinds = ref.trace["kind"]
    assert run.counters["accepted"] == (kinds == ACCEPTED).sum()
    assert run.counters["rejected"] == (kinds == REJECTED).sum()
    model = CycleModel(p)
    assert run.step_cycles.tolist() == model.step_cycles(
        schedule, run.kinds.tolist(), batch, data.train_labels.tolist(), words.tolist())
    assert run.counters["update_cycles"] == model.update_cycles(run.kinds.tolist(), batch)
