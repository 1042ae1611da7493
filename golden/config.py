"""Training configuration shared by the float and fixed-point golden models.

The defaults are the reference ("paper") configuration of ``shared/docs/ALGORITHM.md``, from
arXiv 2511.11640 and the authors' C/OpenMP code: MLP 784-16-16-10, leaky ReLU 0.01, softmax,
SGD with summed per-sample gradients clipped to [-5, 5] and learning rate 0.01, batch 15,
threshold 0.25, 10 epochs.
"""

from dataclasses import dataclass, replace

import numpy as np

__all__ = ["TrainConfig", "init_params"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run.

    Parameters
    ----------
    layers : tuple of int
        Layer sizes, input first, output last; any number of hidden layers.
    leak : float
        Leaky-ReLU slope for negative pre-activations (float model; the fixed-point model uses
        the power of two of its format).
    lr : float
        Learning rate.
    batch : int
        Samples per weight update. An epoch whose length is not a multiple of it ends with a
        shorter batch, applied at the end of the epoch.
    clip : float
        Accumulated gradients are clipped to ``[-clip, clip]`` before the update.
    threshold : float
        Speculation threshold on the mean absolute difference of the two softmax outputs;
        0 disables speculation (the serial baseline).
    epochs : int
        Passes over the training set, in file order.
    seed : int
        Seed of the weight initialisation.
    """

    layers: tuple = (784, 16, 16, 10)
    leak: float = 0.01
    lr: float = 0.01
    batch: int = 15
    clip: float = 5.0
    threshold: float = 0.25
    epochs: int = 10
    seed: int = 0

    def __post_init__(self):
        layers = tuple(self.layers)
        if len(layers) < 2 or not all(isinstance(n, (int, np.integer)) and n > 0
                                      for n in layers):
            raise ValueError(f"Layer sizes must be at least two positive integers, "
                             f"not {self.layers!r}")
        if layers[-1] < 2:
            raise ValueError(f"The output layer needs at least 2 classes, not {layers[-1]}")
        object.__setattr__(self, "layers", tuple(int(n) for n in layers))
        if not isinstance(self.batch, (int, np.integer)) or self.batch < 1:
            raise ValueError(f"Batch size must be a positive integer, not {self.batch!r}")
        if not isinstance(self.epochs, (int, np.integer)) or self.epochs < 1:
            raise ValueError(f"Epochs must be a positive integer, not {self.epochs!r}")
        if not self.threshold >= 0:
            raise ValueError(f"Threshold must be >= 0, not {self.threshold!r}")
        if not self.lr > 0:
            raise ValueError(f"Learning rate must be > 0, not {self.lr!r}")
        if not self.clip > 0:
            raise ValueError(f"Clip must be > 0, not {self.clip!r}")
        if not 0 <= self.leak < 1:
            raise ValueError(f"Leaky-ReLU slope must be in [0, 1), not {self.leak!r}")

    @property
    def speculative(self):
        """True when the run speculates (threshold above 0)."""
        return self.threshold > 0

    def replace(self, **changes):
        return replace(self, **changes)


def init_params(layers, seed):
    """The paper's initialisation, as integer hundredths.

    Every weight and bias is an integer drawn uniformly from -10..10, a zero replaced by 1; the
    value is that integer divided by 100. Returned as integers so that the float model
    (``k / 100``) and the fixed-point model (``k / 100`` rounded to its weight format) start from
    the same draw. Draw order: for each layer, the weight matrix (``n_in x n_out``, row-major)
    then the bias vector, from ``numpy.random.default_rng(seed)``.

    Returns
    -------
    list of (ndarray, ndarray)
        Per layer, ``(W, b)`` as int64 arrays of shapes ``(n_in, n_out)`` and ``(n_out,)``.
    """
    rng = np.random.default_rng(seed)
    params = []
    for n_in, n_out in zip(layers[:-1], layers[1:]):
        w = rng.integers(-10, 11, size=(n_in, n_out), dtype=np.int64)
        b = rng.integers(-10, 11, size=n_out, dtype=np.int64)
        w[w == 0] = 1
        b[b == 0] = 1
        params.append((w, b))
    return params
