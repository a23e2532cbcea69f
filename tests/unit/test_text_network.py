"""A text network's verbs at their edges, on untrained tiny networks (no training, no data):
texts too short to score, and generation that draws only the ids a corpus's training split
holds; the evaluation of a corpus with no test split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dbparallel.config import Config, DataConfig, load_config
from dbparallel.data.corpus import corpus_index
from dbparallel.data.tokenizer import (
    TRAIN_IDS_KEY,
    CharTokenizer,
    Tokenizer,
    load_tokenizer,
    tokenizer_from_description,
)
from dbparallel.errors import UserError
from dbparallel.tasks import build_task
from dbparallel.tasks.text import gumbel_sample
from dbparallel.training.network import Network

ROOT = Path(__file__).resolve().parents[2]
TINY = ["model.depth=2", "model.hidden=32", "model.heads=2", "sample.steps=2"]
ASCII = "to be or not to be that is the question whether tis nobler in the mind to suffer "


def network(task: str, tokenizer: Tokenizer, *overrides: str) -> Network:
    cfg = load_config([ROOT / f"jobs/{task}_shakespeare_tiny.yaml"], [*TINY, *overrides])
    built = build_task(cfg)
    torch.manual_seed(0)
    weights = [built.build_block(b).state_dict() for b in range(cfg.model.blocks)]
    return Network.from_weights(cfg, weights, [0] * cfg.model.blocks, "cpu", tokenizer)


@pytest.fixture(scope="module")
def bpe(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """A byte-level BPE of an ASCII corpus: 256 byte ids, a few dozen of them in the text."""
    folder = tmp_path_factory.mktemp("ascii")
    (folder / "a.txt").write_text(ASCII * 100)
    index = corpus_index(DataConfig(source="text", path=str(folder / "a.txt"), seq_len=16,
                                    tokenizer="bpe", vocab_size=300))
    return load_tokenizer(index.meta)


# ---------------------------------------------------------------------------------------------
# Scoring: a text with nothing to score is refused, naming it
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("task", "objective", "key"), [
    ("ar", "diffusionblocks", "bpc_sigma_max"), ("looped", "diffusionblocks", "bpc_sigma_max"),
    ("looped", "end_to_end", "bpc")])
def test_bpc_is_the_score_that_is_a_likelihood(task: str, objective: str, key: str) -> None:
    """A chain's first step (its own p(x_i | x_<i)); a looped core trained end to end by
    BPTT, its final logits (its first step's score means nothing: docs/text.md)."""
    from dbparallel.training.seeding import generator

    net = network(task, CharTokenizer("".join(sorted(set(ASCII)))),
                  f"train.objective={objective}")
    torch.manual_seed(1)
    for block in net.blocks:  # trained-looking weights (fresh heads predict uniformly)
        for p in block.parameters():
            p.data.normal_(0, 0.2)
    text = ASCII[:16]
    ids = torch.tensor(net._encode(text))
    scores = net.task.bpc(net.blocks, ids[None], generator(net.cfg.run.seed, "api-bpc", 0, 0))
    other = "bpc" if key == "bpc_sigma_max" else "bpc_sigma_max"
    assert scores[key] != pytest.approx(scores[other], rel=1e-5)  # the key matters here
    assert net.bpc(text) == pytest.approx(scores[key], rel=1e-6)  # one character per token


@pytest.mark.parametrize("task", ["ar", "looped"])
def test_ar_refuses_a_text_of_one_token(task: str, bpe: Tokenizer) -> None:
    net = network(task, CharTokenizer("".join(sorted(set(ASCII)))))
    assert net.log_likelihood(["to"])[0] < 0
    with pytest.raises(UserError, match=rf"texts\[1\] 't': 1 token \(data.tokenizer=char\); "
                                        rf"an? {task} network scores each token given the ones "
                                        rf"before it, so a text needs at least 2 tokens"):
        net.log_likelihood(["to be", "t"])
    with pytest.raises(UserError, match=r"text 't': 1 token"):
        net.bpc("t")
    with pytest.raises(UserError, match=r"texts\[0\] '': 0 tokens"):
        net.bpc([""])
    with pytest.raises(UserError, match="texts: no text to score"):
        net.bpc([])
    net = network(task, bpe, "data.tokenizer=bpe", "data.vocab_size=300")
    with pytest.raises(UserError, match=r"texts\[0\] 't': 1 token \(data.tokenizer=bpe\)"):
        net.log_likelihood(["t", "b"])


def test_mdm_refuses_an_empty_text() -> None:
    net = network("mdm", CharTokenizer("".join(sorted(set(ASCII)))))
    assert net.log_likelihood("t")[0] < 0  # one token: the ELBO of one masked token
    with pytest.raises(UserError, match=r"text '': 0 tokens \(data.tokenizer=char\); an mdm "
                                        r"network scores the tokens of a text, and it has none"):
        net.bpc("")
    with pytest.raises(UserError, match=r"texts\[1\] ''"):
        net.log_likelihood(["to be", ""])


def test_a_prompt_names_every_character_the_vocabulary_lacks() -> None:
    net = network("mdm", CharTokenizer("".join(sorted(set(ASCII)))))
    with pytest.raises(UserError, match=r"^prompt: characters 'c' \(U\+0063\), 'é' "
                                        r"\(U\+00E9\), '!' \(U\+0021\) are not in the "
                                        r"vocabulary of this run \(data.tokenizer=char\)$"):
        net.generate("to be café! cé", max_new=4)
    with pytest.raises(UserError, match=r"^texts\[1\]: character 'Z' \(U\+005A\) is not"):
        net.log_likelihood(["to be", "Zoo"])


@pytest.mark.parametrize("task", ["ar", "mdm"])
def test_an_empty_list_of_prompts_is_refused_naming_the_prompt(task: str) -> None:
    net = network(task, CharTokenizer("".join(sorted(set(ASCII)))))
    with pytest.raises(UserError, match=r"^prompt: an empty list, no prompt to continue"):
        net.generate([], max_new=2)


@pytest.mark.parametrize("temperature", [-1.0, float("inf"), float("nan")])
def test_a_temperature_that_is_no_finite_number_at_least_0_is_refused(
        temperature: float) -> None:
    net = network("ar", CharTokenizer("".join(sorted(set(ASCII)))))
    with pytest.raises(UserError, match=r"^temperature: must be a finite number >= 0, got "):
        net.generate("to be", max_new=2, temperature=temperature)


@pytest.mark.parametrize(("task", "named"), [("ar", "an ar"), ("looped", "a looped")])
def test_an_empty_prompt_is_refused_naming_the_task(task: str, named: str) -> None:
    """(mdm unmasks a whole row, and takes an empty prompt.)"""
    net = network(task, CharTokenizer("".join(sorted(set(ASCII)))))
    with pytest.raises(UserError, match=rf"^prompt: is empty; {named} network continues a "
                                        rf"prompt of at least one token$"):
        net.generate("", max_new=2)


def test_mdm_max_new_is_the_start_of_a_whole_row() -> None:
    """MDM unmasks rows of data.seq_len tokens, as it trained on, whatever ``max_new``: its
    continuation is the first ``max_new`` tokens of the row's, never a shorter row's."""
    net = network("mdm", CharTokenizer("".join(sorted(set(ASCII)))), "data.seq_len=16")
    seen: list[tuple[int, ...]] = []
    routed = net.task.routed_logits
    net.task.routed_logits = lambda nets, x, t, **how: (seen.append(tuple(x.shape)) or
                                                        routed(nets, x, t, **how))
    whole = net.generate(["to be", "or no"], seed=3)
    assert [len(t) for t in whole] == [11, 11]
    for n in (1, 4, 11):
        assert net.generate(["to be", "or no"], max_new=n, seed=3) == [t[:n] for t in whole]
    assert set(seen) == {(2, 16)}, seen
    with pytest.raises(UserError, match=r"max_new: an MDM row holds data.seq_len=16 tokens, "
                                        r"the prompt 5: max_new must lie in 1..11, got 12"):
        net.generate("to be", max_new=12)


# ---------------------------------------------------------------------------------------------
# Generation draws only the ids of the training split
# ---------------------------------------------------------------------------------------------

def test_gumbel_sample_draws_only_the_usable_ids() -> None:
    logits = torch.zeros(2000, 10)
    g = torch.Generator().manual_seed(0)
    assert set(gumbel_sample(logits, g, usable=torch.tensor([2, 7])).tolist()) == {2, 7}
    assert set(gumbel_sample(logits, g, usable=4).tolist()) == {0, 1, 2, 3}
    assert gumbel_sample(logits, g, 0.0, usable=torch.tensor([5])).unique().tolist() == [5]


@pytest.mark.parametrize("task", ["ar", "mdm"])
def test_bpe_generation_draws_only_ids_of_the_training_text(task: str, bpe: Tokenizer) -> None:
    net = network(task, bpe, "data.tokenizer=bpe", "data.vocab_size=300")
    out = net.generate(["to be "] * 4, max_new=12, temperature=3.0, seed=1)
    assert set("".join(out)) <= set(ASCII), out  # no control byte, no U+FFFD
    old = {k: v for k, v in bpe.describe().items() if k != TRAIN_IDS_KEY}
    net.tokenizer = tokenizer_from_description(old)  # a run from before: every id, as then
    out = net.generate(["to be "] * 4, max_new=12, temperature=3.0, seed=1)
    assert not set("".join(out)) <= set(ASCII)


# ---------------------------------------------------------------------------------------------
# Evaluation of a corpus with no test split: the training rows, as for images
# ---------------------------------------------------------------------------------------------

def test_held_out_rows_fall_back_to_training_rows(tmp_path: Path) -> None:
    from dbparallel.training.eval.text import held_out

    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps({"text": ASCII[:64], "split": "train"}) + "\n"
                            for _ in range(10)))
    cfg: Config = load_config([ROOT / "jobs/ar_shakespeare_tiny.yaml"],
                              ["data.source=text", f"data.path={path}", "data.seq_len=16",
                               "sample.prompt_len=4", "sample.gen_len=4"])
    index = corpus_index(cfg.data)
    rows = held_out(cfg, index, 5)
    tokenizer = load_tokenizer(index.meta)
    assert rows.shape == (5, 16)
    assert {tokenizer.decode(r) for r in rows} <= {ASCII[k:k + 16] for k in range(0, 64, 16)}
    assert np.array_equal(rows[0].numpy(), tokenizer.encode(ASCII[:16]))



def test_generate_help_says_temperature_zero_still_varies_with_the_seed(capsys) -> None:
    from dbparallel import cli

    with pytest.raises(SystemExit):
        cli.main(["generate", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert ("0: the most likely token at each draw; the text still varies with --seed, and "
            "between --samples (ar, looped: each token's chain starts from noise; mdm: the "
            "order of unmasking is drawn)") in out
    assert ("mdm: a whole data.seq_len row is unmasked after the prompt, as in training, and "
            "its first N new tokens are printed, default all; N past the row's end is "
            "refused") in out
