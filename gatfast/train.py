"""The training engine: one loop for every method, with a run folder that survives crashes.

RUN_DIR/
  config.json              the TrainConfig, versions, device, build info (written first)
  log.jsonl                one line per finished epoch (losses, accuracies, lr, eps, wall time)
  checkpoint.safetensors   classifier, generator, optimisers, method and RNG state, written
                           atomically after every epoch (gatfast.checkpoint)
  summary.json             at the end: wall time, stop reason, final robustness figures

Exact resume: the data order of epoch e is a permutation drawn from (seed, e), the
learning rate and eps schedules are functions of the position in training, and the
checkpoint holds the optimisers and every RNG state; so N epochs, a stop, and M more
give the same weights as N + M epochs in one go (on the CPU).

Distributed (torchrun, WORLD_SIZE > 1): each process trains on its shard of every global
batch, and gradients are averaged with all_reduce before the optimisers step, which is
what DistributedDataParallel does; gatfast does it itself because the GAT step
differentiates with torch.autograd.grad and two forwards, which DDP's reducer does not
follow. Rank 0 writes the run folder; BatchNorm buffers are taken from rank 0 after
each epoch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

import gatfast
from gatfast import checkpoint, data, generators, methods, models
from gatfast.attacks import pgd

CHECKPOINT = "checkpoint.safetensors"


# Named GAT recipes. "paper": the Generative Adversarial Trainer as Lee, Han and Lee
# (2017) describe it: the generator sees the input gradient only and makes one step per
# batch from the clean point, one generator update per classifier update, a full-size
# generator. "l2l" (the default): after learned multi-step attackers (L2L / L2L-DA), the
# image beside the gradient, two generator steps each on a fresh gradient, the first from
# a random point of the ball, a half-resolution generator body with a per-pixel path: on
# mnist5k 92% of pgd_at's PGD-40 accuracy in 0.37x its training time. "l2l-3": the same
# with three generator steps, stronger (79.2% PGD-40 against 75.3%) and slower. A latent
# code and a second generator update were measured and left out (figures: README).
_L2L = {"generator_input": "image+grad", "generator_updates": 1, "latent_dim": 0, "generator_random_init": 1,
        "generator_resolution": "half"}
RECIPES = {
    "paper": {"generator_input": "grad", "generator_steps": 1, "generator_updates": 1, "latent_dim": 0,
              "generator_random_init": 0, "generator_resolution": "full"},
    "l2l": {**_L2L, "generator_steps": 2},
    "l2l-3": {**_L2L, "generator_steps": 3},
}


class ConfigError(ValueError):
    """A configuration that cannot run: the CLI prints it as one line and exits with 2."""


@dataclass
class TrainConfig:
    dataset: str = "mnist5k"
    method: str = "gat"
    model: str = "small_cnn"
    eps: float = 0.3
    norm: str = "linf"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"          # adam | sgd (momentum 0.9, nesterov)
    weight_decay: float = 0.0
    schedule: str = "constant"       # constant | cosine (per step, to 0 at the end)
    eps_warmup: float = 0.0          # epochs over which eps ramps linearly from 0 (all methods)
    seed: int = 0
    amp: str | None = None
    cuda_graph: bool = False         # gat on a GPU: capture the whole step (no non-finite guard then)
    single_pass: bool = False        # gat, image-only generator: one forward over cat(x, x_adv) (GATStep)
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    backend: str = "auto"            # gatfast op backend
    data_root: str | None = None
    download: bool = False
    train_size: int = 0              # train on the first N images of the training split (0: all)
    # pgd_at / trades / fgsm_rs
    attack_steps: int = 10
    attack_step_size: float | None = None
    trades_beta: float = 6.0
    # gat
    alpha: float = 0.5
    c_g: float = 0.0
    generator_input: str = "image+grad"
    generator_bound: str | None = None   # default: the norm
    generator_steps: int = 2
    generator_updates: int = 1
    latent_dim: int = 0
    generator_random_init: int = 1   # 1: the generator's first step starts at a random point of the ball
    generator_width: int = 32
    generator_blocks: int = 1
    generator_resolution: str = "half"   # full | half (body at half size + a per-pixel path)
    generator_lr: float = 1e-3
    recipe: str | None = None        # the named GAT recipe these options came from (RECIPES)
    # the engine
    max_nonfinite: int = 5           # consecutive skipped steps before training stops
    eval_pgd_steps: int = 40         # final white-box check on the test split (0: none)
    progress: bool = True

    @classmethod
    def from_recipe(cls, name: str, **overrides) -> "TrainConfig":
        """A gat config from a named recipe (RECIPES); explicit overrides win."""
        if name not in RECIPES:
            raise ConfigError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
        return cls(**{"method": "gat", **RECIPES[name], **overrides, "recipe": name})

    def validate(self) -> "TrainConfig":
        def need(ok, message):
            if not ok:
                raise ConfigError(message)

        need(self.dataset in data.DATASETS, f"unknown dataset {self.dataset!r}; choose from {', '.join(data.DATASETS)}")
        need(self.method in methods.METHODS, f"unknown method {self.method!r}; choose from {', '.join(methods.METHODS)}")
        need(self.model in models.MODELS, f"unknown model {self.model!r}; choose from {', '.join(models.MODELS)}")
        need(self.norm in ("linf", "l2"), f"norm must be linf or l2, got {self.norm!r}")
        need(isinstance(self.eps, (int, float)) and math.isfinite(self.eps) and self.eps > 0,
             f"eps must be > 0, got {self.eps}")
        need(self.norm != "linf" or self.eps <= 1,
             f"eps {self.eps} is beyond the [0, 1] pixel range for linf (did you mean {self.eps}/255?)")
        for name in ("epochs", "batch_size", "attack_steps", "generator_steps", "generator_updates",
                     "generator_width", "max_nonfinite"):
            need(isinstance(getattr(self, name), int) and getattr(self, name) >= 1,
                 f"{name.replace('_', '-')} must be an integer >= 1, got {getattr(self, name)!r}")
        for name in ("lr", "generator_lr"):
            need(math.isfinite(getattr(self, name)) and getattr(self, name) > 0, f"{name} must be > 0")
        need(self.optimizer in ("adam", "sgd"), f"optimizer must be adam or sgd, got {self.optimizer!r}")
        need(self.schedule in ("constant", "cosine"), f"schedule must be constant or cosine, got {self.schedule!r}")
        need(self.amp in (None, "bf16", "fp16"), f"amp must be bf16 or fp16, got {self.amp!r}")
        need(0 <= self.alpha <= 1, f"alpha must be in [0, 1], got {self.alpha}")
        need(self.c_g >= 0, f"c-g must be >= 0, got {self.c_g}")
        need(self.eps_warmup >= 0, f"eps-warmup must be >= 0, got {self.eps_warmup}")
        need(self.generator_input in generators.INPUTS,
             f"generator-input must be one of {', '.join(generators.INPUTS)}, got {self.generator_input!r}")
        bound = self.generator_bound or self.norm
        need(bound in generators.BOUNDS, f"generator-bound must be one of {', '.join(generators.BOUNDS)}")
        need(bound in (self.norm, "penalty"),
             f"the generator cannot bound a {self.norm} perturbation with a {bound} bound "
             f"(use generator-bound {self.norm} or penalty)")
        need(self.generator_resolution in ("full", "half"),
             f"generator-resolution must be full or half, got {self.generator_resolution!r}")
        need(self.latent_dim >= 0, f"latent-dim must be >= 0, got {self.latent_dim}")
        need(self.eval_pgd_steps >= 0, "eval-pgd-steps must be >= 0")
        need(self.train_size >= 0, "train-size must be >= 0")
        need(not self.cuda_graph or self.method == "gat", "cuda-graph is an option of the gat method")
        need(not self.single_pass or self.method == "gat", "single-pass is an option of the gat method")
        need(not self.single_pass or self.generator_input == "image",
             f"single-pass needs generator-input image (x_adv must exist before the classifier runs), "
             f"got {self.generator_input!r}")
        need(not self.single_pass or self.alpha < 1, "single-pass needs alpha < 1")
        need(self.backend in gatfast.backends.BACKENDS,
             f"unknown backend {self.backend!r}; choose from {', '.join(gatfast.backends.BACKENDS)}")
        return self


# ---- building blocks -------------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but torch sees no CUDA GPU here")
    return device


def build_classifier(config: TrainConfig, ds: data.DatasetSplits) -> torch.nn.Module:
    c, h, _ = ds.image_shape
    mean, std = (models.MNIST_MEAN, models.MNIST_STD) if c == 1 else (models.CIFAR_MEAN, models.CIFAR_STD)
    kwargs = {"in_channels": c, "num_classes": ds.num_classes, "mean": mean, "std": std}
    if config.model == "small_cnn":
        kwargs["image_size"] = h
    return models.build_model(config.model, **kwargs)


def build_generator(config: TrainConfig, ds: data.DatasetSplits) -> generators.PerturbationGenerator:
    return generators.PerturbationGenerator(
        ds.image_shape[0], config.eps, bound=config.generator_bound or config.norm, input=config.generator_input,
        width=config.generator_width, blocks=config.generator_blocks, latent_dim=config.latent_dim,
        resolution=config.generator_resolution)


def _optimizer(config: TrainConfig, params, lr):
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=config.weight_decay, capturable=config.cuda_graph)
    return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)


def build_method(config: TrainConfig, classifier, ds, probe=None) -> methods.Method:
    opt = _optimizer(config, classifier.parameters(), config.lr)
    common = {"eps": config.eps, "norm": config.norm, "amp": config.amp}
    if config.method == "standard":
        return methods.Standard(classifier, opt, **common)
    if config.method == "pgd_at":
        return methods.PGDAT(classifier, opt, steps=config.attack_steps, step_size=config.attack_step_size, **common)
    if config.method == "trades":
        return methods.TRADES(classifier, opt, steps=config.attack_steps, step_size=config.attack_step_size,
                              beta=config.trades_beta, **common)
    if config.method == "fgsm_rs":
        return methods.FGSMRS(classifier, opt, probe=probe, **common)
    generator = build_generator(config, ds).to(next(classifier.parameters()).device)
    return methods.GAT(classifier, opt, generator, _optimizer(config, generator.parameters(), config.generator_lr),
                       alpha=config.alpha, c_g=config.c_g, generator_steps=config.generator_steps,
                       generator_updates=config.generator_updates, cuda_graph=config.cuda_graph,
                       random_init=bool(config.generator_random_init), single_pass=config.single_pass, **common)


def lr_factor(config: TrainConfig, progress: float) -> float:
    """The schedule at `progress` epochs into training (a float)."""
    if config.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(progress / config.epochs, 1.0)))
    return 1.0


def eps_at(config: TrainConfig, progress: float) -> float:
    if config.eps_warmup <= 0 or progress >= config.eps_warmup:
        return config.eps
    return config.eps * max(progress / config.eps_warmup, 1e-3)


def _set_eps(method, eps):
    method.eps = eps
    if isinstance(method, methods.GAT):
        method.gat_step.eps = eps
        method.generator.eps = eps
    if isinstance(method, methods.FGSMRS):
        method.step_size = 1.25 * eps


def epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The data order of one epoch: a function of (seed, epoch) only, for exact resume."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def environment(device: torch.device) -> dict:
    env = {"gatfast": gatfast.__version__, "torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "device": str(device), "build": gatfast.build_info()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["threads"] = torch.get_num_threads()
    return env


# ---- distributed -------------------------------------------------------------------------------

@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    owns_group: bool = False   # train() opened the process group, so it closes it

    @property
    def main(self):
        return self.rank == 0


def _init_distributed(device_name: str) -> _Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist()
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if device_name != "cpu" and torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return _Dist(dist.get_rank(), dist.get_world_size(), owns)


def _average_gradients(modules, share: float):
    """Gradients of each process's mean loss, weighted by its share of the global batch and
    summed: the gradient of the global batch's mean loss, whatever the shard sizes."""
    grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads]) * share
    dist.all_reduce(flat)
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def _sync_buffers(modules):
    for m in modules:
        for b in m.buffers():
            dist.broadcast(b, 0)


# ---- the loop ----------------------------------------------------------------------------------

def _rng_state(device):
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state, device):
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _progress(total, desc, enabled):
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, file=sys.stderr)


@torch.no_grad()
def accuracy(model, x, y, batch_size=500):
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return correct / len(y)


def robustness(model, ds: data.DatasetSplits, config: TrainConfig, device, progress=True) -> dict:
    """Clean, FGSM and PGD-k (k = eval_pgd_steps, step 2.5 eps / k, random start) accuracy on
    the test split, model in eval mode. The full attack suite is `gatfast eval`."""
    model.eval()
    x, y = (t.to(device) for t in ds.test.tensors)
    out = {"clean": accuracy(model, x, y)}
    attacks = [("fgsm", 1, config.eps, False), (f"pgd{config.eval_pgd_steps}", config.eval_pgd_steps, None, True)]
    bar = _progress(len(attacks) * math.ceil(len(y) / 500), "evaluate", progress)
    for name, steps, step_size, random_init in attacks:
        correct = 0
        for i in range(0, len(y), 500):
            xb, yb = x[i:i + 500], y[i:i + 500]
            x_adv = pgd(model, xb, yb, eps=config.eps, norm=config.norm, steps=steps, step_size=step_size,
                        random_init=random_init, generator=torch.Generator(device).manual_seed(i))
            with torch.no_grad():
                correct += int((model(x_adv).argmax(1) == yb).sum())
            if bar:
                bar.update()
        out[name] = correct / len(y)
    if bar:
        bar.close()
    return out


class TrainingStopped(RuntimeError):
    """Training ended early with a reason (non-finite losses); the run folder holds the last good state."""


def train(config: TrainConfig, out_dir, *, resume: bool = False, log=print, on_end=None) -> dict:
    """Train per `config` into `out_dir`; returns the summary. With resume=True, continue the
    run in out_dir (its config, with `epochs` possibly raised) from its last checkpoint.
    on_end(method), if given, runs on every process once training ends (before evaluation)."""
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT
    if resume:
        if not ckpt_path.is_file():
            raise ConfigError(f"--resume: {out} holds no checkpoint to resume from")
        saved = load_config(out)
        if config.epochs < saved.epochs:
            raise ConfigError(f"--resume: epochs {config.epochs} is fewer than the run's {saved.epochs}")
        config = dataclasses.replace(saved, epochs=config.epochs, progress=config.progress, device=config.device)
    elif ckpt_path.exists():
        raise ConfigError(f"{out} already holds a run: pass --resume to continue it, or choose another --out")
    config.validate()
    ddp = _init_distributed(config.device)
    try:
        return _train(config, out, ckpt_path, resume, ddp, log, on_end)
    finally:
        # A process that exits with its gloo group alive can abort ("terminate called
        # without an active exception") while another rank still evaluates: the group
        # is closed by whoever opened it.
        if ddp.owns_group:
            dist.destroy_process_group()


def _train(config: TrainConfig, out: Path, ckpt_path: Path, resume: bool, ddp: "_Dist", log, on_end) -> dict:
    device = resolve_device(config.device)
    if device.type == "cuda" and ddp.world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", ddp.rank)))
        torch.cuda.set_device(device)
    if config.cuda_graph and device.type != "cuda":
        raise ConfigError("cuda-graph needs a CUDA device (--device cuda)")
    if config.batch_size < ddp.world:
        raise ConfigError(f"batch-size {config.batch_size} is smaller than the {ddp.world} processes")

    try:
        ds = data.load_dataset(config.dataset, config.data_root, config.download)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        raise ConfigError(str(e)) from e
    x_train, y_train = (t.to(device) for t in ds.train.tensors)
    if config.train_size:
        x_train, y_train = x_train[:config.train_size], y_train[:config.train_size]

    torch.manual_seed(config.seed)
    classifier = build_classifier(config, ds).to(device)
    probe = (x_train[:256], y_train[:256]) if config.method == "fgsm_rs" else None
    method = build_method(config, classifier, ds, probe)
    modules, optimizers = method.modules(), method.optimizers()
    base_lrs = {k: [g["lr"] for g in o.param_groups] for k, o in optimizers.items()}
    if ddp.world > 1:
        for m in modules.values():
            for p in m.parameters():
                dist.broadcast(p.data, 0)
        method.gradient_hook = lambda: _average_gradients(list(modules.values()), share[0])
        torch.manual_seed(config.seed * 1_000_003 + 7919 * ddp.rank)  # different noise per process

    skipped_in_row, share = [0], [1.0]

    def guard(finite: torch.Tensor) -> bool:
        ok = finite.to(torch.int32)
        if ddp.world > 1:  # all processes skip together, or none does
            dist.all_reduce(ok, op=dist.ReduceOp.MIN)
        return bool(ok)

    # A captured step cannot stop on the host to look at its loss.
    method.step_guard = None if config.cuda_graph else guard

    start_epoch, wall_before = 0, 0.0
    if resume:
        state = checkpoint.load(ckpt_path, device)
        for k, m in modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        method.load_state_dict(state["method"])
        _set_rng_state(state["rng"], device)
        start_epoch, wall_before = state["epoch"], state["wall_s"]
        if ddp.main:
            log(f"resuming {out} at epoch {start_epoch + 1} of {config.epochs}")
    elif ddp.main:
        out.mkdir(parents=True, exist_ok=True)
        checkpoint.write_json(out / "config.json", {"config": dataclasses.asdict(config),
                                                    "environment": environment(device), "world_size": ddp.world})

    n = len(y_train)
    # A captured step replays one batch shape: the last partial batch is dropped then.
    steps_per_epoch = n // config.batch_size if config.cuda_graph else math.ceil(n / config.batch_size)
    stop_reason, t_start = None, time.perf_counter()
    with gatfast.use_backend(config.backend):
        for epoch in range(start_epoch, config.epochs):
            for m in modules.values():
                m.train()
            order = epoch_order(config.seed, epoch, n).to(device)
            sums, count, skipped = {}, 0, 0
            bar = _progress(steps_per_epoch, f"{config.method} epoch {epoch + 1}/{config.epochs}",
                            config.progress and ddp.main)
            t_epoch = time.perf_counter()
            for i in range(steps_per_epoch):
                position = epoch + i / steps_per_epoch
                for k, o in optimizers.items():
                    for g, base in zip(o.param_groups, base_lrs[k]):
                        g["lr"] = base * lr_factor(config, position)
                _set_eps(method, eps_at(config, position))
                idx = order[i * config.batch_size:(i + 1) * config.batch_size]
                if ddp.world > 1:  # this process's part of the global batch
                    if len(idx) < ddp.world:
                        continue  # every process skips it alike
                    global_n = len(idx)
                    idx = torch.tensor_split(idx, ddp.world)[ddp.rank]
                    share[0] = len(idx) / global_n
                metrics = method.step(x_train[idx], y_train[idx])
                step_skipped = bool(metrics.pop("skipped", 0))
                skipped += step_skipped
                skipped_in_row[0] = skipped_in_row[0] + 1 if step_skipped else 0
                if skipped_in_row[0] >= config.max_nonfinite:
                    stop_reason = (f"training stopped: {skipped_in_row[0]} steps in a row had a non-finite loss "
                                   f"(epoch {epoch + 1}, step {i + 1}); the checkpoint in {out} holds the last good "
                                   f"epoch; try a lower --lr or amp off")
                    break
                if not step_skipped:
                    for k, v in metrics.items():
                        sums[k] = sums.get(k, 0) + v.float()
                    count += 1
                if bar:
                    bar.update()
                    if i % 10 == 0 and count:
                        bar.set_postfix({k: f"{float(v) / count:.3f}" for k, v in sums.items()
                                         if k in ("loss_classifier", "acc_clean", "acc_adv")})
            if bar:
                bar.close()
            if stop_reason:
                break
            record = {k: float(v) / max(count, 1) for k, v in sums.items()}
            if ddp.world > 1:
                values = torch.tensor([record.get(k, 0.0) for k in sorted(record)], dtype=torch.float64)
                dist.all_reduce(values)
                record = dict(zip(sorted(record), (values / ddp.world).tolist()))
                _sync_buffers(modules.values())
            epoch_s = time.perf_counter() - t_epoch
            stop_reason = method.end_epoch(epoch + 1)
            wall = wall_before + time.perf_counter() - t_start
            record.update({"epoch": epoch + 1, "lr": config.lr * lr_factor(config, epoch + 1),
                           "eps": eps_at(config, epoch + 1), "skipped_steps": skipped, "epoch_s": round(epoch_s, 3),
                           "wall_s": round(wall, 3)})
            if ddp.main:
                checkpoint.save(ckpt_path, {
                    "epoch": epoch + 1, "wall_s": wall,
                    "modules": {k: m.state_dict() for k, m in modules.items()},
                    "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                    "method": method.state_dict(), "rng": _rng_state(device)})
                with open(out / "log.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")
                log(f"epoch {epoch + 1}/{config.epochs}  " + "  ".join(
                    f"{k} {record[k]:.4f}" for k in ("loss_classifier", "acc_clean", "acc_adv") if k in record)
                    + f"  ({epoch_s:.1f} s)")
            if stop_reason:
                break
        if stop_reason and "non-finite" in stop_reason:
            if ddp.main:
                checkpoint.write_json(out / "summary.json", {"stopped": stop_reason, "epochs_done": epoch})
            raise TrainingStopped(stop_reason)
        wall = wall_before + time.perf_counter() - t_start
        if on_end is not None:
            on_end(method)
        summary = {"epochs_done": config.epochs if not stop_reason else epoch + 1, "train_wall_s": round(wall, 3),
                   "stopped": stop_reason}
        if stop_reason and ddp.main:
            log(stop_reason)
        if config.eval_pgd_steps and ddp.main:
            summary["robustness"] = robustness(classifier, ds, config, device, config.progress)
            summary["threat_model"] = (f"white box, {config.norm} eps {config.eps:g}, test split of {config.dataset} "
                                       f"({len(ds.test)} images); FGSM and PGD-{config.eval_pgd_steps} with CE loss, "
                                       f"one random start")
    if ddp.main:
        checkpoint.write_json(out / "summary.json", summary)
    return summary


# ---- using a finished run ----------------------------------------------------------------------

def load_config(run_dir) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a gatfast run folder (no config.json)")
    saved = json.loads(path.read_text())["config"]
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in saved.items() if k in known})


@dataclass
class Run:
    classifier: torch.nn.Module
    generator: torch.nn.Module | None
    config: TrainConfig
    summary: dict


def load_run(run_dir, device: str | torch.device = "cpu") -> Run:
    """The trained classifier (eval mode), the generator (None for methods without one)
    and the config of a run folder."""
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    if not (run_dir / CHECKPOINT).is_file():
        raise ConfigError(f"{run_dir} holds no trained model ({CHECKPOINT} is missing)")
    shape, num_classes = data.SHAPES[config.dataset]
    ds = data.DatasetSplits(config.dataset, None, None, num_classes, shape)
    state = checkpoint.load(run_dir / CHECKPOINT, device)
    classifier = build_classifier(config, ds).to(device)
    classifier.load_state_dict(state["modules"]["classifier"])
    classifier.eval()
    generator = None
    if "generator" in state["modules"]:
        generator = build_generator(config, ds).to(device)
        generator.load_state_dict(state["modules"]["generator"])
        generator.eval()
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    return Run(classifier, generator, config, summary)
