"""Classifiers for GAT training. All take images in [0, 1] and normalise inside, so
attacks and perturbation bounds always work in pixel space.

- SmallCNN: for 28x28 grey (MNIST-sized) input, also 32x32.
- CertCNN: the small strided CNN of the certified-training papers, no pooling, for every size.
- PreActResNet18 and WideResNet (28-10 by default): for 32x32 colour input.
"""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from gatfast.certify.layers import Residual

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


class Normalize(nn.Module):
    """(x - mean) / std per channel, with mean and std as buffers (saved with the model)."""

    def __init__(self, mean, std):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have one value per channel, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be > 0, got {tuple(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std

    def affine(self):
        """(scale, shift) with forward(x) = x * scale + shift: how gatfast.certify bounds it."""
        return 1 / self.std, -self.mean / self.std


class SmallCNN(nn.Module):
    """Four 3x3 convolutions in two pooled stages and two linear layers."""

    def __init__(self, in_channels=1, num_classes=10, image_size=28, mean=MNIST_MEAN, std=MNIST_STD):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {image_size}")
        self.normalize = Normalize(mean, std)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * (image_size // 4) ** 2, 200), nn.ReLU(), nn.Linear(200, num_classes)
        )

    def forward(self, x):
        return self.classifier(self.features(self.normalize(x)))

    def as_sequential(self) -> nn.Sequential:
        """The same layers (shared, not copied) as one chain: how gatfast.certify reads it."""
        return nn.Sequential(self.normalize, *self.features, *self.classifier)


class CertCNN(nn.Module):
    """The small network of certified training (Gowal et al. 2018's "small", CROWN-IBP's
    DM-small): two strided 4x4 convolutions and two linear layers, no pooling, so that
    linear-relaxation bounds (gatfast.certify) cross every layer. Padding 1 (the papers
    use none) lets it take 8x8 digits as well as 28x28 and 32x32 images."""

    def __init__(self, in_channels=1, num_classes=10, image_size=28, mean=MNIST_MEAN, std=MNIST_STD, width=16,
                 hidden=100):
        super().__init__()
        side = (image_size + 2 - 4) // 2 + 1      # after the stride-2 convolution
        side = side + 2 - 4 + 1                   # after the stride-1 one
        if side < 1:
            raise ValueError(f"image_size must be at least 4, got {image_size}")
        self.normalize = Normalize(mean, std)
        self.layers = nn.Sequential(
            nn.Conv2d(in_channels, width, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 4, stride=1, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * width * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.layers(self.normalize(x))

    def as_sequential(self) -> nn.Sequential:
        """The same layers (shared) as one chain: how gatfast.certify reads it."""
        return nn.Sequential(self.normalize, *self.layers)


class _PreActBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x):
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + skip

    def as_sequential(self) -> nn.Sequential:
        """The block as certify reads it: the residual sum of two chains of one input. With an
        identity shortcut that input is x; with a convolution it is relu(bn1(x)), shared."""
        pre, body = [self.bn1, nn.ReLU()], [self.conv1, self.bn2, nn.ReLU(), self.conv2]
        if self.shortcut is None:
            return nn.Sequential(Residual(pre + body))
        return nn.Sequential(*pre, Residual(body, [self.shortcut]))


class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18 (He et al. 2016) for 32x32 input."""

    def __init__(self, in_channels=3, num_classes=10, mean=CIFAR_MEAN, std=CIFAR_STD):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.stem = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        stages, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [_PreActBlock(cin, cout, stride), _PreActBlock(cout, cout, 1)]
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(512)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        out = F.relu(self.bn(self.stages(self.stem(self.normalize(x)))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))

    def as_sequential(self) -> nn.Sequential:
        """The same layers (shared) as one chain: how gatfast.certify reads it."""
        return _resnet_chain(self.normalize, self.stem, self.stages, self.bn, self.fc)


class WideResNet(nn.Module):
    """Wide ResNet (Zagoruyko and Komodakis 2016), depth 28 and width 10 by default."""

    def __init__(self, depth=28, widen=10, in_channels=3, num_classes=10, mean=CIFAR_MEAN, std=CIFAR_STD):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.normalize = Normalize(mean, std)
        self.stem = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        blocks, cin = [], widths[0]
        for cout, stride in zip(widths[1:], (1, 2, 2)):
            for i in range(n):
                blocks.append(_PreActBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = F.relu(self.bn(self.blocks(self.stem(self.normalize(x)))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))

    def as_sequential(self) -> nn.Sequential:
        """The same layers (shared) as one chain: how gatfast.certify reads it."""
        return _resnet_chain(self.normalize, self.stem, self.blocks, self.bn, self.fc)


def _resnet_chain(normalize, stem, blocks, bn, fc) -> nn.Sequential:
    return nn.Sequential(normalize, stem, *(b.as_sequential() for b in blocks), bn, nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc)


MODELS = {"small_cnn": SmallCNN, "cert_cnn": CertCNN, "preact_resnet18": PreActResNet18, "wide_resnet": WideResNet}
# The models the certified methods train: their bounds hold for the network as it trains.
# The ResNets' BatchNorm has no fixed function in training mode; certify bounds them in eval mode.
CERTIFIABLE = ("small_cnn", "cert_cnn")
SIZED = ("small_cnn", "cert_cnn")  # the models whose layers follow image_size (the ResNets pool to 1x1)


def build_model(name: str, **kwargs) -> nn.Module:
    """A classifier by name (see MODELS)."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}; got {name!r}")
    return MODELS[name](**kwargs)
