"""gatfast eval / sweep / report: the suite's report and sanity checks (a gradient-masked
model is caught), the command's files and errors, a sweep that resumes and a report that
names missing cells."""

import json
from pathlib import Path

import pytest
import torch

from gatfast import cli, train
from gatfast.evaluation import suite as evaluate
from gatfast.evaluation import report
from gatfast.train import TrainConfig

FAST = dict(n=120, n_slow=40, pgd_steps=10, check_factor=3, sweep=(0.0, 0.05, 0.1, 0.2, 1.0), sweep_steps=10,
            cw_steps=10, cw_search_steps=2, square_queries=50, transfer_steps=10, autoattack_steps=10)
FAST_ARGS = ["--n", "120", "--n-slow", "40", "--pgd-steps", "10", "--check-factor", "3", "--sweep", "0,0.1,1",
             "--sweep-steps", "10", "--cw-steps", "10", "--cw-search-steps", "2", "--square-queries", "50",
             "--transfer-steps", "10", "--autoattack-steps", "10", "--no-progress"]
CHECKS = ("accuracy_falls_with_eps", "near_zero_at_eps_1", "black_box_not_stronger", "more_steps_do_not_help",
          "restarts_do_not_help", "stronger_loss_does_not_help", "worst_case_is_converged", "certified_below_empirical")


def _train(folder, **config):
    base = dict(dataset="digits", method="standard", epochs=8, batch_size=64, eps=0.1, eval_pgd_steps=0,
                progress=False)
    train.train(TrainConfig(**{**base, **config}), folder, log=lambda *_: None)
    return folder


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return _train(root / "target", seed=0), _train(root / "surrogate", seed=1)


@pytest.fixture(scope="session")
def digits_test():
    from gatfast.train import data
    return data.load_dataset("digits").test.tensors


class RoundedInput(torch.nn.Module):
    """A gradient-masking 'defence': it rounds its input to the 17 grey levels of the
    digits images, which leaves clean accuracy as it was and every input gradient zero."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 16) / 16)


def _checks(report):
    return {c["name"]: c["passed"] for c in report["checks"]}


def test_healthy_model_passes_every_check(runs, digits_test):
    target, surrogate = (train.load_run(r).classifier for r in runs)
    x, y = digits_test
    report = evaluate.evaluate(target, x, y, eps=0.1, norm="linf", num_classes=10,
                               config=evaluate.EvalConfig(**FAST), surrogate=surrogate, progress=False)
    assert _checks(report) == {name: True for name in CHECKS}
    a = report["attacks"]
    assert a["pgd"]["accuracy"] <= a["fgsm"]["accuracy"] and a["pgd"]["n"] == 120 and a["cw"]["n"] == 40
    assert all(r["clean"] == pytest.approx(report["clean"], abs=0.05) for r in a.values())
    # the headline: per image over every attack of the threat model, on every image
    w = report["worst_case"]
    assert w["n"] == 120 and w["accuracy"] <= min(r["accuracy"] for k, r in a.items() if k != "cw")
    assert set(w["ensemble"]) == set(evaluate.ATTACKS) - {"cw"}
    # AutoAttack's cascade: FAB-T and Square attack only what APGD-CE and APGD-T left
    assert a["fab_t"]["role"] == a["square"]["role"] == "cascade"
    assert a["square"]["attacked"] <= a["fab_t"]["attacked"] <= round(120 * a["apgd_t"]["accuracy"])
    assert report["autoattack"]["accuracy"] == pytest.approx(a["square"]["accuracy"])
    assert report["autoattack"]["accuracy"] >= w["accuracy"]
    assert "L-inf perturbations of at most eps = 0.1" in report["threat_model"]
    assert "Black box" in report["threat_model"] and "Transfer (PGD-10" in report["threat_model"]
    table = evaluate.format_table(report)
    assert "AutoAttack (standard)" in table and "worst case (the headline): per image over" in table


def test_weak_headline_fails_the_per_image_checks(runs, digits_test):
    """PGD-10 with a tiny step alone as the suite: the checks' stronger attacks break
    images it leaves standing, fail, name themselves, and the worst case uses them."""
    target = train.load_run(runs[0]).classifier
    x, y = digits_test
    report = evaluate.evaluate(target, x, y, eps=0.1, norm="linf", num_classes=10,
                               config=evaluate.EvalConfig(**dict(FAST, pgd_step_size=0.001), attacks=("pgd",)),
                               progress=False)
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["stronger_loss_does_not_help"]["passed"] is False
    assert "APGD-T broke" in checks["stronger_loss_does_not_help"]["detail"]
    assert report["attacks"]["apgd_t"]["role"] == "check"
    assert report["worst_case"]["accuracy"] < report["attacks"]["pgd"]["accuracy"] - 0.2
    assert report["worst_case"]["checks_broke_more"] > 20
    assert "FAIL" in evaluate.format_table(report)


def test_mcnemar_counts_and_significance():
    chal = torch.tensor([1, 1, 1, 1, 1, 1, 1, 0, 0, 0], dtype=torch.bool)
    ref = torch.tensor([0, 0, 0, 0, 0, 0, 0, 0, 1, 0], dtype=torch.bool)
    t = evaluate.mcnemar(chal, ref)
    assert (t["b"], t["c"]) == (7, 1) and t["p"] == pytest.approx(9 / 256)  # P(X >= 7), X ~ Bin(8, 1/2)
    assert evaluate.mcnemar(ref, chal)["p"] == pytest.approx(1 - 1 / 256)
    assert evaluate.mcnemar(chal, chal)["p"] == 1.0
    valid = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 1], dtype=torch.bool)
    assert (evaluate.mcnemar(chal, ref, valid)["b"], evaluate.mcnemar(chal, ref, valid)["c"]) == (1, 1)


def test_gradient_masking_is_flagged(runs, digits_test):
    target, surrogate = (train.load_run(r).classifier for r in runs)
    masked = RoundedInput(target).eval()
    x, y = digits_test
    assert (masked(x).argmax(1) == y).float().mean() > 0.9
    report = evaluate.evaluate(masked, x, y, eps=0.1, norm="linf", num_classes=10,
                               config=evaluate.EvalConfig(**FAST, attacks=("fgsm", "pgd", "transfer")),
                               surrogate=surrogate, progress=False)
    checks = _checks(report)
    assert checks["near_zero_at_eps_1"] is False
    assert checks["black_box_not_stronger"] is False
    assert "FAIL" in evaluate.format_table(report)


def test_eval_command_writes_report_and_plot(runs, capsys):
    target, surrogate = runs
    assert cli.main(["eval", str(target), "--surrogate", str(surrogate), "--attacks", "fgsm,pgd,cw,transfer"]
                    + FAST_ARGS) == 0
    out = capsys.readouterr().out
    assert "clean" in out and "PGD-10" in out and "worst case" in out and "near_zero_at_eps_1" in out
    # CW's L2 budget is another threat model than linf eps 0.1: not part of the worst case
    assert "worst case (the headline): per image over FGSM (120), PGD-10 (120), Transfer (120)" in out
    assert "not CW-L2: another threat model" in out
    report = json.loads((target / "eval.json").read_text())
    # the suite asked for, and the checks' attacks (APGD-T: the suite had no targeted loss)
    assert set(report["attacks"]) == {"fgsm", "pgd", "cw", "transfer", "pgd_more_steps", "pgd_restarts", "apgd_t"}
    assert len(report["attacks"]["pgd"]["outcome"]) == 120
    assert report["surrogate"]["seed"] == 1 and report["run"]["method"] == "standard"
    assert (target / "eval_eps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args, message", [
    (["--attacks", "pgd,deepfool"], "attacks: unknown 'deepfool'"),
    (["--pgd-steps", "0"], "pgd_steps must be an int >= 1"),
    (["--eps", "8"], "did you mean 8/255"),
    (["--sweep", "0.1,2"], "sweep eps must be in [0, 1]"),
    (["--cw-budget", "-1"], "cw_budget must be finite and > 0"),
    (["--check-alpha", "1.5"], "check_alpha must be in (0, 1)"),
    (["--autoattack-steps", "0"], "autoattack_steps must be an int >= 1"),
])
def test_eval_bad_input_exits_2_and_writes_nothing(args, message, runs, capsys):
    target, _ = runs
    before = {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()}
    assert cli.main(["eval", str(target)] + args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in target.iterdir() if p.is_file()} == before


def test_eval_needs_a_trained_run(tmp_path, runs, capsys):
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert "not a gatfast run folder" in capsys.readouterr().err
    half = tmp_path / "half"
    half.mkdir()
    (half / "config.json").write_text((runs[0] / "config.json").read_text())
    assert cli.main(["eval", str(half)]) == 2
    assert "holds no trained model" in capsys.readouterr().err
    assert cli.main(["eval", str(runs[0]), "--surrogate", str(runs[0])]) == 2
    assert "separately trained" in capsys.readouterr().err


def test_sweep_resumes_and_report_names_missing_cells(tmp_path, monkeypatch, capsys):
    out = tmp_path / "sweep"
    args = ["sweep", "--datasets", "digits", "--methods", "standard,fgsm_rs", "--seeds", "0,1", "--eps", "0.1",
            "--epochs", "2", "--attacks", "fgsm,pgd,transfer", "--out", str(out)] + FAST_ARGS
    # Interrupt the sweep during the last cell's training: the earlier cells are kept (a
    # method's seeds train, then are evaluated, before the next method's).
    real_train, calls = train.train, []

    def stop_at_fourth(config, folder, **kw):
        calls.append((config.method, config.seed))
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_train(config, folder, **kw)

    monkeypatch.setattr(train, "train", stop_at_fourth)
    assert cli.main(args) == 130
    assert cli.main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "fgsm_rs / seed 1: not started" in text and "fgsm_rs / seed 0: evaluation missing" in text
    assert "standard / seed" not in text  # the first group is done
    # Run again: only the missing cell trains, then every cell is evaluated once.
    calls.clear()
    monkeypatch.setattr(train, "train", lambda config, folder, **kw: calls.append((config.method, config.seed))
                        or real_train(config, folder, **kw))
    evaluated = []
    real_eval = evaluate.evaluate_run
    monkeypatch.setattr(evaluate, "evaluate_run", lambda folder, *a, **kw: evaluated.append(folder)
                        or real_eval(folder, *a, **kw))
    capsys.readouterr()
    assert cli.main(args) == 0
    assert calls == [("fgsm_rs", 1)] and len(evaluated) == 2
    report = json.loads((out / "report.json").read_text())
    assert not report["missing"] and {r["method"] for r in report["rows"]} == {"standard", "fgsm_rs"}
    assert all(len(r["clean"]) == 2 for r in report["rows"])
    md = (out / "report.md").read_text()
    assert "| standard | 2 |" in md and "±" in md
    # each column says on how many images it ran (no slow attack here: the worst case saw all 120)
    header = next(line for line in md.splitlines() if line.startswith("| method"))
    assert "| clean (120 images) | FGSM (120 images) | PGD-10 (120 images) |" in header
    assert "| AutoAttack (not run) | clean (120 images) | worst case (120 images) |" in header
    assert "| certified, a lower bound (120 images) |" in header
    for png in ("robust_vs_eps.png", "clean_vs_robust.png", "train_time.png"):
        assert (out / png).stat().st_size > 1000
    # A third run does nothing but the report.
    calls.clear()
    evaluated.clear()
    assert cli.main(args) == 0
    assert calls == [] and evaluated == []


def test_a_sweep_resumes_on_another_machine_from_its_records_alone(tmp_path, monkeypatch):
    """A sweep folder copied without its checkpoints (a study outlives the machine): an
    evaluated cell is kept as it is, a trained but unevaluated one trains again, and the
    transfer surrogate that is not here trains as a copy, outside the cells."""
    import shutil
    out, moved = tmp_path / "here", tmp_path / "elsewhere"
    args = ["sweep", "--datasets", "digits", "--methods", "standard", "--seeds", "0,1", "--eps", "0.1",
            "--epochs", "1", "--attacks", "fgsm,transfer", "--out"]
    real_eval, real_train = evaluate.evaluate_run, train.train

    def stop_at_second(folder, *a, **kw):
        if folder.name == "seed1":
            raise KeyboardInterrupt
        return real_eval(folder, *a, **kw)

    monkeypatch.setattr(evaluate, "evaluate_run", stop_at_second)
    assert cli.main(args + [str(out)] + FAST_ARGS) == 130
    shutil.copytree(out, moved, ignore=shutil.ignore_patterns(train.CHECKPOINT))
    kept = (moved / "digits/standard/seed0/eval.json").read_text()
    trained = []
    monkeypatch.setattr(evaluate, "evaluate_run", real_eval)
    monkeypatch.setattr(train, "train", lambda config, folder, **kw: trained.append(Path(folder).relative_to(moved))
                        or real_train(config, folder, **kw))
    assert cli.main(args + [str(moved)] + FAST_ARGS) == 0
    assert trained == [Path("digits/standard/seed1"), Path(".surrogates/digits/standard/seed0")]
    assert (moved / "digits/standard/seed0/eval.json").read_text() == kept
    assert not (moved / "digits/standard/seed0" / train.CHECKPOINT).exists()
    transfer = json.loads((moved / "digits/standard/seed1/eval.json").read_text())["attacks"]["transfer"]
    assert 0 <= transfer["accuracy"] <= 1
    report = json.loads((moved / "report.json").read_text())
    assert not report["missing"] and report["rows"][0]["seeds"] == [0, 1]
    # the report says what ran the folder, and where and when its cells were evaluated
    import datetime
    import shlex
    commands = json.loads((moved / "sweep.json").read_text())["commands"]
    assert commands == [shlex.join(["gatfast"] + args + [str(folder)] + FAST_ARGS) for folder in (out, moved)]
    prov = report["provenance"]
    assert sum(prov["evaluated_on"].values()) == 2 and "not recorded" not in prov["evaluated_on"]
    assert prov["evaluated_between"] == [datetime.date.today().isoformat()] * 2
    md = (moved / "report.md").read_text()
    assert "## Provenance" in md and f"    {commands[1]}" in md


def test_sweep_bad_input(tmp_path, capsys):
    assert cli.main(["sweep", "--datasets", "digits,imagenet", "--out", str(tmp_path / "s")]) == 2
    assert "datasets: unknown 'imagenet'" in capsys.readouterr().err
    assert cli.main(["sweep", "--datasets", "digits", "--eps", "mnist5k=0.3", "--out", str(tmp_path / "s")]) == 2
    assert "no eps for digits" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    assert cli.main(["report", str(tmp_path)]) == 2


def test_readme_load_run_works_from_the_top(runs):
    import gatfast
    run = gatfast.load_run(runs[0])
    assert not run.classifier.training and run.config.dataset == "digits"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        gatfast.nothing


def test_sweep_report_says_how_many_images_each_column_ran_on():
    """The worst case runs on the first n_slow images while PGD runs on n: each header says
    its count, and the worst case has the clean accuracy on its own images beside it."""
    row = {"dataset": "digits", "method": "gat", "seeds": [0, 1], "eps": 0.1, "clean": [0.9, 0.92],
           "clean_images": [359, 359], "attacks": {"pgd": {"name": "PGD-100", "values": [0.6, 0.62],
                                                           "images": [359, 359]}},
           "autoattack": [0.55, 0.57], "autoattack_images": [100, 100], "worst_case": [0.5, 0.52],
           "worst_case_clean": [0.95, 0.97], "worst_case_images": [100, 100], "certified": [0.1, 0.2],
           "certified_images": [359, 359], "wall_s": [10.0, 12.0], "wall_s_as_run": [20.0, 24.0],
           "sweep": {}, "failed_checks": []}
    md = report._markdown([row], [], {"datasets": ["digits"], "methods": ["gat"], "seeds": [0, 1]})
    header, rule, line = [l for l in md.splitlines() if l.startswith("|")][:3]  # then the cost table
    assert header == ("| method | seeds | clean (359 images) | PGD-100 (359 images) | AutoAttack (100 images) "
                      "| clean (100 images) | worst case (100 images) | certified, a lower bound (359 images) "
                      "| train time (s) | train time as run (s) | failed checks |")
    assert rule.count("|---") == header.count("|") - 1
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2].startswith("91.0") and cells[5].startswith("96.0") and cells[6].startswith("51.0")
    assert cells[7].startswith("15.0")
    assert cells[8].startswith("11 ") and cells[9].startswith("22 ")  # the timing pass's, then the cells' own
    row["worst_case_images"] = [100, 80]
    assert "worst case (80-100 images)" in report._markdown([row], [], {"datasets": ["digits"], "methods": ["gat"],
                                                                       "seeds": [0, 1]})


def test_certified_below_empirical_has_no_tolerance():
    """One image that the bounds verified and an attack broke fails the check: a bound or
    an attack is wrong. Images the attack did not run on cannot violate it."""
    pgd = evaluate.AttackResult(name="PGD-10", description="", white_box=True, n=4, clean=1.0, accuracy=0.5,
                                seconds=0.0, outcome=torch.tensor([1, 0, 1, -1], dtype=torch.int8))
    config = evaluate.EvalConfig()
    ok = evaluate.certified_check({"pgd": pgd}, torch.tensor([True, False, True, True]), "linf", 0.1, config)
    assert ok["passed"] is True and "any of the 3 images the bounds verified" in ok["detail"]
    bad = evaluate.certified_check({"pgd": pgd}, torch.tensor([True, True, False, False]), "linf", 0.1, config)
    assert bad["passed"] is False and "PGD-10 (1)" in bad["detail"]
    assert evaluate.certified_check({"pgd": pgd}, None, "linf", 0.1, config)["passed"] is None


def test_eval_reports_the_certified_row_and_its_check(runs, capsys):
    assert cli.main(["eval", str(runs[0]), "--attacks", "fgsm,pgd"] + FAST_ARGS) == 0
    out = capsys.readouterr().out
    report = json.loads((runs[0] / "eval.json").read_text())
    c = report["certified"]
    assert c["method"] == "crown-ibp" and c["n"] == 120 and 0 <= c["accuracy"] <= report["worst_case"]["accuracy"]
    assert "certified (crown-ibp)" in out and "a lower bound on robust accuracy" in out
    check = next(ch for ch in report["checks"] if ch["name"] == "certified_below_empirical")
    assert check["passed"] is True
    assert cli.main(["eval", str(runs[0]), "--attacks", "fgsm", "--certified", "none"] + FAST_ARGS) == 0
    assert "certified" not in json.loads((runs[0] / "eval.json").read_text())


def _same_outcomes(a: dict, b: dict) -> None:
    """Two reports agree on everything but the seconds things took."""
    assert set(a["attacks"]) == set(b["attacks"])
    for key in a["attacks"]:
        assert {k: v for k, v in a["attacks"][key].items() if k != "seconds"} == \
               {k: v for k, v in b["attacks"][key].items() if k != "seconds"}, key
    for part in ("worst_case", "autoattack", "checks", "sweep", "clean"):
        assert a[part] == b[part], part


def test_a_stopped_evaluation_goes_on_from_its_journal_and_reports_what_an_unbroken_one_would(runs, monkeypatch):
    """A kill during the third attack: the two finished ones are in eval's journal, the next
    call runs only the rest, and its report is the unbroken evaluation's."""
    target, surrogate = runs
    config = evaluate.EvalConfig(**{**FAST, "attacks": ("fgsm", "pgd", "apgd_ce", "apgd_t", "square", "transfer")},
                                 certified="none")
    unbroken = evaluate.evaluate_run(target, config, surrogate_dir=surrogate, progress=False, out_name="unbroken.json")
    ran, real_run = [], evaluate._run_attack

    def killed_at_third(key, *args):
        ran.append(key)
        if len(ran) == 3:
            raise KeyboardInterrupt  # the machine's time ran out
        return real_run(key, *args)

    monkeypatch.setattr(evaluate, "_run_attack", killed_at_third)
    with pytest.raises(KeyboardInterrupt):
        evaluate.evaluate_run(target, config, surrogate_dir=surrogate, progress=False, out_name="stopped.json")
    journal = target / "stopped.partial.json"
    assert not (target / "stopped.json").exists()
    recorded = json.loads(journal.read_text())["attacks"]
    assert set(recorded) == set(ran[:2]) == {"fgsm", "pgd"}
    ran.clear()
    lines = []
    monkeypatch.setattr(evaluate, "_run_attack", lambda key, *a: (ran.append(key), real_run(key, *a))[1])
    resumed = evaluate.evaluate_run(target, config, surrogate_dir=surrogate, progress=False,
                                    out_name="stopped.json", log=lines.append)
    assert "fgsm" not in ran and "pgd" not in ran and "apgd_ce" in ran   # only what was left
    assert any("2 attacks finished before" in line for line in lines)
    assert any("from the journal" in line and "FGSM" in line for line in lines)
    assert not journal.exists()   # the report holds it all now
    _same_outcomes(resumed, unbroken)
    assert resumed["attacks"]["pgd"]["seconds"] == recorded["pgd"]["seconds"] > 0  # what it cost when it ran


def test_a_journal_of_other_settings_or_weights_is_not_trusted(runs, tmp_path):
    target, surrogate = runs
    config = evaluate.EvalConfig(**{**FAST, "attacks": ("fgsm", "pgd")}, certified="none")
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("config.json", "summary.json", train.CHECKPOINT):
        (folder / name).write_bytes((target / name).read_bytes())
    # a journal that says PGD broke nothing: of another seed's settings, it must not be used
    report = evaluate.evaluate_run(folder, config, progress=False, out_name="first.json")
    forged = {k: {**r, "accuracy": 1.0, "outcome": [1] * len(r["outcome"])} for k, r in report["attacks"].items()}
    from gatfast.evaluation import journal
    other = evaluate.EvalConfig(**{**FAST, "attacks": ("fgsm", "pgd"), "seed": 1}, certified="none")
    journal.save(folder / "eval.partial.json", "another question", forged)
    lines = []
    honest = evaluate.evaluate_run(folder, other, progress=False, log=lines.append)
    assert any("of other settings, images or weights: evaluating from the start" in line for line in lines)
    assert honest["attacks"]["pgd"]["accuracy"] < 1.0
    # the fingerprint changes with one weight's last bit, the images, or a setting
    model = train.load_run(folder).classifier
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    key = journal.fingerprint({"eps": 0.1}, [x, y], [model, None])
    assert key == journal.fingerprint({"eps": 0.1}, [x.clone(), y], [model, None])
    assert key != journal.fingerprint({"eps": 0.2}, [x, y], [model, None])
    assert key != journal.fingerprint({"eps": 0.1}, [x, y.flip(0)], [model, None])
    with torch.no_grad():
        p = next(model.parameters())
        p.view(-1)[0] = torch.nextafter(p.view(-1)[0], torch.tensor(float("inf")))
    assert key != journal.fingerprint({"eps": 0.1}, [x, y], [model, None])
