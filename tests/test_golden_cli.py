"""``python -m golden``: output, JSON and bad input."""

import json
import subprocess
import sys

import pytest


def run(*args, env=None):
    return subprocess.run([sys.executable, "-m", "golden", *args], capture_output=True,
                          text=True, timeout=300, env=env)


@pytest.mark.parametrize("arith", ["float", "fixed"])
def test_trains_and_writes_json(tmp_path, arith):
    out = tmp_path / "r.json"
    r = run("--arith", arith, "--epochs", "2", "--train", "600", "--test", "200",
            "--threshold", "0.02", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "data: built-in" in r.stdout or "data: MNIST IDX" in r.stdout
    assert r.stdout.count("%") >= 8
    doc = json.loads(out.read_text())
    assert len(doc["epochs"]) == 2
    for e in doc["epochs"]:
        assert {"test_accuracy", "accepted", "rejected", "not_attempted", "loss"} <= set(e)
        assert 0 <= e["test_accuracy"] <= 1
        assert e["accepted"] + e["rejected"] + e["not_attempted"] == pytest.approx(1)
    # 600 samples, 10 labels: the first epoch has exactly 10 first-of-label steps.
    assert doc["epochs"][0]["not_attempted"] == pytest.approx(10 / 600)


def test_fixed_format_options(tmp_path):
    r = run("--arith", "fixed", "--epochs", "1", "--train", "300", "--test", "100",
            "--weight", "18.15", "--act", "14.8", "--delta", "14.11", "--rounding",
            "stochastic")
    assert r.returncode == 0, r.stderr
    assert "weights s2.15 (18b), activations s5.8, deltas s2.11" in r.stdout
    assert "stochastic rounding" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--data", "/nonexistent/dir"], "error: "),
    (["--train", "999999"], "error: "),
    (["--threshold", "-1"], "error: Threshold must be >= 0"),
    (["--hidden", "16,x"], "error: --hidden takes comma-separated integers"),
    (["--arith", "fixed", "--batch", "100"], "error: Batch size 100 exceeds"),
    (["--weight", "16"], "expected WIDTH.FRAC"),
    (["--weight", "16.16"], "Fraction bits must be"),
    (["--epochs", "0"], "error: Epochs must be a positive integer"),
])
def test_bad_input_is_one_line_and_nonzero(args, message):
    r = run(*args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr
    if message.startswith("error: "):
        assert len(r.stderr.strip().splitlines()) == 1


def test_unwritable_json_path(tmp_path):
    r = run("--epochs", "1", "--train", "100", "--test", "50", "--json",
            str(tmp_path / "missing" / "r.json"))
    assert r.returncode == 2 and r.stderr.startswith("error: cannot write")
