# amaranth: UnusedElaboratable=no
"""The board top's frame protocol in simulation, over the bit-level UART: settings, replies,
and corrupt or malformed frames, which get an error reply and change no training state."""

import numpy as np
import pytest

from specbp_hw.board_sim import SimulatedBoard
from specbp_hw.board_top import BoardTop, initial_weights
from specbp_hw.host import BoardLink
from specbp_hw.params import CoreParams
from specbp_hw.protocol import (REQUEST_SOF, Cmd, Status, crc16, decode_info, encode_reply,
                                encode_request, info_bytes)
from specbp_hw.pysim import run_pysim

from test_train import random_data

# A tiny board: 16 inputs (2 a cycle), 4 hidden (2 lanes), 4 classes; 4 clocks per UART bit.
PARAMS = CoreParams(layers=(16, 4, 4), lanes=2, inputs=2, lr=0.05)
INIT = initial_weights(PARAMS, seed=3)
DIVISOR = 4
TIMEOUT = 200


def make_board(**kwargs):
    return SimulatedBoard(BoardTop(PARAMS, DIVISOR, init=INIT, timeout=TIMEOUT, led_hold=4,
                                   **kwargs))


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
def test_platform_top_runs_from_the_pll(board, f_out, cell):
    # What `python -m specbp_hw.build` puts in a bitstream: the UART's divisor follows the
    # PLL's output, not the board's oscillator.
    from specbp_hw.board_top import PlatformTop
    from specbp_hw.boards import get_board
    from specbp_hw.synth_top import pll_config
    b = get_board(board)
    platform = b.platform_class()()
    pll = pll_config(b.device.family, platform.default_clk_frequency, f_out)
    top = PlatformTop(PARAMS, baud=115200, pll=pll)
    plan = platform.prepare(top, name="top")
    assert top.board.divisor == round(pll["f_out"] / 115200)
    assert f"cell \\{cell} " in plan.files["top.il"]
    assert "uart_0__rx" in plan.files["top.lpf" if b.device.family == "ecp5" else "top.pcf"]
