"""The sample section of the config schema (config/schema.py): how the composed network is
sampled and scored."""

from __future__ import annotations

from dataclasses import dataclass

from dbparallel.config.checks import check, choice, finite

SOLVERS = ("euler", "heun")
SCHEDULES = ("equiprobable", "karras")
LABEL_STARTS = ("noise", "zero")


@dataclass
class SampleConfig:
    steps: int = 50  # sampler steps from sigma_max to sigma_min (each runs one block)
    solver: str = "euler"  # euler | heun
    schedule: str = "equiprobable"  # equiprobable | karras (rho=7)
    cfg_scale: float = 2.0  # classifier-free guidance scale; 1 = no guidance
    per_class: int = 8  # images per class in samples.png
    eval_samples: int = 500  # generated images scored by the evaluation metrics; text:
    # held-out sequences of the BPC estimate, and prompts of the generation metrics
    fid: bool = False  # also score the images by FID and KID (TF-Inception; slow on CPU)
    # data.latents: "module:function" that decodes latents (N, C, H, W) as the data store them
    # into images (N, 1 or 3, H', W') in [0, 1], importable where the run is scored: then
    # samples.png shows decoded samples and sample.fid scores them ("" = latents stay latents)
    decoder: str = ""
    # held-out rows a classifier (vit; dit's in-domain features) is scored on: 0 = every test
    # row, or, for data with no test split, the first 10,000 training rows
    eval_rows: int = 0
    # held-out rows each noise bin of diagnostics.json is scored on (16 bins or more)
    diagnostic_rows: int = 256
    # vit: the label state the chain starts from at sigma_max: zero (the prior's mean; the
    # chain follows the expected embeddings, no noise drawn) | noise (sigma_max * eps, the
    # paper's; the chain then draws a label from block 0's posterior); docs/method.md, vit
    label_start: str = "zero"
    elbo_draws: int = 4  # masking times t per held-out sequence in the MDM's BPC estimate
    prompt_len: int = 32  # tokens of held-out text that prompt each continuation (ar, looped;
    # a token is a character with data.tokenizer=char, several characters with bpe)
    gen_len: int = 64  # tokens generated per continuation (ar, looped)
    text_samples: int = 8  # text samples written to samples.txt
    scorer_steps: int = 1500  # training steps of the AR model scoring gen_ppl (cached)

    def __post_init__(self) -> None:
        finite(self, "sample")
        check(self.steps >= 1, "sample.steps", "must be >= 1")
        choice(self.solver, "sample.solver", SOLVERS)
        choice(self.schedule, "sample.schedule", SCHEDULES)
        check(self.cfg_scale >= 0, "sample.cfg_scale", "must be >= 0")
        check(self.per_class >= 1, "sample.per_class", "must be >= 1")
        check(self.eval_samples >= 10, "sample.eval_samples", "must be >= 10")
        check(self.eval_rows >= 0, "sample.eval_rows", "must be >= 0 (0 = the test split)")
        check(self.diagnostic_rows >= 1, "sample.diagnostic_rows",
              f"must be >= 1, got {self.diagnostic_rows}")
        choice(self.label_start, "sample.label_start", LABEL_STARTS)
        module, _, name = self.decoder.partition(":")
        check(not self.decoder or bool(module and name.isidentifier()), "sample.decoder",
              f"must be module:function (e.g. mypackage.vae:decode), got {self.decoder!r}")
        for key in ("elbo_draws", "prompt_len", "gen_len", "text_samples", "scorer_steps"):
            value = getattr(self, key)
            check(value >= 1, f"sample.{key}", f"must be >= 1, got {value}")
