"""The host link's frame format, shared by the board's gateware and the host program.

Specified in ``docs/HOST_LINK.md``. A request is ``A5 cmd len_lo len_hi payload crc_lo crc_hi``,
a reply ``5A cmd status len_lo len_hi payload crc_lo crc_hi``; the CRC is CRC-16/CCITT-FALSE
(polynomial 0x1021, initial value 0xFFFF, no reflection, no final XOR) over every byte between
the start byte and the CRC.
"""

__all__ = [
    "REQUEST_SOF", "REPLY_SOF", "Cmd", "Status", "STATUS_NAMES", "COUNTER_NAMES",
    "RESULT_BYTES", "COUNTER_BYTES", "STATUS_BYTES", "PROTOCOL_VERSION", "crc16",
    "encode_request", "encode_reply", "info_bytes", "decode_info", "max_request_payload",
    "load_data_bytes", "weight_word_bytes",
]

REQUEST_SOF = 0xA5
REPLY_SOF = 0x5A
PROTOCOL_VERSION = 2


class Cmd:
    INFO = 0x01
    STATUS = 0x02
    SET_SCHEDULE = 0x10
    SET_THRESHOLD = 0x11
    SET_BATCH = 0x12
    SET_INFER = 0x13
    RESET = 0x14
    UPLOAD = 0x20
    RESULTS = 0x21
    COUNTERS = 0x30
    WEIGHTS = 0x31
    LOAD_WEIGHTS = 0x32


class Status:
    OK = 0
    BAD_CRC = 1
    BAD_LENGTH = 2
    UNKNOWN_COMMAND = 3
    TIMEOUT = 4
    BAD_VALUE = 5
    BUSY = 6


STATUS_NAMES = {v: k.lower().replace("_", " ") for k, v in vars(Status).items()
                if not k.startswith("_")}

# The counters in the order of the COUNTERS reply, 6 bytes (48 bits) each, little-endian.
# ``step_cycles`` is the board's sum of the per-sample ``cycles`` of every result.
COUNTER_NAMES = ("cycles", "samples", "accepted", "rejected", "fwd_busy", "bwd_busy",
                 "update_cycles", "step_cycles")
COUNTER_BYTES = 6
RESULT_BYTES = 6     # label, prediction, kind, cycles (3 bytes, little-endian)
STATUS_BYTES = 16


def weight_word_bytes(params):
    """Bytes of one weight-memory word on the link (WEIGHTS, LOAD_WEIGHTS; ``params`` a
    CoreParams)."""
    return -(-params.weight_word.size // 8)


def max_request_payload(n_inputs, inputs_per_cycle, word_bytes):
    """The longest request payload a board accepts (longer ones get ``bad length``).

    An UPLOAD's ``2 + n_inputs`` bytes (label, flags, pixels); if one weight word, padded to a
    multiple of ``inputs_per_cycle`` (K) bytes, does not fit in ``n_inputs`` bytes, a
    LOAD_WEIGHTS frame of one word (``2 + ceil(word_bytes / K) * K`` bytes) instead. At least
    4 (a WEIGHTS request). Its data (after the 2-byte address) fills the board's sample buffer.
    """
    return max(2 + load_data_bytes(n_inputs, inputs_per_cycle, word_bytes), 4)


def load_data_bytes(n_inputs, inputs_per_cycle, word_bytes):
    """The board's sample buffer in bytes: the longest data of a LOAD_WEIGHTS frame."""
    K = inputs_per_cycle
    return max(n_inputs, -(-word_bytes // K) * K)


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE of ``data`` (bytes), continuing from ``crc``."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021 if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def encode_request(cmd, payload=b""):
    payload = bytes(payload)
    body = bytes([cmd, len(payload) & 0xFF, len(payload) >> 8]) + payload
    return bytes([REQUEST_SOF]) + body + crc16(body).to_bytes(2, "little")


def encode_reply(cmd, status, payload=b""):
    payload = bytes(payload)
    body = bytes([cmd, status, len(payload) & 0xFF, len(payload) >> 8]) + payload
    return bytes([REPLY_SOF]) + body + crc16(body).to_bytes(2, "little")


def info_bytes(params, result_depth):
    """The INFO reply's payload for a board with ``params`` (a CoreParams)."""
    fmt = params.fmt
    out = [PROTOCOL_VERSION, len(params.layers)]
    for n in params.layers:
        out += [n & 0xFF, n >> 8]
    depth = params.depth
    word_bytes = weight_word_bytes(params)
    out += [params.lanes, params.inputs, fmt.weight.width, fmt.weight.frac, fmt.prob_frac,
            params.max_batch, params.threshold_width, depth & 0xFF, depth >> 8,
            word_bytes & 0xFF, word_bytes >> 8, result_depth]
    return bytes(out)


def decode_info(payload):
    """Inverse of :func:`info_bytes`: a dict; ValueError if the payload is malformed."""
    b = bytes(payload)
    if len(b) < 2 or b[0] != PROTOCOL_VERSION:
        raise ValueError(f"the board speaks protocol version {b[0] if b else '?'}, this host "
                         f"version {PROTOCOL_VERSION}")
    n = b[1]
    if len(b) != 2 + 2 * n + 12:
        raise ValueError(f"INFO reply of {len(b)} bytes, expected {2 + 2 * n + 12}")
    layers = tuple(b[2 + 2 * i] | b[3 + 2 * i] << 8 for i in range(n))
    r = b[2 + 2 * n:]
    return {"layers": layers, "lanes": r[0], "inputs": r[1], "weight_width": r[2],
            "weight_frac": r[3], "prob_frac": r[4], "max_batch": r[5],
            "threshold_width": r[6], "depth": r[7] | r[8] << 8,
            "word_bytes": r[9] | r[10] << 8, "result_depth": r[11]}
