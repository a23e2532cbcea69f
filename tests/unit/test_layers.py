"""The one transformer layer every task runs: conditions per sample or per token, rotary
positions, a key/value cache, and the text models' outputs recorded before the text blocks
shared it."""

from __future__ import annotations

import pytest
import torch

from dbparallel.config import load_config
from dbparallel.models.layers import CAUSAL, AdaLNLayer, rotary
from dbparallel.models.lm import causal_mask
from dbparallel.tasks import build_task

SMALL = ["data.source=shakespeare", "model.depth=2", "model.hidden=32", "model.heads=2",
         "data.seq_len=16", "sample.prompt_len=4", "sample.gen_len=8", "train.batch_size=4"]


def _perturbed(module: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Weights moved away from the zero init, so that every path of the layer matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g))
    return module


def _layer() -> AdaLNLayer:
    torch.manual_seed(0)
    return _perturbed(AdaLNLayer(32, 4, 2.0))


def test_a_condition_per_sample_equals_the_same_condition_per_token() -> None:
    layer, g = _layer(), torch.Generator().manual_seed(2)
    x, c = torch.randn(3, 5, 32, generator=g), torch.randn(3, 32, generator=g)
    per_sample, _ = layer(x, c)
    per_token, _ = layer(x, c[:, None].expand(3, 5, 32))
    torch.testing.assert_close(per_token, per_sample)
    # a different condition for one token changes that token only (no mask: through attention
    # every token sees it, so compare under a mask that hides token 4 from the others)
    mask = torch.ones(5, 5, dtype=torch.bool)
    mask[:4, 4] = False
    other = c[:, None].repeat(1, 5, 1)
    other[:, 4] += 1.0
    a, _ = layer(x, c, mask)
    b, _ = layer(x, other, mask)
    torch.testing.assert_close(b[:, :4], a[:, :4])
    assert not torch.allclose(b[:, 4], a[:, 4])


def test_causal_is_the_causal_mask_forward_and_backward() -> None:
    """CAUSAL (SDPA's is_causal, which CUDA's flash kernel runs) attends as causal_mask(t)."""
    layer, g = _layer(), torch.Generator().manual_seed(4)
    x, c = torch.randn(2, 9, 32, generator=g), torch.randn(2, 32, generator=g)
    pos = range(9)
    outputs, grads = [], []
    for mask in (causal_mask(9), CAUSAL):
        xi = x.clone().requires_grad_()
        out, (k, v) = layer(xi, c, mask, pos)
        (out.square().sum() + k.sum() + v.sum()).backward()
        outputs.append(out.detach())
        grads.append([xi.grad, *(p.grad.clone() for p in layer.parameters())])
        layer.zero_grad()
    torch.testing.assert_close(outputs[1], outputs[0])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a)
    # and the mask matters: attending to every token differs
    assert not torch.allclose(layer(x, c, None, pos)[0], outputs[0])
    with pytest.raises(AssertionError):  # after a cache, is_causal would align wrongly
        layer(x[:, 4:], c, CAUSAL, pos[4:], layer(x[:, :4], c, CAUSAL, pos[:4])[1])


def test_the_cache_continues_a_causal_pass_exactly() -> None:
    layer, g = _layer(), torch.Generator().manual_seed(3)
    x, c = torch.randn(2, 7, 32, generator=g), torch.randn(2, 32, generator=g)
    pos = range(7)
    full, (k, v) = layer(x, c, causal_mask(7), pos)
    head, cache = layer(x[:, :4], c, causal_mask(4), pos[:4])
    tail, (k2, v2) = layer(x[:, 4:], c, causal_mask(3, past=4), pos[4:], cache)
    torch.testing.assert_close(torch.cat([head, tail], dim=1), full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(k2, k)  # the cache holds every position's rotated keys
    torch.testing.assert_close(v2, v)


def test_rotary_scores_depend_on_the_offset_only() -> None:
    g = torch.Generator().manual_seed(4)
    q, k = torch.randn(1, 1, 1, 8, generator=g), torch.randn(1, 1, 1, 8, generator=g)

    def score(i: int, j: int) -> float:
        return float((rotary(q, range(i, i + 1)) * rotary(k, range(j, j + 1))).sum())

    assert abs(score(5, 2) - score(13, 10)) < 1e-5
    assert abs(score(0, 0) - float((q * k).sum())) < 1e-6  # position 0 is the identity
    assert abs(score(5, 2) - score(5, 3)) > 1e-3
    torch.testing.assert_close(rotary(q, range(3, 4)).norm(), q.norm())


def test_text_models_keep_the_outputs_of_their_own_layer_code() -> None:
    """Logits recorded with the text blocks' earlier attention and adaLN code (same seeds):
    running on the shared layer changed no number."""
    ids = torch.randint(0, 84, (2, 8), generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(2)
    z, c = torch.randn(2, 8, 32, generator=g), torch.randn(2, generator=g)

    def block(*extra: str) -> torch.nn.Module:
        task = build_task(load_config([], ["model.blocks=1", *SMALL, *extra]))
        torch.manual_seed(0)  # the initialisation draws from the global generator
        return _perturbed(task.build_block(0))

    with torch.no_grad():
        mdm = block("task=mdm")(ids, c.abs().clamp(max=1))[1, 5, :4]
        direct = block("task=ar", "model.ar_readout=direct")
        ar = direct.classify(*direct(ids, z, c))[1, 6, :4]
        causal = block("task=ar", "train.objective=end_to_end").causal_logits(ids)[0, 7, :4]
    expected = {
        "mdm": [2.7702889442443848, -0.08405277132987976, -1.3666119575500488, 0.658873438835144],
        "ar": [-0.3877949118614197, -3.528198480606079, 4.525395393371582, 3.3451526165008545],
        "causal": [-2.698122978210449, -0.7110265493392944, -0.5507316589355469,
                   -0.42043498158454895],
    }
    for name, got in (("mdm", mdm), ("ar", ar), ("causal", causal)):
        torch.testing.assert_close(got, torch.tensor(expected[name]), atol=1e-5, rtol=1e-5)
