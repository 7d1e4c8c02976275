"""The `gatfast` command (also `python -m gatfast`, and under torchrun).

  gatfast train --dataset mnist5k --method gat --eps 0.3 --epochs 20 --seed 0 --out runs/NAME
  gatfast train --out runs/NAME --resume [--epochs 30]

Bad configuration exits with status 2 and one line on stderr, no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from gatfast import train as train_mod

_HELP = {
    "dataset": "mnist5k, digits (embedded) or mnist, fashion_mnist, cifar10, cifar100, svhn (from --data-root)",
    "method": "standard, fgsm_rs, pgd_at, trades or gat",
    "eps": "perturbation budget in [0, 1] pixel units (e.g. 0.3 for MNIST linf, 8/255 written as 0.0314)",
    "eps_warmup": "epochs over which eps ramps up linearly from 0, for every method",
    "attack_steps": "PGD steps of pgd_at and trades",
    "generator_steps": "gat: generator applications per batch, each on a fresh gradient",
    "generator_updates": "gat: generator updates per classifier update",
    "latent_dim": "gat: size of the random code fed to the generator (0: none)",
    "eval_pgd_steps": "PGD steps of the final check on the test split (0: skip it)",
}


def _add_config_arguments(parser: argparse.ArgumentParser):
    hints = typing.get_type_hints(train_mod.TrainConfig)
    for f in dataclasses.fields(train_mod.TrainConfig):
        if f.name in ("progress", "download", "cuda_graph", "recipe"):
            continue
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if kind in (int, float, str):
            parser.add_argument(flag, type=kind, default=None, help=_HELP.get(f.name))
        else:  # Optional[...]: float | None, str | None
            inner = float if float in typing.get_args(kind) else str
            parser.add_argument(flag, type=inner, default=None, help=_HELP.get(f.name))
    parser.add_argument("--recipe", default=None,
                        help=f"a named gat recipe ({', '.join(train_mod.RECIPES)}); explicit options win")
    parser.add_argument("--download", action="store_true", help="let torchvision download the dataset")
    parser.add_argument("--cuda-graph", action="store_true", help="gat on a GPU: capture the whole step")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _config_from(args) -> train_mod.TrainConfig:
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(train_mod.TrainConfig)
              if f.name != "recipe" and getattr(args, f.name, None) is not None}
    values["download"] = args.download
    values["cuda_graph"] = args.cuda_graph
    values["progress"] = not args.no_progress
    if args.recipe is not None:
        return train_mod.TrainConfig.from_recipe(args.recipe, **values)
    return train_mod.TrainConfig(**values)


def _cmd_train(args) -> int:
    if args.resume and args.recipe is not None:
        raise train_mod.ConfigError("--resume continues the saved configuration; it cannot take --recipe")
    config = _config_from(args)
    if args.resume:
        saved = train_mod.load_config(args.out)
        config = dataclasses.replace(saved, epochs=args.epochs or saved.epochs, progress=config.progress,
                                     device=args.device or saved.device)
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
    from gatfast import bench
    if args.iters < 1 or args.warmup < 0:
        raise train_mod.ConfigError("--iters must be >= 1 and --warmup >= 0")
    device = None if args.device == "auto" else str(train_mod.resolve_device(args.device))
    bench.run(device, warmup=args.warmup, iters=args.iters, out_dir=args.out)
    print(f"wrote {args.out}/step-*.json and .md")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatfast", description="Fast, honest GAN-based adversarial training.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train a classifier with one method into a run folder")
    _add_config_arguments(p)
    p.add_argument("--out", required=True, help="the run folder (created; refused if it already holds a run)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.set_defaults(func=_cmd_train)
    b = sub.add_parser("bench", help="GAT step throughput on this machine's device, against the literal step")
    b.add_argument("--device", default="auto")
    b.add_argument("--warmup", type=int, default=3)
    b.add_argument("--iters", type=int, default=10)
    b.add_argument("--out", default="benchmarks/results", help="folder for step-<device>.json and .md")
    b.set_defaults(func=_cmd_bench)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except train_mod.ConfigError as e:
        print(f"gatfast: error: {e}", file=sys.stderr)
        return 2
    except train_mod.TrainingStopped as e:
        print(f"gatfast: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gatfast: interrupted; the run folder keeps the last finished epoch (continue with --resume)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
