"""Host program for a board running :class:`~specbp_hw.board_top.BoardTop`.

``python -m specbp_hw.host --port /dev/ttyUSB0`` streams the training set to the board in each
requested schedule, then the test set in inference mode, and prints per schedule the board's
counters: samples, accepted and rejected speculations, core cycles, cycles per sample, and test
accuracy from the board's predictions. Every schedule starts from the same state: the host resets
the board's core (RESET) and loads the initial weights of ``--seed`` (LOAD_WEIGHTS) first, as
the simulator (``python -m specbp_hw.sim``) starts each schedule from a fresh core. The protocol
is ``docs/HOST_LINK.md``.

The link runs over any transport with ``read(n) -> bytes`` (fewer bytes on timeout) and
``write(bytes)``: :class:`SerialTransport` (pyserial) for a board,
:class:`specbp_hw.board_sim.SimulatedBoard` for the gateware in simulation.
"""

import argparse
import sys
import time

import numpy as np

from .params import SCHEDULES
from .protocol import (COUNTER_BYTES, COUNTER_NAMES, REPLY_SOF, RESULT_BYTES, STATUS_NAMES,
                       Cmd, Status, crc16, decode_info, encode_request, load_data_bytes)

__all__ = ["LinkError", "BoardError", "SerialTransport", "BoardLink", "run_schedule",
           "threshold_register", "board_params", "read_params", "load_params", "initial_params",
           "start_fresh", "format_table", "main"]


class LinkError(Exception):
    """The link failed: no reply, a garbled reply, or an unusable board. One-line message."""


class BoardError(LinkError):
    """The board answered a request with an error status."""

    def __init__(self, cmd, status):
        self.cmd, self.status = cmd, status
        super().__init__(f"the board refused command 0x{cmd:02x}: "
                         f"{STATUS_NAMES.get(status, f'status {status}')}")


class SerialTransport:
    """A serial port through pyserial: ``read``/``write`` with a read timeout in seconds."""

    def __init__(self, port, baud=115200, timeout=1.0):
        try:
            import serial
        except ImportError:
            raise LinkError("pyserial is not installed; install it with "
                            "`pip install pyserial`") from None
        try:
            self._port = serial.Serial(port, baudrate=baud, timeout=timeout)
        except (serial.SerialException, ValueError, OSError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise LinkError(f"cannot open serial port {port!r}: {reason}") from None

    def read(self, n):
        return self._port.read(n)

    def write(self, data):
        self._port.write(data)
        self._port.flush()

    def close(self):
        self._port.close()


def _le(data):
    return int.from_bytes(bytes(data), "little")


class BoardLink:
    """Requests and replies over a transport; raises :class:`LinkError` / :class:`BoardError`.

    On construction asks the board for its configuration (``info``: a dict, see
    :func:`specbp_hw.protocol.decode_info`).

    A request that the board answers with ``bad crc``, ``bad length`` or ``timeout`` (the
    request was damaged or delayed on the way, its length field included; the board changed
    nothing) is sent again, up to ``retries`` times;
    ``retried`` counts these. A damaged *reply* is not retried: the board may have acted on
    the request (an upload trained), so it raises :class:`LinkError`.
    """

    RETRY = (Status.BAD_CRC, Status.BAD_LENGTH, Status.TIMEOUT)

    def __init__(self, transport, *, poll_limit=100_000, retries=3):
        self.transport = transport
        self._poll_limit = poll_limit
        self._retries = retries
        self.retried = 0
        self.info = decode_info(self.request(Cmd.INFO))
        self.block = self.info["lanes"] * self.info["inputs"]

    # -- frames -----------------------------------------------------------------------------

    def _read_exact(self, n, what):
        data = b""
        while len(data) < n:
            chunk = self.transport.read(n - len(data))
            if not chunk:
                raise LinkError(f"no reply from the board ({what}); check the port, the baud "
                                f"rate and that the board runs the specbp_hw bitstream")
            data += chunk
        return data

    def transact(self, cmd, payload=b""):
        """Send one request; return ``(status, payload)`` of the reply."""
        frame = encode_request(cmd, payload)
        for attempt in range(self._retries + 1):
            self.transport.write(frame)
            status, reply = self.read_reply(cmd)
            if status not in self.RETRY or attempt == self._retries:
                return status, reply
            self.retried += 1

    def read_reply(self, cmd):
        """Read one reply frame (to command ``cmd``); return ``(status, payload)``."""
        for _ in range(4096):       # skip line noise before the reply's start byte
            if self._read_exact(1, f"command 0x{cmd:02x}")[0] == REPLY_SOF:
                break
        else:
            raise LinkError("no reply frame start from the board in 4096 bytes")
        head = self._read_exact(4, "reply header")
        r_cmd, status, length = head[0], head[1], head[2] | head[3] << 8
        body = self._read_exact(length + 2, "reply payload")
        payload, crc = body[:-2], _le(body[-2:])
        if crc != crc16(head + payload):
            raise LinkError(f"corrupt reply to command 0x{cmd:02x} (CRC mismatch)")
        if r_cmd != cmd and status == Status.OK:
            raise LinkError(f"reply to command 0x{r_cmd:02x}, expected 0x{cmd:02x}")
        return status, payload

    def request(self, cmd, payload=b""):
        """Send one request and return the reply's payload; BoardError on an error status."""
        status, reply = self.transact(cmd, payload)
        if status != Status.OK:
            raise BoardError(cmd, status)
        return reply

    def _retry_busy(self, cmd, payload=b""):
        """A request that waits while the board is busy (a setting while samples are in
        flight, a weight read before the core is idle)."""
        for _ in range(self._poll_limit):
            status, reply = self.transact(cmd, payload)
            if status != Status.BUSY:
                if status != Status.OK:
                    raise BoardError(cmd, status)
                return reply
        raise LinkError(f"the board stayed busy for {self._poll_limit} polls")

    # -- commands ---------------------------------------------------------------------------

    def status(self):
        b = self.request(Cmd.STATUS)
        return {"idle": bool(b[0] & 1), "infer": bool(b[0] & 2), "error": bool(b[0] & 4),
                "schedule": b[1], "batch": b[2], "threshold": _le(b[3:7]),
                "results_waiting": b[7], "in_flight": b[8], "last_error": b[9],
                "bad_frames": _le(b[10:12]), "junk_bytes": _le(b[12:14]),
                "uart_errors": _le(b[14:16])}

    def set_schedule(self, name):
        if name not in SCHEDULES:
            raise ValueError(f"Unknown schedule {name!r}; choose from {', '.join(SCHEDULES)}")
        self._retry_busy(Cmd.SET_SCHEDULE, [SCHEDULES[name]])

    def set_threshold(self, value):
        self._retry_busy(Cmd.SET_THRESHOLD, int(value).to_bytes(4, "little"))

    def set_batch(self, value):
        self._retry_busy(Cmd.SET_BATCH, [int(value)])

    def set_infer(self, value):
        self._retry_busy(Cmd.SET_INFER, [int(bool(value))])

    def upload(self, pixels, label, last=False):
        """Send one sample. Returns the number of results waiting on the board, or None if the
        board's result buffer is full (read results, then upload again)."""
        payload = bytes([int(label), int(bool(last))]) + bytes(np.asarray(pixels, np.uint8))
        status, reply = self.transact(Cmd.UPLOAD, payload)
        if status == Status.BUSY:
            return None
        if status != Status.OK:
            raise BoardError(Cmd.UPLOAD, status)
        return reply[0]

    def results(self, limit=255):
        """Take up to ``limit`` results: a list of (label, prediction, kind, cycles)."""
        b = self.request(Cmd.RESULTS, [limit])
        out = []
        for i in range(b[0]):
            r = b[1 + RESULT_BYTES * i:1 + RESULT_BYTES * (i + 1)]
            out.append((r[0], r[1], r[2], _le(r[3:6])))
        return out

    def counters(self):
        b = self.request(Cmd.COUNTERS)
        return {name: _le(b[COUNTER_BYTES * i:COUNTER_BYTES * (i + 1)])
                for i, name in enumerate(COUNTER_NAMES)}

    def reset(self):
        """RESET: the core's registers to their power-on values (stash emptied, batch position
        0, counters 0); weights, settings and link statistics stay. Waits until the core is
        idle. The gradient accumulators are not cleared: they are zero whenever no batch is
        open (every run of :func:`run_schedule` closes its last batch)."""
        self._retry_busy(Cmd.RESET)

    def load_weights(self, addr, words):
        """LOAD_WEIGHTS: write weight memory words ``addr, addr + 1, ...`` (lists of signed
        elements, as :meth:`weights` returns them), as many per frame as fit; waits until the
        core is idle. ValueError (one line) for a word of the wrong size or out-of-range
        elements."""
        info = self.info
        width, nb, K = info["weight_width"], info["word_bytes"], info["inputs"]
        lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
        words = [list(w) for w in words]
        if addr < 0 or addr + len(words) > info["depth"]:
            raise ValueError(f"weight words {addr} .. {addr + len(words) - 1} are outside the "
                             f"board's {info['depth']}")
        raw = []
        for i, w in enumerate(words):
            if len(w) != self.block:
                raise ValueError(f"weight word {addr + i} has {len(w)} elements, the board's "
                                 f"words {self.block}")
            value = 0
            for e, v in enumerate(w):
                v = int(v)
                if not lo <= v <= hi:
                    raise ValueError(f"weight word {addr + i} element {e} is {v}, outside the "
                                     f"{width}-bit range {lo} .. {hi}")
                value |= (v & ((1 << width) - 1)) << (width * e)
            raw.append(value.to_bytes(nb, "little"))
        # Words per frame: the data (words, then zeros to a multiple of K bytes) fills at most
        # the board's sample buffer.
        per_frame = load_data_bytes(info["layers"][0], K, nb) // nb
        for start in range(0, len(raw), per_frame):
            data = b"".join(raw[start:start + per_frame])
            data += bytes(-len(data) % K)
            self._retry_busy(Cmd.LOAD_WEIGHTS, (addr + start).to_bytes(2, "little") + data)

    def weights(self, addr=0, count=None, *, chunk=16):
        """Weight memory words ``addr .. addr + count - 1`` (all if ``count`` is None) as lists
        of signed elements; waits until the core is idle."""
        info = self.info
        if count is None:
            count = info["depth"] - addr
        width, nb = info["weight_width"], info["word_bytes"]
        words = []
        for start in range(addr, addr + count, chunk):
            n = min(chunk, addr + count - start)
            b = self._retry_busy(Cmd.WEIGHTS, start.to_bytes(2, "little")
                                 + n.to_bytes(2, "little"))
            for w in range(n):
                value = _le(b[w * nb:(w + 1) * nb])
                elems = [(value >> (width * e)) & ((1 << width) - 1) for e in range(self.block)]
                words.append([v - (1 << width) if v >> (width - 1) else v for v in elems])
        return words


def board_params(info):
    """A CoreParams with the board's geometry (layers, lanes, inputs per cycle, max batch) and
    weight format, from INFO: enough to turn weight words into per-layer arrays and back
    (``unpack_params``, ``pack_params``) and for the initial weights (:func:`initial_params`).

    INFO does not carry the rest of the board's configuration (learning rate, clip, the other
    number formats, the softmax's parallelism): those are defaults here, not the board's.
    """
    from golden.fixed import FixedFormat, Q

    from .params import CoreParams
    try:
        fmt = FixedFormat(weight=Q(info["weight_width"], info["weight_frac"]),
                          max_batch=max(16, info["max_batch"]))
    except (TypeError, ValueError) as exc:
        raise LinkError(f"the board reports an unusable weight format: {exc}") from None
    try:
        return CoreParams(layers=info["layers"], lanes=info["lanes"], inputs=info["inputs"],
                          fmt=fmt, max_batch=info["max_batch"])
    except ValueError as exc:
        raise LinkError(f"the board reports an unusable configuration: {exc}") from None


def read_params(link):
    """The board's weights and biases: ``[(W, b), ...]`` int64 arrays in the fixed-point format
    (``info["weight_frac"]`` fraction bits), read while the core is idle."""
    return board_params(link.info).unpack_params(link.weights())


def load_params(link, params):
    """Write weights and biases ``[(W, b), ...]`` (integers in the board's weight format, as
    :func:`read_params` returns them) into the board's weight memory: the inverse of
    :func:`read_params`."""
    link.load_weights(0, board_params(link.info).pack_params(params))


def initial_params(info, seed=0):
    """The golden model's initial weights for the board of ``info`` with ``seed``: those of
    ``python -m specbp_hw.sim --seed`` (and, for seed 0, of a freshly configured bitstream).

    They depend only on the layer sizes, the seed and the weight format (width and fraction
    bits), all of which INFO reports, so they are exact although INFO does not describe the
    board's whole configuration (see :func:`board_params`).
    """
    from .board_top import initial_weights
    return initial_weights(board_params(info), seed)


def start_fresh(link, params):
    """Put the board in the state of a fresh core with weights ``params``: RESET (stash empty,
    batch position and counters 0), then LOAD_WEIGHTS. Settings are not changed."""
    link.reset()
    load_params(link, params)


def threshold_register(threshold, info):
    """The board's threshold register for a threshold on mean ``|y_stash - y|`` (as
    ``golden``): ``round(threshold * classes * 2**prob_frac)``."""
    classes = info["layers"][-1]
    value = round(threshold * classes * (1 << info["prob_frac"]))
    limit = (1 << info["threshold_width"]) - 1
    if threshold < 0 or value > limit:
        top = limit / classes / (1 << info["prob_frac"])
        raise ValueError(f"threshold must be between 0 and {top:g}, not {threshold!r}")
    return value


def _stream(link, images, labels, *, close):
    """Upload every sample (the last marked ``last`` if ``close``) and collect its result."""
    n = len(labels)
    results = []
    half = max(1, link.info["result_depth"] // 2)
    for i in range(n):
        while True:
            waiting = link.upload(images[i], labels[i], last=close and i == n - 1)
            if waiting is not None:
                break
            results += link.results()
        if waiting >= half:
            results += link.results()
    for _ in range(link._poll_limit):
        if len(results) >= n:
            break
        results += link.results()
    else:
        raise LinkError(f"the board returned {len(results)} of {n} results")
    return results


def run_schedule(link, images, labels, *, schedule, threshold=0, batch=15, test_images=None,
                 test_labels=None, init=None):
    """Train on ``images``/``labels`` (one epoch, closed) with ``schedule``; then, if given,
    run the test set in inference mode. ``threshold`` is the register value. With ``init``
    (``[(W, b), ...]``) the board starts fresh from those weights (:func:`start_fresh`);
    without, it continues from its state.

    Returns a dict: ``results`` (training: label, prediction, kind, cycles per sample),
    ``counters`` (deltas over the training run), ``predictions`` (test set) and ``accuracy``.
    """
    if init is not None:
        start_fresh(link, init)
    link.set_infer(False)
    link.set_schedule(schedule)
    link.set_threshold(threshold)
    link.set_batch(batch)
    before = link.counters()
    results = _stream(link, images, labels, close=True)
    link.weights(0, 1)          # waits until the core is idle: the closing update is done
    after = link.counters()
    out = {"schedule": schedule, "results": results,
           "counters": {k: after[k] - before[k] for k in after}}
    if test_images is not None and len(test_labels):
        link.set_infer(True)
        preds = np.array([r[1] for r in _stream(link, test_images, test_labels, close=False)])
        link.set_infer(False)
        out["predictions"] = preds
        out["accuracy"] = float((preds == np.asarray(test_labels)).mean())
    return out


def core_cycles(counters):
    """Cycles the core worked: every step (from a sample's start to its result) plus the
    separate batch-update sweeps. Time the core spent waiting for the link is not counted."""
    return counters["step_cycles"] + counters["update_cycles"]


def format_table(runs):
    head = (f"{'schedule':<12} {'samples':>8} {'accepted':>9} {'rejected':>9} "
            f"{'core cycles':>12} {'cycles/sample':>14} {'test acc':>9}")
    lines = [head, "-" * len(head)]
    for r in runs:
        c = r["counters"]
        n = c["samples"]
        acc = f"{100 * r['accuracy']:.2f}%" if "accuracy" in r else "-"
        cps = f"{core_cycles(c) / n:.1f}" if n else "-"
        lines.append(f"{r['schedule']:<12} {n:>8} {c['accepted']:>9} {c['rejected']:>9} "
                     f"{core_cycles(c):>12} {cps:>14} {acc:>9}")
    return "\n".join(lines)


def _build_parser():
    p = argparse.ArgumentParser(
        prog="python -m specbp_hw.host",
        description="Train on a board running the specbp_hw bitstream over its serial link and "
                    "report, per schedule, the board's counters and test accuracy.")
    p.add_argument("--port", required=True, help="serial port of the board (e.g. /dev/ttyUSB0)")
    p.add_argument("--baud", type=int, default=115200, help="baud rate: the bitstream's "
                   "(python -m specbp_hw.build --baud; default 115200)")
    p.add_argument("--timeout", type=float, default=2.0,
                   help="seconds to wait for a reply (default 2)")
    p.add_argument("--data", default=None, help="MNIST directory (default: see specbp_hw.data)")
    p.add_argument("--schedules", default="speculative",
                   help="comma-separated schedules to run in turn: serial, speculative, "
                        "pipelined (default speculative)")
    p.add_argument("--threshold", type=float, default=0.25,
                   help="speculation threshold on mean |y_stash - y| (default 0.25)")
    p.add_argument("--batch", type=int, default=15, help="batch size (default 15)")
    p.add_argument("--train", type=int, default=None, help="training samples (default all)")
    p.add_argument("--test", type=int, default=None, help="test samples (default all)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per schedule (default 1)")
    p.add_argument("--seed", type=int, default=0,
                   help="weight initialisation seed: every schedule starts from these initial "
                        "weights, as in python -m specbp_hw.sim (default 0)")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="after the run, read the weights back and save them to FILE (.npz: "
                        "W0, b0, W1, b1, ... as integers, and weight_frac)")
    return p


def main(argv=None, transport=None):
    """Command line entry; ``transport`` replaces the serial port (tests)."""
    args = _build_parser().parse_args(argv)
    try:
        schedules = [s.strip() for s in args.schedules.split(",") if s.strip()]
        for s in schedules:
            if s not in SCHEDULES:
                raise ValueError(f"Unknown schedule {s!r}; choose from {', '.join(SCHEDULES)}")
        if not schedules:
            raise ValueError("--schedules names no schedule")
        if args.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, not {args.epochs}")
        if args.seed < 0:
            raise ValueError(f"--seed must be a non-negative integer, not {args.seed}")
        from .data import DataError, resolve
        try:
            ds = resolve(args.data).subset(args.train, args.test)
        except DataError as exc:
            raise ValueError(str(exc)) from None
        if transport is None:
            transport = SerialTransport(args.port, args.baud, args.timeout)
        link = BoardLink(transport)
        info = link.info
        if not 1 <= args.batch <= info["max_batch"]:
            raise ValueError(f"--batch must be from 1 to the board's {info['max_batch']}, "
                             f"not {args.batch}")
        thr = threshold_register(args.threshold, info)
        try:
            ds = ds.for_inputs(info["layers"][0])  # pooled for a smaller input layer
        except DataError as exc:
            raise ValueError(f"the board's network: {exc}") from None
        classes = info["layers"][-1]
        top = int(max(ds.train_labels.max(initial=0), ds.test_labels.max(initial=0)))
        if top >= classes:
            raise ValueError(f"the data has label {top} but the board's network only "
                             f"{classes} classes")
        print(f"data: {ds.source}")
        init = initial_params(info, args.seed)
        print(f"board: {'-'.join(map(str, info['layers']))}, {info['inputs']} x "
              f"{info['lanes']} MACs, batch {args.batch}, threshold {args.threshold} "
              f"(register {thr}), each schedule from the initial weights of seed {args.seed}")
        runs = []
        for s in schedules:
            for e in range(args.epochs):
                t0 = time.monotonic()
                last = e == args.epochs - 1
                r = run_schedule(link, ds.train_images, ds.train_labels, schedule=s,
                                 threshold=thr, batch=args.batch,
                                 test_images=ds.test_images if last else None,
                                 test_labels=ds.test_labels if last else None,
                                 init=init if e == 0 else None)
                if runs and runs[-1]["schedule"] == s:
                    prev = runs.pop()
                    r["counters"] = {k: prev["counters"][k] + v
                                     for k, v in r["counters"].items()}
                runs.append(r)
                print(f"{s}: epoch {e + 1}/{args.epochs} in {time.monotonic() - t0:.1f} s",
                      flush=True)
        print(format_table(runs))
        if args.weights:
            arrays = {"weight_frac": np.array(info["weight_frac"])}
            for l, (w, b) in enumerate(read_params(link)):
                arrays[f"W{l}"], arrays[f"b{l}"] = w, b
            try:
                np.savez(args.weights, **arrays)
            except OSError as exc:
                raise ValueError(f"cannot write {args.weights}: {exc.strerror or exc}") from None
            print(f"weights: {args.weights}")
    except (LinkError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    from .cli import run
    run(main)
