"""The training engine and the `gatfast train` command: run folder, exact resume, the
non-finite guard, load_run, bad configuration, every method learning."""

import argparse
import json
from pathlib import Path

import pytest
import torch

from gatfast import cli, train
from gatfast.train import data, methods
from gatfast.train import runs as checkpoint
from gatfast.train.config import CERTIFIED
from gatfast.train import ConfigError, TrainConfig


def small(**overrides):
    base = dict(dataset="digits", epochs=2, batch_size=64, eps=0.1, attack_steps=2, eval_pgd_steps=5,
                progress=False, generator_width=8, generator_blocks=1)
    base.update(overrides)
    return TrainConfig(**base)


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_run_folder_records_everything(tmp_path):
    summary = train.train(small(method="gat"), tmp_path / "run", log=lambda *_: None)
    run = tmp_path / "run"
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["method"] == "gat" and config["environment"]["torch"] == torch.__version__
    assert "build" in config["environment"] and config["environment"]["device"] == "cpu"
    if Path("/proc/cpuinfo").is_file():  # the machine's name, where wall times of many machines meet
        assert config["environment"]["cpu_model"] in Path("/proc/cpuinfo").read_text()
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert {"loss_classifier", "loss_generator", "acc_clean", "acc_adv", "lr", "eps", "wall_s"} <= set(lines[0])
    assert set(summary["robustness"]) == {"clean", "fgsm", "pgd5"} and summary["train_wall_s"] > 0
    assert json.loads((run / "summary.json").read_text()) == summary
    state = checkpoint.load(run / train.CHECKPOINT)
    assert state["epoch"] == 2 and set(state["modules"]) == {"classifier", "generator"}
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no temporary files left


def _same_state(a_dir, b_dir):
    a = checkpoint.load(a_dir / train.CHECKPOINT)
    b = checkpoint.load(b_dir / train.CHECKPOINT)
    assert a["epoch"] == b["epoch"]
    for name in a["modules"]:
        for k in a["modules"][name]:
            assert torch.equal(a["modules"][name][k], b["modules"][name][k]), (name, k)
    for name in a["optimizers"]:
        for i, s in a["optimizers"][name]["state"].items():
            for k, v in s.items():
                assert torch.equal(v, b["optimizers"][name]["state"][i][k])


@pytest.mark.parametrize("method,extra", [("gat", {"latent_dim": 2, "generator_updates": 2}), ("fgsm_rs", {})])
def test_resume_with_more_epochs_continues_exactly(tmp_path, method, extra):
    """2 epochs, then --resume --epochs 3 == 3 epochs in one go: same weights, bit for bit
    (random starts, latent codes and the data order all continue where they were)."""
    train.train(small(method=method, epochs=3, eval_pgd_steps=0, **extra), tmp_path / "straight", log=lambda *_: None)
    train.train(small(method=method, epochs=2, eval_pgd_steps=0, **extra), tmp_path / "split", log=lambda *_: None)
    train.train(small(method=method, epochs=3), tmp_path / "split", resume=True, log=lambda *_: None)
    _same_state(tmp_path / "straight", tmp_path / "split")
    log_b = (tmp_path / "split" / "log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in log_b] == [1, 2, 3]


def test_resume_after_a_crash_continues_exactly(tmp_path):
    """A run killed after its second epoch's checkpoint, resumed, ends where the
    uninterrupted run ends (here with a cosine schedule, which spans the planned epochs)."""
    config = small(method="trades", epochs=3, eval_pgd_steps=0, schedule="cosine")
    train.train(config, tmp_path / "straight", log=lambda *_: None)

    def crash_after_epoch_2(line):
        if line.startswith("epoch 2/3"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train.train(config, tmp_path / "crashed", log=crash_after_epoch_2)
    train.train(config, tmp_path / "crashed", resume=True, log=lambda *_: None)
    _same_state(tmp_path / "straight", tmp_path / "crashed")


def test_existing_run_is_not_overwritten(tmp_path):
    train.train(small(method="standard", epochs=1, eval_pgd_steps=0), tmp_path, log=lambda *_: None)
    before = (tmp_path / train.CHECKPOINT).read_bytes()
    with pytest.raises(ConfigError, match="already holds a run: pass --resume"):
        train.train(small(method="standard", epochs=1), tmp_path, log=lambda *_: None)
    with pytest.raises(ConfigError, match="epochs 1 is fewer than the run's 2"):
        train.train(small(method="standard", epochs=2, eval_pgd_steps=0), tmp_path / "b", log=lambda *_: None)
        train.train(small(method="standard", epochs=1), tmp_path / "b", resume=True, log=lambda *_: None)
    assert (tmp_path / train.CHECKPOINT).read_bytes() == before


def _nan_every(n_bad, period):
    """A Standard._loss whose loss is NaN on the first n_bad of every `period` calls."""
    original, calls = methods.Standard._loss, [0]

    def loss(self, x, y):
        value, metrics = original(self, x, y)
        calls[0] += 1
        return (value * float("nan") if (calls[0] - 1) % period < n_bad else value), metrics
    return loss


def test_nonfinite_steps_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(methods.Standard, "_loss", _nan_every(1, 4))  # one bad step in four
    train.train(small(method="standard", epochs=1, eval_pgd_steps=0), tmp_path, log=lambda *_: None)
    record = json.loads((tmp_path / "log.jsonl").read_text())
    assert record["skipped_steps"] == 6  # 23 steps of 64 in digits' 1,438 images: steps 1, 5, ..., 21
    assert all(torch.isfinite(v).all() for v in checkpoint.load(tmp_path / train.CHECKPOINT)["modules"]
               ["classifier"].values())


def test_repeated_nonfinite_steps_stop_training_with_a_clear_message(tmp_path, monkeypatch):
    train.train(small(method="standard", epochs=1, eval_pgd_steps=0), tmp_path, log=lambda *_: None)
    saved = checkpoint.load(tmp_path / train.CHECKPOINT)["modules"]["classifier"]
    monkeypatch.setattr(methods.Standard, "_loss", _nan_every(100, 100))
    with pytest.raises(train.TrainingStopped, match="5 steps in a row had a non-finite loss .*epoch 2, step 5"):
        train.train(small(method="standard", epochs=2), tmp_path, resume=True, log=lambda *_: None)
    kept = checkpoint.load(tmp_path / train.CHECKPOINT)["modules"]["classifier"]
    assert all(torch.equal(saved[k], kept[k]) for k in saved)  # the last good epoch is still there
    assert "non-finite" in json.loads((tmp_path / "summary.json").read_text())["stopped"]


def test_load_run_gives_the_trained_models(tmp_path):
    summary = train.train(small(method="gat"), tmp_path, log=lambda *_: None)
    run = train.load_run(tmp_path)
    assert not run.classifier.training and run.generator is not None and run.config.method == "gat"
    from gatfast.train import data
    x, y = data.load_dataset("digits").test.tensors
    assert train.accuracy(run.classifier, x, y) == summary["robustness"]["clean"]
    # One PGD, one meaning: summary.json's PGD-5 is the evaluation suite's PGD-5 (best
    # iterate, APGD's step size), not the training methods' last-iterate pgd.
    from gatfast import attacks
    evaluated = attacks.PGD(run.classifier, eps=0.1, steps=5)
    assert float(attacks.correct(run.classifier, evaluated(x, y), y).float().mean()) == summary["robustness"]["pgd5"]
    assert "PGD-5 (linf, eps 0.1, 5 steps, APGD's adaptive step size" in summary["threat_model"]
    with pytest.raises(ConfigError, match="not a gatfast run folder"):
        train.load_run(tmp_path / "nothing")


# ---- every method learns (mnist5k, 1,000 training images, 3 epochs, eps 0.1) ------------------

# GAT's PGD floor sits between what GAT gives (80.0% PGD-10, seed 0, 2026-11-27), standard
# training (70.6%) and GAT with the generator's gradient sign flipped (52.8%), which the
# negative control below checks falls under it.
ACCURACY_FLOOR = {"standard": (0.85, None), "fgsm_rs": (0.75, 0.30), "pgd_at": (0.75, 0.30),
                  "trades": (0.75, 0.30), "gat": (0.80, 0.75), "gaussian": (0.85, None)}
MNIST5K_SMALL = dict(dataset="mnist5k", epochs=3, train_size=1000, batch_size=50, eps=0.1, attack_steps=3,
                     eval_pgd_steps=10, progress=False, generator_width=16)


@pytest.mark.parametrize("method", [m for m in methods.METHODS if m not in CERTIFIED])
def test_every_method_trains_mnist5k(tmp_path, method):
    summary = train.train(TrainConfig(method=method, **MNIST5K_SMALL), tmp_path, log=lambda *_: None)
    clean_floor, pgd_floor = ACCURACY_FLOOR[method]
    r = summary["robustness"]
    assert r["clean"] >= clean_floor, r
    if pgd_floor is not None:
        assert r["pgd10"] >= pgd_floor, r


def test_gat_floor_fails_a_generator_that_helps_the_classifier(tmp_path, monkeypatch):
    """The negative control of GAT's floor: a generator whose gradient sign is flipped
    (it lowers the classifier's loss instead of raising it) must fall under it."""
    from gatfast.gat.step import GATStep
    adversarial = GATStep._adversarial
    monkeypatch.setattr(GATStep, "_adversarial", lambda self, x0, y, g, scale: adversarial(self, x0, y, g, -scale))
    summary = train.train(TrainConfig(method="gat", **MNIST5K_SMALL), tmp_path, log=lambda *_: None)
    assert summary["robustness"]["pgd10"] < ACCURACY_FLOOR["gat"][1], summary["robustness"]


# ---- certified training (mnist5k, all 4,000 training images, cert_cnn, eps 0.1, 10 epochs) -----
# The floors sit under what the methods gave (2026-12-01, seed 0, the first 200 test images):
# ibp 96.5% clean and 75.5% verified by IBP; crown_ibp 98.5% clean and 86.0% verified by
# CROWN-IBP (78.5% by IBP alone). The negative control, ibp with its robust term switched
# off (kappa-end 1), must fall under the floor.
CERTIFIED_SMALL = dict(dataset="mnist5k", model="cert_cnn", epochs=10, eps=0.1, eval_pgd_steps=0, progress=False)
VERIFIED_FLOOR = {"ibp": (0.93, "ibp", 0.65), "crown_ibp": (0.95, "crown-ibp", 0.78)}


def _verified(run_dir, bound):
    from gatfast import certify
    model = train.load_run(run_dir).classifier
    x, y = (t[:200] for t in data.load_dataset("mnist5k").test.tensors)
    return train.accuracy(model, x, y), certify.verified_accuracy(model, x, y, 0.1, method=bound)


@pytest.mark.parametrize("method", [pytest.param("ibp"), pytest.param("crown_ibp", marks=pytest.mark.slow)])
def test_certified_training_reaches_its_verified_floor(tmp_path, method):
    train.train(TrainConfig(method=method, **CERTIFIED_SMALL), tmp_path, log=lambda *_: None)
    clean_floor, bound, verified_floor = VERIFIED_FLOOR[method]
    clean, verified = _verified(tmp_path, bound)
    assert clean >= clean_floor and verified >= verified_floor, (clean, verified)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[0]["eps"] < 0.1 and log[-1]["eps"] == pytest.approx(0.1)  # the default ramp: half the epochs
    assert log[0]["kappa"] > log[-1]["kappa"]


def test_certified_floor_fails_training_without_the_robust_term(tmp_path):
    train.train(TrainConfig(method="ibp", kappa_end=1.0, **CERTIFIED_SMALL), tmp_path, log=lambda *_: None)
    clean, verified = _verified(tmp_path, "ibp")
    assert verified < VERIFIED_FLOOR["ibp"][2], (clean, verified)


def test_single_pass_gat_trains_from_the_command_line(tmp_path):
    out = tmp_path / "sp"
    assert cli.main(["train", "--dataset", "digits", "--method", "gat", "--generator-input", "image", "--single-pass",
                     "--epochs", "2", "--batch-size", "64", "--eps", "0.1", "--generator-width", "8",
                     "--eval-pgd-steps", "0", "--no-progress", "--out", str(out)]) == 0
    saved = train.load_config(out)
    assert saved.single_pass and saved.generator_input == "image"
    epochs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2] and epochs[-1]["skipped_steps"] == 0
    assert epochs[-1]["acc_clean"] > epochs[0]["acc_clean"]  # it learns
    assert 0 < epochs[-1]["perturbation_norm"] and epochs[-1]["loss_generator"] < 0


# ---- the command line -------------------------------------------------------------------------

@pytest.mark.parametrize("args,message", [
    (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
    (["--method", "magic"], "unknown method 'magic'"),
    (["--eps", "0"], "eps must be > 0"),
    (["--eps", "8"], "beyond the .0, 1. pixel range"),
    (["--norm", "linf", "--generator-bound", "l2"], "cannot bound a linf perturbation with a l2 bound"),
    (["--epochs", "0"], "epochs must be an integer >= 1"),
    (["--dataset", "cifar10"], "pass data_root"),
    (["--method", "gat", "--single-pass"], "single-pass needs generator-input image"),
    (["--method", "pgd_at", "--single-pass"], "single-pass is an option of the gat method"),
    (["--method", "gat", "--generator-input", "image", "--alpha", "1", "--single-pass"], "single-pass needs alpha < 1"),
    (["--generator-blocks", "-1"], "generator-blocks must be an integer >= 0"),
    (["--generator-random-init", "2"], "generator-random-init must be 0 or 1"),
    (["--method", "pgd_at", "--attack-step-size", "-0.1"], "attack-step-size must be > 0"),
    (["--weight-decay", "-1"], "weight-decay must be >= 0"),
    (["--method", "trades", "--trades-beta", "-1"], "trades-beta must be >= 0"),
    (["--trades-beta", "nan"], "trades-beta must be >= 0"),
])
def test_bad_configuration_is_one_line_and_status_2(tmp_path, capsys, args, message):
    assert cli.main(["train", "--out", str(tmp_path / "r"), "--no-progress"] + args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert pytest.importorskip("re").search(message, err), err
    assert not (tmp_path / "r" / train.CHECKPOINT).exists()
    assert not (tmp_path / "r").exists()  # nothing written: checked before the run folder exists


def test_cli_trains_prints_the_table_and_refuses_changed_resume(tmp_path, capsys):
    out = str(tmp_path / "r")
    assert cli.main(["train", "--dataset", "digits", "--method", "standard", "--epochs", "1", "--eps", "0.1",
                     "--eval-pgd-steps", "3", "--out", out, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "clean" in printed and "pgd3" in printed and "standard on digits" in printed
    assert cli.main(["train", "--out", out, "--resume", "--eps", "0.2", "--no-progress"]) == 2
    assert "cannot change --eps" in capsys.readouterr().err
    assert cli.main(["train", "--out", out, "--resume", "--epochs", "2", "--no-progress"]) == 0
    assert len((tmp_path / "r" / "log.jsonl").read_text().splitlines()) == 2


def test_recipes_set_the_gat_options_and_explicit_options_win():
    paper = TrainConfig.from_recipe("paper")
    assert (paper.method, paper.generator_input, paper.generator_steps, paper.recipe) == ("gat", "grad", 1, "paper")
    assert TrainConfig.from_recipe("paper", generator_steps=3).generator_steps == 3
    default = TrainConfig()
    assert train.DEFAULT_RECIPE == "l2l-3"
    assert all(getattr(default, k) == v for k, v in train.RECIPES["l2l-3"].items())  # the default is l2l-3
    assert (TrainConfig.from_recipe("l2l").generator_steps, TrainConfig.from_recipe("l2l").alpha) == (2, 0.5)
    # the default's generator learns three times faster than the older recipes' (README)
    assert (default.generator_lr, paper.generator_lr, TrainConfig.from_recipe("l2l").generator_lr) == (3e-3, 1e-3, 1e-3)
    with pytest.raises(ConfigError, match="unknown recipe 'fancy'"):
        TrainConfig.from_recipe("fancy")


def test_cli_recipe(tmp_path, capsys):
    assert cli.main(["train", "--recipe", "fancy", "--out", str(tmp_path)]) == 2
    assert "unknown recipe 'fancy'; choose from paper, l2l, l2l-3" in capsys.readouterr().err
    assert cli.main(["train", "--recipe", "paper", "--dataset", "digits", "--epochs", "1", "--eval-pgd-steps", "0",
                     "--generator-width", "8", "--no-progress", "--out", str(tmp_path / "r")]) == 0
    assert json.loads((tmp_path / "r" / "config.json").read_text())["config"]["generator_input"] == "grad"


def _subcommand_actions(name):
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [a for a in sub.choices[name]._actions if a.option_strings and a.help != argparse.SUPPRESS]


@pytest.mark.parametrize("command", ["train", "eval", "sweep", "bench", "bench-pgd", "bench-autoattack"])
def test_help_gives_every_value_flag_its_default(command):
    for action in _subcommand_actions(command):
        if action.nargs == 0 or action.required or action.option_strings == ["-h", "--help"]:
            continue  # switches (store_true), --out, --help
        assert action.help and "default: " in action.help, f"gatfast {command} {action.option_strings[0]}"


def test_train_help_lists_the_choices_of_the_registries():
    from gatfast.gat import generators
    from gatfast.ops import backends
    from gatfast.train import data, models
    helps = {a.option_strings[0]: a.help for a in _subcommand_actions("train")}
    registries = {"--dataset": data.DATASETS, "--method": methods.METHODS, "--model": models.MODELS,
                  "--backend": backends.BACKENDS, "--generator-input": generators.INPUTS,
                  "--generator-bound": generators.BOUNDS, "--recipe": train.RECIPES}
    for flag, registry in registries.items():
        assert "one of " + ", ".join(registry) in helps[flag], flag
    assert "default: small_cnn" in helps["--model"] and "default: 0.3" in helps["--eps"]


def test_step_sizes_follow_the_eps_schedule():
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    opt = torch.optim.SGD(clf.parameters(), lr=0.1)
    trades = methods.TRADES(clf, opt, eps=0.3, steps=10)
    trades.set_eps(0.1)
    assert trades.eps == 0.1 and trades.step_size == pytest.approx(2.5 * 0.1 / 10)
    fixed = methods.TRADES(clf, opt, eps=0.3, steps=10, step_size=0.05)
    fixed.set_eps(0.1)
    assert fixed.step_size == 0.05  # a step size the user fixed stays fixed
    fgsm = methods.FGSMRS(clf, opt, eps=0.3, step_scale=1.0)
    fgsm.set_eps(0.2)
    assert fgsm.step_size == pytest.approx(0.2)  # its own step_scale, not the default 1.25


def test_the_log_gives_the_learning_rate_and_eps_used(tmp_path):
    config = TrainConfig(dataset="digits", method="standard", epochs=2, train_size=256, batch_size=128,
                         schedule="cosine", eps_warmup=2, eval_pgd_steps=0, progress=False)
    train.train(config, tmp_path / "r", log=lambda *_: None)
    epochs = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    last_step = 1 + 1 / 2  # two steps per epoch: the last one of epoch 2 sits at 1.5 epochs
    assert epochs[-1]["lr"] == pytest.approx(config.lr * config.lr_factor(last_step)) and epochs[-1]["lr"] > 0
    assert epochs[-1]["eps"] == pytest.approx(config.eps_at(last_step)) and epochs[-1]["eps"] < config.eps


def test_fgsm_rs_guard_restores_the_best_epoch_when_the_probe_collapses(monkeypatch):
    """Catastrophic overfitting (Wong et al. 2020): the PGD-10 probe accuracy falls by more
    than `collapse` below its best; the best epoch's weights come back and training stops."""
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    fgsm = methods.FGSMRS(clf, torch.optim.SGD(clf.parameters(), lr=0.1), eps=0.3,
                          probe=(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long)), collapse=0.2)
    probes = iter([0.5, 0.7, 0.6, 0.45])
    monkeypatch.setattr(fgsm, "probe_accuracy", lambda: next(probes))
    weights = {}
    for epoch in (1, 2, 3):
        with torch.no_grad():
            clf[1].weight.fill_(float(epoch))
        weights[epoch] = clf[1].weight.clone()
        assert fgsm.end_epoch(epoch) is None  # 0.6 is within 0.2 of the best, 0.7
        assert fgsm.epoch_metrics() == {"probe_pgd10": [0.5, 0.7, 0.6][epoch - 1]}
    with torch.no_grad():
        clf[1].weight.fill_(4.0)
    message = fgsm.end_epoch(4)
    assert "catastrophic overfitting at epoch 4" in message and "restored the weights of epoch 2" in message
    assert torch.equal(clf[1].weight, weights[2])


def test_fgsm_rs_logs_its_probe_every_epoch(tmp_path):
    """Overfitting from the first epoch never falls from a best, so the guard cannot stop it;
    the log shows it: the probe's PGD-10 accuracy beside the training accuracy on FGSM."""
    lines = []
    train.train(small(method="fgsm_rs", epochs=2, eval_pgd_steps=0), tmp_path / "r", log=lines.append)
    epochs = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [0.0 <= e["probe_pgd10"] <= 1.0 for e in epochs] == [True, True]
    assert sum("probe_pgd10" in line for line in lines) == 2
    train.train(small(method="pgd_at", epochs=1, eval_pgd_steps=0), tmp_path / "p", log=lambda *_: None)
    assert "probe_pgd10" not in (tmp_path / "p" / "log.jsonl").read_text()
