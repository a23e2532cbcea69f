"""ViT backbone of one block for image classification (docs/method.md, Losses: vit; paper App. E.1).

With ``noisy_label`` the first token is the c_in-scaled noisy label embedding and every layer
is conditioned on sigma; ``forward`` returns F at that token and ``classify`` maps the
preconditioned denoiser D to logits. Without it (the end-to-end baseline) the first token is a
learned CLS token, the condition is constant, and ``classify`` reads that token directly.
With a ``label_table`` the block owns a learned copy of the label embedding (its rows
normalised to unit length are the targets, ``targets``); without it the task's frozen table is
used and the block holds none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dbparallel.models.block import Block
from dbparallel.models.layers import AdaLNHead, SigmaEmbedder, patchify, sincos_pos_embed_2d
from dbparallel.models.presets import ModelDims


class ViTBlock(Block):
    """Tokens [label; patches] -> F at the label token; stem = patch/pos/sigma embedding,
    head = final norm, adaLN and classifier."""

    def __init__(self, dims: ModelDims, image_size: int, channels: int, patch_size: int,
                 num_classes: int, noisy_label: bool = True,
                 label_table: torch.Tensor | None = None):
        super().__init__(dims)
        if image_size % patch_size:
            raise ValueError(
                f"model.patch_size: {patch_size} does not divide data.image_size={image_size}"
            )
        self.patch_size, self.noisy_label = patch_size, noisy_label
        grid = image_size // patch_size
        self.patch_embed = nn.Linear(patch_size * patch_size * channels, dims.hidden)
        patches = sincos_pos_embed_2d(dims.hidden, grid)
        # position 0 is the label (or CLS) token; it gets its own learned offset
        self.register_buffer("pos_embed", torch.cat([torch.zeros(1, dims.hidden), patches])[None])
        self.label_pos = nn.Parameter(torch.zeros(dims.hidden))
        if noisy_label:
            self.sigma_embed = SigmaEmbedder(dims.hidden)
        else:
            self.cls_token = nn.Parameter(torch.zeros(dims.hidden))
        self.final_norm = nn.LayerNorm(dims.hidden, eps=1e-6)
        self.head = AdaLNHead(dims.hidden, num_classes)
        self.initialize_weights()
        nn.init.normal_(self.label_pos, std=0.02)
        if not noisy_label:
            nn.init.normal_(self.cls_token, std=0.02)
        # a private, trainable copy of the label embedding (model.label_embedding=learned),
        # started at the frozen table so that every block starts in the same target space
        # (on the device the block is built on: the meta device of `plan` too)
        self.label_embed = None if label_table is None else nn.Parameter(
            label_table.to(torch.get_default_device()).clone())

    def zero_output(self) -> None:
        nn.init.zeros_(self.head.linear.weight)
        nn.init.zeros_(self.head.linear.bias)

    def condition(self, c_noise: torch.Tensor | None, n: int) -> torch.Tensor:
        """The adaLN condition: the sigma embedding, or zeros for the baseline, whose
        modulations then reduce to learned per-channel affines and gates."""
        if not self.noisy_label:
            return self.pos_embed.new_zeros(n, self.dims.hidden)  # (N, D)
        assert c_noise is not None, "a noisy-label block needs c_noise"
        return self.sigma_embed(c_noise)  # (N, D)

    def forward(self, images: torch.Tensor, z_in: torch.Tensor | None = None,
                c_noise: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(F at token 0 (N, D), condition c (N, D)) for images (N, C, H, W) and, with a
        noisy label, z_in = c_in * z (N, D) and c_noise (N,)."""
        n = len(images)
        patches = self.patch_embed(patchify(images, self.patch_size))  # (N, T, D)
        if self.noisy_label:
            assert z_in is not None, "a noisy-label block needs z_in"
            first = z_in  # (N, D)
        else:
            first = self.cls_token.expand(n, -1)  # (N, D)
        h = torch.cat([(first + self.label_pos)[:, None], patches], dim=1) + self.pos_embed
        c = self.condition(c_noise, n)  # (N, D)
        h = self.run_layers(h, c)  # (N, 1+T, D)
        return self.final_norm(h[:, 0]), c  # (N, D), (N, D)

    def targets(self) -> torch.Tensor:
        """The learned label embedding with unit-norm rows (num_classes, D)."""
        assert self.label_embed is not None, "this block has no learned label embedding"
        return F.normalize(self.label_embed, dim=1)

    def classify(self, D: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Logits (N, classes) of the denoised label embedding D (N, D)."""
        return self.head(D[:, None], c)[:, 0]  # (N, classes)
