"""Boards and FPGA parts known to the build flow.

Each board is one TOML file in the repository's ``boards/`` directory (the file name, without
``.toml``, is the board's name)::

    description = "Radiona ULX3S, ECP5 LFE5U-85F, 25 MHz oscillator"
    platform = "amaranth_boards.ulx3s:ULX3S_85F_Platform"   # module:class
    device = "LFE5U-85F"                                     # a key of DEVICES
    clock_mhz = 100                                          # target of the core's clock
    preset = "paper-x2"                                      # a specbp_hw.presets name
    led = ["led", 0]                                         # resource, number[, subsignal]
    placer = "static"                                        # optional: nextpnr's placer

``placer`` is optional: ``heap`` (the default, nextpnr's own) or ``static``, whichever gave the
board's builds the better clocks (docs/BUILD.md, nextpnr's placers).

The parts' resources (:data:`DEVICES`) are from the vendors' data sheets (Lattice FPGA-DS-02012
ECP5 family, FPGA-DS-02008 iCE40 UltraPlus) and match what nextpnr reports as available.
"""

import importlib
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .presets import PRESETS

PLACERS = ("heap", "static")     # nextpnr's placers that a board may choose

__all__ = ["BOARDS_DIR", "DEVICES", "PLACERS", "Device", "Board", "load_boards", "get_board"]

BOARDS_DIR = Path(__file__).resolve().parent.parent / "boards"


@dataclass(frozen=True)
class Device:
    """Resources of one FPGA part.

    Parameters
    ----------
    name : str
    family : str
        ``"ecp5"`` or ``"ice40"``.
    luts : int
        4-input LUTs (iCE40: logic cells, each a LUT and a flip-flop).
    ffs : int
        Flip-flops.
    bram : int
        Block RAMs: ECP5 DP16KD (18 Kbit, true dual port), iCE40 EBR (4 Kbit, one read and one
        write port).
    dsps : int
        Multipliers: ECP5 MULT18X18D (18 x 18), iCE40 SB_MAC16 (16 x 16).
    spram : int
        iCE40UP single-port RAMs (256 Kbit, 16K x 16); 0 on other parts.
    """

    name: str
    family: str
    luts: int
    ffs: int
    bram: int
    dsps: int
    spram: int = 0

    @property
    def bram_bits(self):
        return self.bram * (18432 if self.family == "ecp5" else 4096)

    @property
    def dsp_width(self):
        """Widest signed operand one DSP multiplies."""
        return 18 if self.family == "ecp5" else 16


DEVICES = {d.name: d for d in [
    Device("LFE5U-85F", "ecp5", luts=83640, ffs=83640, bram=208, dsps=156),
    Device("LFE5U-45F", "ecp5", luts=43848, ffs=43848, bram=108, dsps=72),
    Device("LFE5U-25F", "ecp5", luts=24288, ffs=24288, bram=56, dsps=28),
    Device("iCE40UP5K", "ice40", luts=5280, ffs=5280, bram=30, dsps=8, spram=4),
]}


@dataclass(frozen=True)
class Board:
    """One board: its amaranth-boards platform, part, target clock, preset and placer."""

    name: str
    description: str
    platform: str
    device: Device
    clock_mhz: float
    preset: str
    led: tuple
    placer: str = "heap"

    def platform_class(self):
        """Import and return the amaranth-boards platform class."""
        module, _, cls = self.platform.partition(":")
        return getattr(importlib.import_module(module), cls)


def _load(path):
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{path}: cannot read board file: {e}") from None
    keys = {"description", "platform", "device", "clock_mhz", "preset", "led"}
    if missing := keys - d.keys():
        raise ValueError(f"{path}: missing {', '.join(sorted(missing))}")
    if unknown := d.keys() - keys - {"placer"}:
        raise ValueError(f"{path}: unknown keys {', '.join(sorted(unknown))}")
    if d["device"] not in DEVICES:
        raise ValueError(f"{path}: unknown device {d['device']!r}; known: "
                         f"{', '.join(DEVICES)}")
    if d["preset"] not in PRESETS:
        raise ValueError(f"{path}: unknown preset {d['preset']!r}")
    if d.get("placer", "heap") not in PLACERS:
        raise ValueError(f"{path}: unknown placer {d['placer']!r}; known: {', '.join(PLACERS)}")
    if ":" not in d["platform"]:
        raise ValueError(f"{path}: platform must be 'module:Class', not {d['platform']!r}")
    return Board(name=path.stem, description=d["description"], platform=d["platform"],
                 device=DEVICES[d["device"]], clock_mhz=float(d["clock_mhz"]),
                 preset=d["preset"], led=tuple(d["led"]), placer=d.get("placer", "heap"))


def load_boards(directory=BOARDS_DIR):
    """All boards of ``directory``, by name (sorted)."""
    return {b.name: b for b in (_load(p) for p in sorted(Path(directory).glob("*.toml")))}


def get_board(name, directory=BOARDS_DIR):
    """The board ``name``; ValueError (one line, listing the known boards) if unknown."""
    boards = load_boards(directory)
    if name not in boards:
        raise ValueError(f"Unknown board {name!r}; known boards: {', '.join(boards)}")
    return boards[name]
