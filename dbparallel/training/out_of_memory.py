"""A block whose step does not fit in its device's memory: torch's allocation error (CUDA's
out of memory, or the CPU allocator's) said in one line, with the keys that make the step fit.

The error repeats at the same step however often the block is started again (its shapes are
fixed by the config), so it is a failure of the run, not of its process: the driver does not
restart the block, and ``dbparallel status`` keeps the line in the block's failure record.
"""

from __future__ import annotations

import re

from dbparallel.config import Config
from dbparallel.config.amounts import bytes_text

# what a block that does not fit at its start (its weights moved to its device) is told
START_MEMORY_FIX = ("the block does not fit in its device's memory (`dbparallel plan` with the "
                    "same recipe shows what it holds): more blocks (model.blocks) make smaller "
                    "ones, in a new run")


class OutOfMemory(RuntimeError):
    """A block's step asked its device for more memory than it had."""


def out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is an allocation that failed: torch's ``OutOfMemoryError`` (CUDA), the
    CPU allocator's error, or either's message carried by another error."""
    if any(kind.__name__ == "OutOfMemoryError" for kind in type(err).__mro__):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("CUDA out of memory" in text
                                              or "can't allocate memory" in text)


def what_was_asked(err: BaseException) -> str:
    """The part of an allocation error that says what was asked and what the device had:
    ``CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.19
    GiB of which 1.25 GiB is free.``; ``tried to allocate 1.50 GiB`` for the CPU's."""
    text = " ".join(str(err).split())
    cuda = re.search(r"CUDA out of memory\..*?(?:is free\.|$)", text)
    if cuda:
        return cuda.group(0)
    asked = re.search(r"tried to allocate (\d+) bytes", text)
    if asked:
        return f"tried to allocate {bytes_text(int(asked.group(1)))}"
    return text[:300]


def block_out_of_memory(err: BaseException, cfg: Config, block: int, step: int,
                        device: str) -> OutOfMemory:
    """``err``, met by ``block`` taking ``step`` on ``device``, said with what to change: the
    keys that shrink what a device holds of the same step and resume the run as it is (those
    not set yet), then those that change the run."""
    t = cfg.train
    resume = []
    if t.micro_batches == 1:
        resume.append("train.micro_batches=2 (or more: the same step in pieces of the batch)")
    if not t.checkpoint_layers:
        resume.append("train.checkpoint_layers=true (each layer's activations kept only as "
                      "it runs)")
    resume.append(f"more replicas sharing each batch on more devices "
                  f"(runtime.replicas_per_block={cfg.runtime.replicas_per_block} now)")
    said = [f"block {block}: out of memory taking step {step} on {device} "
            f"({what_was_asked(err)}): the block's step does not fit in its device's memory "
            f"(`dbparallel plan` with the same recipe shows what it holds).",
            f"{', '.join(resume[:-1])}{' or ' if len(resume) > 1 else ''}{resume[-1]}: "
            f"each shrinks what a device holds of the step, which stays the same, and the run "
            f"resumes with it as it is;"]
    if t.objective != "end_to_end":  # (the baseline: the whole network is its one unit)
        said.append(f"more blocks (model.blocks={cfg.model.blocks} now: smaller ones) make a "
                    f"new run;")
    said.append(f"a smaller train.batch_size={t.batch_size} trains otherwise")
    return OutOfMemory(" ".join(said))
