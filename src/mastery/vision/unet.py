"""U-Net (Ronneberger et al. 2015) by hand: an encoder, a decoder and skip connections between them.

With ``depth`` d and ``width`` w the encoder has d + 1 levels of ``DoubleConv`` (3x3 conv -> BN ->
ReLU, twice) with widths w, 2w, ..., 2^d w, separated by 2x2 max-pools; the decoder climbs back
with 2x2 transposed convs, concatenates the encoder's feature map of the same size (the skip
connection) and applies a DoubleConv. Padded convs keep sizes, so H and W must be divisible by 2^d
and the output (B, out_channels, H, W) lines up pixel for pixel with the input.
"""

from __future__ import annotations

import torch
from torch import nn


class DoubleConv(nn.Module):
    """(B, C_in, H, W) -> (B, C_out, H, W): (3x3 conv -> BN -> ReLU) x 2."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Up(nn.Module):
    """(B, C_in, h, w) + skip (B, C_in/2, 2h, 2w) -> (B, C_out, 2h, 2w)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_in // 2, kernel_size=2, stride=2)
        self.conv = DoubleConv(c_in // 2 + c_in // 2, c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)  # (B, C_in/2, 2h, 2w)
        return self.conv(torch.cat([skip, x], dim=1))  # concat -> (B, C_in, 2h, 2w) -> (B, C_out, 2h, 2w)


class UNet(nn.Module):
    """(B, in_channels, H, W) -> logits (B, out_channels, H, W), float32 (bf16 autocast inside if asked)."""

    def __init__(self, in_channels: int = 1, out_channels: int = 1, width: int = 16, depth: int = 3,
                 bf16: bool = False) -> None:
        super().__init__()
        if depth < 1 or width < 2 or width % 2:
            raise ValueError(f"depth must be >= 1 and width an even number >= 2, got depth {depth} width {width}")
        self.depth = depth
        self.bf16 = bf16
        widths = [width * 2**i for i in range(depth + 1)]  # e.g. 16, 32, 64, 128
        self.inc = DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList(DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList(Up(widths[i + 1], widths[i]) for i in reversed(range(depth)))
        self.outc = nn.Conv2d(widths[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % 2**self.depth or w % 2**self.depth:
            raise ValueError(f"input height and width must be divisible by 2^depth = {2**self.depth}, "
                             f"got {h}x{w}")
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            skips = [self.inc(x)]  # level 0: (B, w, H, W)
            for down in self.down:
                skips.append(down(self.pool(skips[-1])))  # level i: (B, 2^i w, H/2^i, W/2^i)
            y = skips.pop()  # the bottleneck, (B, 2^d w, H/2^d, W/2^d)
            for up in self.up:
                y = up(y, skips.pop())  # one level up, joined with the encoder's map of that size
            logits = self.outc(y)  # (B, out_channels, H, W)
        return logits.float()


def build_from_manifest(arch: dict) -> UNet:
    """A fresh UNet from a model-registry ``architecture`` entry (weights are loaded after)."""
    if arch.get("class") != "UNet":
        raise ValueError(f"mastery.vision.unet cannot build {arch.get('class')!r}; known: UNet")
    kwargs = dict(arch.get("kwargs", {}))
    from mastery.core.precision import bf16_on_reload

    # A caller that moves the model to a GPU may set ``model.bf16 = bf16_on_reload(True, device)`` itself.
    kwargs["bf16"] = bf16_on_reload(bool(kwargs.get("bf16")))
    return UNet(**kwargs)
