"""A sweep's methods with options: "pgd_at:attack_steps=3", "gat:recipe=l2l-3",
"crown_ibp:model=cert_cnn:epochs=60". A variant is a method and TrainConfig fields that
differ from the sweep's; `recipe=NAME` takes a named GAT recipe's options (explicit ones
win, as on `gatfast train`). The label is what reports show; its folder name swaps ":"
and "=" for "_" and "-" so that shells need no quoting.

`match=METHOD` trains the variant for as many epochs as give it the wall time of METHOD (a
plain method of the sweep, no options) on the same dataset and seed, from the wall time of
the same variant without `match` (so both must be in the sweep, and train first): "GAT
given PGD-10's budget" is "gat:match=pgd_at".
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass

from gatfast import train
from gatfast.train import methods

_FIELDS = {f.name: f for f in dataclasses.fields(train.TrainConfig)}
_NOT_PER_VARIANT = ("method", "dataset", "seed", "eps", "device", "progress", "data_root", "download")
# options that change no step's cost: a variant differing from another only in these trains
# as fast, so a timing pass times the one for both (its steps' arithmetic is the same)
COST_FREE = ("lr", "generator_lr")


@dataclass(frozen=True)
class Variant:
    label: str
    method: str
    options: tuple          # (field, value) pairs, in the order given
    match: str | None = None

    @property
    def folder(self) -> str:
        return self.label.replace(":", "_").replace("=", "-")

    @property
    def base(self) -> str | None:
        """The label without `match` (whose wall time scales the epochs), or None."""
        if self.match is None:
            return None
        return ":".join(p for p in self.label.split(":") if _option_name(p) != "match")

    @property
    def timed(self) -> str:
        """The label whose timed steps are this variant's: without `match` (its steps are its
        base's) and without the options that change no step's cost (COST_FREE)."""
        kept = [p for p in self.label.split(":")[1:] if _option_name(p) not in ("match", *COST_FREE)]
        return ":".join([self.method, *kept])

    def config_options(self) -> dict:
        """The TrainConfig fields this variant sets (a recipe's options first)."""
        options = dict(self.options)
        recipe = options.pop("recipe", None)
        if recipe is None:
            return options
        if recipe not in train.RECIPES:
            raise train.ConfigError(f"--methods {self.label}: unknown recipe {recipe!r}; choose from "
                                    f"{', '.join(train.RECIPES)}")
        return {**train.RECIPES[recipe], **options, "recipe": recipe}


@functools.cache  # pure, and a sweep asks for its labels' variants wherever it needs them
def parse(label: str) -> Variant:
    """A variant from "METHOD[:FIELD=VALUE...]", every part checked (ConfigError names it)."""
    label = label.strip()
    method, *parts = label.split(":")
    if method not in methods.METHODS:
        raise train.ConfigError(f"--methods: unknown method {method!r} in {label!r}; choose from "
                                f"{', '.join(methods.METHODS)}")
    options, match = [], None
    for part in parts:
        name, (_, eq, text) = _option_name(part), part.partition("=")
        if not eq or not text.strip():
            raise train.ConfigError(f"--methods {label}: {part!r} is not FIELD=VALUE")
        if name == "match":
            match = text.strip()
            continue
        if name in _NOT_PER_VARIANT or name not in _FIELDS:
            raise train.ConfigError(f"--methods {label}: {name!r} is not an option a variant can set")
        options.append((name, _value(name, text.strip(), label)))
    if match is not None and any(n == "epochs" for n, _ in options):
        raise train.ConfigError(f"--methods {label}: match sets the epochs; give one or the other")
    return Variant(label, method, tuple(options), match)


def _option_name(part: str) -> str:
    """The TrainConfig field a label's part names: "generator-lr = 1e-3" -> "generator_lr"."""
    return part.partition("=")[0].strip().replace("-", "_")


def _value(name: str, text: str, label: str):
    kind = typing.get_type_hints(train.TrainConfig)[name]
    choices = typing.get_args(kind) or (kind,)
    if text.lower() == "none" and type(None) in choices:
        return None
    for option in (bool, int, float, str):
        if option in choices:
            try:
                if option is bool:
                    if text.lower() not in ("true", "false", "1", "0"):
                        continue
                    return text.lower() in ("true", "1")
                return option(text)
            except ValueError:
                continue
    raise train.ConfigError(f"--methods {label}: {name}={text!r} is not a {kind}")
