# amaranth: UnusedElaboratable=no
"""The register stages for a faster clock (CoreParams.fmax_stages): the same bits as the
fixed-point model in every schedule, and exactly the cycles the cycle model adds for them."""

import numpy as np
import pytest

from specbp_hw.board_sim import SimulatedBoard
from specbp_hw.board_top import initial_weights
from specbp_hw.cycles import CycleModel, stored_words
from specbp_hw.host import (BoardLink, initial_params, load_params, read_params, run_schedule,
                            threshold_register)
from specbp_hw.params import CoreParams
from specbp_hw.pysim import run_pysim

from test_core import run_checked
from test_skip_zeros import check_link_run, sparse_board, sparse_data
from test_train import random_data

# layers, K, N, softmax ways / div_bits, skip_zeros, batch, samples, threshold
CASES = [
    ((16, 8, 8, 4), 2, 4, 1, 1, False, 4, 13, 0.003),    # two column blocks per layer
    ((16, 8, 8, 10), 1, 8, 10, 2, False, 3, 12, 0.004),  # parallel softmax, 4 delta lanes
    ((16, 8, 8, 4), 2, 8, 1, 1, True, 5, 14, 0.003),     # skipping zero words
    ((16, 8, 8, 10), 4, 8, 10, 2, True, 1, 8, 0.01),     # skipping, batch size 1
]


@pytest.mark.parametrize("schedule", ["serial", "speculative", "pipelined"])
@pytest.mark.parametrize("layers, K, N, ways, div_bits, skip, batch, n, thr", CASES)
def test_stages_are_bit_exact_and_cycles_match_the_model(layers, K, N, ways, div_bits, skip,
                                                         batch, n, thr, schedule):
    p = CoreParams(layers=layers, lanes=N, inputs=K, lr=0.05, softmax_ways=ways,
                   softmax_div_bits=div_bits, skip_zeros=skip, fmax_stages=True)
    seed = sum(layers) + n + K
    if skip:
        data = sparse_data(layers, K, n, seed)
    else:
        data = random_data(np.random.default_rng(seed), n, layers[0], layers[-1], repeat=0.5)
    threshold = thr if schedule == "speculative" else 0.0
    run, _ = run_checked(p, schedule, batch, data, threshold)
    model = CycleModel(p)
    words = stored_words(p, data.train_images).tolist() if skip else None
    assert run.step_cycles.tolist() == model.step_cycles(
        schedule, run.kinds.tolist(), batch, data.train_labels.tolist() if skip else None,
        words)
    assert run.counters["update_cycles"] == model.update_cycles(run.kinds.tolist(), batch)
    if schedule == "speculative":
        assert run.counters["accepted"] > 0      # update sweeps after accepted speculations


@pytest.mark.parametrize("skip", [False, True])
def test_board_link_with_stages(skip):
    # The host's weight writes and readback go through registered choices with fmax_stages:
    # LOAD_WEIGHTS then WEIGHTS return what was written, and training through the link from
    # those weights equals the core's.
    p = CoreParams(layers=(16, 4, 4), lanes=4, inputs=2, lr=0.05, skip_zeros=skip,
                   fmax_stages=True)
    init, data, top = sparse_board(p)
    with SimulatedBoard(top) as board:
        link = BoardLink(board)
        other = initial_params(link.info, 5)
        load_params(link, other)
        loaded = read_params(link)
        thr = threshold_register(0.004, link.info)
        run = run_schedule(link, data.train_images, data.train_labels, schedule="speculative",
                           threshold=thr, batch=3)
        params = read_params(link)
    for (w1, b1), (w2, b2) in zip(loaded, initial_weights(p, 5)):
        assert (w1 == w2).all() and (b1 == b2).all()
    # The board trained from the weights it was loaded with.
    ref = run_pysim(p, initial_weights(p, 5), data.train_images, data.train_labels,
                    schedule="speculative", threshold=thr, batch=3)
    assert any((w1 != w2).any() for (w1, _), (w2, _) in zip(init, initial_weights(p, 5)))
    check_link_run(run, params, ref)


def test_stages_cost_the_modelled_cycles():
    # One cycle per forward layer and one in the softmax, two per delta layer, three per
    # update sweep (its registered start, its two-stage clip, its registered new weights).
    base = CoreParams(layers=(16, 8, 8, 4), lanes=4, inputs=2)
    staged = CoreParams(layers=(16, 8, 8, 4), lanes=4, inputs=2, fmax_stages=True)
    a, b = CycleModel(base), CycleModel(staged)
    assert b.forward - a.forward == base.n_layers + 1
    assert b.backward - a.backward == 2 * (base.n_layers - 1)
    assert b.undo == a.undo
    assert b.update - a.update == 3


def test_fmax_stages_must_be_a_bool():
    with pytest.raises(TypeError, match="fmax_stages must be True or False"):
        CoreParams(fmax_stages="yes")
