"""One DiffusionBlocks block: a private stem, L/B adaLN transformer layers, a private head.

Nothing trainable is shared between blocks, so a block trains with no traffic to the others.
Subclasses define ``stem`` and ``head``; ``layers`` is built here.
"""

from __future__ import annotations

import torch
from torch import nn

from dbparallel.models.layers import AdaLNLayer
from dbparallel.models.presets import ModelDims


class Block(nn.Module):
    """Base of every block network: the layer stack plus weight initialisation."""

    def __init__(self, dims: ModelDims):
        super().__init__()
        self.dims = dims
        self.layers = nn.ModuleList(
            AdaLNLayer(dims.hidden, dims.heads, dims.mlp_ratio) for _ in range(dims.layers)
        )

    def run_layers(
        self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        for layer in self.layers:
            x, _ = layer(x, c, mask)  # (N, T, D)
        return x

    def checkpoint_layers(self, on: bool = True) -> None:
        """Recompute each layer's activations in backward instead of keeping them
        (train.checkpoint_layers); forward passes without gradients are unaffected."""
        for layer in self.layers:
            layer.checkpointed = on

    def initialize_weights(self) -> None:
        """Xavier linears; every adaLN modulation and the output projection start at zero,
        so each layer starts as the identity and the block's first output is zero."""

        def basic(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

        self.apply(basic)
        for module in self.modules():
            if hasattr(module, "adaLN_modulation"):
                nn.init.zeros_(module.adaLN_modulation[-1].weight)
                nn.init.zeros_(module.adaLN_modulation[-1].bias)
        self.zero_output()

    def zero_output(self) -> None:
        """Zero the final projection (subclasses name it)."""
        raise NotImplementedError

    def parameter_split(self) -> dict[str, int]:
        """Parameter counts of the transformer layers and of the private stem + head."""
        total = sum(p.numel() for p in self.parameters())
        layers = sum(p.numel() for p in self.layers.parameters())
        return {"layers": layers, "stem_and_head": total - layers, "total": total}
