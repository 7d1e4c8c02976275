"""Faults, injected: what gatfast promises when things go wrong, tested by making them go wrong.

In-process (part of `make test`): a truncated or corrupted checkpoint, a config.json from a
newer gatfast or one that no longer matches its checkpoint, a full disk while saving the
checkpoint or eval.json, a generator that emits NaN, weights that blow up with a finite loss,
a learning rate that blows up. Each ends in one clear line (or TrainingStopped), the previous
files intact, and no non-finite tensor ever saved.

In subprocesses (marker `faults`, `make test-faults`, run by CI): SIGKILL at random points
and in the middle of writing the checkpoint, and Ctrl-C (SIGINT) during train, eval and
sweep. The run folder always holds a loadable checkpoint and a log that ends at its epoch,
and a resume ends with the weights of an uninterrupted run.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from gatfast import cli, train
from gatfast.train import TrainConfig
from gatfast.train import runs as checkpoint

SMALL = dict(dataset="digits", method="gat", epochs=2, train_size=256, batch_size=64, eps=0.1, eval_pgd_steps=0,
             progress=False, generator_width=4, generator_blocks=0)


def _quiet(*_):
    pass


def _all_finite(path) -> bool:
    state = checkpoint.load(path)
    tensors = []

    def walk(obj):
        if isinstance(obj, torch.Tensor):
            tensors.append(obj)
        elif isinstance(obj, dict):
            [walk(v) for v in obj.values()]
        elif isinstance(obj, (list, tuple)):
            [walk(v) for v in obj]
    walk(state)
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


def _one_error_line(capsys, code, expected_code=2):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == expected_code and len(err) == 1 and "Traceback" not in err[0], (code, err)
    return err[0]


@pytest.fixture
def run(tmp_path):
    folder = tmp_path / "run"
    train.train(TrainConfig(**SMALL), folder, log=_quiet)
    return folder


# ---- unreadable or mismatched run folders --------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "other format"])
def test_a_damaged_checkpoint_is_one_clear_error(run, capsys, damage):
    path = run / train.CHECKPOINT
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(bytes(random.Random(0).randrange(256) for _ in range(4096)))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        from safetensors.torch import save_file
        save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "something-else"})
    with pytest.raises(checkpoint.CheckpointError):
        train.load_run(run)
    line = _one_error_line(capsys, cli.main(["eval", str(run), "--attacks", "fgsm", "--n", "10", "--no-progress"]))
    assert "checkpoint" in line and ("unreadable" in line or "not a gatfast checkpoint" in line), line
    line = _one_error_line(capsys, cli.main(["train", "--out", str(run), "--resume", "--epochs", "3",
                                             "--no-progress"]))
    assert str(run) in line
    assert not (run / "eval.json").exists()


def test_config_from_a_newer_gatfast_is_refused(run, capsys):
    path = run / "config.json"
    original = json.loads(path.read_text())
    for change, expected in [({"format": "gatfast-run-2"}, "this gatfast reads gatfast-run-1"),
                             ({"config": {**original["config"], "warp_drive": 9}}, "does not know (warp_drive")]:
        path.write_text(json.dumps({**original, **change}))
        with pytest.raises(train.ConfigError, match="upgrade gatfast"):
            train.load_run(run)
        line = _one_error_line(capsys, cli.main(["eval", str(run), "--attacks", "fgsm", "--n", "10"]))
        assert expected in line, line
    path.write_text(path.read_text()[:40])  # cut short
    assert "unreadable" in _one_error_line(capsys, cli.main(["eval", str(run), "--attacks", "fgsm", "--n", "10"]))


def test_a_checkpoint_that_does_not_match_its_config_is_refused(run, capsys):
    path = run / "config.json"
    document = json.loads(path.read_text())
    document["config"]["generator_width"] = 8  # the checkpoint holds a width-4 generator
    path.write_text(json.dumps(document))
    with pytest.raises(checkpoint.CheckpointError, match="generator does not match config.json"):
        train.load_run(run)
    line = _one_error_line(capsys, cli.main(["train", "--out", str(run), "--resume", "--epochs", "3",
                                             "--no-progress"]))
    assert "does not match config.json" in line


# ---- a full disk ---------------------------------------------------------------------------------

def _full_disk_on_call(n, real):
    """A writer that fails like a full disk on its n-th call, after writing part of its file."""
    calls = []

    def write(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == n:
            Path(filename).write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)
        return real(tensors, filename, metadata=metadata)
    return write


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    monkeypatch.setattr(checkpoint, "save_file", _full_disk_on_call(2, checkpoint.save_file))
    code = cli.main(["train", "--dataset", "digits", "--epochs", "3", "--train-size", "256", "--batch-size", "64",
                     "--eps", "0.1", "--generator-width", "4", "--eval-pgd-steps", "0", "--no-progress",
                     "--out", str(out)])
    line = _one_error_line(capsys, code, expected_code=1)
    assert "No space left on device" in line and "intact" in line
    assert checkpoint.load(out / train.CHECKPOINT)["epoch"] == 1  # epoch 1's checkpoint survived
    assert [json.loads(x)["epoch"] for x in (out / "log.jsonl").read_text().splitlines()] == [1]
    assert not list(out.glob(".*.tmp"))
    monkeypatch.undo()
    train.train(TrainConfig(**{**SMALL, "epochs": 3}), out, resume=True, log=_quiet)  # and it resumes
    assert checkpoint.load(out / train.CHECKPOINT)["epoch"] == 3


@pytest.fixture
def small_disk(tmp_path):
    """A 32 MiB tmpfs: a real disk that fills up (where this process may mount one)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({made.stderr.decode().strip()}); the patched writer test stands")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)


def test_a_really_full_disk_keeps_the_previous_checkpoint(small_disk):
    """After epoch 1 is saved, a file fills the disk: epoch 2's checkpoint cannot be written
    (ENOSPC from the kernel, not a patch), and epoch 1's stays whole."""
    out = small_disk / "run"

    def fill_after_epoch_one(line):
        if line.startswith("epoch 1/"):
            with open(small_disk / "filler", "wb") as f:
                try:
                    while True:
                        f.write(b"\0" * 65536)
                        f.flush()
                except OSError:
                    pass
    with pytest.raises(OSError) as caught:
        train.train(TrainConfig(**{**SMALL, "epochs": 3}), out, log=fill_after_epoch_one)
    assert caught.value.errno == errno.ENOSPC
    assert checkpoint.load(out / train.CHECKPOINT)["epoch"] == 1
    assert [json.loads(x)["epoch"] for x in (out / "log.jsonl").read_text().splitlines()] == [1]
    assert not list(out.glob(".*.tmp"))
    (small_disk / "filler").unlink()
    train.train(TrainConfig(**{**SMALL, "epochs": 3}), out, resume=True, log=_quiet)
    assert checkpoint.load(out / train.CHECKPOINT)["epoch"] == 3


def test_a_full_disk_while_writing_eval_json_leaves_no_half_file(run, monkeypatch, capsys):
    real_dump = json.dump

    def dump(obj, f, **kw):
        if "attacks" in obj:  # eval.json, not another JSON file
            f.write('{"half": ')
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), getattr(f, "name", None))
        return real_dump(obj, f, **kw)
    monkeypatch.setattr(checkpoint.json, "dump", dump)
    code = cli.main(["eval", str(run), "--attacks", "fgsm", "--n", "20", "--sweep", "0.1", "--sweep-steps", "1",
                     "--no-progress"])
    capsys.readouterr()
    assert code == 1 and not (run / "eval.json").exists() and not list(run.glob(".*.tmp"))


# ---- non-finite values ---------------------------------------------------------------------------

def test_a_generator_that_emits_nan_stops_training_and_saves_no_nan(tmp_path, monkeypatch):
    from gatfast.gat import generators
    forward, calls = generators.PerturbationGenerator.forward, []
    calls_per_epoch = 4 * TrainConfig().generator_steps  # 4 steps, each applying the generator so often

    def nan_from_epoch_two(self, *args):
        out = forward(self, *args)
        calls.append(1)
        return out * float("nan") if len(calls) > calls_per_epoch else out
    monkeypatch.setattr(generators.PerturbationGenerator, "forward", nan_from_epoch_two)
    with pytest.raises(train.TrainingStopped, match="steps in a row had a non-finite loss .*epoch 2"):
        train.train(TrainConfig(**{**SMALL, "epochs": 3, "max_nonfinite": 3}), tmp_path, log=_quiet)
    assert checkpoint.load(tmp_path / train.CHECKPOINT)["epoch"] == 1 and _all_finite(tmp_path / train.CHECKPOINT)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "non-finite" in summary["stopped"] and summary["epochs_done"] == 1


def test_weights_that_blow_up_with_a_finite_loss_are_never_saved(tmp_path, monkeypatch):
    """The loss guard sees the loss before the step; a step can still leave inf weights
    behind at the end of an epoch. They must not reach the checkpoint."""
    from gatfast.train import methods
    step, calls = methods.Method.step, []

    def poison_last_step_of_epoch_two(self, x, y):
        metrics = step(self, x, y)
        calls.append(1)
        if len(calls) == 8:  # 4 steps per epoch: the last of epoch 2
            with torch.no_grad():
                next(self.classifier.parameters()).fill_(float("inf"))
        return metrics
    monkeypatch.setattr(methods.Method, "step", poison_last_step_of_epoch_two)
    with pytest.raises(train.TrainingStopped, match="non-finite weights after epoch 2"):
        train.train(TrainConfig(**{**SMALL, "method": "standard", "epochs": 3}), tmp_path, log=_quiet)
    assert checkpoint.load(tmp_path / train.CHECKPOINT)["epoch"] == 1 and _all_finite(tmp_path / train.CHECKPOINT)


def test_a_learning_rate_that_blows_up_saves_no_nan(tmp_path, capsys):
    code = cli.main(["train", "--dataset", "digits", "--method", "standard", "--lr", "1e30", "--epochs", "3",
                     "--train-size", "256", "--batch-size", "64", "--eps", "0.1", "--eval-pgd-steps", "0",
                     "--no-progress", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and "non-finite" in err, err
    ckpt = tmp_path / "run" / train.CHECKPOINT
    assert not ckpt.exists() or _all_finite(ckpt)


# ---- processes killed and interrupted (subprocesses: `make test-faults`) -------------------------

TRAIN_ARGS = ["--dataset", "digits", "--method", "gat", "--epochs", "4", "--train-size", "512", "--batch-size", "64",
              "--eps", "0.1", "--generator-width", "4", "--eval-pgd-steps", "0", "--no-progress"]

# Runs the CLI with the checkpoint writer slowed down at its SLOW_SAVE-th call: the
# temporary file is left half-written, a marker file says so, and the process sleeps
# there until it is killed.
SLOW_SAVE = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from gatfast.train import runs
    from gatfast import cli
    real, calls = runs.save_file, []
    def slow(tensors, filename, metadata=None):
        calls.append(filename)
        real(tensors, filename, metadata=metadata)
        if len(calls) == int(os.environ["SLOW_SAVE"]):
            size = os.path.getsize(filename)
            with open(filename, "r+b") as f:
                f.truncate(size // 2)
            Path(os.environ["MARKER"]).write_text(filename)
            time.sleep(600)
    runs.save_file = slow
    sys.exit(cli.main(sys.argv[1:]))
""")


def _sigint_as_in_a_terminal():
    """A shell's background job inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler: the child gets SIGINT's default back, as a command typed
    at a terminal has, so the Ctrl-C tests test gatfast wherever pytest was started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _gatfast(args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **kw.pop("env", {})}
    kw.setdefault("stdout", subprocess.DEVNULL)
    return subprocess.Popen([sys.executable, "-m", "gatfast"] + args, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_sigint_as_in_a_terminal, **kw)


def _finish(out: Path) -> None:
    """Run a (possibly killed) run to its end: resume it where it has a config.json."""
    args = TRAIN_ARGS + ["--out", str(out)]
    if (out / "config.json").is_file():
        args = ["--out", str(out), "--resume", "--no-progress"]
    proc = _gatfast(["train"] + args)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]


def _weights(out: Path) -> dict:
    return checkpoint.load(out / train.CHECKPOINT)["modules"]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for net in wa:
        for k in wa[net]:
            assert torch.equal(wa[net][k], wb[net][k]), f"{net}.{k}"


def _assert_consistent(out: Path, *, finished: bool = False) -> None:
    """A killed run folder: a loadable checkpoint (or none yet) and a log of its epochs, or
    of all but the last: the engine writes the checkpoint, then the log from the records the
    checkpoint keeps (engine._save_epoch), so a kill between the two writes leaves the log one
    epoch short (none at all after the first epoch), which a resume rewrites whole. A
    finished run's log is whole."""
    if not (out / train.CHECKPOINT).exists():
        return
    epoch = checkpoint.load(out / train.CHECKPOINT)["epoch"]
    log = out / "log.jsonl"
    logged = [json.loads(line)["epoch"] for line in log.read_text().splitlines()] if log.exists() else []
    whole = list(range(1, epoch + 1))
    assert logged == whole or (not finished and logged == whole[:-1]), (logged, epoch)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    start = time.perf_counter()
    _finish(out)
    return out, time.perf_counter() - start


@pytest.mark.faults
def test_sigkill_while_the_checkpoint_is_written(tmp_path, uninterrupted):
    out, marker = tmp_path / "run", tmp_path / "marker"
    script = tmp_path / "slow_save.py"
    script.write_text(SLOW_SAVE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SLOW_SAVE": "2", "MARKER": str(marker)}
    proc = subprocess.Popen([sys.executable, str(script), "train"] + TRAIN_ARGS + ["--out", str(out)],
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-3000:]
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    half_written = Path(marker.read_text())
    assert half_written.exists() and half_written.parent == out  # killed mid-write
    assert checkpoint.load(out / train.CHECKPOINT)["epoch"] == 1  # the previous checkpoint is whole
    _assert_consistent(out)
    _finish(out)
    assert not half_written.exists() and not list(out.glob(".*.tmp"))  # the resume cleaned up
    _assert_same_weights(out, uninterrupted[0])


@pytest.mark.faults
def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_weights(tmp_path, uninterrupted):
    whole, seconds = uninterrupted
    rng = random.Random(2026)
    out = tmp_path / "run"
    kills = 0
    for _ in range(3):
        args = ["--out", str(out), "--resume", "--no-progress"] if (out / "config.json").is_file() \
            else TRAIN_ARGS + ["--out", str(out)]
        proc = _gatfast(["train"] + args)
        try:
            proc.wait(timeout=rng.uniform(0.3, 1.0) * seconds)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        proc.communicate()
        _assert_consistent(out)
    _finish(out)
    _assert_consistent(out, finished=True)
    assert kills >= 1
    _assert_same_weights(out, whole)


def _wait_for(proc, text: str, timeout=300) -> str:
    """Read the process's stderr until `text` appears; returns what was read."""
    seen, deadline = "", time.monotonic() + timeout
    while text not in seen:
        line = proc.stderr.readline()
        assert line or proc.poll() is None, seen[-3000:]
        assert time.monotonic() < deadline, seen[-3000:]
        seen += line
    return seen


@pytest.mark.faults
def test_ctrl_c_during_training_stops_cleanly_and_resumes_exactly(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = _gatfast(["train"] + TRAIN_ARGS + ["--out", str(out)])
    deadline = time.monotonic() + 300
    while not (out / train.CHECKPOINT).exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("gatfast: interrupted; the run folder holds the last finished")
    assert "Traceback" not in err
    _assert_consistent(out)
    _finish(out)
    _assert_same_weights(out, uninterrupted[0])


@pytest.mark.faults
def test_ctrl_c_during_eval_writes_no_eval_json(tmp_path, uninterrupted):
    run = uninterrupted[0]
    proc = _gatfast(["eval", str(run), "--attacks", "fgsm,pgd,cw", "--n", "359", "--pgd-steps", "200",
                     "--no-progress"])
    _wait_for(proc, "FGSM")
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "no eval.json was written" in err.strip().splitlines()[-1], err[-3000:]
    assert "Traceback" not in err
    assert not (run / "eval.json").exists() and not list(run.glob(".*.tmp"))
    # the attacks that finished are kept, for the same command to go on from
    assert "fgsm" in json.loads((run / "eval.partial.json").read_text())["attacks"]


@pytest.mark.faults
def test_ctrl_c_during_a_sweep_keeps_finished_cells_and_the_rerun_completes(tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "--datasets", "digits", "--methods", "standard", "--seeds", "0,1", "--eps", "0.1",
            "--epochs", "2", "--train-size", "256", "--attacks", "fgsm,pgd", "--n", "100", "--pgd-steps", "5",
            "--sweep", "0.1", "--sweep-steps", "2", "--no-progress", "--out", str(out)]
    proc = _gatfast(args)
    cell = out / "digits" / "standard" / "seed1"
    deadline = time.monotonic() + 300
    while not (cell / "config.json").exists():  # the second cell has started
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "finished cells are kept" in err.strip().splitlines()[-1], err[-3000:]
    assert not list(out.rglob(".*.tmp"))
    proc = _gatfast(args)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert not report["missing"] and report["rows"][0]["seeds"] == [0, 1]
