"""ImageNet backbones split for transfer learning: a frozen stem, a tail that fine-tuning unfreezes, a new head.

Two architectures, both built locally and filled from registry weights with strict loading
(``torch.load(weights_only=True)``, no pickled code):

* ``resnet18``: torchvision's ResNet-18 (``resnet18-imagenet``). Stem = conv1 ... layer3,
  tail = layer4 (the roadmap's "unfreeze layer4"), 512 features.
* ``efficientnet-lite0``: EfficientNet-Lite0 from ``efficientnet_lite_pytorch`` (``efficientnet-lite0``).
  Its 16 MBConv blocks run at strides 2-32; the tail is the stride-32 stage (blocks 11-15) plus the
  1x1 head convolution, the analogue of ResNet's layer4; 1280 features.

``backbone="auto"`` takes ResNet-18 when its weights are present and EfficientNet-Lite0 otherwise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)

BACKBONES = ("resnet18", "efficientnet-lite0")
ASSET = {"resnet18": "resnet18-imagenet", "efficientnet-lite0": "efficientnet-lite0"}
# Input normalisation each set of weights was trained with (on the [0, 1] pixel scale).
NORMALIZATION = {
    "resnet18": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # torchvision's ImageNet statistics
    "efficientnet-lite0": ((0.498, 0.498, 0.498), (0.502, 0.502, 0.502)),  # TF-Lite's (x - 127) / 128
}
_EFFNET_LAST_STAGE = 5  # MBConv blocks 11-15 run at stride 32


@dataclass(frozen=True)
class BackboneChoice:
    name: str  # "resnet18" or "efficientnet-lite0"
    weights: Path
    reason: str  # why this one (for the report)


def choose_backbone(backbone: str = "auto") -> BackboneChoice:
    """Resolve the config's ``backbone`` to an architecture and a verified weight file."""
    from mastery.assets.catalog import get_asset
    from mastery.assets.store import locate, resolve
    from mastery.core.errors import AssetError, ConfigError

    if backbone not in ("auto", *BACKBONES):
        raise ConfigError(f"backbone must be auto, {' or '.join(BACKBONES)}; got {backbone!r}")
    if backbone in ("auto", "resnet18"):
        found = locate(get_asset(ASSET["resnet18"]))
        if found is not None:
            return BackboneChoice("resnet18", resolve(ASSET["resnet18"]), f"{backbone}: ResNet-18 weights found")
        if backbone == "resnet18":
            raise AssetError(f"backbone=resnet18 needs torchvision's ResNet-18 ImageNet weights, which are missing: "
                             f"{_missing(ASSET['resnet18'])}; or choose backbone=efficientnet-lite0")
    try:
        path = resolve(ASSET["efficientnet-lite0"])
    except AssetError as exc:
        raise AssetError(f"backbone={backbone} needs the EfficientNet-Lite0 ImageNet weights: {exc}") from exc
    reason = "auto: ResNet-18 weights absent, using EfficientNet-Lite0" if backbone == "auto" else "forced"
    return BackboneChoice("efficientnet-lite0", path, reason)


def _missing(asset: str) -> str:
    from mastery.assets.store import resolve
    from mastery.core.errors import AssetError

    try:
        resolve(asset, fetch=False)
    except AssetError as exc:
        return str(exc)
    return "found"


def load_state_dict(path: Path | str) -> dict[str, torch.Tensor]:
    """Tensors only: ``weights_only=True`` refuses pickled objects."""
    return torch.load(Path(path), map_location="cpu", weights_only=True)


def imagenet_classifier(name: str, weights: Path | str | None, image_size: int = 224) -> nn.Module:
    """The full 1000-class ImageNet model, weights loaded strictly (a missing or extra key raises)."""
    if name == "resnet18":
        from torchvision.models import resnet18

        model = resnet18(weights=None)
    elif name == "efficientnet-lite0":
        from efficientnet_lite_pytorch import EfficientNet

        # image_size fixes the TF-style "same" padding of every convolution for that input size.
        model = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    else:
        raise ValueError(f"unknown backbone {name!r}; choose from {', '.join(BACKBONES)}")
    if weights is not None:
        model.load_state_dict(load_state_dict(weights), strict=True)
        log.info("loaded %s ImageNet weights from %s", name, weights)
    elif name == "efficientnet-lite0":
        # The package keeps PyTorch's default init, which shrinks activations layer by layer until they
        # are denormal (slow on CPU, and useless); use He init like torchvision's EfficientNet.
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return model


@torch.inference_mode()
def calibrate_batchnorm(module: nn.Module, batches: Any) -> None:
    """Set every BatchNorm's running mean/var to its average over ``batches`` (input tensors).

    A randomly initialised network has running statistics (0, 1) that match nothing; a frozen random
    backbone only gives usable features once they describe the data it will see.
    """
    bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
    module.eval()
    for m in bns:
        m.train()  # only the BatchNorms: drop-connect and dropout stay off
    for x in batches:
        module(x)
    for m, momentum in zip(bns, saved, strict=True):
        m.momentum = momentum
    module.eval()


def weight_key_report(name: str, weights: Path | str) -> dict[str, Any]:
    """Compare a weight file's keys and shapes with the model's: loaded count, missing and unexpected keys."""
    model = imagenet_classifier(name, None)
    state = load_state_dict(weights)
    expected = model.state_dict()
    mismatched = [k for k, v in state.items() if k in expected and tuple(v.shape) != tuple(expected[k].shape)]
    return {"loaded": sum(k in expected for k in state), "missing": sorted(set(expected) - set(state)),
            "unexpected": sorted(set(state) - set(expected)), "mismatched": mismatched}


def imagenet_categories() -> list[str]:
    from torchvision.models import ResNet18_Weights

    return list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


class _EffBlocks(nn.Module):
    """A run of EfficientNet MBConv blocks, with the drop-connect rate each has in the full model."""

    def __init__(self, blocks: list[nn.Module], first_index: int, total: int, rate: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.rates = [rate * (first_index + i) / total for i in range(len(blocks))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, rate in zip(self.blocks, self.rates, strict=True):
            x = block(x, drop_connect_rate=rate)
        return x


class TransferNet(nn.Module):
    """logits = head(pool(tail(stem(x)))): x (B, 3, H, W) -> stem (B, C, h, w) -> tail (B, F, h', w') -> (B, K).

    Frozen parts (all parameters ``requires_grad=False``) stay in eval mode even under ``train()``, so
    their BatchNorm statistics do not drift: the stem's output is then a fixed function of the image,
    which is what lets :mod:`mastery.vision.transfer` cache it. With ``frozen_bn_stats`` (set by
    :func:`set_stage` for stages 1 and 2) every BatchNorm keeps its ImageNet running statistics while
    fine-tuning (its scale and shift still train): with a few hundred images and EfficientNet's slow
    BN momentum (0.01) the running statistics would otherwise lag the batch statistics the weights
    adapt to, and evaluation would see a different network than training did.
    """

    def __init__(self, stem: nn.Module, tail: nn.Module, feature_dim: int, num_classes: int,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.stem, self.tail = stem, tail
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, F, h, w) -> (B, F)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim, num_classes))
        self.feature_dim = feature_dim
        self.frozen_bn_stats = True

    def features(self, stem_out: torch.Tensor) -> torch.Tensor:
        return self.pool(self.tail(stem_out))  # (B, F)

    def from_stem(self, stem_out: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(stem_out))  # (B, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_stem(self.stem(x))

    def train(self, mode: bool = True) -> TransferNet:
        super().train(mode)
        for part in (self.stem, self.tail, self.head):
            if not any(p.requires_grad for p in part.parameters()):
                part.eval()
        if mode and self.frozen_bn_stats:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


class FromStem(nn.Module):
    """``net`` seen from its cached stem output: forward(stem_out (B, C, h, w)) -> logits (B, K)."""

    def __init__(self, net: TransferNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, stem_out: torch.Tensor) -> torch.Tensor:
        return self.net.from_stem(stem_out)


def build_transfer_net(name: str, weights: Path | str | None, num_classes: int, *, image_size: int = 224,
                       dropout: float = 0.2, tail_blocks: int | None = None) -> TransferNet:
    """A backbone (ImageNet weights, or random when ``weights`` is None) with a new ``num_classes`` head.

    ``tail_blocks``: how many of the last residual/MBConv blocks form the unfreezable tail; None = the
    whole last stage (ResNet-18's layer4 = 2 blocks; EfficientNet-Lite0's stride-32 stage = 5 blocks,
    plus its head convolution in both cases for EfficientNet).
    """
    model = imagenet_classifier(name, weights, image_size)
    if name == "resnet18":
        blocks = [*model.layer1, *model.layer2, *model.layer3, *model.layer4]  # 8 BasicBlocks
        n = 2 if tail_blocks is None else tail_blocks
        if not 1 <= n <= len(blocks):
            raise ValueError(f"tail_blocks must be in [1, {len(blocks)}] for resnet18, got {n}")
        stem = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, *blocks[:-n])
        tail = nn.Sequential(*blocks[-n:])
        feature_dim = model.fc.in_features  # 512
    else:
        blocks = list(model._blocks)  # 16 MBConv blocks
        n = _EFFNET_LAST_STAGE if tail_blocks is None else tail_blocks
        if not 1 <= n <= len(blocks):
            raise ValueError(f"tail_blocks must be in [1, {len(blocks)}] for efficientnet-lite0, got {n}")
        rate = float(model._global_params.drop_connect_rate or 0.0)
        k = len(blocks) - n
        stem = nn.Sequential(model._conv_stem, model._bn0, nn.ReLU6(), _EffBlocks(blocks[:k], 0, len(blocks), rate))
        tail = nn.Sequential(_EffBlocks(blocks[k:], k, len(blocks), rate), model._conv_head, model._bn1, nn.ReLU6())
        feature_dim = model._fc.in_features  # 1280
    return TransferNet(stem, tail, feature_dim, num_classes, dropout)


def set_stage(net: TransferNet, stage: int) -> dict[str, int]:
    """Stage 1: only the head trains. Stage 2: the tail and head train. Stage 0: everything (from scratch).

    Returns the number of trainable and frozen parameters.
    """
    if stage not in (0, 1, 2):
        raise ValueError(f"stage must be 0 (all), 1 (head) or 2 (tail + head), got {stage}")
    for p in net.stem.parameters():
        p.requires_grad_(stage == 0)
    for p in net.tail.parameters():
        p.requires_grad_(stage in (0, 2))
    for p in net.head.parameters():
        p.requires_grad_(True)
    net.frozen_bn_stats = stage != 0  # a network trained from scratch must learn its BN statistics
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    total = sum(p.numel() for p in net.parameters())
    return {"trainable": trainable, "frozen": total - trainable}


def sanity_top5(name: str, weights: Path | str, image: Any, image_size: int = 224) -> list[tuple[str, float]]:
    """Top-5 ImageNet (label, probability) of the full pretrained model for one PIL image."""
    import numpy as np

    model = imagenet_classifier(name, weights, image_size).eval()
    mean, std = NORMALIZATION[name]
    rgb = image.convert("RGB").resize((image_size, image_size))
    x = torch.from_numpy(np.array(rgb, dtype=np.float32) / 255.0).permute(2, 0, 1)  # (3, S, S)
    x = (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    with torch.inference_mode():
        probs = model(x[None]).softmax(dim=1)[0]  # (1000,)
    top = probs.topk(5)
    names = imagenet_categories()
    return [(names[int(i)], float(p)) for p, i in zip(top.values, top.indices, strict=True)]


def build_from_manifest(arch: dict) -> TransferNet:
    """A TransferNet (random weights) from a model-registry ``architecture`` entry; weights are loaded after."""
    if arch.get("class") != "TransferNet":
        raise ValueError(f"mastery.vision.backbones cannot build {arch.get('class')!r}; known: TransferNet")
    kw = dict(arch.get("kwargs", {}))
    return build_transfer_net(kw["backbone"], None, int(kw["num_classes"]), image_size=int(kw["image_size"]),
                              dropout=float(kw.get("dropout", 0.2)), tail_blocks=kw.get("tail_blocks"))
