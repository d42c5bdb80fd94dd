"""The networks of GANomaly and Skip-GANomaly (plain torch modules, no training code).

* :class:`Encoder`: DCGAN encoder (Radford et al. 2016), stride-2 4x4 convolutions that
  double the channels until the feature map is 4 to 7 pixels on its short side, then one
  convolution over the whole map to a ``latent_dim`` vector (GANomaly's ``G_E`` and ``E``).
* :class:`Decoder`: the mirror image, transposed convolutions to a ``tanh`` image (``G_D``).
* :class:`Discriminator`: an encoder with a one-logit head; :meth:`Discriminator.features`
  is the last feature map, used for feature matching and Skip-GANomaly's latent loss.
* :class:`GanomalyGenerator`: encoder-decoder-encoder, ``x -> (x_hat, z, z_hat)``.
* :class:`UNetGenerator`: Skip-GANomaly's encoder-decoder with skip connections from each
  encoder level to the decoder level of the same resolution.

Input sizes: ``(h, w)`` with both sides divisible by ``2 ** n`` where ``n`` is the number
of stride-2 stages, ``n = floor(log2(min(h, w) / 4))``; e.g. 32, 96, 128, 256, 128 x 256.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from anomaly.errors import InvalidParameterError


def num_stages(size: Sequence[int]) -> int:
    """Number of stride-2 stages for an input of ``(h, w)`` (short side ends at 4 to 7 px).

    Raises:
        InvalidParameterError: a side not divisible by ``2 ** n`` or shorter than 16.
    """
    h, w = (int(s) for s in size)
    if min(h, w) < 16:
        raise InvalidParameterError(f"image_size must be at least 16 x 16 for these networks, got {h} x {w}")
    n = int(math.floor(math.log2(min(h, w) / 4)))
    if h % 2**n or w % 2**n:
        raise InvalidParameterError(
            f"image_size {h} x {w}: both sides must be divisible by {2**n} (the networks halve the "
            f"image {n} times); e.g. {h - h % 2**n or 2**n} x {w - w % 2**n or 2**n}"
        )
    return n


def _bottom(size: Sequence[int], n: int) -> tuple[int, int]:
    return int(size[0]) // 2**n, int(size[1]) // 2**n


class Encoder(nn.Module):
    """DCGAN encoder: ``(N, C, h, w)`` image to ``(N, latent_dim, 1, 1)``.

    Args:
        size: Input ``(h, w)``.
        in_channels: Image channels.
        n_features: Channels of the first convolution (doubled at every stage).
        latent_dim: Length of the output vector.
    """

    def __init__(self, size: Sequence[int], in_channels: int, n_features: int, latent_dim: int) -> None:
        super().__init__()
        n = num_stages(size)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, n_features, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        channels = n_features
        for _ in range(n - 1):
            layers += [
                nn.Conv2d(channels, channels * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels * 2),
                nn.LeakyReLU(0.2, inplace=True),
            ]
            channels *= 2
        self.pyramid = nn.Sequential(*layers)
        self.final = nn.Conv2d(channels, latent_dim, _bottom(size, n), 1, 0, bias=False)
        self.out_channels = channels

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map ``(N, n_features * 2**(n-1), h / 2**n, w / 2**n)``."""
        return self.pyramid(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final(self.pyramid(x))


class Decoder(nn.Module):
    """DCGAN decoder: ``(N, latent_dim, 1, 1)`` to a ``tanh`` image ``(N, C, h, w)``."""

    def __init__(self, size: Sequence[int], out_channels: int, n_features: int, latent_dim: int) -> None:
        super().__init__()
        n = num_stages(size)
        channels = n_features * 2 ** (n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(latent_dim, channels, _bottom(size, n), 1, 0, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
        ]
        for _ in range(n - 1):
            layers += [
                nn.ConvTranspose2d(channels, channels // 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(channels // 2),
                nn.ReLU(inplace=True),
            ]
            channels //= 2
        layers += [nn.ConvTranspose2d(channels, out_channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """DCGAN discriminator: an encoder whose head is one real/fake logit per image."""

    def __init__(self, size: Sequence[int], in_channels: int, n_features: int) -> None:
        super().__init__()
        self.encoder = Encoder(size, in_channels, n_features, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map ``f(x)`` of the last stage, for feature matching."""
        return self.encoder.features(x)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """``(N,)`` real/fake logits (the sigmoid is in the loss, for numerical stability)."""
        return self.encoder.final(features).flatten()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.features(x)
        return self.logits(feats), feats


class GanomalyGenerator(nn.Module):
    """GANomaly's encoder-decoder-encoder ``G_E -> G_D -> E``.

    ``forward(x)`` returns ``(x_hat, z, z_hat)`` with ``z = G_E(x)``, ``x_hat = G_D(z)`` and
    ``z_hat = E(x_hat)``, latents of shape ``(N, latent_dim, 1, 1)``.
    """

    def __init__(self, size: Sequence[int], channels: int, n_features: int, latent_dim: int) -> None:
        super().__init__()
        self.encoder = Encoder(size, channels, n_features, latent_dim)
        self.decoder = Decoder(size, channels, n_features, latent_dim)
        self.encoder2 = Encoder(size, channels, n_features, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        x_hat = self.decoder(z)
        return x_hat, z, self.encoder2(x_hat)


class UNetGenerator(nn.Module):
    """Skip-GANomaly's generator: a U-Net with a ``latent_dim`` bottleneck.

    The output of encoder level ``i`` (level 1 at half the input resolution, level ``n`` at
    the bottom) is concatenated to the decoder's input at the same resolution for every
    ``i >= skip_from``. ``skip_from=1`` is the paper's full U-Net; a larger value leaves
    the finest levels without a shortcut, so fine detail (and fine defects) cannot be
    copied straight through.

    ``forward(x)`` returns the ``tanh`` reconstruction ``(N, C, h, w)``.
    """

    def __init__(self, size: Sequence[int], channels: int, n_features: int, latent_dim: int,
                 skip_from: int = 1) -> None:
        super().__init__()
        n = num_stages(size)
        self.skips = [level >= skip_from for level in range(1, n + 1)]
        self.down = nn.ModuleList()
        widths = []
        c_in = channels
        for level in range(1, n + 1):
            c_out = n_features * 2 ** (level - 1)
            block: list[nn.Module] = [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False)]
            if level > 1:
                block.append(nn.BatchNorm2d(c_out))
            block.append(nn.LeakyReLU(0.2, inplace=True))
            self.down.append(nn.Sequential(*block))
            widths.append(c_out)
            c_in = c_out
        bottom = _bottom(size, n)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(c_in, latent_dim, bottom, 1, 0, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.ConvTranspose2d(latent_dim, c_in, bottom, 1, 0, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=True),
        )
        self.up = nn.ModuleList()
        for level in range(n, 0, -1):
            c_up_in = widths[level - 1] * (2 if self.skips[level - 1] else 1)
            if level > 1:
                c_out = widths[level - 2]
                self.up.append(nn.Sequential(
                    nn.ConvTranspose2d(c_up_in, c_out, 4, 2, 1, bias=False),
                    nn.BatchNorm2d(c_out),
                    nn.ReLU(inplace=True),
                ))
            else:
                self.up.append(nn.Sequential(nn.ConvTranspose2d(c_up_in, channels, 4, 2, 1, bias=False), nn.Tanh()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
        x = self.bottleneck(x)
        for block, level in zip(self.up, range(len(skips), 0, -1)):
            if self.skips[level - 1]:
                x = torch.cat([x, skips[level - 1]], dim=1)
            x = block(x)
        return x


def init_weights(module: nn.Module, generator: torch.Generator) -> None:
    """DCGAN initialisation (convolutions N(0, 0.02), batch norm scale N(1, 0.02), bias 0).

    Draws from ``generator`` only, so two models built with the same seed are identical
    and the process-wide random state is left alone.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            with torch.no_grad():
                m.weight.normal_(0.0, 0.02, generator=generator)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.normal_(1.0, 0.02, generator=generator)
                m.bias.zero_()
