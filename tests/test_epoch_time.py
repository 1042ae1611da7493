"""benchmarks/epoch_time.py: a simulated epoch's cycles at a build report's Fmax."""

import json
import re
import sys
from pathlib import Path

import pytest

from specbp_hw.cxxrtl import compiler_available

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import epoch_time  # noqa: E402


def test_bad_report_is_one_line(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text('{"board": "b"}')
    assert epoch_time.main([str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a build report" in err


@pytest.mark.skipif(not compiler_available(), reason="needs a C++ compiler")
def test_epoch_seconds_are_the_simulated_cycles_at_fmax(tmp_path, capsys):
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"board": "b", "device": "d", "preset": "paper",
                                "fmax_mhz": 50.0}))
    assert epoch_time.main([str(path), "--train", "30", "--no-check"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()
            if re.match(r"(serial|speculative|pipelined) ", line)}
    assert set(rows) == {"serial", "speculative", "pipelined"}
    for name, row in rows.items():
        cycles = int(row[1].replace(",", ""))
        assert float(row[2]) == pytest.approx(cycles / 30, abs=0.05)
        assert float(row[3]) == pytest.approx(cycles / 50e6, abs=1e-4)
    # Speculation and pipelining overlap the passes: fewer cycles than serial.
    serial = int(rows["serial"][1].replace(",", ""))
    assert int(rows["pipelined"][1].replace(",", "")) < serial
