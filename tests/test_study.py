"""Variants in a sweep (a method with options), the frontier of robustness per training
cost, and the `gatfast study` preset that runs the headline study."""

import json

import pytest

from gatfast import cli, train
from gatfast.evaluation import frontier, report, study, sweep, variants

FAST_EVAL = ["--attacks", "fgsm,pgd", "--n", "40", "--n-slow", "40", "--pgd-steps", "5", "--sweep", "0.1",
             "--sweep-steps", "1", "--check-factor", "2", "--check-restarts", "2", "--certified", "ibp",
             "--no-progress"]


def test_a_variant_is_a_method_with_options():
    v = variants.parse("pgd_at:attack_steps=3")
    assert (v.method, v.options, v.folder, v.match) == ("pgd_at", (("attack_steps", 3),), "pgd_at_attack_steps-3",
                                                        None)
    assert variants.parse("pgd_at").folder == "pgd_at"  # a plain method keeps its folder
    gat = variants.parse("gat:recipe=paper:generator_width=8")
    assert gat.config_options() == {**train.RECIPES["paper"], "generator_width": 8, "recipe": "paper"}
    crown = variants.parse("crown_ibp:model=cert_cnn:epochs=60:eps-warmup=none")
    assert crown.config_options() == {"model": "cert_cnn", "epochs": 60, "eps_warmup": None}
    matched = variants.parse("gat:recipe=l2l-3:match=pgd_at")
    assert (matched.base, matched.match) == ("gat:recipe=l2l-3", "pgd_at")
    assert matched.timed == "gat:recipe=l2l-3"   # its steps are its base's
    assert variants.parse("gat:generator-lr=0.001:recipe=paper:lr=0.01").timed == "gat:recipe=paper"
    spaced = variants.parse("gat:recipe=paper: match =pgd_at")  # parse, base and timed read a part alike
    assert (spaced.match, spaced.base, spaced.timed) == ("pgd_at", "gat:recipe=paper", "gat:recipe=paper")


@pytest.mark.parametrize("label,words", [
    ("nonsense", "unknown method 'nonsense'"), ("pgd_at:steps=3", "'steps' is not an option"),
    ("pgd_at:attack_steps=x", "attack_steps='x' is not"), ("pgd_at:attack_steps", "is not FIELD=VALUE"),
    ("gat:seed=1", "'seed' is not an option"), ("gat:match=pgd_at:epochs=3", "match sets the epochs"),
])
def test_a_bad_variant_is_refused_by_name(label, words):
    with pytest.raises(train.ConfigError, match=words):
        variants.parse(label)


def _sweep_spec(methods, first=()):
    from gatfast.evaluation import suite
    return sweep.SweepSpec(datasets=("digits",), methods=methods, seeds=(0,), eps={"digits": 0.1},
                           train_options={"epochs": 2, "train_size": 64}, eval_config=suite.EvalConfig(),
                           first=first)


def test_a_sweep_checks_what_match_needs():
    with pytest.raises(train.ConfigError, match="its base 'gat' must be in --methods too"):
        sweep.validate(_sweep_spec(("pgd_at", "gat:match=pgd_at")))
    with pytest.raises(train.ConfigError, match="'pgd_at' must train before it"):
        sweep.validate(_sweep_spec(("gat", "pgd_at", "gat:match=pgd_at"), first=("gat", "gat:match=pgd_at")))
    with pytest.raises(train.ConfigError, match="--methods pgd_at:attack_steps=0: attack-steps must be"):
        sweep.validate(_sweep_spec(("pgd_at:attack_steps=0",)))
    with pytest.raises(train.ConfigError, match="epochs must be"):  # the sweep's own option: not the variant's
        sweep.validate(sweep.SweepSpec(**{**_sweep_spec(("pgd_at:attack_steps=2",)).__dict__,
                                          "train_options": {"epochs": 0}}))
    sweep.validate(_sweep_spec(("gat", "pgd_at", "gat:match=pgd_at"), first=("gat", "pgd_at")))


@pytest.mark.slow  # five trainings and evaluations, about a minute
def test_a_sweep_of_variants_trains_each_as_asked_and_reports_the_frontier(tmp_path):
    out = tmp_path / "sweep"
    methods = "standard,fgsm_rs,pgd_at:attack_steps=2,pgd_at,standard:match=pgd_at"
    args = ["sweep", "--datasets", "digits", "--methods", methods, "--seeds", "0", "--eps", "0.1", "--epochs", "2",
            "--train-size", "64", "--out", str(out)] + FAST_EVAL
    assert cli.main(args) == 0
    two = json.loads((out / "digits" / "pgd_at_attack_steps-2" / "seed0" / "config.json").read_text())["config"]
    assert (two["method"], two["attack_steps"], two["epochs"]) == ("pgd_at", 2, 2)
    walls = {m: json.loads((out / "digits" / m / "seed0" / "summary.json").read_text())["train_wall_s"]
             for m in ("standard", "pgd_at")}
    matched = json.loads((out / "digits" / "standard_match-pgd_at" / "seed0" / "config.json").read_text())["config"]
    # The epochs follow the two runs' walls; not "> 2": on 64 images a loaded machine can bring
    # PGD-10's wall within 25% of standard's, which says nothing about the sweep.
    assert matched["epochs"] == max(1, round(2 * walls["pgd_at"] / walls["standard"]))
    report = json.loads((out / "report.json").read_text())
    rows = {r["method"]: r for r in report["rows"]}
    assert rows["pgd_at"]["flops"][0] > rows["pgd_at:attack_steps=2"]["flops"][0] > rows["standard"]["flops"][0]
    verdicts = {v["label"]: v for v in report["frontier"]["digits"]}
    assert {"standard", "standard:match=pgd_at"} <= set(verdicts)
    for label, v in verdicts.items():
        assert v["flops"]["verdict"] and v["wall_s"]["verdict"]
        if variants.parse(label).method in frontier.FAMILY:  # a PGD-AT run has an entry only when off the front
            assert any(v[c]["verdict"].startswith("off the frontier") for c in frontier.COSTS)
    md = (out / "report.md").read_text()
    assert "### Robustness per training cost" in md and "| pgd_at:attack_steps=2 |" in md
    assert (out / "robust_vs_cost.png").stat().st_size > 1000


def _row(method, robust, wall, flops, seeds=2):
    return {"method": method, "worst_case": [robust] * seeds, "clean": [0.98] * seeds, "wall_s": [wall] * seeds,
            "flops": [flops] * seeds}


def test_the_frontier_interpolates_between_the_pgd_at_runs_around_a_cost():
    rows = [_row("fgsm_rs", 0.50, 100, 1e12), _row("pgd_at:attack_steps=3", 0.70, 300, 3e12),
            _row("pgd_at", 0.80, 800, 8e12)]
    points = [frontier.point(r) for r in rows]
    assert frontier.reference(points, "wall_s", 200) == pytest.approx(0.60)
    assert frontier.reference(points, "flops", 5.5e12) == pytest.approx(0.75)
    assert frontier.reference(points, "wall_s", 900) == pytest.approx(0.80)  # past the costliest: its accuracy
    assert frontier.reference(points, "wall_s", 50) is None
    verdicts = {v["label"]: v for v in frontier.verdicts(rows + [
        _row("gat", 0.62, 200, 3e12), _row("trades", 0.40, 50, 0.5e12), _row("gat:epochs=2", 0.55, 50, 0.5e12)])}
    assert verdicts["gat"]["wall_s"]["verdict"] == "on or above"            # 0.62 against 0.60
    assert verdicts["gat"]["wall_s"]["margin"] == pytest.approx(0.02)
    assert verdicts["gat"]["flops"]["verdict"] == "below"                   # 0.62 against 0.70
    assert verdicts["trades"]["wall_s"]["verdict"].startswith("undecided")  # cheaper and less robust
    assert verdicts["gat:epochs=2"]["wall_s"]["verdict"] == "on or above"   # cheaper and more robust
    costly = frontier.verdicts(rows + [_row("gat", 0.85, 900, 9e12), _row("trades", 0.70, 900, 5e12)])
    assert costly[0]["wall_s"]["verdict"] == "on or above: costlier than every PGD-AT run"  # against PGD-10's 0.80
    assert costly[1]["wall_s"]["verdict"] == "below: costlier than every PGD-AT run"
    assert costly[1]["flops"]["verdict"] == "below"                          # 0.70 against 0.74, inside the line


def test_a_pgd_at_run_that_a_cheaper_one_matches_is_off_the_frontier_and_does_not_lower_it():
    """PGD-5 AT less robust than PGD-3 AT: a user with PGD-5's budget picks PGD-3, so the
    frontier stays at PGD-3's accuracy from there on, and PGD-5's row says what beats it."""
    rows = [_row("fgsm_rs", 0.50, 100, 1e12), _row("pgd_at:attack_steps=3", 0.70, 300, 3e12),
            _row("pgd_at:attack_steps=5", 0.66, 500, 5e12), _row("pgd_at", 0.80, 1000, 10e12)]
    points = [frontier.point(r) for r in rows]
    assert [p["label"] for p in frontier.pareto(points, "flops")] == ["fgsm_rs", "pgd_at:attack_steps=3", "pgd_at"]
    # between PGD-3 and PGD-10 the line skips PGD-5: 0.70 + (0.80 - 0.70) * 2/7 at 5e12
    assert frontier.reference(points, "flops", 5e12) == pytest.approx(0.70 + 0.1 * 2 / 7)
    verdicts = {v["label"]: v for v in frontier.verdicts(rows + [_row("gat", 0.68, 500, 5e12)])}
    assert verdicts["gat"]["flops"]["verdict"] == "below"  # above PGD-5's 0.66, below the frontier's 0.73
    off = verdicts["pgd_at:attack_steps=5"]["flops"]
    assert off["verdict"] == "off the frontier: pgd_at:attack_steps=3 costs no more and is as robust"
    assert off["margin"] == pytest.approx(0.66 - (0.70 + 0.1 * 2 / 7))
    assert not {"fgsm_rs", "pgd_at:attack_steps=3", "pgd_at"} & set(verdicts)  # on the frontier: no entry
    # past the costliest run the frontier is the best run's accuracy, not the costliest's
    flat = [frontier.point(r) for r in rows[:3]]
    assert frontier.reference(flat, "wall_s", 900) == pytest.approx(0.70)
    assert frontier.fronts(flat)["wall_s"][-1]["label"] == "pgd_at:attack_steps=3"


def test_a_study_without_pgd_at_runs_yet_says_so_rather_than_not_measured():
    verdicts = frontier.verdicts([_row("gat", 0.7, 300, 3e12), {**_row("standard", 0.0, 60, 1e12), "wall_s": []}])
    by_label = {v["label"]: v for v in verdicts}
    assert by_label["gat"]["flops"]["verdict"] == "no PGD-AT run evaluated yet"
    assert by_label["standard"]["wall_s"]["verdict"] == "not measured"  # its own cost is missing


def test_the_study_is_every_defence_headline_first_on_the_whole_test_split():
    spec = study.spec()
    sweep.validate(spec)  # every variant of the study is a valid cell on both datasets
    first, rest = spec.stages()
    assert {m for _, m, _ in first} == set(study.HEADLINE)
    assert {"pgd_at:attack_steps=2", "gat:match=pgd_at", "crown_ibp:model=cert_cnn:epochs=60"} <= \
        {m for _, m, _ in rest}
    assert spec.seeds == (0, 1, 2) and spec.eval_config.n == spec.eval_config.n_slow == 1000  # mnist5k's split
    assert spec.eps == {"mnist5k": 0.3, "digits": 0.1}
    assert "autoattack" in spec.eval_config.attacks


def test_study_plan_prints_the_order_and_writes_nothing(tmp_path, capsys):
    assert cli.main(["study", "--datasets", "digits", "--seeds", "0", "--plan", "--out", str(tmp_path / "s")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("stage 1 (headline): 5 cells") and "digits gat:match=pgd_at seed 0" in err
    assert not (tmp_path / "s").exists()


def test_the_report_counts_the_flops_of_a_run_trained_before_they_were_recorded(tmp_path):
    config = train.TrainConfig(dataset="digits", method="standard", eps=0.1, epochs=1, train_size=64,
                               eval_pgd_steps=0, progress=False)
    train.train(config, tmp_path, log=lambda *_: None)
    summary = json.loads((tmp_path / "summary.json").read_text())
    recorded = summary.pop("train_flops")
    assert recorded > 0 and report._flops(tmp_path, summary) == pytest.approx(recorded, rel=1e-9)  # from config.json
    assert report._flops(tmp_path, {**summary, "train_flops": None}) is None          # a failed count stays failed
    assert report._flops(tmp_path, {}) is None                                        # not trained


def test_study_train_only_trains_every_cell_and_evaluates_none(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["study", "--datasets", "digits", "--methods", "standard,fgsm_rs", "--seeds", "0,1", "--epochs", "1",
            "--train-only", "--no-progress", "--out", str(out)]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert "stage 1 (headline): 4 cells, trained (--train-only)" in captured.err
    assert "without --train-only evaluates them" in captured.out
    trained = sorted(p.parent.relative_to(out).as_posix() for p in out.rglob("summary.json"))
    assert trained == ["digits/fgsm_rs/seed0", "digits/fgsm_rs/seed1", "digits/standard/seed0", "digits/standard/seed1"]
    assert not list(out.rglob("eval.json")) and not (out / "report.md").exists()
    # the wall-time axis: both variants' steps timed in turns before any cell trained
    timing = json.loads((out / "timing.json").read_text())
    assert set(timing["cells"]) == {"digits/standard", "digits/fgsm_rs"}
    assert captured.out.index("timing the steps of 2 variants") < captured.out.index("digits standard seed 0: training")
    for cell in timing["cells"].values():
        assert len(cell["epoch_s"]) == 1 and cell["total_s"] > 0
    assert timing["environment"]["device"] == "cpu" and timing["rounds"] == 5
    assert cli.main(args) == 0 and "timing the steps" not in capsys.readouterr().out  # timed once
    assert cli.main(args + ["--retime"]) == 0 and "timing the steps of 2" in capsys.readouterr().out


def _timing(**totals):
    return {"date": "2026-12-02", "rounds": 5, "steps": 3,
            "environment": {"cpu_model": "Test CPU", "threads": 2},
            "cells": {label: {"epoch_s": [total / 2, total / 2], "total_s": total} for label, total in totals.items()}}


def test_a_timed_sweep_takes_its_wall_times_and_matched_epochs_from_the_timing_pass(tmp_path):
    timing = _timing(**{"digits/gat": 100.0, "digits/pgd_at": 250.0})
    (tmp_path / "timing.json").write_text(json.dumps(timing))
    spec = _sweep_spec(("gat", "pgd_at", "gat:match=pgd_at"), first=("gat", "pgd_at"))
    assert sweep.matched_epochs(tmp_path, spec, "digits", "gat:match=pgd_at", 0) == 5  # 2 epochs x 250 / 100
    assert sweep.timed_labels(spec) == ["digits/gat", "digits/pgd_at"]  # a match variant's steps are its base's
    assert sweep.timed_wall(timing, "digits", "pgd_at", 2) == 250.0
    assert sweep.timed_wall(timing, "digits", "pgd_at", 1) == 125.0       # stopped after one epoch
    assert sweep.timed_wall(timing, "digits", "gat:match=pgd_at", 5) == 250.0  # gat's epochs, five of them
    assert sweep.timed_wall(timing, "digits", "trades", 2) is None      # not timed
    assert sweep.timed_wall(None, "digits", "gat", 2) is None
    # a learning rate changes no step's cost: such a variant has its twin's timed steps
    slower = _sweep_spec(("gat", "pgd_at", "gat:generator_lr=0.001", "pgd_at:lr=0.01:attack_steps=3"))
    assert sweep.timed_labels(slower) == ["digits/gat", "digits/pgd_at", "digits/pgd_at:attack_steps=3"]
    assert sweep.timed_wall(timing, "digits", "gat:generator_lr=0.001", 2) == 100.0
    assert sweep.timed_wall(timing, "digits", "gat:generator_width=64", 2) is None  # a wider one costs more
    matched = _sweep_spec(("gat:generator_lr=0.001", "pgd_at", "gat:generator_lr=0.001:match=pgd_at"),
                          first=("gat:generator_lr=0.001", "pgd_at"))
    assert sweep.matched_epochs(tmp_path, matched, "digits", "gat:generator_lr=0.001:match=pgd_at", 0) == 5
    group = [{"epochs": 2, "wall_s": 700.0}, {"epochs": 2, "wall_s": 390.0}]  # as run: two machines
    assert report._walls(timing, "digits", "gat", group) == [100.0, 100.0]
    assert report._walls(None, "digits", "gat", group) == [700.0, 390.0]
    rows = [{"machines": ["AMD EPYC, 2 threads", "Intel Xeon, 2 threads"]}]
    assert report._wall_basis(timing, rows).startswith("Wall times are the timing pass's (Test CPU, 2 threads, ")
    assert "compare methods only where the cells trained on one machine" in report._wall_basis(None, rows)
    assert "trained on AMD EPYC, 2 threads; Intel Xeon" in report._wall_basis(None, rows)


def test_a_study_with_a_time_limit_starts_nothing_after_it_and_goes_on_later(tmp_path, monkeypatch, capsys):
    """--stop-after: for a machine or job whose time runs out. The clock here moves an hour
    at each look: with 1.5 hours, the first cell trains and nothing else starts."""
    hours = iter(range(1000))
    monkeypatch.setattr(sweep, "_clock", lambda: 3600.0 * next(hours))
    out = tmp_path / "s"
    args = ["study", "--datasets", "digits", "--methods", "standard", "--seeds", "0,1", "--epochs", "1",
            "--train-only", "--no-progress", "--out", str(out)]
    assert cli.main(args + ["--stop-after", "1.5"]) == 0
    captured = capsys.readouterr()
    assert "digits standard seed 1: not trained: the time limit (1.5 h) has passed" in captured.out
    assert "stopped at the time limit with 2 cells to go" in captured.out
    assert [p.parent.name for p in out.rglob("summary.json")] == ["seed0"]
    assert cli.main(args) == 0  # no limit: the rest
    assert "digits standard seed 0: trained" in capsys.readouterr().out
    assert sorted(p.parent.name for p in out.rglob("summary.json")) == ["seed0", "seed1"]


def test_the_frontier_plot_shows_clean_and_certified_accuracy_below_the_robust(tmp_path, monkeypatch):
    """The top row is robust accuracy against each cost; the row below has, at the same cost,
    each variant's clean accuracy and, where it was bounded, its certified accuracy. The
    frontier's line joins the PGD-AT runs on it and passes by one a cheaper run matches."""
    from gatfast.evaluation import plots
    rows = [_row("fgsm_rs", 0.50, 100, 1e12), _row("pgd_at", 0.80, 800, 8e12),
            _row("pgd_at:attack_steps=5", 0.45, 500, 5e12), _row("pgd_at:attack_steps=20", 0.78, 900, 9e12),
            {**_row("crown_ibp", 0.70, 300, 3e12), "clean": [0.96, 0.94], "certified": [0.6, 0.5]},
            _row("gat", 0.60, 400, 4e12)]
    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.update(fig=fig))
    points = [frontier.point(r) for r in rows]
    plots.frontier(points, tmp_path / "f.png", title="t", family=frontier.FAMILY, fronts=frontier.fronts(points),
                   costs=frontier.COSTS, subject="gat")
    axes = drawn["fig"].axes
    # the subject is the one star; the frontier's runs squares, the rest circles
    handles, labels = axes[0].get_legend_handles_labels()
    markers = {label: (h.lines[0] if hasattr(h, "lines") else h).get_marker() for h, label in zip(handles, labels)}
    assert markers == {"PGD-AT frontier": "None", "fgsm_rs": "s", "pgd_at": "s", "pgd_at:attack_steps=5": "s",
                       "pgd_at:attack_steps=20": "s", "crown_ibp": "o", "gat": "*"}
    line = handles[labels.index("PGD-AT frontier")]
    # by PGD-5's 45% and PGD-20's 78%, and flat from PGD-10's 80% to PGD-20's cost
    assert list(line.get_xdata()) == [100, 800, 900] and list(line.get_ydata()) == [50, 80, 80]
    assert len(axes) == 4  # robust over clean/certified, for wall time and for FLOPs
    for top, bottom in ((axes[0], axes[2]), (axes[1], axes[3])):
        assert top.get_ylabel().startswith("worst-case robust")
        below = {(float(line.get_xdata()[0]), round(float(line.get_ydata()[0]), 6), line.get_marker())
                 for line in bottom.get_lines()}
        x = 300 if top is axes[0] else 3e12
        assert (x, 95.0, "o") in below and (x, 55.0, "x") in below  # crown_ibp's clean and certified means
        assert not any(marker == "x" for cost, _, marker in below if cost != x)  # the others were not bounded


def test_study_plan_of_a_study_begun_says_each_cells_state_and_the_time_to_go(tmp_path):
    """Training from the timing pass; evaluation as the same variant's evaluated cells took,
    else as the dataset's robust ones did; nothing to guess from: unknown, and counted."""
    out = tmp_path / "s"
    spec = study.spec(("digits",), (0, 1), methods=("standard", "gat", "pgd_at"))
    timed = {f"digits/{m}": {"epoch_s": [per] * 20, "total_s": 20 * per}
             for m, per in (("standard", 1.0), ("gat", 3.0), ("pgd_at", 6.0))}
    (out).mkdir()
    (out / sweep.TIMING).write_text(json.dumps({"date": "2026-12-07", "environment": {"cpu_model": "CPU X", "threads": 2},
                                                "cells": timed}))

    def evaluated(method, seed, worst, seconds):
        folder = sweep.cell_dir(out, "digits", method, seed)
        folder.mkdir(parents=True)
        (folder / "eval.json").write_text(json.dumps({"attacks": {"pgd": {"seconds": seconds}},
                                                      "certified": {"seconds": 5.0},
                                                      "worst_case": {"accuracy": worst}}))

    evaluated("standard", 0, 0.0, 10.0)
    evaluated("gat", 0, 0.6, 100.0)
    trained = sweep.cell_dir(out, "digits", "gat", 1)
    trained.mkdir(parents=True)
    for name in ("summary.json", train.CHECKPOINT):
        (trained / name).write_text("{}")
    costs = study.budget(spec, out)
    assert costs[("digits", "standard", 0)] == {"state": "evaluated", "train_s": 0.0, "eval_s": 0.0}
    assert costs[("digits", "standard", 1)] == {"state": "to do", "train_s": 20.0, "eval_s": 15.0}  # its own
    assert costs[("digits", "gat", 1)] == {"state": "trained", "train_s": 0.0, "eval_s": 105.0}
    assert costs[("digits", "pgd_at", 0)] == {"state": "to do", "train_s": 120.0, "eval_s": 105.0}  # the robust
    lines = study.plan(spec, out=out)
    assert "  digits gat seed 1: trained (evaluate 2 min)" in lines
    assert "  digits pgd_at seed 1: to do (train 2 min, evaluate 2 min)" in lines
    assert lines[-1] == ("to go: 4 of 6 cells, about 4 min of training (the timing pass: CPU X, 2 threads, 2026-12-07) and "
                         "6 min of evaluation (as the cells evaluated so far took)")
    (sweep.cell_dir(out, "digits", "gat", 0) / "eval.json").unlink()  # no robust cell evaluated: no guide
    assert study.budget(spec, out)[("digits", "pgd_at", 0)]["eval_s"] is None
    assert study.plan(spec, out=out)[-1].endswith("; 4 cells have no estimate yet (no timing pass, or no cell "
                                                  "of theirs or robust one evaluated)")


def test_provenance_names_each_cells_machines_software_and_dates(tmp_path):
    """Cells trained and evaluated on different machines and days, one evaluated before
    eval.json recorded its machine: each counted under its own, the old one as such."""
    from gatfast.evaluation import provenance
    cpu = {"cpu_model": "AMD EPYC", "threads": 2, "gatfast": "0.1.0", "torch": "2.14.1", "python": "3.11.7"}
    gpu = {"gpu": "NVIDIA H100", "gatfast": "0.1.0", "torch": "2.11.0", "python": "3.12.3"}
    cells = []
    for name, trained_on, evaluated in (("a", cpu, {"environment": gpu, "date": "2026-12-09"}),
                                        ("b", cpu, {"environment": cpu, "date": "2026-12-07"}),
                                        ("c", gpu, {}), ("d", cpu, None)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"environment": trained_on}))
        if evaluated is not None:
            (folder / "eval.json").write_text(json.dumps(evaluated))
        cells.append(folder)
    first = {"commands": provenance.add_command(None, "gatfast study --out s")}
    spec = {"commands": provenance.add_command(first, "gatfast study --out s")}
    prov = provenance.collect(spec, cells + [tmp_path / "never-started"],
                              {"environment": cpu, "date": "2026-12-07"})
    assert prov["commands"] == ["gatfast study --out s"]  # a command that ran twice is listed once
    assert prov["trained_on"] == {"AMD EPYC, 2 threads": 3, "NVIDIA H100": 1}
    assert prov["evaluated_on"] == {"NVIDIA H100": 1, "AMD EPYC, 2 threads": 1, "not recorded": 1}
    assert prov["evaluated_between"] == ["2026-12-07", "2026-12-09"]
    assert prov["software"] == {"gatfast 0.1.0, torch 2.14.1, Python 3.11.7": 3,
                                "gatfast 0.1.0, torch 2.11.0, Python 3.12.3": 1}
    md = "\n".join(provenance.markdown(prov))
    assert "- Trained on (cells): AMD EPYC, 2 threads (3); NVIDIA H100 (1)" in md
    assert "- Evaluated on (cells): AMD EPYC, 2 threads (1); NVIDIA H100 (1); not recorded (1), between " \
           "2026-12-07 and 2026-12-09" in md
    assert "- Wall-time axis: the timing pass on AMD EPYC, 2 threads, 2026-12-07" in md
