# amaranth: UnusedElaboratable=no
"""The host program end to end against the simulated board (UART at bit level): its results
equal those of driving the core directly, for every schedule of a sequence (each starts fresh
from the same initial weights); and its command line's one-line errors."""

import sys

import numpy as np
import pytest

from specbp_hw import host
from specbp_hw.board_top import initial_weights
from specbp_hw.host import (BoardLink, board_params, format_table, initial_params, read_params,
                            run_schedule, threshold_register)
from specbp_hw.params import CoreParams
from specbp_hw.presets import PRECISIONS
from specbp_hw.protocol import decode_info, info_bytes
from specbp_hw.pysim import run_pysim

from test_board_top import INIT, PARAMS, make_board
from test_train import random_data


@pytest.mark.parametrize("schedule", ["serial", "speculative", "pipelined"])
def test_host_training_equals_the_core(schedule):
    n, batch = 9, 4
    data = random_data(np.random.default_rng(7), n, 16, 4, repeat=0.5, n_test=4)
    with make_board(result_depth=4) as board:
        link = BoardLink(board)
        thr = threshold_register(0.004, link.info) if schedule == "speculative" else 0
        run = run_schedule(link, data.train_images, data.train_labels, schedule=schedule,
                           threshold=thr, batch=batch, test_images=data.test_images,
                           test_labels=data.test_labels)
        params = read_params(link)
    ref = run_pysim(PARAMS, INIT, data.train_images, data.train_labels, schedule=schedule,
                    threshold=thr, batch=batch)
    # Inference from the trained weights, as the host ran it on the board.
    ref_test = run_pysim(PARAMS, ref.params, data.test_images, data.test_labels, infer=True)

    assert thr == PARAMS.fmt.threshold_int(0.004, 4) or schedule != "speculative"
    results = np.array(run["results"])
    assert (results[:, 0] == data.train_labels).all()
    assert (results[:, 1] == ref.predictions).all()
    assert (results[:, 2] == ref.kinds).all()
    assert (results[:, 3] == ref.step_cycles).all()
    if schedule == "speculative":
        assert {1, 2} <= set(ref.kinds.tolist())
    for (w1, b1), (w2, b2) in zip(params, ref.params):
        assert (w1 == w2).all() and (b1 == b2).all()
    c = run["counters"]
    for name in ("samples", "accepted", "rejected", "fwd_busy", "bwd_busy", "update_cycles"):
        assert c[name] == ref.counters[name], name
    assert c["step_cycles"] == ref.step_cycles.sum()
    assert (run["predictions"] == ref_test.predictions).all()
    assert (ref_test.kinds == 3).all()
    assert run["accuracy"] == (ref_test.predictions == data.test_labels).mean()

    table = format_table([run]).splitlines()
    cycles = ref.step_cycles.sum() + ref.counters["update_cycles"]
    assert table[2].split() == [schedule, str(n), str(ref.counters["accepted"]),
                                str(ref.counters["rejected"]), str(cycles),
                                f"{cycles / n:.1f}", f"{100 * run['accuracy']:.2f}%"]


def cli(capsys, *argv, transport=None):
    code = host.main(list(argv), transport=transport)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_unknown_schedule(capsys):
    code, out, err = cli(capsys, "--port", "/nonexistent", "--schedules", "serial,fast")
    assert code == 1 and err == "error: Unknown schedule 'fast'; choose from serial, " \
                                 "speculative, pipelined\n"


def test_cli_bad_port(capsys):
    code, out, err = cli(capsys, "--port", "/nonexistent/tty", "--train", "10", "--test", "5")
    assert code == 1 and err.startswith("error: cannot open serial port '/nonexistent/tty'")
    assert len(err.splitlines()) == 1


def test_cli_missing_pyserial(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "serial", None)
    code, out, err = cli(capsys, "--port", "/dev/ttyUSB0", "--train", "10", "--test", "5")
    assert code == 1 and err == "error: pyserial is not installed; install it with " \
                                "`pip install pyserial`\n"


def test_cli_no_reply(capsys):
    class Silent:
        def read(self, n):
            return b""

        def write(self, data):
            pass

    code, out, err = cli(capsys, "--port", "x", "--train", "10", "--test", "5",
                         transport=Silent())
    assert code == 1 and err.startswith("error: no reply from the board")
    assert len(err.splitlines()) == 1


def test_cli_board_of_another_network(capsys):
    # The tiny simulated board takes 16 inputs (MNIST pooled to 4x4 fits them) and has 4
    # classes; MNIST has 10.
    with make_board() as board:
        code, out, err = cli(capsys, "--port", "sim", "--train", "10", "--test", "5",
                             transport=board)
    assert code == 1 and err == "error: the data has label 9 but the board's network only " \
                                "4 classes\n"


@pytest.mark.parametrize("argv, message", [
    (["--batch", "0"], "--batch must be from 1 to the board's 16, not 0"),
    (["--threshold", "-1"], "threshold must be between 0 and"),
    (["--epochs", "0"], "--epochs must be at least 1, not 0"),
    (["--seed", "-1"], "--seed must be a non-negative integer, not -1"),
])
def test_cli_bad_values(capsys, argv, message):
    with make_board() as board:
        code, out, err = cli(capsys, "--port", "sim", "--train", "10", "--test", "5", *argv,
                             transport=board)
    assert code == 1 and err.startswith("error: " + message)
    assert len(err.splitlines()) == 1


def test_serial_transport_over_a_pty():
    # The pyserial transport on a pseudo-terminal: what the host writes arrives on the other
    # side, and what comes back is read (a board's USB serial port behaves the same way).
    import os
    import pty
    import tty
    master, slave = pty.openpty()
    tty.setraw(master)
    try:
        port = host.SerialTransport(os.ttyname(slave), 115200, timeout=0.5)
        port.write(b"\xa5\x01\x00\x00")
        got = b""
        while len(got) < 4:
            got += os.read(master, 4 - len(got))
        assert got == b"\xa5\x01\x00\x00"
        os.write(master, b"\x5a\x02")
        assert port.read(2) == b"\x5a\x02"
        assert port.read(1) == b""          # the read timeout: nothing more
        port.close()
    finally:
        os.close(master)
        os.close(slave)


def test_cli_trains_on_the_simulated_board(capsys, monkeypatch, tmp_path):
    # The whole command line against the tiny simulated board, with a 16-pixel data set in
    # place of MNIST: two schedules one after the other, each from the initial weights of
    # seed 0 (the board powers on with those of seed 3). Each row of the table, and the
    # weights saved after the second, equal a direct run of a fresh core from seed 0.
    import specbp_hw.data
    n = 12
    data = random_data(np.random.default_rng(2), n, 16, 4, repeat=0.5, n_test=3)

    class Tiny:
        source = "tiny random test data"
        train_images, train_labels = data.train_images, data.train_labels
        test_images, test_labels = data.test_images, data.test_labels

        def subset(self, train, test):
            return self

        def for_inputs(self, inputs):
            return self

    monkeypatch.setattr(specbp_hw.data, "resolve", lambda path: Tiny())
    out_file = tmp_path / "w.npz"
    with make_board() as board:
        code, out, err = cli(capsys, "--port", "sim", "--schedules", "serial,speculative",
                             "--threshold", "0.004", "--batch", "3", "--weights",
                             str(out_file), transport=board)
    assert (code, err) == (0, "")
    assert "each schedule from the initial weights of seed 0" in out
    assert "carry over" not in out
    init = initial_weights(PARAMS, seed=0)
    assert not all((w0 == w3).all() for (w0, _), (w3, _) in zip(init, INIT))
    thr = PARAMS.fmt.threshold_int(0.004, 4)
    for schedule in ("serial", "speculative"):
        ref = run_pysim(PARAMS, init, data.train_images, data.train_labels, schedule=schedule,
                        threshold=thr, batch=3)
        ref_test = run_pysim(PARAMS, ref.params, data.test_images, data.test_labels,
                             infer=True)
        c = ref.counters
        cycles = ref.step_cycles.sum() + c["update_cycles"]
        acc = 100 * (ref_test.predictions == data.test_labels).mean()
        row = [line for line in out.splitlines() if line.startswith(schedule + " ")][0]
        assert row.split() == [schedule, str(n), str(c["accepted"]), str(c["rejected"]),
                               str(cycles), f"{cycles / n:.1f}", f"{acc:.2f}%"]
        if schedule == "speculative":
            assert c["accepted"] and c["rejected"]
    saved = np.load(out_file)
    assert int(saved["weight_frac"]) == PARAMS.fmt.weight.frac
    for l, (w, b) in enumerate(ref.params):       # the second (speculative) run's
        assert (saved[f"W{l}"] == w).all() and (saved[f"b{l}"] == b).all()


def test_second_schedule_starts_fresh():
    # Two schedules one after the other on one board. The first (pipelined, from the power-on
    # weights) leaves trained weights, a stash and counters; the second, speculative, is
    # started fresh from other initial weights (run_schedule with ``init``: RESET, then
    # LOAD_WEIGHTS). It depends on the stash and on the weights, and must equal a run of a
    # fresh core from those weights, sample by sample.
    n, batch = 12, 5
    data = random_data(np.random.default_rng(8), n, 16, 4, repeat=0.5)
    init = initial_weights(PARAMS, seed=1)
    thr = PARAMS.fmt.threshold_int(0.004, 4)
    with make_board() as board:
        link = BoardLink(board)
        run_schedule(link, data.train_images[:6], data.train_labels[:6], schedule="pipelined",
                     batch=batch)
        run = run_schedule(link, data.train_images, data.train_labels, schedule="speculative",
                           threshold=thr, batch=batch, init=init)
        params = read_params(link)
    ref = run_pysim(PARAMS, init, data.train_images, data.train_labels, schedule="speculative",
                    threshold=thr, batch=batch)
    assert {1, 2} <= set(ref.kinds.tolist())
    results = np.array(run["results"])
    assert results[:, 2].tolist() == ref.kinds.tolist()
    assert results[:, 1].tolist() == ref.predictions.tolist()
    assert results[:, 3].tolist() == ref.step_cycles.tolist()
    for name in ("samples", "accepted", "rejected", "fwd_busy", "bwd_busy", "update_cycles"):
        assert run["counters"][name] == ref.counters[name], name
    for (w1, b1), (w2, b2) in zip(params, ref.params):
        assert (w1 == w2).all() and (b1 == b2).all()


@pytest.mark.parametrize("precision", ["q16", "q14"])
def test_initial_params_from_info(precision):
    # INFO carries what the initial weights depend on (layers, weight width and fraction
    # bits): the host's are the golden model's for the board's own CoreParams.
    params = CoreParams(layers=(16, 4, 4), lanes=2, inputs=2, fmt=PRECISIONS[precision],
                        lr=0.05)
    info = decode_info(info_bytes(params, 16))
    for seed in (0, 3):
        got, want = initial_params(info, seed), initial_weights(params, seed)
        for (w1, b1), (w2, b2) in zip(got, want):
            assert (w1 == w2).all() and (b1 == b2).all()
    assert board_params(info).pack_params(got) == params.pack_params(want)
    assert precision == "q16" or not all(
        (w1 == w2).all() for (w1, _), (w2, _) in zip(got, initial_weights(PARAMS, 3)))


class NoisyLine:
    """A transport that damages one bit of every ``every``-th request on its way to the board,
    each time at the next position after the start byte (command, length, payload or CRC)."""

    def __init__(self, board, every):
        self.board, self.every, self.count, self.damaged = board, every, 0, 0

    def write(self, data):
        self.count += 1
        if self.count % self.every == 0:
            data = bytearray(data)
            data[1 + self.damaged % (len(data) - 1)] ^= 0x04
            self.damaged += 1
        self.board.write(bytes(data))

    def read(self, n):
        return self.board.read(n)


def test_host_retries_damaged_requests():
    # Every 4th request is damaged on the line; the board rejects it without acting and the
    # host sends it again. The run still equals the core's own.
    n, batch = 8, 3
    data = random_data(np.random.default_rng(5), n, 16, 4, repeat=0.5)
    thr = PARAMS.fmt.threshold_int(0.004, 4)
    with make_board() as board:
        line = NoisyLine(board, 4)
        link = BoardLink(line)
        run = run_schedule(link, data.train_images, data.train_labels, schedule="speculative",
                           threshold=thr, batch=batch)
        params = read_params(link)
    ref = run_pysim(PARAMS, INIT, data.train_images, data.train_labels, schedule="speculative",
                    threshold=thr, batch=batch)
    assert line.damaged >= 5 and link.retried == line.damaged
    results = np.array(run["results"])
    assert (results[:, 2] == ref.kinds).all() and (results[:, 1] == ref.predictions).all()
    for (w1, b1), (w2, b2) in zip(params, ref.params):
        assert (w1 == w2).all() and (b1 == b2).all()
    for name in ("samples", "accepted", "rejected"):
        assert run["counters"][name] == ref.counters[name], name
