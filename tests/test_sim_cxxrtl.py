# amaranth: UnusedElaboratable=no
"""The compiled (CXXRTL) backend on the paper configuration: same bits and cycles as Amaranth's
simulator and the fixed-point model, per-batch checks, waveforms, the CLI on it.

One build of the paper configuration serves the module (cached in the default cache
directory, so the CLI test reuses it). Full MNIST is used when ``SPECBP_MNIST_DIR`` is set (as
in CI), else the built-in subset.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from golden.config import TrainConfig
from golden.fixed_model import FixedArith
from golden.train import train
from specbp_hw.backends import CxxrtlTrainer, train_pysim
from specbp_hw.cxxrtl import compiler_available
from specbp_hw.data import resolve
from specbp_hw.params import CoreParams
from specbp_hw.sim import Reference, _digest, compare

pytestmark = pytest.mark.skipif(not compiler_available(), reason="needs a C++ compiler")

THRESHOLD = 0.001   # accepts and rejects both occur on the first 19 samples at this threshold


@pytest.fixture(scope="module")
def trainer():
    t = CxxrtlTrainer(CoreParams())
    yield t
    t.close()


def _setup(p, schedule, n, batch=15, epochs=1):
    data = resolve().subset(train=n, test=200)
    thr = THRESHOLD if schedule == "speculative" else 0.0
    cfg = TrainConfig(layers=p.layers, lr=p.lr, clip=p.clip, batch=batch, threshold=thr,
                      epochs=epochs)
    init = FixedArith(cfg, p.fmt).init_params(cfg)
    return data, cfg, init, p.fmt.threshold_int(thr, p.classes)


def _same(a, b):
    return all((w1 == w2).all() and (b1 == b2).all() for (w1, b1), (w2, b2) in zip(a, b))


@pytest.mark.parametrize("schedule", ["serial", "speculative", "pipelined"])
def test_backends_agree_exactly(trainer, schedule):
    p = trainer.params
    data, cfg, init, reg = _setup(p, schedule, 19, batch=4)
    kw = dict(schedule=schedule, threshold=reg, batch=4, epochs=1)
    fast = trainer.train(init, data.train_images, data.train_labels, **kw)
    slow = train_pysim(p, init, data.train_images, data.train_labels, **kw)
    assert _same(fast.params, slow.params)
    for field in ("kinds", "predictions", "step_cycles"):
        assert getattr(fast, field).tolist() == getattr(slow, field).tolist(), field
    assert fast.counters == slow.counters
    # ... and both equal the fixed-point model.
    ref = Reference(p, data, cfg)
    assert compare(fast, ref) is None
    if schedule == "speculative":
        assert {1, 2} <= set(fast.kinds.tolist())


def test_per_batch_check_finds_a_wrong_weight(trainer):
    p = trainer.params
    data, cfg, init, _ = _setup(p, "serial", 40)
    ref = Reference(p, data, cfg)
    seen = []

    def check(b, got):
        seen.append(b)
        return None if _digest(got) == ref.digests[b] else f"batch {b}"

    run = trainer.train(init, data.train_images, data.train_labels, schedule="serial",
                        threshold=0, batch=15, on_batch=check)
    assert run.mismatch is None and seen == [0, 1] and run.checked_batches == 2
    # One weight off by one LSB in the RTL's initial weights: the first batch already differs.
    (w, b), rest = init[0], init[1:]
    w = w.copy()
    w[300, 5] += 1
    run = trainer.train([(w, b), *rest], data.train_images, data.train_labels,
                        schedule="serial", threshold=0, batch=15, on_batch=check)
    assert run.mismatch == "batch 0" and run.checked_batches == 1
    assert compare(run, ref) == "batch 0"


def test_epochs_and_waveform_window(trainer, tmp_path):
    p = trainer.params
    data, cfg, init, _ = _setup(p, "pipelined", 7, batch=3, epochs=2)
    vcd = tmp_path / "w.vcd"
    run = trainer.train(init, data.train_images, data.train_labels, schedule="pipelined",
                        threshold=0, batch=3, epochs=2, vcd=(str(vcd), 500, 40))
    ref = train(FixedArith(cfg, p.fmt), cfg, data, trace=True)
    assert _same(run.params, ref.params)
    assert run.kinds.tolist() == ref.trace["kind"].tolist()
    text = vcd.read_text()
    times = [int(line[1:]) for line in text.splitlines() if line.startswith("#")]
    assert len(times) == 41 and times == list(range(times[0], times[0] + 41))
    assert "$var" in text and "cycles" in text


def test_mnist_few_thousand_samples_bit_exact(trainer):
    """Every schedule over 2,000 training samples (full MNIST in CI), checked after every
    batch against the fixed-point model."""
    p = trainer.params
    for schedule in ("serial", "speculative", "pipelined"):
        data, cfg, init, reg = _setup(p, schedule, 2000)
        ref = Reference(p, data, cfg)

        def check(b, got):
            return None if _digest(got) == ref.digests[b] else f"weights after batch {b}"

        run = trainer.train(init, data.train_images, data.train_labels, schedule=schedule,
                            threshold=reg, batch=15, on_batch=check)
        assert run.checked_batches == 133
        assert compare(run, ref) is None, schedule
        assert run.counters["samples"] == 2000
        if schedule == "speculative":
            assert run.counters["accepted"] > 0 and run.counters["rejected"] > 0


def test_cli_on_the_compiled_backend(trainer, tmp_path):
    out = tmp_path / "r.json"
    r = subprocess.run([sys.executable, "-m", "specbp_hw.sim", "--train", "300", "--test",
                        "100", "--no-progress", "--json", str(out)], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["backend"] == "cxxrtl" and doc["build_cache_hit"] is True
    assert doc["sim_cycles_per_second"] > 0
    for s in doc["schedules"].values():
        assert s["bit_exact"] is True and s["samples"] == 300
    sched = doc["schedules"]
    assert sched["speculative"]["speedup"] > 1.5 and sched["pipelined"]["speedup"] > 1.5
    assert np.isclose(sched["serial"]["speedup"], 1)
