"""CUDA's autocast lists on meta tensors (core/meta_autocast.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from dbparallel.core.meta_autocast import BANNED, COMPOSITES, POLICY, cuda_autocast_on_meta, op_name


def test_the_lists_are_the_ops_torch_autocasts_on_cuda() -> None:
    # every op with an AutocastCUDA kernel in this torch, and no other: a torch that adds or
    # drops one fails here (the lists' kinds are ATen's autocast_mode.cpp)
    registered = {n.removeprefix("aten::").split(".")[0]
                  for n in torch._C._dispatch_get_all_op_names()
                  if torch._C._dispatch_has_kernel_for_dispatch_key(n, "AutocastCUDA")}
    listed = set(POLICY) - set(COMPOSITES)
    assert listed == registered
    assert BANNED <= registered


def test_matmuls_run_in_bfloat16_and_norms_softmax_sums_in_float32() -> None:
    x = torch.randn(4, 8, device="meta", requires_grad=True)
    w = torch.randn(8, 8, device="meta", requires_grad=True)
    with cuda_autocast_on_meta():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = F.linear(x, w)
            dtypes = [y.dtype, (x @ w).dtype, F.layer_norm(y, (8,)).dtype,
                      y.softmax(-1).dtype, y.sum().dtype, F.gelu(y).dtype,
                      F.cross_entropy(y, torch.zeros(4, dtype=torch.long, device="meta")).dtype]
        outside = F.linear(x, w).dtype
    assert dtypes == [torch.bfloat16, torch.bfloat16, torch.float32, torch.float32,
                      torch.float32, torch.bfloat16, torch.float32]
    assert outside == torch.float32
    assert op_name(torch.Tensor.__matmul__) == "matmul"
    assert op_name(torch.ops.aten.mm.default) == "mm"


def test_a_checkpointed_function_recomputes_in_bfloat16_in_backward() -> None:
    # autograd runs backward without the forward's torch function modes
    x = torch.randn(4, 8, device="meta", requires_grad=True)
    w = torch.randn(8, 8, device="meta", requires_grad=True)
    seen = []

    def layer(x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, w)
        seen.append(y.dtype)
        return y

    with cuda_autocast_on_meta():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = checkpoint(layer, x, use_reentrant=True)
        out.float().sum().backward()
    assert seen == [torch.bfloat16, torch.bfloat16]
