"""scripts/soak.py runs: one round of its cheaper attacks against a server it starts on the demo
model, each answered without a 5xx and the report written. (Its long runs are for the README's
figures, not for the suite.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.demo


def test_one_round_of_the_soak(tmp_path: Path) -> None:
    figures = tmp_path / "soak.json"
    attacks = ["deep_body", "made_up_methods", "odd_ids", "amplifying_body", "batch_with_bad_lines"]
    command = [sys.executable, str(ROOT / "scripts" / "soak.py"), "--minutes", "0", "--json", str(figures)]
    done = subprocess.run([*command, "--attacks", *attacks], capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    outcomes = {o["attack"]: o for o in json.loads(figures.read_text())}
    assert set(outcomes) == set(attacks)
    assert outcomes["deep_body"]["statuses"] == {"400": 1}
    assert set(outcomes["odd_ids"]["statuses"]) <= {"400", "404"}
    # Every line of the batch came back once: answered, or failed on its own.
    batch = outcomes["batch_with_bad_lines"]
    assert batch["lines_answered"] + batch["lines_failed"] == batch["lines_sent"] == 8
    assert batch["lines_answered"] == 6
    # The amplifying body is read in memory proportional to its depth: well under 64 MB.
    body = outcomes["amplifying_body"]
    assert body["resident_peak_mb"] - body["resident_before_mb"] < 64
    assert "resident MB after each round: " in done.stdout
