"""The frozen unit-norm table (vit labels, ar/looped tokens) is drawn a chunk of rows at a time
with the numbers of one whole draw: runs and exports made before keep their targets."""

from __future__ import annotations

import pytest
import torch

from dbparallel.models import layers
from dbparallel.models.layers import EMBEDDING_SALT, frozen_unit_embedding


def _whole(seed: int, num: int, dim: int) -> torch.Tensor:
    """The table as one draw: the definition the chunks must reproduce."""
    g = torch.Generator().manual_seed(seed ^ EMBEDDING_SALT)
    E = torch.randn(num, dim, generator=g, dtype=torch.float64)
    return (E / E.norm(dim=1, keepdim=True)).float()


@pytest.mark.parametrize("chunk", [16, 100, 1 << 20])
@pytest.mark.parametrize(("num", "dim"), [(1, 1), (3, 17), (10, 8), (257, 15), (1000, 96),
                                          (5003, 64)])
def test_the_table_drawn_in_chunks_is_the_table_drawn_at_once(monkeypatch, chunk, num,
                                                              dim) -> None:
    monkeypatch.setattr(layers, "EMBEDDING_CHUNK", chunk)
    table = frozen_unit_embedding(7, num, dim)
    assert table.dtype == torch.float32 and table.shape == (num, dim)
    assert torch.equal(table, _whole(7, num, dim))
    assert torch.allclose(table.norm(dim=1), torch.ones(num), atol=1e-6)
