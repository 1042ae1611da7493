"""Named hardware configurations: network, precision and parallelism of one training core.

A preset is a set of :class:`~specbp_hw.params.CoreParams` arguments. The simulator and the
build flow both start from a preset and apply overrides on top (:func:`core_params`).
"""

from golden.fixed import FixedFormat, Q

from .params import CoreParams

__all__ = ["PRESETS", "PRECISIONS", "Preset", "core_params", "parse_layers"]


class Preset:
    """A named configuration: ``kwargs`` for :class:`CoreParams` and a one-line description."""

    def __init__(self, name, description, **kwargs):
        self.name = name
        self.description = description
        self.kwargs = kwargs

    def __repr__(self):
        return f"Preset({self.name!r})"


# Precision presets: the fixed-point formats of the datapath (see docs/FIXED_POINT.md). The
# others change the weight format, as in benchmarks/precision_study.py.
PRECISIONS = {
    "q16": FixedFormat(max_batch=16),
    "q14": FixedFormat(weight=Q(14, 11), max_batch=16),
    "q18": FixedFormat(weight=Q(18, 15), max_batch=16),
    # Activations, deltas and probabilities at 9 bits, weights at 14 and the update gradient at
    # 10 (FixedFormat.uniform): what the iCE40 takes with the host link (README, precision
    # study on pooled MNIST).
    "q9w14": FixedFormat.uniform(9, weight=Q(14, 11), update=Q(10, 6), max_batch=16),
}

_PRESET_LIST = [
    Preset("paper", "784-16-16-10 (the paper's network), 16-bit, 16 MACs per engine "
           "(1 input x 16 lanes)"),
    Preset("paper-x4", "784-16-16-10, 16-bit, 64 MACs per engine (4 inputs x 16 lanes), "
           "parallel softmax", inputs=4, softmax_ways=10, softmax_div_bits=2),
    Preset("paper-x2", "784-16-16-10, 16-bit, 32 MACs per engine (2 inputs x 16 lanes), "
           "parallel softmax", inputs=2, softmax_ways=10, softmax_div_bits=2),
    # The board presets below have the register stages for a faster clock (fmax_stages).
    Preset("paper-x2-skip", "paper-x2 skipping the first layer's all-zero input words "
           "(skip_zeros: the same results, cycles per sample from its nonzero words), with "
           "the register stages for a faster clock (fmax_stages)",
           inputs=2, softmax_ways=10, softmax_div_bits=2, skip_zeros=True, fmax_stages=True),
    Preset("paper-skip", "paper skipping the first layer's all-zero input words, with the "
           "register stages (skip_zeros, fmax_stages)",
           skip_zeros=True, fmax_stages=True),
    Preset("paper-n4", "784-16-16-10, 16-bit, 4 MACs per engine (1 input x 4 lanes)",
           lanes=4),
    Preset("small", "784-16-10 (one hidden layer), 16-bit, 16 MACs per engine",
           layers=(784, 16, 10)),
    # Build presets for smaller parts (docs/BUILD.md: what fits which part, measured).
    Preset("h8-n8", "784-8-8-10 (hidden layers of 8), 16-bit, 8 MACs per engine "
           "(1 input x 8 lanes): fits an ECP5 25F", layers=(784, 8, 8, 10), lanes=8),
    Preset("h8-n8-skip", "h8-n8 skipping the first layer's all-zero input words, with the "
           "register stages (skip_zeros, fmax_stages)", layers=(784, 8, 8, 10), lanes=8,
           skip_zeros=True, fmax_stages=True),
    Preset("pool7", "49-8-10 (MNIST 4x4-average-pooled to 7x7, Dataset.pooled), 16-bit, "
           "1 MAC per engine: fits an iCE40UP5K alone (not with the host link)",
           layers=(49, 8, 10), lanes=1),
    Preset("pool7-q9", "pool7 with 9-bit activations, deltas and probabilities and 14-bit "
           "weights (precision q9w14): fits an iCE40UP5K with the host link",
           layers=(49, 8, 10), lanes=1, fmt=PRECISIONS["q9w14"]),
]
PRESETS = {p.name: p for p in _PRESET_LIST}


def parse_layers(text):
    """``"784,16,16,10"`` -> ``(784, 16, 16, 10)``; ValueError with a one-line message."""
    try:
        layers = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"layers must be comma-separated integers like 784,16,16,10, "
                         f"not {text!r}") from None
    return layers


def core_params(preset="paper", *, precision=None, **overrides):
    """:class:`CoreParams` of ``preset`` with ``precision`` (a PRECISIONS name) and overrides.

    Overrides whose value is None are ignored. Raises ValueError (one line) for an unknown
    preset or precision, or a configuration the core cannot build.
    """
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; known presets: {', '.join(PRESETS)}")
    kwargs = dict(PRESETS[preset].kwargs)
    if precision is not None:
        if precision not in PRECISIONS:
            raise ValueError(f"Unknown precision {precision!r}; known precisions: "
                             f"{', '.join(PRECISIONS)}")
        kwargs["fmt"] = PRECISIONS[precision]
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    if "max_batch" in kwargs and "fmt" not in kwargs:
        kwargs["fmt"] = FixedFormat(max_batch=kwargs["max_batch"])
    elif "max_batch" in kwargs:
        kwargs["fmt"] = kwargs["fmt"].replace(max_batch=max(kwargs["fmt"].max_batch,
                                                            kwargs["max_batch"]))
    return CoreParams(**kwargs)
