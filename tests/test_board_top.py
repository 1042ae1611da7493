# amaranth: UnusedElaboratable=no
"""The board top's frame protocol in simulation, over the bit-level UART: settings, replies,
corrupt or malformed frames, which get an error reply and change no training state, and the
weight load and core reset that let the host start every schedule from the same state."""

import numpy as np
import pytest

from golden.fixed import FixedFormat, Q
from specbp_hw.board_sim import SimulatedBoard
from specbp_hw.board_top import BoardTop, initial_weights
from specbp_hw.host import BoardLink
from specbp_hw.params import CoreParams
from specbp_hw.protocol import (REQUEST_SOF, Cmd, Status, crc16, decode_info, encode_reply,
                                encode_request, info_bytes, max_request_payload)
from specbp_hw.pysim import run_pysim

from test_train import random_data

# A tiny board: 16 inputs (2 a cycle), 4 hidden (2 lanes), 4 classes; 4 clocks per UART bit.
PARAMS = CoreParams(layers=(16, 4, 4), lanes=2, inputs=2, lr=0.05)
INIT = initial_weights(PARAMS, seed=3)
DIVISOR = 4
TIMEOUT = 200


def make_board(watch=(), **kwargs):
    """The tiny board in simulation; ``watch`` names core outputs to sample (``watched``).
    The core's memory reads that collide with a write read inverted words (as in hardware they
    are undefined): host writes and readbacks and training through the link never use one."""
    top = BoardTop(PARAMS, DIVISOR, init=INIT, timeout=TIMEOUT, led_hold=4,
                   poison_collisions=True, **kwargs)
    return SimulatedBoard(top, watch={name: getattr(top.core, name) for name in watch})


def frame(cmd, payload=b"", *, length=None):
    """A request whose length field says ``length`` (default: the payload's), CRC correct."""
    payload = bytes(payload)
    n = len(payload) if length is None else length
    body = bytes([cmd, n & 0xFF, n >> 8]) + payload
    return bytes([REQUEST_SOF]) + body + crc16(body).to_bytes(2, "little")


def flip(raw, index):
    """``raw`` with one bit of byte ``index`` inverted (the CRC no longer matches)."""
    raw = bytearray(raw)
    raw[index] ^= 0x10
    return bytes(raw)


def test_crc_and_frame_encoding():
    assert crc16(b"123456789") == 0x29B1      # the CRC-16/CCITT-FALSE check value
    assert encode_request(Cmd.SET_BATCH, [4]) == frame(Cmd.SET_BATCH, [4])
    assert encode_reply(Cmd.STATUS, 0, b"")[:5] == bytes([0x5A, Cmd.STATUS, 0, 0, 0])


def test_info_status_settings_and_bad_values():
    with make_board() as board:
        link = BoardLink(board)
        assert link.info == decode_info(info_bytes(PARAMS, 16))
        assert link.info["layers"] == PARAMS.layers and link.info["depth"] == PARAMS.depth
        st = link.status()
        assert (st["idle"], st["schedule"], st["batch"], st["threshold"], st["infer"]) == \
            (True, 0, 15, 0, False)
        assert board.leds == {"led_idle": 1, "led_busy": 0, "led_error": 0}

        link.set_schedule("pipelined")
        link.set_threshold(123456)
        link.set_batch(3)
        link.set_infer(True)
        want = {"schedule": 2, "threshold": 123456, "batch": 3, "infer": True}
        assert {k: link.status()[k] for k in want} == want

        board.write(b"\x00\x13\x37")               # line noise between frames is skipped
        bad = [(Cmd.SET_SCHEDULE, [3]), (Cmd.SET_BATCH, [0]), (Cmd.SET_BATCH, [17]),
               (Cmd.SET_INFER, [2]), (Cmd.SET_THRESHOLD, (1 << 20).to_bytes(4, "little")),
               (Cmd.WEIGHTS, [0, 0, 0, 0]), (Cmd.WEIGHTS, [PARAMS.depth - 1, 0, 2, 0])]
        for cmd, payload in bad:
            assert link.transact(cmd, payload)[0] == Status.BAD_VALUE
        assert board.leds["led_error"] == 1
        st = link.status()      # a good frame clears the error LED
        assert {k: st[k] for k in want} == want
        assert st["error"] and not link.status()["error"]
        assert (st["bad_frames"], st["last_error"], st["junk_bytes"], st["uart_errors"]) == \
            (len(bad), Status.BAD_VALUE, 3, 0)
        assert board.leds["led_error"] == 0


def corrupt_frames(upload_payload):
    """Malformed and corrupt frames with the error status each must get."""
    up = frame(Cmd.UPLOAD, upload_payload)
    label_bad = bytes([PARAMS.classes, 0]) + upload_payload[2:]
    flags_bad = bytes([upload_payload[0], 2]) + upload_payload[2:]
    return [
        ("pixel flipped", flip(up, 10), Status.BAD_CRC),
        ("CRC flipped", flip(up, len(up) - 1), Status.BAD_CRC),
        ("batch value flipped", flip(frame(Cmd.SET_BATCH, [3]), 4), Status.BAD_CRC),
        ("command flipped", flip(frame(Cmd.SET_INFER, [0]), 1), Status.BAD_CRC),
        ("length field flipped lower", flip(up, 2), Status.BAD_CRC),
        ("length field flipped higher", flip(frame(Cmd.SET_SCHEDULE, [1]), 2), Status.TIMEOUT),
        ("threshold short of a byte", frame(Cmd.SET_THRESHOLD, [0, 0, 0]), Status.BAD_LENGTH),
        ("upload short of a pixel", frame(Cmd.UPLOAD, upload_payload[:-1]), Status.BAD_LENGTH),
        ("upload with an extra byte", frame(Cmd.UPLOAD, upload_payload + b"\x00"),
         Status.BAD_LENGTH),
        ("length beyond any command", frame(Cmd.UPLOAD, b"\x01\x02", length=60000)[:9],
         Status.BAD_LENGTH),
        ("unknown command", frame(0x77, [1]), Status.UNKNOWN_COMMAND),
        ("truncated upload", up[:12], Status.TIMEOUT),
        ("length says more than sent", frame(Cmd.SET_BATCH, [1], length=3), Status.TIMEOUT),
        ("label out of range", frame(Cmd.UPLOAD, label_bad), Status.BAD_VALUE),
        ("unknown flag", frame(Cmd.UPLOAD, flags_bad), Status.BAD_VALUE),
    ]


def test_corrupt_frames_leave_training_unchanged():
    # Speculative training with a corrupt frame before every upload (each a variant of the
    # next sample or of a setting that would change the run), and a 2-entry result buffer so
    # that uploads are also refused while it is full. The run must equal the core's own.
    n, batch = 7, 3
    data = random_data(np.random.default_rng(11), n, 16, 4, repeat=0.5)
    thr = PARAMS.fmt.threshold_int(0.004, 4)
    ref = run_pysim(PARAMS, INIT, data.train_images, data.train_labels, schedule="speculative",
                    threshold=thr, batch=batch)
    seen = []
    with make_board(result_depth=2) as board:
        link = BoardLink(board)
        link.set_schedule("speculative")
        link.set_threshold(thr)
        link.set_batch(batch)
        results, refused = [], 0
        for i in range(n):
            payload = bytes([data.train_labels[i], int(i == n - 1)]) + \
                bytes(data.train_images[i])
            cases = corrupt_frames(payload)
            for name, raw, status in cases[i::n]:
                board.write(raw)
                seen.append((name, link.read_reply(raw[1])[0], status))
                assert board.leds["led_error"] == 1
            while link.upload(data.train_images[i], data.train_labels[i],
                              last=i == n - 1) is None:
                refused += 1
                results += link.results()
        while len(results) < n:
            results += link.results()
        words = link.weights()
        counters = link.counters()
        st = link.status()
    assert [(name, got) for name, got, _ in seen] == [(name, want) for name, _, want in seen]
    assert len(seen) == len(cases)
    assert refused > 0
    assert st["bad_frames"] == len(cases) and st["uart_errors"] == 0
    assert [r[2] for r in results] == ref.kinds.tolist()
    assert {1, 2} <= set(ref.kinds.tolist())      # both speculation outcomes happened
    assert [r[1] for r in results] == ref.predictions.tolist()
    assert [r[3] for r in results] == ref.step_cycles.tolist()
    for (w1, b1), (w2, b2) in zip(PARAMS.unpack_params(words), ref.params):
        assert (w1 == w2).all() and (b1 == b2).all()
    for name in ("samples", "accepted", "rejected", "fwd_busy", "bwd_busy", "update_cycles"):
        assert counters[name] == ref.counters[name], name


@pytest.mark.parametrize("kwargs, match", [
    ({"divisor": 3}, "at least 4"),
    ({"timeout": 10}, "timeout"),
    ({"result_depth": 1}, "result_depth"),
    ({"led_hold": 0}, "led_hold"),
])
def test_parameters_are_checked(kwargs, match):
    args = {"divisor": DIVISOR, **kwargs}
    with pytest.raises(ValueError, match=match):
        BoardTop(PARAMS, args.pop("divisor"), **args)


def test_platform_top_maps_uart_and_leds():
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_85FPlatform
    from amaranth_boards.ulx3s import ULX3S_85F_Platform

    from specbp_hw.board_top import PlatformTop
    pcf = ICEBreakerPlatform().prepare(PlatformTop(PARAMS), name="top").files["top.pcf"]
    for line in ("set_io uart_0__rx__io 6", "set_io uart_0__tx__io 9", "set_io led_0__io 11",
                 "set_io led_1__io 37"):
        assert line in pcf
    lpf = ULX3S_85F_Platform().prepare(PlatformTop(PARAMS), name="top").files["top.lpf"]
    for site in ('"uart_0__rx__io" SITE "M1"', '"uart_0__tx__io" SITE "L4"',
                 '"led_2__io" SITE "C1"'):
        assert site in lpf
    with pytest.raises(ValueError, match="has no 'uart' resource"):
        OrangeCrabR0_2_85FPlatform().prepare(PlatformTop(PARAMS), name="top")
    with pytest.raises(ValueError, match="cannot be made from a 12 MHz clock"):
        ICEBreakerPlatform().prepare(PlatformTop(PARAMS, baud=4_000_000), name="top")
    with pytest.raises(ValueError, match="leds must name"):
        PlatformTop(PARAMS, leds=("led_red",))


@pytest.mark.parametrize("board, f_out, cell", [("ulx3s-25f", 50e6, "EHXPLLL"),
                                                ("icebreaker", 24e6, "SB_PLL40_PAD")])
@pytest.mark.parametrize("baud", [115200, 3_000_000])
def test_platform_top_runs_from_the_pll(board, f_out, cell, baud):
    # What `python -m specbp_hw.build` puts in a bitstream: the UART's divisor follows the
    # PLL's output, not the board's oscillator.
    from specbp_hw.board_top import PlatformTop
    from specbp_hw.boards import get_board
    from specbp_hw.synth_top import pll_config
    b = get_board(board)
    platform = b.platform_class()()
    pll = pll_config(b.device.family, platform.default_clk_frequency, f_out)
    top = PlatformTop(PARAMS, baud=baud, pll=pll)
    plan = platform.prepare(top, name="top")
    assert top.board.divisor == round(pll["f_out"] / baud)
    # The silence timeout is about 89 ms at either rate: 1024 byte times at 115,200 baud
    # (BoardTop's own default there), not 1024 byte times of a faster line.
    assert top.board.timeout == 1024 * 10 * round(pll["f_out"] / 115200)
    assert top.board.timeout / pll["f_out"] == pytest.approx(1024 * 10 / 115200, rel=0.01)
    assert f"cell \\{cell} " in plan.files["top.il"]
    assert "uart_0__rx" in plan.files["top.lpf" if b.device.family == "ecp5" else "top.pcf"]
    # On the ECP5 the core's reset leaves a global buffer (nextpnr routes it on a clock
    # network); the iCE40's nextpnr promotes high-fanout resets by itself.
    assert ("cell \\DCCA " in plan.files["top.il"]) == (b.device.family == "ecp5")


WORD_BYTES = -(-PARAMS.weight_word.size // 8)       # 8: 2 x 2 elements of 16 bits
MAX_PAYLOAD = max_request_payload(PARAMS.layers[0], PARAMS.inputs, WORD_BYTES)


def word_bytes(words):
    """Weight words (lists of signed elements) as LOAD_WEIGHTS data, as the WEIGHTS reply."""
    width = PARAMS.fmt.weight.width
    out = b""
    for w in words:
        value = sum((v & ((1 << width) - 1)) << (width * e) for e, v in enumerate(w))
        out += value.to_bytes(WORD_BYTES, "little")
    return out


def load_frame(addr, data, **kwargs):
    return frame(Cmd.LOAD_WEIGHTS, addr.to_bytes(2, "little") + data, **kwargs)


def test_load_weights_checks_every_frame_before_writing():
    assert (PARAMS.inputs, WORD_BYTES, MAX_PAYLOAD, PARAMS.depth) == (2, 8, 18, 24)
    rng = np.random.default_rng(5)
    lo, hi = PARAMS.fmt.weight.min, PARAMS.fmt.weight.max
    new = rng.integers(lo, hi + 1, size=(PARAMS.depth, PARAMS.block)).tolist()
    new[0] = [lo, hi, -1, 0]                            # the extremes and both signs
    one = word_bytes([[1, 2, 3, 4]])
    with make_board() as board:
        link = BoardLink(board)
        assert link.weights(0, 1) == PARAMS.pack_params(INIT)[:1]
        # Frames of two words (16 data bytes, the longest) and one at the end of the memory.
        link.load_weights(0, new)
        assert link.weights() == new
        link.load_weights(PARAMS.depth - 1, [[-5, 6, -7, 8]])
        new[-1] = [-5, 6, -7, 8]
        assert link.weights(PARAMS.depth - 2, 2) == new[-2:]

        bad = [
            ("data byte flipped", flip(load_frame(3, one + one), 8), Status.BAD_CRC),
            ("CRC flipped", flip(load_frame(3, one), 15), Status.BAD_CRC),
            ("address only", load_frame(3, b""), Status.BAD_LENGTH),
            ("shorter than K data bytes", load_frame(3, b"\x01"), Status.BAD_LENGTH),
            ("longer than any command", load_frame(3, one + one + b"\0\0"), Status.BAD_LENGTH),
            ("no whole word", load_frame(3, one[:6]), Status.BAD_VALUE),
            ("a partial word after a whole one", load_frame(3, one + one[:2]),
             Status.BAD_VALUE),
            ("data not a multiple of K", load_frame(3, one + b"\0"), Status.BAD_VALUE),
            ("past the end", load_frame(PARAMS.depth - 1, one + one), Status.BAD_VALUE),
            ("at the end", load_frame(PARAMS.depth, one), Status.BAD_VALUE),
            ("address 0xFFFF", load_frame(0xFFFF, one), Status.BAD_VALUE),
        ]
        got = []
        for name, raw, status in bad:
            board.write(raw)
            got.append((name, link.read_reply(Cmd.LOAD_WEIGHTS)[0]))
        assert got == [(name, status) for name, _, status in bad]
        assert link.weights() == new                    # not one word changed
        st = link.status()
        assert (st["bad_frames"], st["last_error"]) == (len(bad), Status.BAD_VALUE)

        # Malformed requests are refused by the host before anything is sent.
        with pytest.raises(ValueError, match="has 3 elements"):
            link.load_weights(0, [[1, 2, 3]])
        with pytest.raises(ValueError, match="element 2 is 32768, outside"):
            link.load_weights(0, [[1, 2, hi + 1, 4]])
        with pytest.raises(ValueError, match="outside the board's 24"):
            link.load_weights(PARAMS.depth - 1, [[0] * 4, [0] * 4])
        assert link.status()["bad_frames"] == len(bad)


def test_reset_and_load_refused_while_busy_then_reset_clears_the_core():
    # A pipelined step that does not close its batch leaves a backward pass pending: the core
    # is not idle, so RESET and LOAD_WEIGHTS get `busy` and change nothing.
    n, batch = 4, 4
    data = random_data(np.random.default_rng(2), n, 16, 4)
    ref = run_pysim(PARAMS, INIT, data.train_images, data.train_labels, schedule="pipelined",
                    batch=batch)
    with make_board(watch=("stash_valid",)) as board:
        link = BoardLink(board)
        link.set_schedule("pipelined")
        link.set_batch(batch)
        link.set_threshold(77)
        results = []
        for i in range(n - 1):
            link.upload(data.train_images[i], data.train_labels[i])
        while len(results) < n - 1:
            results += link.results()
        assert not link.status()["idle"]
        assert link.transact(Cmd.RESET)[0] == Status.BUSY
        assert link.transact(Cmd.LOAD_WEIGHTS, bytes(2) + word_bytes([[9, 9, 9, 9]] * 2)) == \
            (Status.BUSY, b"")
        link.upload(data.train_images[-1], data.train_labels[-1], last=True)
        while len(results) < n:
            results += link.results()
        words = link.weights()          # waits for idle
        before = link.counters()
        st_before = link.status()
        stash_before = board.watched["stash_valid"]

        assert link.transact(Cmd.RESET) == (Status.OK, b"")
        after = link.counters()
        st = link.status()
        stash_after = board.watched["stash_valid"]
        assert link.weights() == words                  # the memories stay
    # The run equals the core's own: the refused frames changed nothing.
    assert [r[2] for r in results] == ref.kinds.tolist()
    assert [r[1] for r in results] == ref.predictions.tolist()
    assert words == PARAMS.pack_params(ref.params)
    assert before["samples"] == n and before["step_cycles"] == ref.step_cycles.sum()
    assert stash_before == sum(1 << int(label) for label in set(data.train_labels))
    # RESET: every counter restarts (cycles counts from the reset), the stash is empty; the
    # settings and the link statistics stay.
    assert stash_after == 0
    assert {k: v for k, v in after.items() if k != "cycles"} == dict.fromkeys(
        [k for k in after if k != "cycles"], 0)
    assert 0 < after["cycles"] < before["cycles"] and after["cycles"] < 2000
    keep = ("schedule", "batch", "threshold", "infer", "bad_frames", "junk_bytes")
    assert {k: st[k] for k in keep} == {k: st_before[k] for k in keep} and st["idle"]
    assert (st["schedule"], st["batch"], st["threshold"]) == (2, batch, 77)


@pytest.mark.parametrize("params", [
    # 12-bit weights, 4 inputs a cycle: 6-byte words, each frame padded with 2 zero bytes.
    CoreParams(layers=(8, 4, 4), lanes=1, inputs=4, lr=0.05,
               fmt=FixedFormat(weight=Q(12, 9), max_batch=16)),
    # A 16-byte word longer than a 2-pixel sample: the sample buffer holds one word.
    CoreParams(layers=(2, 4, 2), lanes=4, inputs=2, lr=0.05),
], ids=["padded", "word-longer-than-sample"])
def test_load_weights_of_other_geometries(params):
    from specbp_hw.host import initial_params, load_params, read_params
    with SimulatedBoard(BoardTop(params, DIVISOR, timeout=TIMEOUT)) as board:
        link = BoardLink(board)
        init = initial_params(link.info, 5)
        load_params(link, init)
        got = read_params(link)
    nb = link.info["word_bytes"]
    assert nb % params.inputs or nb > params.layers[0]     # what the case is about
    for (w1, b1), (w2, b2) in zip(got, initial_weights(params, 5)):
        assert (w1 == w2).all() and (b1 == b2).all()
