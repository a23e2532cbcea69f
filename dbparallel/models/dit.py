"""DiT backbone F of one block for class-conditional image denoising."""

from __future__ import annotations

import torch
from torch import nn

from dbparallel.models.block import Block
from dbparallel.models.layers import (
    AdaLNHead,
    LabelEmbedder,
    SigmaEmbedder,
    patchify,
    sincos_pos_embed_2d,
    unpatchify,
)
from dbparallel.models.presets import ModelDims


class DiTBlock(Block):
    """F(c_in z, c_noise, label) -> image; stem = patch/pos/sigma/label embedding, head = adaLN."""

    def __init__(
        self, dims: ModelDims, image_size: int, channels: int, patch_size: int, num_classes: int
    ):
        super().__init__(dims)
        if image_size % patch_size:
            raise ValueError(
                f"model.patch_size: {patch_size} does not divide data.image_size={image_size}"
            )
        self.channels, self.patch_size = channels, patch_size
        grid = image_size // patch_size
        self.patch_embed = nn.Linear(patch_size * patch_size * channels, dims.hidden)
        self.register_buffer("pos_embed", sincos_pos_embed_2d(dims.hidden, grid)[None])
        self.sigma_embed = SigmaEmbedder(dims.hidden)
        self.label_embed = LabelEmbedder(num_classes, dims.hidden)
        self.head = AdaLNHead(dims.hidden, patch_size * patch_size * channels)
        self.initialize_weights()

    def zero_output(self) -> None:
        nn.init.zeros_(self.head.linear.weight)
        nn.init.zeros_(self.head.linear.bias)

    def forward(
        self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        h = self.patch_embed(patchify(x, self.patch_size)) + self.pos_embed  # (N, T, D)
        c = self.sigma_embed(c_noise) + self.label_embed(labels)  # (N, D)
        h = self.run_layers(h, c)  # (N, T, D)
        out = self.head(h, c)  # (N, T, p*p*C)
        return unpatchify(out, self.patch_size, self.channels)  # (N, C, H, W)
