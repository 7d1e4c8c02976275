"""The networks, optimisers and method of a TrainConfig: what the engine trains and what
load_run rebuilds from a run folder."""

from __future__ import annotations

import torch

from gatfast.gat import generators
from gatfast.train import data, methods, models
from gatfast.train.config import TrainConfig


def build_classifier(config: TrainConfig, ds: data.DatasetSplits) -> torch.nn.Module:
    c, h, _ = ds.image_shape
    mean, std = (models.MNIST_MEAN, models.MNIST_STD) if c == 1 else (models.CIFAR_MEAN, models.CIFAR_STD)
    kwargs = {"in_channels": c, "num_classes": ds.num_classes, "mean": mean, "std": std}
    if config.model in models.SIZED:
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
    if config.method in ("crown_ibp", "ibp"):
        kappa = None if config.kappa_end is None else (1.0, config.kappa_end)
        beta = (1.0, config.beta_end) if config.method == "crown_ibp" else None
        return methods.METHODS[config.method](classifier, opt, kappa=kappa, beta=beta, **common)
    if config.method == "gaussian":
        return methods.Gaussian(classifier, opt, sigma=config.sigma, **common)
    if config.method == "fgsm_rs":
        return methods.FGSMRS(classifier, opt, probe=probe, **common)
    generator = build_generator(config, ds).to(next(classifier.parameters()).device)
    return methods.GAT(classifier, opt, generator, _optimizer(config, generator.parameters(), config.generator_lr),
                       alpha=config.alpha, c_g=config.c_g, generator_steps=config.generator_steps,
                       generator_updates=config.generator_updates, cuda_graph=config.cuda_graph,
                       random_init=bool(config.generator_random_init), single_pass=config.single_pass, **common)

