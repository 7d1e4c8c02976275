"""The GAT layer: GATStep (one fused generator-defender update), the built-in
PerturbationGenerator, the one update path every method shares, and the plain-autograd
references the step is tested against (reference.py). Depends on gatfast.ops only."""

from gatfast.gat.generators import PerturbationGenerator
from gatfast.gat.step import GATStep
from gatfast.gat.update import Update, trainable_parameters

__all__ = ["GATStep", "PerturbationGenerator", "Update", "trainable_parameters"]
