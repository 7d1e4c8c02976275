"""The training layer: configuration (config.py), the engine (engine.py) and its
distributed part, the five methods, models, datasets, and run folders (runs.py:
checkpoints, load_run). Depends on gatfast.gat, gatfast.attacks and gatfast.ops."""

from gatfast.train.config import DEFAULT_RECIPE, RECIPES, ConfigError, TrainConfig, resolve_device
from gatfast.train.engine import TrainingStopped, accuracy, train
from gatfast.train.runs import CHECKPOINT, Run, load_config, load_run

__all__ = ["CHECKPOINT", "DEFAULT_RECIPE", "RECIPES", "ConfigError", "Run", "TrainConfig", "TrainingStopped",
           "accuracy", "load_config", "load_run", "resolve_device", "train"]
