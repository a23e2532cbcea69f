"""CUDA's autocast policy on meta tensors: what a ``train.precision=bf16`` step holds on a GPU,
counted from shapes alone.

torch.autocast casts only tensors of its own device type (ATen's autocast_mode.h,
``is_autocast_eligible``), so on the meta device it casts nothing and a bf16 step was
counted in float32. ``cuda_autocast_on_meta`` applies CUDA's lists (ATen's
autocast_mode.cpp; torch's "Autocast Op Reference", CUDA Ops) to meta tensors at the Python
API, where autograd records the casts as it does under autocast: the bfloat16 copies a
matmul saves, the float32 a norm computes in. CUDA's lists, not the CPU's: the plan is for
GPUs, and the CPU's leave layer_norm, softmax, exp, log, pow and sums in the input's dtype.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import torch
from torch.autograd.function import BackwardCFunction
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

# The ops with an AutocastCUDA kernel, by what it does (test_meta_autocast checks that
# these are torch's, every one and no other).
LOWER = frozenset({  # run in the autocast dtype
    "_convolution", "conv1d", "conv2d", "conv3d", "conv_tbc", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d", "convolution", "cudnn_convolution",
    "cudnn_convolution_transpose", "prelu", "addmm", "addmv", "addr", "matmul", "einsum", "mm",
    "mv", "linalg_vecdot", "linear", "addbmm", "baddbmm", "bmm", "chain_matmul",
    "linalg_multi_dot", "_thnn_fused_lstm_cell", "_thnn_fused_gru_cell", "lstm_cell",
    "gru_cell", "rnn_tanh_cell", "rnn_relu_cell", "_scaled_dot_product_flash_attention",
    "scaled_dot_product_attention"})
FP32 = frozenset({  # floating inputs cast to float32
    "acos", "asin", "cosh", "erfinv", "exp", "expm1", "log", "log10", "log2", "log1p",
    "reciprocal", "rsqrt", "sinh", "tan", "pow", "softplus", "layer_norm", "native_layer_norm",
    "group_norm", "rms_norm", "norm", "frobenius_norm", "nuclear_norm", "cosine_similarity",
    "poisson_nll_loss", "cosine_embedding_loss", "nll_loss", "nll_loss2d",
    "hinge_embedding_loss", "kl_div", "l1_loss", "smooth_l1_loss", "huber_loss", "mse_loss",
    "margin_ranking_loss", "multilabel_margin_loss", "soft_margin_loss", "triplet_margin_loss",
    "multi_margin_loss", "binary_cross_entropy_with_logits", "dist", "pdist", "cdist",
    "renorm", "logsumexp", "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d",
    "_upsample_nearest_exact1d", "_upsample_nearest_exact2d", "_upsample_nearest_exact3d",
    "upsample_linear1d", "upsample_bilinear2d", "_upsample_bilinear2d_aa",
    "upsample_trilinear3d", "upsample_bicubic2d", "_upsample_bicubic2d_aa"})
FP32_OUT = frozenset({  # run with dtype=float32 where none is given (float32 out)
    "prod", "softmax", "log_softmax", "cumprod", "cumsum", "linalg_vector_norm",
    "linalg_matrix_norm", "sum"})
PROMOTE = frozenset({  # floating inputs cast to the widest of them
    "addcdiv", "addcmul", "atan2", "bilinear", "cross", "dot", "vdot", "grid_sampler",
    "index_put", "tensordot", "scatter_add"})
BANNED = frozenset({"binary_cross_entropy"})  # autocast raises: unsafe in a lower dtype

# Python functions whose C++ body runs listed ops autocast sees and this mode does not:
# cross_entropy is log_softmax (float32 out) and nll_loss (float32).
COMPOSITES = {"cross_entropy": "fp32", "normalize": "fp32",
              # the CPU kernel meta_memory.cpu_attention_on_meta runs for CUDA's attention
              "_scaled_dot_product_flash_attention_for_cpu": "lower"}
POLICY = {**{n: "lower" for n in LOWER}, **{n: "fp32" for n in FP32},
          **{n: "fp32_out" for n in FP32_OUT}, **{n: "promote" for n in PROMOTE},
          **{n: "banned" for n in BANNED}, **COMPOSITES}
_DUNDER = {"__matmul__": "matmul", "__rmatmul__": "matmul", "__pow__": "pow",
           "__rpow__": "pow"}


def op_name(func: Any) -> str:
    """The ATen name of a Python API function, method or ``torch.ops`` op (``mm.default``:
    ``mm``)."""
    name = getattr(func, "__name__", "")
    return _DUNDER.get(name, name.split(".")[0])


def _eligible(t: Any) -> bool:
    """What CUDA's autocast casts (autocast_mode.h ``is_eligible``), with meta for cuda."""
    return isinstance(t, torch.Tensor) and t.device.type == "meta" and \
        t.is_floating_point() and t.dtype != torch.float64


class _MetaAutocast(TorchFunctionMode):
    """Casts meta tensors as CUDA's autocast would while CPU autocast is on (the switch
    torch.utils.checkpoint turns on again to recompute a layer in backward)."""

    def __init__(self) -> None:
        super().__init__()
        # a parameter's cast, kept until the outermost autocast region ends, as autocast's
        # cache keeps it (cached_cast: leaves that require grad, cast to the lower dtype)
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _cast(self, t: torch.Tensor, dtype: torch.dtype, lower: bool) -> torch.Tensor:
        if not _eligible(t) or t.dtype == dtype:
            return t
        if not (lower and t.dtype == torch.float32 and t.requires_grad and t.is_leaf
                and torch.is_autocast_cache_enabled()):
            return t.to(dtype)
        if id(t) not in self.cache:
            self.cache[id(t)] = (t, t.to(dtype))
        return self.cache[id(t)][1]

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        policy = POLICY.get(op_name(func)) if torch.is_autocast_enabled("cpu") else None
        if policy == "banned":
            raise RuntimeError(f"{op_name(func)} is unsafe to autocast (CUDA's autocast "
                               "raises): use its _with_logits form")
        if policy in ("lower", "fp32", "promote"):
            dtype = torch.get_autocast_dtype("cpu") if policy == "lower" else \
                torch.float32 if policy == "fp32" else _widest(args, kwargs)
            cast = lambda t: self._cast(t, dtype, policy == "lower")  # noqa: E731
            args, kwargs = tree_map(cast, args), tree_map(cast, kwargs)
        elif policy == "fp32_out" and args and _eligible(args[0]) and \
                kwargs.get("dtype") is None:
            kwargs = {**kwargs, "dtype": torch.float32}
        return func(*args, **kwargs)


def _widest(args: Any, kwargs: Any) -> torch.dtype:
    """The widest dtype of the tensors autocast would cast (float32 where there are none)."""
    found: list[torch.dtype] = []
    tree_map(lambda t: found.append(t.dtype) if _eligible(t) else None, [args, kwargs])
    widest = found[0] if found else torch.float32
    for d in found[1:]:
        widest = torch.promote_types(widest, d)
    return widest


@contextmanager
def cuda_autocast_on_meta() -> Iterator[None]:
    """Meta tensors cast by CUDA's autocast lists wherever ``torch.autocast("cpu", dtype)``
    is on inside this block: wrap the forward pass in that, as the trainer wraps it in its
    device's autocast (CPU autocast leaves meta tensors alone). Custom autograd Functions'
    backward passes run under it too (torch.utils.checkpoint's reentrant recomputation turns
    CPU autocast on again as it was in forward); the non-reentrant one recomputes in a
    saved-tensor hook, which this does not reach."""
    mode = _MetaAutocast()
    clear = torch.clear_autocast_cache

    def cleared() -> None:  # autocast's region ends: its casts of parameters go
        clear()
        mode.cache.clear()

    def backward(node: BackwardCFunction, *args: Any) -> Any:
        # autograd runs backward without the forward's torch function modes: a custom
        # Function's backward (a checkpointed layer's recomputation) gets this one again
        with mode:
            return apply(node, *args)

    apply = BackwardCFunction.apply
    with mock.patch.object(torch, "clear_autocast_cache", cleared), \
            mock.patch.object(BackwardCFunction, "apply", backward), mode:
        yield
