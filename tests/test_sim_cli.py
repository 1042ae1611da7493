"""``python -m specbp_hw.sim``: options, report, JSON and bad input (Amaranth simulator).

The runs here use a wide configuration (4 inputs x 16 lanes, one hidden layer) so that
Amaranth's simulator gets through a few samples per second; the compiled backend and the paper
configuration are in ``test_sim_cxxrtl.py``.
"""

import json
import subprocess
import sys

import pytest

FAST = ["--backend", "pysim", "--layers", "784,16,10", "--inputs", "4", "--no-progress"]


def run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "specbp_hw.sim", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_help_explains_options():
    r = run("--help")
    assert r.returncode == 0
    for option in ("--data", "--epochs", "--train", "--test", "--schedule", "--threshold",
                   "--batch", "--preset", "--precision", "--lanes", "--inputs", "--backend",
                   "--seed", "--vcd", "--json", "--plot", "--check", "--sweep-threshold"):
        assert option in r.stdout
    assert "paper-x4" in r.stdout and "q14" in r.stdout


def test_all_schedules_json_and_plot(tmp_path):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    r = run(*FAST, "--train", "8", "--test", "30", "--batch", "3", "--threshold", "0.2",
            "--json", str(out), "--plot", str(png))
    assert r.returncode == 0, r.stderr
    assert "check: bit-exact comparison" in r.stdout and "final weights" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["backend"] == "pysim" and doc["sim_cycles_per_second"] > 0
    assert set(doc["schedules"]) == {"serial", "speculative", "pipelined"}
    for name, s in doc["schedules"].items():
        for key in ("cycles", "samples", "accepted", "rejected", "test_accuracy",
                    "float_test_accuracy", "bit_exact"):
            assert key in s, (name, key)
        assert s["bit_exact"] is True, s["mismatch"]
        assert s["samples"] == 8
        assert 0 <= s["test_accuracy"] <= 1 and 0 <= s["float_test_accuracy"] <= 1
        assert s["cycles"] > 0 and s["speedup"] > 0
    spec = doc["schedules"]["speculative"]
    # 8 samples of the built-in data: labels repeat within 8, so some steps speculate.
    assert spec["accepted"] + spec["rejected"] > 0
    assert doc["schedules"]["serial"]["speedup"] == 1
    assert doc["schedules"]["speculative"]["cycles"] < doc["schedules"]["serial"]["cycles"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The table: one row per schedule, stating exactness.
    rows = [l for l in r.stdout.splitlines() if l.split()[:1] in (["serial"], ["speculative"],
                                                                    ["pipelined"])]
    assert len(rows) == 6 and all("yes" in l for l in rows[:3])


def test_single_schedule_no_check_vcd_and_epochs(tmp_path):
    out, vcd = tmp_path / "r.json", tmp_path / "w.vcd"
    r = run(*FAST, "--train", "4", "--test", "10", "--batch", "2", "--schedule", "serial",
            "--epochs", "2", "--no-check", "--seed", "3", "--vcd", str(vcd), "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "check: off" in r.stdout
    doc = json.loads(out.read_text())
    s = doc["schedules"]["serial"]
    assert s["bit_exact"] is None and s["samples"] == 8
    assert doc["seed"] == 3 and doc["epochs"] == 2
    assert [e["epoch"] for e in s["epochs"]] == [1, 2]
    assert s["epochs"][1]["test_accuracy"] == s["test_accuracy"]
    assert vcd.read_text().startswith("$") and "#" in vcd.read_text()


def test_small_input_layer_trains_on_pooled_images(tmp_path):
    # 16 inputs: the images average-pooled to 4x4 (7x7 blocks), as pool7's 49 are to 7x7.
    out = tmp_path / "r.json"
    r = run("--backend", "pysim", "--layers", "16,8,10", "--inputs", "4", "--lanes", "8",
            "--no-progress", "--train", "6", "--test", "10", "--batch", "3", "--schedule",
            "serial", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "; 7x7-average-pooled to 4x4" in r.stdout.splitlines()[0]
    assert "core: 16-8-10" in r.stdout
    doc = json.loads(out.read_text())
    assert doc["data"].endswith("7x7-average-pooled to 4x4")
    assert doc["schedules"]["serial"]["bit_exact"] is True


def test_sweep_threshold(tmp_path):
    out = tmp_path / "r.json"
    # Ten samples: labels repeat in the first ten of both the built-in data and full MNIST.
    r = run(*FAST, "--train", "10", "--test", "10", "--batch", "3", "--sweep-threshold",
            "0,1", "--json", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    sweep = doc["sweep"]
    assert [s["threshold"] for s in sweep] == [0, 1]
    # Threshold 1 accepts every attempted speculation; 0 never speculates (serial cycles).
    assert sweep[1]["rejected"] == 0 and sweep[1]["accepted"] > 0
    assert sweep[0]["accepted"] == sweep[0]["rejected"] == 0
    assert sweep[0]["cycles"] == doc["schedules"]["serial"]["cycles"]
    assert all(s["bit_exact"] for s in sweep)


@pytest.mark.parametrize("args, message", [
    (["--schedule", "eager"], "invalid choice: 'eager'"),
    (["--preset", "huge"], "error: Unknown preset 'huge'; known presets: paper"),
    (["--precision", "q3"], "error: Unknown precision 'q3'"),
    (["--threshold", "1.5"], "error: --threshold must be between 0 and 1"),
    (["--threshold", "-0.1"], "error: --threshold must be between 0 and 1"),
    (["--sweep-threshold", "0,x"], "expected comma-separated numbers"),
    (["--train", "999999"], "asked for 999999 train items"),
    (["--batch", "40"], "error: --batch must be 1..16"),
    (["--epochs", "0"], "error: --epochs must be at least 1"),
    (["--layers", "784,x,10"], "error: layers must be comma-separated integers"),
    (["--layers", "100,16,10"], "error: the network takes 100 inputs but the images have 784 "
                                "pixels; use a network with one of 1, 4, 16, 49, 196, 784"),
    (["--layers", "784,16,8"], "error: the data has label 9 but the network only 8 classes"),
    (["--lanes", "5"], "error: lanes (5) must divide every hidden layer's size"),
    (["--vcd-window", "5"], "expected FIRST:COUNT"),
])
def test_bad_input_is_one_line(args, message):
    r = run("--backend", "pysim", *args)
    assert r.returncode != 0
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert message in lines[-1]
    assert "Traceback" not in r.stderr


def test_data_dir_without_mnist(tmp_path):
    r = run("--backend", "pysim", "--data", str(tmp_path))
    assert r.returncode == 2
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_pysim_refuses_runs_too_long_without_compiler(tmp_path):
    # No compiler: the compiled backend falls back to pysim only for short runs.
    env_run = subprocess.run(
        [sys.executable, "-m", "specbp_hw.sim", "--no-progress"], capture_output=True,
        text=True, timeout=300, env={"PATH": "/nonexistent", "CXX": "no-such-compiler",
                                     "HOME": str(tmp_path)})
    assert env_run.returncode == 2
    assert "would take about" in env_run.stderr and "minutes" in env_run.stderr
    assert "Traceback" not in env_run.stderr


def test_falls_back_to_pysim_without_compiler(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "specbp_hw.sim", *FAST[2:], "--train", "4", "--test", "10",
         "--batch", "2", "--schedule", "serial"], capture_output=True, text=True, timeout=300,
        env={"PATH": "/nonexistent", "CXX": "no-such-compiler", "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr
    assert "warning: compiled simulation unavailable (no C++ compiler found" in r.stderr
    assert "falling back to pysim" in r.stderr
    assert "backend pysim" in r.stdout and "yes" in r.stdout
