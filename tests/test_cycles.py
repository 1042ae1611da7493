# amaranth: UnusedElaboratable=no
"""The cycle model against the RTL: every step's cycles and the update counter, exactly."""

import numpy as np
import pytest

from golden.config import TrainConfig
from golden.fixed_model import FixedArith
from specbp_hw.cycles import CycleModel, softmax_latency
from specbp_hw.params import CoreParams
from specbp_hw.pysim import run_pysim
from specbp_hw.softmax import Softmax

from test_train import random_data


@pytest.mark.parametrize("schedule, thr", [("serial", 0.0), ("speculative", 0.003),
                                           ("pipelined", 0.0)])
@pytest.mark.parametrize("layers, K, N, batch, n, ways, div_bits", [
    ((16, 8, 8, 4), 2, 4, 5, 12, 1, 1),
    ((32, 8, 8, 4), 1, 8, 4, 9, 4, 2),
    ((12, 4, 3), 1, 4, 1, 4, 2, 3),
])
def test_model_predicts_rtl_cycles(layers, K, N, batch, n, ways, div_bits, schedule, thr):
    p = CoreParams(layers=layers, lanes=N, inputs=K, lr=0.05, softmax_ways=ways,
                   softmax_div_bits=div_bits)
    data = random_data(np.random.default_rng(sum(layers) + n), n, layers[0], layers[-1],
                       repeat=0.5)
    cfg = TrainConfig(layers=layers, seed=3, lr=0.05)
    run = run_pysim(p, FixedArith(cfg, p.fmt).init_params(cfg), data.train_images,
                    data.train_labels, schedule=schedule,
                    threshold=p.fmt.threshold_int(thr, layers[-1]), batch=batch)
    model = CycleModel(p)
    assert run.step_cycles.tolist() == model.step_cycles(schedule, run.kinds.tolist(), batch)
    assert run.counters["update_cycles"] == model.update_cycles(run.kinds.tolist(), batch)


def test_softmax_latency_matches_the_component():
    for classes, ways, div_bits in ((2, 1, 1), (4, 4, 2), (10, 1, 1), (10, 10, 2), (16, 5, 4)):
        p = CoreParams(layers=(16, 16, classes), lanes=16, softmax_ways=ways,
                       softmax_div_bits=div_bits)
        assert softmax_latency(p) == Softmax(p.fmt, classes, ways=ways,
                                             div_bits=div_bits).latency


def test_paper_config_mac_bounds():
    m = CycleModel(CoreParams())
    assert m.f_star == 12960 / 16 and m.b_star == 13376 / 16
