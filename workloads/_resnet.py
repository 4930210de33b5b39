"""CIFAR-10 networks: a fast airbench-style CNN and the CIFAR variant of ResNet-18.

AirbenchNet (Jordan's airbench94 layout, without its data-dependent whitening stem, lookahead or test-time
augmentation, which belong to the training recipe rather than the model)::

    (B, 3, 32, 32) -> conv3x3 w0 -> BN -> GELU
      -> 3 x ConvGroup(w_i): conv3x3 -> maxpool2 -> BN -> GELU -> conv3x3 -> BN -> GELU   (32 -> 16 -> 8 -> 4)
      -> global max pool -> linear (no bias) -> x head_scale   -> (B, 10)

ResNet-18 (He et al., CIFAR variant as in AlgoPerf's CIFAR workload and most CIFAR code): 3x3 stem at stride 1 with
no max-pool, four stages of two BasicBlocks (64, 128, 256, 512 channels; stride 2 from the second stage), global
average pool, linear head. The last BatchNorm of every residual branch starts at zero (Goyal et al.), so each block
starts as the identity.

Both take a ``torch.Generator`` for every random draw of their initialisation.

References:
  He et al., "Deep Residual Learning for Image Recognition", CVPR 2016 (arXiv 1512.03385).
  Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", arXiv 2404.00498 (airbench).
  Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour", arXiv 1706.02677 (zero-init).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from optbench.api import Role, named_params

NUM_CLASSES = 10


def _bn(channels: int, momentum: float) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, momentum=momentum)


class ConvGroup(nn.Module):
    """conv3x3 -> maxpool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU; halves the resolution."""

    def __init__(self, c_in: int, c_out: int, bn_momentum: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = _bn(c_out, bn_momentum)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = _bn(c_out, bn_momentum)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))
        return self.act(self.bn2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """The fast CIFAR CNN; ``forward((B, 3, 32, 32)) -> (B, 10)`` logits.

    Args:
      widths: channels of the stem and of the three groups, e.g. (32, 64, 256, 256).
      bn_momentum: BatchNorm running-statistics momentum (airbench uses 0.4: short runs need fresh statistics).
      head_scale: fixed output multiplier (airbench's 1/9) that keeps the initial logits small, loss ~ ln 10.
    """

    def __init__(self, widths: Sequence[int], *, bn_momentum: float = 0.4, head_scale: float = 1 / 9) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"AirbenchNet needs 4 widths (stem + 3 groups), got {tuple(widths)}")
        w0, w1, w2, w3 = widths
        self.stem = nn.Sequential(nn.Conv2d(3, w0, 3, padding=1, bias=False), _bn(w0, bn_momentum), nn.GELU())
        self.groups = nn.Sequential(
            ConvGroup(w0, w1, bn_momentum), ConvGroup(w1, w2, bn_momentum), ConvGroup(w2, w3, bn_momentum),
        )
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(w3, NUM_CLASSES, bias=False)
        self.head_scale = head_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(self.stem(x))  # (B, w3, 4, 4)
        return self.head(self.pool(x).flatten(1)) * self.head_scale


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN; a 1x1 projection shortcut when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, bn_momentum: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _bn(c_out, bn_momentum)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = _bn(c_out, bn_momentum)
        self.bn2.zero_init = True  # the residual branch starts at zero
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _bn(c_out, bn_momentum))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        return self.act(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs; ``forward((B, 3, 32, 32)) -> (B, 10)``.

    Args:
      width: channels of the first stage (64 is the standard network; the stages use width * (1, 2, 4, 8)).
      bn_momentum: BatchNorm running-statistics momentum (PyTorch's 0.1).
    """

    def __init__(self, width: int = 64, *, bn_momentum: float = 0.1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), _bn(width, bn_momentum), nn.ReLU())
        blocks: list[nn.Module] = []
        c_in = width
        for stage, mult in enumerate((1, 2, 4, 8)):
            c_out = width * mult
            for i in range(2):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(c_in, c_out, stride, bn_momentum))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.blocks(self.stem(x))).flatten(1))


def param_roles(model: nn.Module) -> dict[str, Role]:
    """The :class:`~optbench.api.Role` of each parameter of either network, by name and shape: ``head.*`` (the
    classifier's weight and bias) is ``head``; every convolution kernel, the stem's included (there is no embedding:
    the stem is the first hidden layer, as Muon's CIFAR code treats it), ``hidden``; BatchNorm gains and shifts
    ``norm_bias``. A parameter this rule does not know is an error, not a guess."""
    out: dict[str, Role] = {}
    for name, p in named_params(model):
        if name.startswith("head."):
            out[name] = Role.HEAD
        elif p.dim() == 4:
            out[name] = Role.HIDDEN
        elif p.dim() == 1:
            out[name] = Role.NORM_BIAS
        else:
            raise ValueError(f"CIFAR network parameter {name!r} {tuple(p.shape)} has no role")
    return out


def init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """Initialise ``model`` in place, every draw from ``generator``.

    Convolutions: He-normal with fan-out (torchvision's ResNet init). Linear layers: PyTorch's default
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias. BatchNorm: gain 1 (0 where marked ``zero_init``), bias 0.
    """
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            elif isinstance(m, nn.Linear):
                bound = 1 / math.sqrt(m.in_features)
                nn.init.uniform_(m.weight, -bound, bound, generator=generator)
                if m.bias is not None:
                    nn.init.uniform_(m.bias, -bound, bound, generator=generator)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 0.0 if getattr(m, "zero_init", False) else 1.0)
                nn.init.zeros_(m.bias)


def build_model(arch: str, *, widths: Sequence[int], bn_momentum: float, generator: torch.Generator) -> nn.Module:
    """A freshly initialised CIFAR network on the CPU.

    Args:
      arch: ``"airbench"`` or ``"resnet18"``.
      widths: AirbenchNet's 4 widths; for ResNet-18 the first entry is the first stage's width.
      bn_momentum: BatchNorm momentum.
      generator: source of every random draw.
    Returns:
      The model (float32, CPU).
    """
    if arch == "airbench":
        model: nn.Module = AirbenchNet(widths, bn_momentum=bn_momentum)
    elif arch == "resnet18":
        model = ResNet18(int(widths[0]), bn_momentum=bn_momentum)
    else:
        raise ValueError(f"unknown CIFAR architecture {arch!r}; expected 'airbench' or 'resnet18'")
    init_weights(model, generator)
    return model
