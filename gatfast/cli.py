"""The `gatfast` command (also `python -m gatfast`, and under torchrun).

  gatfast train --dataset mnist5k --method gat --eps 0.3 --epochs 20 --seed 0 --out runs/NAME
  gatfast train --out runs/NAME --resume [--epochs 30]
  gatfast eval runs/NAME [--surrogate runs/OTHER] [--attacks fgsm,pgd,...] [--n 1000 --n-slow 200]
  gatfast sweep --datasets mnist5k,digits --methods standard,gat --seeds 0,1,2 --out runs/sweep
  gatfast study --datasets mnist5k,digits --out runs/study        (the headline study; resumes)
  gatfast report runs/sweep
  gatfast certify runs/NAME [--eps 0.1,0.3] [--method crown-ibp] [--n 1000]

Bad configuration exits with status 2 and one line on stderr, no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import sys
import typing
from pathlib import Path

from gatfast import train as train_mod
from gatfast.gat import generators
from gatfast.ops import backends
from gatfast.train import config as config_mod
from gatfast.train import data, methods, models, runs

_HELP = {
    "dataset": "mnist5k and digits are embedded; the others load from --data-root",
    "eps": "perturbation budget in [0, 1] pixel units (e.g. 0.3 for MNIST linf, 8/255 written as 0.0314)",
    "eps_warmup": "epochs over which eps ramps up linearly from 0, for every method",
    "kappa_end": "crown_ibp, ibp: the clean loss's weight at the end of the eps ramp (it starts at 1)",
    "beta_end": "crown_ibp: CROWN-IBP's share of the bound at the end of the eps ramp (it starts at 1; "
                "the rest is IBP's)",
    "sigma": "gaussian: the training noise's standard deviation (smooth with the same sigma)",
    "attack_steps": "PGD steps of pgd_at and trades",
    "generator_steps": "gat: generator applications per batch, each on a fresh gradient",
    "generator_updates": "gat: generator updates per classifier update",
    "latent_dim": "gat: size of the random code fed to the generator (0: none)",
    "generator_lr": "gat: the generator's learning rate (l2l-3's 3e-3; the paper and l2l recipes 1e-3)",
    "eval_pgd_steps": "steps of the final PGD check on the test split, the same attack as eval's PGD (0: skip it)",
    "device": "auto (a GPU when torch sees one), cpu, cuda or cuda:N",
}


# The choices of a TrainConfig option, from the registries that define them (never a copy).
_CHOICES = {
    "dataset": tuple(data.DATASETS),
    "method": tuple(methods.METHODS),
    "model": tuple(models.MODELS),
    "norm": ("linf", "l2"),
    "amp": config_mod.AMP,
    "optimizer": config_mod.OPTIMIZERS,
    "schedule": config_mod.SCHEDULES,
    "backend": tuple(backends.BACKENDS),
    "generator_input": generators.INPUTS,
    "generator_bound": generators.BOUNDS,
    "generator_resolution": generators.RESOLUTIONS,
}
_DEFAULT_WORDS = {"amp": "off", "generator_bound": "the norm", "attack_step_size": "2.5 eps / attack-steps",
                  "data_root": "none", "train_size": "0: all",
                  "eps_warmup": "0, half the epochs for crown_ibp and ibp", "kappa_end": "0 for crown_ibp, 0.5 for ibp"}


def _help(text: str | None, choices=(), default=dataclasses.MISSING) -> str:
    """A flag's help: what it does, its choices, and its default."""
    parts = [text] if text else []
    if choices:
        parts.append("one of " + ", ".join(map(str, choices)))
    if default is not dataclasses.MISSING:
        parts.append(f"default: {default}")
    return "; ".join(parts)


def _add_config_arguments(parser: argparse.ArgumentParser):
    hints = typing.get_type_hints(train_mod.TrainConfig)
    for f in dataclasses.fields(train_mod.TrainConfig):
        if f.name in ("progress", "download", "cuda_graph", "single_pass", "recipe"):
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if kind not in (int, float, str):  # Optional[...]: float | None, str | None
            kind = float if float in typing.get_args(kind) else str
        # default=None marks "not given" (resume refuses changed options); the help shows the real default.
        parser.add_argument(flag, type=kind, default=None,
                            help=_help(_HELP.get(f.name), _CHOICES.get(f.name),
                                       _DEFAULT_WORDS.get(f.name, f.default)))
    parser.add_argument("--recipe", default=None,
                        help=_help("a named gat recipe; explicit options win", tuple(train_mod.RECIPES), "none"))
    parser.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    parser.add_argument("--cuda-graph", action="store_true", help="gat on a GPU: capture the whole step")
    parser.add_argument("--single-pass", action="store_true",
                        help="gat with --generator-input image: one classifier forward over clean and adversarial "
                             "images together (faster on GPUs; BatchNorm then normalises them together)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _config_from(args) -> train_mod.TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(train_mod.TrainConfig)
              if f.name != "recipe" and getattr(args, f.name, None) is not None}
    values["download"] = args.download
    values["cuda_graph"] = args.cuda_graph
    values["single_pass"] = args.single_pass
    values["progress"] = not args.no_progress
    if args.recipe is not None:
        return train_mod.TrainConfig.from_recipe(args.recipe, **values)
    return train_mod.TrainConfig(**values)


def _cmd_train(args) -> int:
    if args.resume and args.recipe is not None:
        raise train_mod.ConfigError("--resume continues the saved configuration; it cannot take --recipe")
    config = _config_from(args)
    if args.resume:
        if not (Path(args.out) / "config.json").is_file():
            raise train_mod.ConfigError(f"--resume: {args.out} holds no run to resume (no config.json)")
        saved = train_mod.load_config(args.out)
        config = dataclasses.replace(saved, epochs=saved.epochs if args.epochs is None else args.epochs,
                                     progress=config.progress, device=args.device or saved.device)
        given = [f.name for f in dataclasses.fields(train_mod.TrainConfig)
                 if f.name not in ("epochs", "device") and getattr(args, f.name, None) is not None
                 and getattr(args, f.name) != getattr(saved, f.name)]
        if given:
            raise train_mod.ConfigError(f"--resume continues the saved configuration; it cannot change "
                                        f"{', '.join('--' + g.replace('_', '-') for g in given)}")
    summary = train_mod.train(config, args.out, resume=args.resume)
    if "robustness" in summary:
        r = summary["robustness"]
        print(f"\n{config.method} on {config.dataset}, {summary['threat_model']}")
        print(f"{'clean':>8} " + " ".join(f"{k:>8}" for k in r if k != "clean"))
        print(f"{r['clean']:8.4f} " + " ".join(f"{v:8.4f}" for k, v in r.items() if k != "clean"))
        print(f"training wall time {summary['train_wall_s']:.1f} s; run folder {args.out}")
    return 0


def _cmd_bench(args) -> int:
    from gatfast.bench import step as bench
    if args.iters < 1 or args.warmup < 0:
        raise train_mod.ConfigError("--iters must be >= 1 and --warmup >= 0")
    runs.check_folder_or_new(args.out, "--out")
    device = None if args.device == "auto" else str(train_mod.resolve_device(args.device))
    cases = [_bench_case(c) for c in args.case] or None
    variants = list(_list(args.variants, str, "--variants")) or None
    unknown = sorted(set(variants or []) - set(bench.VARIANTS))
    if unknown:
        raise train_mod.ConfigError(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(bench.VARIANTS)}")
    bench.run(device, cases=cases, warmup=args.warmup, iters=args.iters, out_dir=args.out, variants=variants)
    print(f"wrote {args.out}/step-*.json and .md")
    return 0


def _bench_case(text: str) -> tuple[str, int]:
    from gatfast.bench import step as bench
    model, _, batch = text.partition(":")
    if model not in bench.MODELS or not batch.isdigit() or int(batch) < 1:
        raise train_mod.ConfigError(f"--case must be MODEL:BATCH with MODEL one of {', '.join(bench.MODELS)} "
                                    f"and BATCH a positive integer, got {text!r}")
    return model, int(batch)


_EVAL_HELP = {
    "attacks": "comma-separated; autoattack means its four members",
    "certified": "the bound of the certified row (a lower bound beside the attacks' upper ones); none: no row",
    "n": "first test images for every attack but CW (1000 is all of mnist5k's test split)",
    "n_slow": "first test images for CW",
    "n_autoattack": "AutoAttack's members on only the first N images; they are the slowest",
    "eps": "evaluate at this eps",
    "pgd_step_size": "a fixed PGD step (APGD's adaptive step size measured stronger)",
    "autoattack_steps": "steps of APGD-CE, APGD-T and FAB-T (AutoAttack: 100)",
    "check_factor": "the more-steps check runs PGD with this many times --pgd-steps",
    "check_restarts": "the restarts check runs PGD with this many times --pgd-restarts",
    "check_alpha": "significance level of the per-image sanity checks (one-sided binomial test)",
    "sweep": "comma-separated eps values for the accuracy-over-eps plot",
    "cw_budget": "L2 budget at which CW accuracy is reported",
}


def _eval_default(f: dataclasses.Field):
    if f.name == "attacks":
        return "all"
    return {"n_autoattack": "--n", "eps": "the run's", "pgd_step_size": "APGD's adaptive step",
            "sweep": "eps x (0.25 .. 2) and, for linf, 1",
            "cw_budget": "eps for l2 runs; for linf by image size (2.0 for 28x28 grey)"}.get(f.name, f.default)


def _add_eval_arguments(parser: argparse.ArgumentParser, skip=()):
    from gatfast.evaluation import suite
    hints = typing.get_type_hints(suite.EvalConfig)
    for f in dataclasses.fields(suite.EvalConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        choices = {"attacks": suite.ATTACKS + tuple(suite.GROUPS), "certified": suite.CERTIFIED}.get(f.name, ())
        help_text = _help(_EVAL_HELP.get(f.name), choices, _eval_default(f))
        if kind in (int, float, str):
            parser.add_argument(flag, type=kind, default=None, help=help_text)
        elif f.name in ("attacks", "sweep"):
            parser.add_argument(flag, default=None, help=help_text)
        else:  # int | None, float | None
            inner = int if int in typing.get_args(kind) else float
            parser.add_argument(flag, type=inner, default=None, help=help_text)


def _list(text: str, kind, flag: str) -> tuple:
    try:
        return tuple(kind(v.strip()) for v in text.split(",") if v.strip())
    except ValueError:
        raise train_mod.ConfigError(f"{flag} must be a comma-separated list of {kind.__name__}, got {text!r}") from None


def _eval_config_from(args, skip=()):
    from gatfast.evaluation import suite
    values = {}
    for f in dataclasses.fields(suite.EvalConfig):
        value = None if f.name in skip else getattr(args, f.name, None)
        if value is None:
            continue
        if f.name == "attacks":
            value = _list(value, str, "--attacks")
        elif f.name == "sweep":
            value = _list(value, float, "--sweep")
        values[f.name] = value
    return suite.EvalConfig(**values)


def _existing_folder(path, flag: str) -> None:
    if path is not None and not Path(path).is_dir():
        raise train_mod.ConfigError(f"{flag}: {path} is not a folder")


def _cmd_eval(args) -> int:
    from gatfast.evaluation import suite
    device = str(train_mod.resolve_device(args.device))
    _existing_folder(args.data_root, "--data-root")
    if args.attacks is not None and "transfer" in _list(args.attacks, str, "--attacks") and args.surrogate is None:
        raise train_mod.ConfigError("--attacks transfer needs --surrogate OTHER_RUN (a separately trained run)")
    report = suite.evaluate_run(args.run_dir, _eval_config_from(args), surrogate_dir=args.surrogate,
                                   device=device, data_root=args.data_root, progress=not args.no_progress,
                                   log=lambda line: print(line, file=sys.stderr, flush=True))
    run = report["run"]
    print(f"\n{run['method']} on {run['dataset']} (seed {run['seed']}), {args.run_dir}")
    print(report["threat_model"])
    print(suite.format_table(report))
    print(f"wrote {args.run_dir}/eval.json and eval_eps.png")
    return 0


_DEVICE_HELP = _help("auto (a GPU when torch sees one), cpu, cuda or cuda:N", default="auto")
_SWEEP_TRAIN_OPTIONS = ("epochs", "batch_size", "model", "norm", "lr", "train_size", "amp", "backend", "data_root")


def _cmd_sweep(args) -> int:
    from gatfast.evaluation import report, sweep
    train_mod.resolve_device(args.device)
    runs.check_folder_or_new(args.out, "--out")
    datasets = _list(args.datasets, str, "--datasets")
    options = {k: getattr(args, k) for k in _SWEEP_TRAIN_OPTIONS if getattr(args, k, None) is not None}
    spec = sweep.SweepSpec(datasets=datasets, methods=_list(args.methods, str, "--methods"),
                           seeds=_list(args.seeds, int, "--seeds"), eps=sweep.parse_eps(args.eps, datasets),
                           train_options=options, eval_config=_eval_config_from(args, skip=("eps",)))
    sweep.run(spec, args.out, device=args.device, progress=not args.no_progress, command=args.command_line)
    result = report.write(args.out)
    print((Path(args.out) / "report.md").read_text())
    if result["missing"]:
        print(f"{len(result['missing'])} cells missing (see report.md)")
    return 0


def _cmd_study(args) -> int:
    from gatfast.evaluation import report, study, sweep
    train_mod.resolve_device(args.device)
    if args.stop_after is not None and not (math.isfinite(args.stop_after) and args.stop_after > 0):
        raise train_mod.ConfigError(f"--stop-after must be a positive number of hours, got {args.stop_after}")
    runs.check_folder_or_new(args.out, "--out")
    datasets = _list(args.datasets, str, "--datasets")
    methods = study.VARIANTS if args.methods is None else _list(args.methods, str, "--methods")
    eps = None if args.eps is None else sweep.parse_eps(args.eps, datasets)
    spec = study.spec(datasets, _list(args.seeds, int, "--seeds"), eps, args.epochs, methods)
    sweep.validate(spec)
    begun = args.out if Path(args.out).is_dir() else None  # a study begun: each cell's state and cost to go
    print("\n".join(study.plan(spec, evaluate=not args.train_only, out=begun)), file=sys.stderr, flush=True)
    if args.plan:
        return 0
    finished = sweep.run(spec, args.out, device=args.device, progress=not args.no_progress,
                         evaluate=not args.train_only, retime=args.retime, command=args.command_line,
                         stop_after_s=None if args.stop_after is None else 3600 * args.stop_after)
    if not finished:
        result = report.write(args.out)
        print(f"stopped at the time limit with {len(result['missing'])} cells to go; wrote {args.out}/report.md "
              "over the cells done; the same command goes on")
        return 0
    if args.train_only:
        print(f"trained every cell in {args.out}; the same command without --train-only evaluates them")
        return 0
    report.write(args.out)
    print((Path(args.out) / "report.md").read_text())
    print(f"wrote {args.out}/report.md, report.json and the plots")
    return 0


def _cmd_report(args) -> int:
    from gatfast.evaluation import report
    result = report.write(args.sweep_dir)
    print((Path(args.sweep_dir) / "report.md").read_text())
    print(f"wrote {args.sweep_dir}/report.md, report.json and the plots"
          + (f"; {len(result['missing'])} cells missing" if result["missing"] else ""))
    return 0


def _cmd_certify(args) -> int:
    from gatfast.evaluation import certified
    device = str(train_mod.resolve_device(args.device))
    _existing_folder(args.data_root, "--data-root")
    eps = None if args.eps is None else _list(args.eps, float, "--eps")
    if eps is None:
        eps = (train_mod.load_config(args.run_dir).eps,)
    smoothing = certified.SmoothingSettings(
        sigma=args.sigma, radii=_list(args.radii, float, "--radii"), images=args.smoothing_images, n=args.smoothing_n,
        n0=args.smoothing_n0, alpha=args.alpha)
    report = certified.certify_run(args.run_dir, eps, method=args.method, n=args.n, device=device,
                                   data_root=args.data_root, log=lambda line: print(line, file=sys.stderr, flush=True),
                                   smoothing=smoothing)
    print(f"\n{report['method_trained']} on {report['dataset']}, {args.run_dir}: {report['bound']} bounds, "
          f"{report['norm']} ball, first {report['n']} test images")
    print(certified.format_table(report))
    print(f"wrote {args.run_dir}/certify.json")
    return 0


def _cmd_bench_pgd(args) -> int:
    from gatfast.bench import attacks as bench_pgd
    if args.steps < 1 or args.rounds < 1:
        raise train_mod.ConfigError("--steps and --rounds must be >= 1")
    runs.check_folder_or_new(args.out, "--out")
    for run in args.run:
        train_mod.load_config(run)  # a run folder, or the error that says it is not
    bench_pgd.run(args.run, str(train_mod.resolve_device(args.device)), steps=args.steps, rounds=args.rounds, out_dir=args.out)
    print(f"wrote {args.out}/pgd-*.json and .md")
    return 0


def _cmd_bench_autoattack(args) -> int:
    from gatfast.bench import attacks as bench_pgd
    if args.n < 1:
        raise train_mod.ConfigError(f"--n must be >= 1, got {args.n}")
    runs.check_folder_or_new(args.out, "--out")
    train_mod.load_config(args.run_dir)
    variants = _list(args.variants, str, "--variants")
    unknown = [v for v in variants if v not in bench_pgd.AUTOATTACK_VARIANTS]
    if unknown:
        raise train_mod.ConfigError(f"--variants: unknown {unknown[0]!r}; choose from "
                                    f"{', '.join(bench_pgd.AUTOATTACK_VARIANTS)}")
    bench_pgd.run_autoattack(args.run_dir, str(train_mod.resolve_device(args.device)), n=args.n, variants=variants,
                             out_dir=args.out)
    print(f"wrote {args.out}/autoattack-*.json and .md")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a parse error as one line that names the flag (not a usage dump of
    every flag; `--help` has that). Subcommands inherit it."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # a mistyped --epoch is an error, not --epochs
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gatfast", description="Fast, honest GAN-based adversarial training.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a classifier with one method into a run folder")
    _add_config_arguments(p)
    p.add_argument("--out", required=True, help="the run folder (created; refused if it already holds a run)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_cmd_train)
    e = sub.add_parser("eval", help="evaluate a trained run against the attack suite, with sanity checks")
    e.add_argument("run_dir", help="a run folder written by gatfast train")
    _add_eval_arguments(e)
    e.add_argument("--surrogate", default=None,
                   help=_help("a separately trained run folder for the transfer attack", default="none: no transfer"))
    e.add_argument("--device", default="auto", help=_DEVICE_HELP)
    e.add_argument("--data-root", default=None, help=_help("where torchvision datasets live", default="the run's"))
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.set_defaults(func=_cmd_eval)
    w = sub.add_parser("sweep", help="train and evaluate every dataset x method x seed cell, then report")
    w.add_argument("--datasets", default="mnist5k,digits",
                   help=_help("comma-separated", _CHOICES["dataset"], "mnist5k,digits"))
    w.add_argument("--methods", default="standard,fgsm_rs,pgd_at,gat",
                   help=_help("comma-separated; METHOD:FIELD=VALUE:... for a variant with options "
                              "(pgd_at:attack_steps=3), match=METHOD for its wall time", _CHOICES["method"],
                              "standard,fgsm_rs,pgd_at,gat"))
    w.add_argument("--seeds", default="0,1,2", help=_help("comma-separated integers", default="0,1,2"))
    w.add_argument("--eps", default="0.3", help=_help("one eps for all datasets, or dataset=eps pairs", default=0.3))
    config_defaults = {f.name: f.default for f in dataclasses.fields(train_mod.TrainConfig)}
    for name in _SWEEP_TRAIN_OPTIONS:
        w.add_argument("--" + name.replace("_", "-"), type=int if name in ("epochs", "batch_size", "train_size")
                       else float if name == "lr" else str, default=None,
                       help=_help(_HELP.get(name), _CHOICES.get(name),
                                  _DEFAULT_WORDS.get(name, config_defaults[name])))
    _add_eval_arguments(w, skip=("eps",))
    w.add_argument("--device", default="auto", help=_DEVICE_HELP)
    w.add_argument("--no-progress", action="store_true", help="no progress bars")
    w.add_argument("--out", required=True, help="the sweep folder (a second run resumes it)")
    w.set_defaults(func=_cmd_sweep)
    from gatfast.certify import METHODS as certify_methods
    from gatfast.evaluation import certified
    c = sub.add_parser("certify", help="verified accuracy of a trained run: sound lower bounds on robust accuracy")
    c.add_argument("run_dir", help="a run folder written by gatfast train")
    c.add_argument("--eps", default=None, help=_help("comma-separated", default="the run's eps"))
    c.add_argument("--method", default="crown-ibp", help=_help("the bound; crown-ibp and crown take, per margin, the "
                                                               "larger of theirs and IBP's", certify_methods,
                                                               "crown-ibp"))
    c.add_argument("--n", type=int, default=1000, help=_help("first test images", default=1000))
    c.add_argument("--device", default="auto", help=_DEVICE_HELP)
    c.add_argument("--data-root", default=None, help=_help("where torchvision datasets live", default="the run's"))
    smooth = certified.SmoothingSettings()
    c.add_argument("--sigma", type=float, default=None,
                   help=_help("L2 runs: randomized smoothing's noise", default="the run's sigma"))
    c.add_argument("--radii", default=",".join(map(str, smooth.radii)),
                   help=_help("L2 runs: the radii of the smoothed certified accuracy",
                             default=",".join(map(str, smooth.radii))))
    c.add_argument("--smoothing-images", type=int, default=smooth.images,
                   help=_help("L2 runs: the first test images smoothed", default=smooth.images))
    c.add_argument("--smoothing-n", type=int, default=smooth.n,
                   help=_help("L2 runs: noisy forwards per image that bound p_A (0: no smoothing)", default=smooth.n))
    c.add_argument("--smoothing-n0", type=int, default=smooth.n0,
                   help=_help("L2 runs: noisy forwards per image that choose the class", default=smooth.n0))
    c.add_argument("--alpha", type=float, default=smooth.alpha,
                   help=_help("L2 runs: each radius fails with probability at most alpha", default=smooth.alpha))
    c.set_defaults(func=_cmd_certify)
    bp = sub.add_parser("bench-pgd", help="gatfast PGD against torchattacks PGD over a test set, same budget")
    bp.add_argument("--run", action="append", default=[],
                    help=_help("a run folder whose model to attack, repeatable",
                               default="a small CNN trained for 2 epochs without defence"))
    bp.add_argument("--device", default="auto", help=_DEVICE_HELP)
    bp.add_argument("--steps", type=int, default=40, help=_help("PGD steps", default=40))
    bp.add_argument("--rounds", type=int, default=3, help=_help("timed rounds, the two attacks taking turns",
                                                                default=3))
    bp.add_argument("--out", default="benchmarks/results",
                    help=_help("folder for pgd-<device>.json and .md", default="benchmarks/results"))
    bp.set_defaults(func=_cmd_bench_pgd)
    ba = sub.add_parser("bench-autoattack", help="AutoAttack standard: gatfast's cascade against torchattacks', "
                        "same images, time and robust accuracy")
    ba.add_argument("run_dir", help="a run folder whose model to attack")
    ba.add_argument("--n", type=int, default=1000, help=_help("first test images", default=1000))
    ba.add_argument("--variants", default=",".join(("torchattacks", "torchattacks-100", "gatfast")),
                    help=_help("comma-separated; torchattacks is its wrapper as shipped (10 steps)",
                               ("torchattacks", "torchattacks-100", "gatfast"), "all three"))
    ba.add_argument("--device", default="auto", help=_DEVICE_HELP)
    ba.add_argument("--out", default="benchmarks/results",
                    help=_help("folder for autoattack-<device>.json and .md", default="benchmarks/results"))
    ba.set_defaults(func=_cmd_bench_autoattack)
    t = sub.add_parser("study", help="the headline study: every defence, three seeds, the whole suite on the whole "
                                     "test split, and the frontier of robustness per training cost (resumes)")
    t.add_argument("--datasets", default="mnist5k,digits",
                   help=_help("comma-separated", _CHOICES["dataset"], "mnist5k,digits"))
    t.add_argument("--methods", default=None,
                   help=_help("comma-separated variants, METHOD[:FIELD=VALUE...]", default="the study's "
                              "(gatfast.evaluation.study.VARIANTS)"))
    t.add_argument("--seeds", default="0,1,2", help=_help("comma-separated integers", default="0,1,2"))
    t.add_argument("--eps", default=None, help=_help("one eps for all datasets, or dataset=eps pairs",
                                                     default="mnist5k=0.3,digits=0.1"))
    t.add_argument("--epochs", type=int, default=20, help=_help("epochs of every variant that sets none",
                                                                 default=20))
    t.add_argument("--plan", action="store_true", help="print the cells in the order they run, and stop")
    t.add_argument("--train-only", action="store_true",
                   help="train every cell and evaluate none (the evaluations may then share the machine)")
    t.add_argument("--retime", action="store_true",
                   help="time every variant's steps again on this machine, in turns (the wall-time axis, "
                        "OUT/timing.json; the study times them once, at its start, alone on the machine)")
    t.add_argument("--stop-after", type=float, default=None,
                   help=_help("hours after which no training or evaluation starts (what runs finishes): for a "
                              "machine or job with a time limit; the same command goes on", default="none"))
    t.add_argument("--device", default="auto", help=_DEVICE_HELP)
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--out", required=True, help="the study folder (the same command resumes it)")
    t.set_defaults(func=_cmd_study)
    r = sub.add_parser("report", help="tables and plots of a (possibly partial) sweep")
    r.add_argument("sweep_dir")
    r.set_defaults(func=_cmd_report)
    b = sub.add_parser("bench", help="GAT step throughput on this machine's device, against the literal step")
    b.add_argument("--device", default="auto", help=_DEVICE_HELP)
    b.add_argument("--warmup", type=int, default=3, help=_help("untimed steps per variant first", default=3))
    b.add_argument("--iters", type=int, default=10, help=_help("timed steps per variant", default=10))
    b.add_argument("--case", action="append", default=[], metavar="MODEL:BATCH",
                   help=_help("model and batch to time, repeatable; results go to step-<models>-<device> when "
                              "given", default="small_cnn:256 and preact_resnet18:256 on a GPU, small_cnn:128 on "
                              "the CPU"))
    b.add_argument("--variants", default="", help=_help("comma-separated subset of the variants",
                                                        _bench_variants(), "all that fit the device"))
    b.add_argument("--out", default="benchmarks/results",
                   help=_help("folder for step-<device>.json and .md", default="benchmarks/results"))
    b.set_defaults(func=_cmd_bench)
    return parser


def _bench_variants() -> tuple:
    from gatfast.bench import step as bench
    return bench.VARIANTS


def _eval_error():
    from gatfast.evaluation.suite import EvalError
    return EvalError


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # a parse error (2, its line printed) or --help (0)
        return e.code
    args.command_line = shlex.join(["gatfast"] + list(sys.argv[1:] if argv is None else argv))
    try:
        return args.func(args)
    except (train_mod.ConfigError, _eval_error()) as e:
        print(f"gatfast: error: {e}", file=sys.stderr)
        return 2
    except train_mod.TrainingStopped as e:
        print(f"gatfast: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk, a folder we may not write: what and where, in one line
        print(f"gatfast: error: {e.strerror or e} ({e.filename or 'no file named'}); files written before "
              f"are intact (every write is a temporary file renamed into place)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"gatfast: interrupted; {_AFTER_INTERRUPT.get(args.command, 'nothing was half-written')}",
              file=sys.stderr)
        return 130


# What a Ctrl-C leaves behind, per verb.
_AFTER_INTERRUPT = {
    "train": "the run folder holds the last finished epoch: continue with gatfast train --out RUN --resume",
    "eval": "no eval.json was written (it is written whole, at the end); the attacks that finished are in "
            "eval.partial.json: the same command goes on from there",
    "sweep": "finished cells are kept: run the same sweep command again to go on",
    "study": "finished cells are kept: run the same study command again to go on",
    "certify": "no certify.json was written (it is written whole, at the end): run the same command again",
}


if __name__ == "__main__":
    sys.exit(main())
