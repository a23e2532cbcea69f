"""Text metrics on hand-checkable inputs: bits per character over chunks, its BPE per-character
conversion, the token-histogram entropy and the scorer's continuation NLL."""

from __future__ import annotations

import math

import pytest
import torch

from dbparallel.config import load_config
from dbparallel.training.eval import text
from dbparallel.training.eval.scorer import continuation_nll


class MeanTask:
    """A task whose bpc of a chunk is the mean of its ids, and bpc_sigma_max twice that."""

    def bpc(self, nets: list, ids: torch.Tensor, g: torch.Generator) -> dict[str, float]:
        mean = float(ids.double().mean())
        return {"bpc": mean, "bpc_sigma_max": 2 * mean}


class WordTokenizer:
    """A stand-in BPE: id 0 decodes to 10 characters, every other id to one."""

    name = "bpe"

    def decode(self, ids: torch.Tensor) -> str:
        return "".join("abcdefghij" if int(i) == 0 else "x" for i in ids)


class CharTokens:
    name = "char"


def _cfg(task: str):
    return load_config([], [f"task={task}", "data.source=shakespeare"])


def test_bpc_weighs_each_row_once_and_keeps_the_last_partial_chunk() -> None:
    """130 rows are 128 + 2: the mean over rows (2/130), not the mean of the chunks' means."""
    held = torch.zeros(text.CHUNK + 2, 4, dtype=torch.long)
    held[text.CHUNK:] = 1
    got = text.bits_per_character(_cfg("mdm"), MeanTask(), [], held, "cpu", CharTokens())
    assert got == {"bpc": pytest.approx(2 / 130), "bpc_sigma_max": pytest.approx(4 / 130)}


def test_bpe_bpc_divides_the_bits_of_the_tokens_scored_by_their_characters() -> None:
    """Rows [0, 1, 1, 1]: the first token holds 10 characters, the others one each. AR scores
    tokens 1..3 (3 tokens, 3 characters): bpc = bpt; MDM all 4 (4 tokens, 13 characters)."""
    held = torch.tensor([[0, 1, 1, 1], [0, 1, 1, 1]])
    task = MeanTask()
    bpt = 0.75  # MeanTask's bpc of these rows: the mean id
    ar = text.bits_per_character(_cfg("ar"), task, [], held, "cpu", WordTokenizer())
    assert ar["bpt"] == pytest.approx(bpt) and ar["bpt_sigma_max"] == pytest.approx(2 * bpt)
    assert ar["bpc"] == pytest.approx(bpt * 6 / 6)
    assert ar["bpc_sigma_max"] == pytest.approx(2 * bpt) and ar["chars_per_token"] == 1.0
    mdm = text.bits_per_character(_cfg("mdm"), task, [], held, "cpu", WordTokenizer())
    assert mdm["bpc"] == pytest.approx(bpt * 8 / 26)
    assert mdm["chars_per_token"] == pytest.approx(26 / 8)


def test_token_histogram_entropy_in_bits() -> None:
    ids = torch.tensor([[0, 0, 0, 0], [0, 0, 1, 1], [0, 1, 2, 3], [0, 0, 0, 1]])
    q = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    torch.testing.assert_close(text.char_entropy(ids, 5), torch.tensor([0.0, 1.0, 2.0, q]))


def test_continuation_nll_scores_each_token_by_the_logits_before_it() -> None:
    """Logits at position j give class j % 4 probability 1/2 (1/6 the others): tokens
    j + 1 = 1, 2, 3 after a prompt of 2 are each scored by position j, ln 2 nats each."""
    class Scorer:
        def causal_logits(self, ids: torch.Tensor) -> torch.Tensor:
            n, T = ids.shape
            p = torch.full((n, T, 4), 1 / 6)
            p[:, torch.arange(T), torch.arange(T) % 4] = 0.5
            return p.log()

    prompt, continuation = torch.tensor([[3, 0]]), torch.tensor([[1, 2, 3]])
    nll = continuation_nll(Scorer(), prompt, continuation)  # type: ignore[arg-type]
    torch.testing.assert_close(nll, torch.tensor([math.log(2)]))
    miss = continuation_nll(Scorer(), prompt, torch.tensor([[2, 3, 0]]))  # type: ignore[arg-type]
    torch.testing.assert_close(miss, torch.tensor([math.log(6)]))
