"""benchmarks/path_estimate.py: the delay estimate of a small hand-made ECP5 netlist."""

import importlib.util
import json
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "path_estimate", Path(__file__).parent.parent / "benchmarks" / "path_estimate.py")
pe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pe)


def _cell(kind, inputs, outputs):
    return {"type": kind,
            "port_directions": {**{p: "input" for p in inputs},
                                **{p: "output" for p in outputs}},
            "connections": {**inputs, **outputs}}


def _netlist(tmp_path, cells, netnames):
    path = tmp_path / "top.json"
    path.write_text(json.dumps({"modules": {"top": {
        "attributes": {"top": "00000000000000000000000000000001"},
        "cells": cells, "netnames": netnames}}}))
    return path


def _chain(tmp_path):
    # a (FF) -> LUT4 -> CCU2C -> CCU2C (through the dedicated carry) -> b (FF);
    # a -> c (FF) directly.
    cells = {
        "fa": _cell("TRELLIS_FF", {"CLK": [1], "DI": [9]}, {"Q": [2]}),
        "lut": _cell("LUT4", {"A": [2], "B": [2], "C": ["0"], "D": ["0"]}, {"Z": [3]}),
        "cc0": _cell("CCU2C", {"A0": [3], "B0": ["0"], "A1": ["0"], "B1": ["0"], "CIN": ["0"]},
                     {"S0": [10], "S1": [11], "COUT": [4]}),
        "cc1": _cell("CCU2C", {"A0": ["0"], "B0": ["0"], "A1": ["0"], "B1": ["0"], "CIN": [4]},
                     {"S0": [5], "S1": [12], "COUT": [13]}),
        "fb": _cell("TRELLIS_FF", {"CLK": [1], "DI": [5]}, {"Q": [6]}),
        "fc": _cell("TRELLIS_FF", {"CLK": [1], "DI": [2]}, {"Q": [7]}),
    }
    names = {"a": {"bits": [2]}, "b": {"bits": [6]}, "c": {"bits": [7]}, "clk": {"bits": [1]}}
    return _netlist(tmp_path, cells, names)


def test_arrival_is_the_sum_of_the_model_delays(tmp_path):
    est = pe.Estimate(*pe.load_module(_chain(tmp_path)), routing_ns=1.0)
    ends = est.endpoints()
    # clock to Q, route, LUT4, route, CCU2C data to COUT, dedicated carry, CIN to S0, route.
    t, routed, bit = ends["b"]
    assert t == pytest.approx(0.52 + 1 + 0.24 + 1 + 0.45 + 0 + 0.40 + 1)
    assert routed == 3
    assert est.label(est.start(bit)) == "a[0]"
    assert ends["c"][:2] == (pytest.approx(0.52 + 1), 1)


def test_routing_delay_scales_only_the_routed_nets(tmp_path):
    est = pe.Estimate(*pe.load_module(_chain(tmp_path)), routing_ns=2.5)
    assert est.endpoints()["b"][0] == pytest.approx(0.52 + 0.24 + 0.45 + 0.40 + 3 * 2.5)


def test_cli_ranks_and_counts(tmp_path, capsys):
    assert pe.main([str(_chain(tmp_path)), "--routing", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2].split()[:3] == ["1", f"{0.52 + 0.24 + 0.45 + 0.40 + 12:.2f}", "3"]
    assert "over 10 ns (100.0 MHz): 1 endpoint groups" in out
    assert pe.main([str(_chain(tmp_path)), "--top", "0", "--trace", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    path = [line.split()[1] for line in out[out.index("path of rank 1 (b), from its end:") + 1:]
            if not line.startswith("over")]
    assert path == ["CCU2C", "CCU2C", "LUT4", "TRELLIS_FF"]


def test_bad_netlists_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    ice = _netlist(tmp_path, {"l": _cell("SB_LUT4", {"I0": [2]}, {"O": [3]})}, {})
    for path, message in [(tmp_path / "missing.json", "cannot read"), (bad, "is not JSON"),
                          (ice, "no ECP5 cells")]:
        assert pe.main([str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1


def test_combinational_loop_is_an_error(tmp_path):
    cells = {"l1": _cell("LUT4", {"A": [3]}, {"Z": [2]}),
             "l2": _cell("LUT4", {"A": [2]}, {"Z": [3]}),
             "ff": _cell("TRELLIS_FF", {"CLK": [1], "DI": [3]}, {"Q": [4]})}
    with pytest.raises(pe.NetlistError, match="combinational loop"):
        pe.Estimate(*pe.load_module(_netlist(tmp_path, cells, {})))
