"""Bad input, tried systematically: every flag of every verb of the `gatfast` command with
bad values (negative, zero where a count, NaN, inf, out of range, the wrong type, unknown
names, incompatible combinations), and the same values given to the Python API.

Each command must exit with status 2 and print one line on stderr that names the flag,
with no traceback, and write nothing: no run folder, no eval.json, no result file.
Every flag the parser has must appear in the walk (a new flag fails
test_every_flag_is_walked until it has bad values here).
"""

from __future__ import annotations

import argparse
import json
import math
import os

import pytest
import torch

from gatfast import cli, train
from gatfast.train import TrainConfig

# ---- the walk ----------------------------------------------------------------------------------

INT_BAD = ("-1", "1.5", "x")                 # and "0" where the flag is a count of at least one
FLOAT_BAD = ("nan", "inf", "-1", "x")
ZERO_ALLOWED = {"--seed", "--train-size", "--latent-dim", "--generator-blocks", "--eval-pgd-steps",
                "--generator-random-init", "--weight-decay", "--trades-beta", "--c-g", "--eps-warmup", "--alpha",
                "--warmup", "--kappa-end", "--beta-end", "--smoothing-n"}
CHOICE_FLAGS = {"--dataset", "--method", "--model", "--norm", "--optimizer", "--schedule", "--amp", "--backend",
                "--generator-input", "--generator-bound", "--generator-resolution", "--recipe", "--certified"}

# Values beyond the generic ones, per flag (all verbs).
EXTRA = {
    "--eps": ("0", "2"),                       # 2: beyond the [0, 1] pixel range for linf
    "--alpha": ("1.5",),
    "--kappa-end": ("1.5",),
    "--radii": ("x", "-1", "nan", ",", "0.5,x"),
    "--beta-end": ("1.5",),
    "--generator-random-init": ("2",),
    "--check-alpha": ("0", "1"),
    "--device": ("tpu", "cuda:x", "cuda:0,1") + (() if torch.cuda.is_available() else ("cuda",)),
    "--attacks": ("nonsense", "fgsm,nonsense", ","),
    "--sweep": ("a", "-0.1", "2", "nan"),
    "--datasets": ("nonsense", "digits,imagenet", ","),
    "--methods": ("nonsense", ",", "pgd_at:nonsense=1", "pgd_at:attack_steps=x", "pgd_at:attack_steps",
                  "pgd_at:attack_steps=0", "gat:recipe=nonsense", "gat:match=pgd_at", "pgd_at,pgd_at",
                  "gat:seed=3"),
    "--seeds": ("x", "-1", "1.5", ","),
    "--case": ("nonsense:1", "small_cnn:0", "small_cnn", "small_cnn:x"),
    "--variants": ("nonsense",),
}
SWEEP_EPS = ("x", "nan", "-1", "0", "2", "digits=x", "mnist5k=0.1", "digits=0.1,imagenet=0.1")
CERTIFY_EPS = ("x", "nan", "inf", "-1", "2", ",", "0.1,x")


def _values(action: argparse.Action) -> list[str]:
    flag = action.option_strings[0]
    if flag in CHOICE_FLAGS:
        values = ["nonsense"]
    elif action.type is int:
        values = list(INT_BAD) + ([] if flag in ZERO_ALLOWED else ["0"])
    elif action.type is float:
        values = list(FLOAT_BAD) + ([] if flag in ZERO_ALLOWED else ["0"])
    else:
        values = []
    return values + [v for v in EXTRA.get(flag, ()) if v not in values]


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


# The smallest valid command of each verb; the walk changes one flag of it at a time.
# {run} is a trained digits run, {other} one trained on mnist5k, {tmp} an empty folder.
FAST_EVAL = ["--attacks", "fgsm", "--n", "20", "--sweep", "0.1", "--sweep-steps", "1", "--no-progress"]
BASE = {
    "train": ["--dataset", "digits", "--method", "gat", "--epochs", "1", "--train-size", "64", "--batch-size", "32",
              "--eval-pgd-steps", "0", "--generator-width", "4", "--no-progress", "--out", "{tmp}/run"],
    "eval": ["{run}"] + FAST_EVAL,
    "sweep": ["--datasets", "digits", "--methods", "standard", "--seeds", "0", "--eps", "0.1", "--epochs", "1",
              "--train-size", "64"] + FAST_EVAL + ["--out", "{tmp}/sweep"],
    "bench": ["--iters", "1", "--warmup", "0", "--case", "small_cnn:8", "--out", "{tmp}/bench"],
    "bench-pgd": ["--run", "{run}", "--steps", "1", "--rounds", "1", "--out", "{tmp}/bench"],
    "bench-autoattack": ["{run}", "--n", "4", "--variants", "gatfast", "--out", "{tmp}/bench"],
    "study": ["--datasets", "digits", "--methods", "standard", "--seeds", "0", "--eps", "0.1", "--epochs", "1",
              "--plan", "--out", "{tmp}/study"],
    "report": ["{tmp}/sweep"],
    "certify": ["{run}", "--eps", "0.01", "--n", "20"],
}
# Flags whose values are paths or folders: their bad values are named below.
PATH_FLAGS = {"--out", "--data-root", "--surrogate", "--run"}

# Whole commands: bad paths, and flags that are fine alone but not together. (name, verb,
# args, the word the error must name).
COMBINATIONS = [
    ("train --out is a file", "train", ["--dataset", "digits", "--out", "{file}"], "--out"),
    ("train --resume without a run", "train", ["--out", "{tmp}/nothing", "--resume"], "--resume"),
    ("train --resume changing the method", "train", ["--out", "{run}", "--resume", "--method", "pgd_at"],
     "--method"),
    ("train --resume with fewer epochs", "train", ["--out", "{run}", "--resume", "--epochs", "0"], "epochs"),
    ("train into an existing run", "train", ["--dataset", "digits", "--out", "{run}"], "--resume"),
    ("train a torchvision set without its files", "train",
     ["--dataset", "cifar10", "--data-root", "{tmp}", "--out", "{tmp}/run"], "cifar10"),
    ("train --data-root missing", "train", ["--dataset", "digits", "--data-root", "{tmp}/nothing", "--out",
                                            "{tmp}/run"], "--data-root"),
    ("eval --data-root missing", "eval", ["{run}", "--data-root", "{tmp}/nothing"] + FAST_EVAL, "--data-root"),
    ("sweep --data-root missing", "sweep", BASE["sweep"] + ["--data-root", "{tmp}/nothing"], "--data-root"),
    ("train --norm l2 with a linf generator bound", "train",
     ["--dataset", "digits", "--norm", "l2", "--eps", "1", "--generator-bound", "linf", "--out", "{tmp}/run"],
     "generator-bound"),
    ("train --single-pass with a gradient-reading generator", "train",
     ["--dataset", "digits", "--single-pass", "--out", "{tmp}/run"], "single-pass"),
    ("train --single-pass with pgd_at", "train",
     ["--dataset", "digits", "--method", "pgd_at", "--single-pass", "--out", "{tmp}/run"], "single-pass"),
    ("train crown_ibp on a model with BatchNorm", "train",
     ["--dataset", "digits", "--method", "crown_ibp", "--model", "preact_resnet18", "--out", "{tmp}/run"], "model"),
    ("train --beta-end with ibp", "train",
     ["--dataset", "digits", "--method", "ibp", "--beta-end", "0.5", "--out", "{tmp}/run"], "beta-end"),
    ("train --cuda-graph with pgd_at", "train",
     ["--dataset", "digits", "--method", "pgd_at", "--cuda-graph", "--out", "{tmp}/run"], "cuda-graph"),
    ("train --backend cuda on the CPU", "train",
     ["--dataset", "digits", "--backend", "cuda", "--device", "cpu", "--out", "{tmp}/run"], "--backend"),
    ("train --backend cpp on a GPU", "train",
     ["--dataset", "digits", "--backend", "cpp", "--device", "cuda", "--out", "{tmp}/run"],
     "--backend" if torch.cuda.is_available() else "--device"),
    ("train --cuda-graph on the CPU", "train",
     ["--dataset", "digits", "--cuda-graph", "--device", "cpu", "--out", "{tmp}/run"], "cuda-graph"),
    ("eval of a missing folder", "eval", ["{tmp}/nothing"], "nothing"),
    ("eval of a file", "eval", ["{file}"], "not a gatfast run folder"),
    ("eval --surrogate missing", "eval", ["{run}", "--surrogate", "{tmp}/nothing"] + FAST_EVAL, "nothing"),
    ("eval --surrogate is the run", "eval", ["{run}", "--surrogate", "{run}"] + FAST_EVAL, "--surrogate"),
    ("eval --surrogate from another dataset", "eval", ["{run}", "--surrogate", "{other}"] + FAST_EVAL, "surrogate"),
    ("eval transfer without --surrogate", "eval", ["{run}", "--attacks", "transfer", "--n", "20"], "--surrogate"),
    ("eval --n-autoattack above --n", "eval", ["{run}", "--attacks", "apgd_ce", "--n", "20", "--n-autoattack",
                                               "40"], "--n-autoattack"),
    ("sweep --out is a file", "sweep", BASE["sweep"][:-2] + ["--out", "{file}"], "--out"),
    ("sweep --norm l2 with eps 2", "sweep",
     ["--datasets", "digits", "--methods", "standard", "--seeds", "0", "--norm", "l2", "--eps", "-2",
      "--out", "{tmp}/sweep"], "eps"),
    ("study --out is a file", "study", BASE["study"][:-2] + ["--out", "{file}"], "--out"),
    ("report of a missing folder", "report", ["{tmp}/nothing"], "nothing"),
    ("certify of a missing folder", "certify", ["{tmp}/nothing"], "nothing"),
    ("certify --data-root missing", "certify", BASE["certify"] + ["--data-root", "{tmp}/nothing"], "--data-root"),
    ("report of a run folder", "report", ["{run}"], "not a sweep folder"),
    ("bench-pgd --run missing", "bench-pgd", ["--run", "{tmp}/nothing", "--steps", "1", "--out", "{tmp}/bench"],
     "nothing"),
    ("bench-autoattack of a missing folder", "bench-autoattack", ["{tmp}/nothing", "--out", "{tmp}/bench"],
     "nothing"),
    ("bench --out is a file", "bench", BASE["bench"][:-2] + ["--out", "{file}"], "--out"),
    ("bench-pgd --out is a file", "bench-pgd", BASE["bench-pgd"][:-2] + ["--out", "{file}"], "--out"),
    ("bench-autoattack --out is a file", "bench-autoattack", BASE["bench-autoattack"][:-2] + ["--out", "{file}"],
     "--out"),
    ("no verb", None, [], "command"),
    ("unknown verb", None, ["fly"], "fly"),
    ("unknown flag", "train", ["--dataset", "digits", "--epoch", "3", "--out", "{tmp}/run"], "--epoch"),
    ("a flag without its value", "train", ["--dataset", "digits", "--out", "{tmp}/run", "--epochs"], "--epochs"),
]


def _replace_flag(args: list[str], flag: str, value: str) -> list[str]:
    """args with `flag value` in place of its base value (or added)."""
    args = list(args)
    if flag in args:
        i = args.index(flag)
        return args[:i] + [flag, value] + args[i + 2:]
    return args + [flag, value]


def _walk() -> list[tuple[str, str, list[str], str]]:
    cases = []
    for verb, parser in _subparsers().items():
        for action in parser._actions:
            if not action.option_strings or action.nargs == 0 or action.option_strings[0] in ("-h",) \
                    or action.option_strings[0] in PATH_FLAGS:
                continue
            flag = action.option_strings[0]
            values = {("sweep", "--eps"): SWEEP_EPS, ("study", "--eps"): SWEEP_EPS,
                      ("certify", "--eps"): CERTIFY_EPS}.get((verb, flag)) or \
                _values(action)
            for value in values:
                cases.append((f"{verb} {flag} {value}", verb, _replace_flag(BASE[verb], flag, value), flag))
    for name, verb, args, names in COMBINATIONS:
        cases.append((name, verb, args, names))
    return cases


CASES = _walk()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished digits run and a finished mnist5k run (a surrogate from another dataset)."""
    root = tmp_path_factory.mktemp("runs")
    common = dict(method="standard", epochs=1, train_size=64, batch_size=32, eval_pgd_steps=0, progress=False)
    train.train(TrainConfig(dataset="digits", eps=0.1, **common), root / "digits", log=lambda *_: None)
    train.train(TrainConfig(dataset="mnist5k", eps=0.3, **common), root / "mnist5k", log=lambda *_: None)
    return root


def _tree(*folders) -> dict:
    """Every file under the folders with its size and modification time."""
    out = {}
    for folder in folders:
        for dirpath, dirnames, filenames in os.walk(folder):
            out[dirpath] = None
            for f in filenames:
                st = os.stat(os.path.join(dirpath, f))
                out[os.path.join(dirpath, f)] = (st.st_size, st.st_mtime_ns)
    return out


def _run_cli(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("name,verb,args,names", CASES, ids=[c[0] for c in CASES])
def test_bad_command_line(name, verb, args, names, runs, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "a-file").write_text("not a folder\n")
    monkeypatch.chdir(work)
    fill = {"{run}": str(runs / "digits"), "{other}": str(runs / "mnist5k"), "{tmp}": str(work),
            "{file}": str(work / "a-file")}
    argv = ([verb] if verb else []) + [_fill(a, fill) for a in args]
    before = _tree(work, runs)
    code, out, err = _run_cli(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 2, f"exit {code} for {argv}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    assert len(lines) == 1 and lines[0].startswith("gatfast"), f"{argv}: {err[-3000:]}"
    assert "Traceback" not in err and not out
    assert any(form in lines[0] for form in _forms(names)), f"{argv}: the error does not name {names}: {lines[0]}"
    assert _tree(work, runs) == before, f"{argv} wrote files"


def _fill(arg: str, fill: dict) -> str:
    for k, v in fill.items():
        arg = arg.replace(k, v)
    return arg


def _forms(name: str) -> set[str]:
    """A flag as the error may name it: --n-slow, n-slow or n_slow."""
    bare = name.lstrip("-")
    return {name, bare, bare.replace("-", "_")} if name.startswith("--") else {name}


CANNOT_BE_WRONG = {"--no-progress", "--download", "--train-only", "--retime"}  # switches with no bad combination


def test_every_flag_is_walked():
    walked = {(c[1], c[3]) for c in CASES}
    combos = {(verb, word) for _, verb, args, word in COMBINATIONS for word in args if word.startswith("--")}
    for verb, parser in _subparsers().items():
        for action in parser._actions:
            flag = action.option_strings[0] if action.option_strings else None
            if flag in (None, "-h") or flag in CANNOT_BE_WRONG:
                continue
            assert (verb, flag) in walked or (verb, flag) in combos, f"gatfast {verb} {flag} has no bad values"


def test_the_walk_is_large():
    assert len(CASES) > 490  # the count README's reliability table reports


# ---- the Python API: the same values, a TypeError or ValueError naming the argument ---------------

COUNT_BAD = (0, -1, 1.5, "3", True, None)
POSITIVE_BAD = (0, -1.0, math.nan, math.inf, "0.1", None)
NONNEGATIVE_BAD = (-1.0, math.nan, math.inf, "1")
SEED_BAD = (-1, 1.5, "0", None)


def _api_objects():
    from gatfast import attacks
    from gatfast.gat import GATStep, PerturbationGenerator
    from gatfast.train import methods
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    generator = PerturbationGenerator(1, 0.1, width=4, blocks=0)
    opt = torch.optim.Adam(model.parameters())
    opt_g = torch.optim.Adam(generator.parameters())
    factories = {
        "GATStep": lambda **kw: GATStep(*[kw.pop(k, v) for k, v in (("classifier", model), ("generator", generator),
                                                                     ("opt_classifier", opt), ("opt_generator", opt_g))],
                                        **{"eps": 0.1, **kw}),
        "PerturbationGenerator": lambda **kw: PerturbationGenerator(kw.pop("in_channels", 1), kw.pop("eps", 0.1), **kw),
        "Standard": lambda **kw: methods.Standard(kw.pop("classifier", model), kw.pop("optimizer", opt),
                                                  **{"eps": 0.1, **kw}),
        "PGDAT": lambda **kw: methods.PGDAT(model, opt, **{"eps": 0.1, **kw}),
        "FGSMRS": lambda **kw: methods.FGSMRS(model, opt, **{"eps": 0.1, **kw}),
        "TRADES": lambda **kw: methods.TRADES(model, opt, **{"eps": 0.1, **kw}),
        "GAT": lambda **kw: methods.GAT(model, opt, generator, opt_g, **{"eps": 0.1, **kw}),
        "CROWNIBP": lambda **kw: methods.CROWNIBP(kw.pop("classifier", model), opt, **{"eps": 0.1, **kw}),
        "Gaussian": lambda **kw: methods.Gaussian(model, opt, **{"eps": 0.1, **kw}),
        "FGSM": lambda **kw: attacks.FGSM(kw.pop("model", model), **{"eps": 0.1, **kw}),
        "PGD": lambda **kw: attacks.PGD(model, **{"eps": 0.1, **kw}),
        "APGD": lambda **kw: attacks.APGD(model, **{"eps": 0.1, **kw}),
        "CW": lambda **kw: attacks.CW(model, **{"budget": 1.0, **kw}),
        "AutoAttack": lambda **kw: attacks.AutoAttack(model, **{"eps": 0.1, **kw}),
        "FAB": lambda **kw: attacks.FAB(model, **{"eps": 0.1, **kw}),
        "Square": lambda **kw: attacks.Square(model, **{"eps": 0.1, **kw}),
        "Transfer": lambda **kw: attacks.Transfer(model, kw.pop("surrogate", other), **{"eps": 0.1, **kw}),
        "pgd": lambda **kw: attacks.pgd(model, torch.rand(2, 1, 8, 8), torch.tensor([1, 2]), **{"eps": 0.1, **kw}),
    }
    return factories


EPS_BAD = POSITIVE_BAD + (2.0,)  # 2: beyond the [0, 1] pixel range for linf
API_ARGS = {
    "GATStep": {"classifier": ("model",), "generator": ("generator",), "eps": EPS_BAD, "norm": ("l3", None),
                "alpha": (-0.1, 1.5, math.nan, "0.5"), "c_g": NONNEGATIVE_BAD, "generator_steps": COUNT_BAD,
                "generator_updates": COUNT_BAD, "amp": ("fp32", 16)},
    "PerturbationGenerator": {"in_channels": (0, -1, 1.5, "1"), "eps": POSITIVE_BAD, "bound": ("l3",),
                              "input": ("pixels",), "width": COUNT_BAD, "blocks": (-1, 1.5, "2"),
                              "latent_dim": (-1, 1.5, "2"), "resolution": ("quarter",)},
    "Standard": {"classifier": ("model",), "optimizer": ("adam", None), "eps": EPS_BAD, "norm": ("l3",),
                 "amp": ("fp32",)},
    "PGDAT": {"steps": COUNT_BAD, "step_size": POSITIVE_BAD[:-1]},
    "FGSMRS": {"step_scale": POSITIVE_BAD, "collapse": NONNEGATIVE_BAD + (2.0,)},
    "TRADES": {"steps": COUNT_BAD, "step_size": POSITIVE_BAD[:-1], "beta": NONNEGATIVE_BAD},
    "GAT": {"alpha": (-0.1, 1.5), "c_g": NONNEGATIVE_BAD, "generator_steps": COUNT_BAD,
            "generator_updates": COUNT_BAD},
    "CROWNIBP": {"classifier": ("model", torch.nn.Tanh()), "kappa": ((0.0, 2.0), (1.0,), "1,0", (math.nan, 0.0)),
                 "beta": ((-0.5, 0.0), (1.0, 0.0, 0.0), 0.5)},
    "Gaussian": {"sigma": POSITIVE_BAD},
    "FGSM": {"model": ("model", None), "eps": EPS_BAD, "norm": ("l3",), "batch_size": COUNT_BAD},
    "PGD": {"steps": COUNT_BAD, "step_size": POSITIVE_BAD[:-1], "restarts": COUNT_BAD, "loss": ("dlr", None),
            "amp": ("fp32",), "seed": SEED_BAD, "batch_size": COUNT_BAD},
    "APGD": {"steps": COUNT_BAD, "restarts": COUNT_BAD, "loss": ("hinge",), "targets": (-1, 1.5),
             "rho": (0, -0.5, 1.5, math.nan), "amp": ("fp32",), "seed": SEED_BAD},
    "CW": {"budget": POSITIVE_BAD, "steps": COUNT_BAD, "search_steps": COUNT_BAD, "c": POSITIVE_BAD,
           "lr": POSITIVE_BAD, "kappa": NONNEGATIVE_BAD},
    "AutoAttack": {"n_classes": (1, 0, 1.5), "steps": COUNT_BAD, "square_queries": COUNT_BAD, "seed": SEED_BAD},
    "FAB": {"n_classes": (1, 1.5), "steps": COUNT_BAD, "restarts": COUNT_BAD, "seed": SEED_BAD},
    "Square": {"n_queries": COUNT_BAD, "restarts": COUNT_BAD, "seed": SEED_BAD},
    "Transfer": {"surrogate": ("model", None), "steps": COUNT_BAD, "step_size": POSITIVE_BAD[:-1],
                 "loss": ("dlr",), "seed": SEED_BAD},
    "pgd": {"eps": POSITIVE_BAD, "norm": ("l3",), "steps": (-1, 1.5, "3"), "step_size": POSITIVE_BAD[:-1],
            "loss": ("dlr",)},
}
API_CASES = [(name, arg, value) for name, args in API_ARGS.items() for arg, values in args.items()
             for value in values]


@pytest.mark.parametrize("name,arg,value", API_CASES, ids=[f"{n}-{a}-{v!r}" for n, a, v in API_CASES])
def test_bad_python_arguments(name, arg, value):
    make = _api_objects()[name]
    with pytest.raises((TypeError, ValueError)) as caught:
        make(**{arg: value})
    assert arg in str(caught.value), f"{name}({arg}={value!r}): {caught.value}"


@pytest.mark.parametrize("name", list(API_ARGS))
def test_good_python_arguments_pass(name):
    """The walk's baseline: each factory with only its defaults builds."""
    _api_objects()[name]()


def test_load_run_bad_input(tmp_path, runs):
    with pytest.raises(TypeError, match="run_dir"):
        train.load_run(None)
    with pytest.raises(ValueError, match="not a gatfast run folder"):
        train.load_run(tmp_path / "nothing")
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ValueError, match="not a gatfast run folder"):
        train.load_run(tmp_path / "a-file")
    with pytest.raises(ValueError, match="device"):
        train.load_run(runs / "digits", device="tpu")
