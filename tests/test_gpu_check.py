"""tools/gpu_check.py, the one-shot GPU check, without a GPU: its dry run end to end (CI
runs it so that the check cannot rot while no GPU is at hand), and the stage runner's
promises: a failing or overrunning stage is recorded and the next one still runs."""

import importlib.util
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


def test_dry_run_writes_the_summary_and_the_archive(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(TOOL), "--dry-run", "--out", str(out)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["gpu-check.tar.gz", "summary.json", "summary.md"]
    summary = json.loads((out / "summary.json").read_text())
    status = {s["name"]: s["status"] for s in summary["stages"]}
    assert status["build"] == "skipped" and status["bench-pgd"] == "skipped"  # they need CUDA
    for stage in ("environment", "wheels", "gpu-tests", "bench-ops", "bench-step-small_cnn"):
        assert status[stage] == "passed", stage
    assert summary["meta"]["dry_run"] is True
    assert any(line.startswith("step small_cnn") for line in summary["figures"])
    with tarfile.open(out / "gpu-check.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"environment.log", "gpu-tests.log", "summary.md"} <= names
    assert "| gpu-tests | passed |" in (out / "summary.md").read_text()


def test_a_failing_or_overrunning_stage_is_recorded_and_the_next_runs(gpu_check, tmp_path):
    py = sys.executable
    plan = [gpu_check.Stage("fails", [py, "-c", "print('boom'); raise SystemExit(3)"], 60),
            gpu_check.Stage("hangs", [py, "-c", "import time; time.sleep(60)"], 1),
            gpu_check.Stage("works", [py, "-c", "print('ok')"], 60)]
    deadline = time.monotonic() + 120
    outcomes = [gpu_check.run_stage(stage, tmp_path, deadline, False, {}) for stage in plan]
    assert [o.status for o in outcomes] == ["failed", "timed out", "passed"]
    assert outcomes[0].detail == "exit 3: boom"
    assert outcomes[1].seconds < 10
    assert (tmp_path / "works.log").read_text().splitlines()[-1] == "ok"


def test_a_stage_past_the_budget_is_skipped(gpu_check, tmp_path):
    stage = gpu_check.Stage("late", [sys.executable, "-c", "print('ran')"], 60)
    outcome = gpu_check.run_stage(stage, tmp_path, time.monotonic() + 1, False, {})
    assert outcome.status == "skipped" and "budget" in outcome.detail


def test_bad_arguments_are_refused_before_anything_runs(tmp_path):
    out = tmp_path / "never"
    done = subprocess.run([sys.executable, str(TOOL), "--budget", "5", "--out", str(out)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "--budget must be at least 30 seconds" in done.stderr
    done = subprocess.run([sys.executable, str(TOOL), "--dry-run", "--only", "build,nope", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown stage(s) nope" in done.stdout
    assert not out.exists()
