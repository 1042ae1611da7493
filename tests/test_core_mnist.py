# amaranth: UnusedElaboratable=no
"""The paper configuration (784-16-16-10, 16 lanes) on real MNIST samples, bit-exact.

Uses full MNIST when ``SPECBP_MNIST_DIR`` is set (as in CI), else the built-in subset.
"""

import pytest

from golden.config import TrainConfig
from golden.fixed_model import FixedArith
from golden.train import ACCEPTED, REJECTED, train
from specbp_hw.cycles import CycleModel
from specbp_hw.data import resolve
from specbp_hw.params import CoreParams
from specbp_hw.pysim import run_pysim


@pytest.mark.parametrize("schedule, threshold, n", [
    ("serial", 0.0, 17),          # crosses a batch boundary (15) and ends on a short batch
    ("speculative", 0.001, 32),   # both decisions: distances at init are 100-850 LSBs
    ("pipelined", 0.0, 32),
])
def test_paper_config_on_mnist(schedule, threshold, n):
    data = resolve().subset(train=n, test=1)
    p = CoreParams()
    cfg = TrainConfig(threshold=threshold, epochs=1, batch=15)
    init = FixedArith(cfg, p.fmt).init_params(cfg)
    ref = train(FixedArith(cfg, p.fmt), cfg, data, trace=True)
    run = run_pysim(p, init, data.train_images, data.train_labels, schedule=schedule,
                    threshold=p.fmt.threshold_int(threshold, 10), batch=15)
    assert (run.kinds == ref.trace["kind"]).all()
    assert (run.predictions == ref.trace["prediction"]).all()
    for (w1, b1), (w2, b2) in zip(run.params, ref.params):
        assert (w1 == w2).all() and (b1 == b2).all()
    model = CycleModel(p)
    assert run.step_cycles.tolist() == model.step_cycles(schedule, run.kinds.tolist(), 15)
    if schedule == "speculative":
        assert {ACCEPTED, REJECTED} <= set(run.kinds.tolist())
