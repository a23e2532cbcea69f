"""The train section of the config schema (config/schema.py): how each block is trained."""

from __future__ import annotations

from dataclasses import dataclass, field

from dbparallel.config.checks import check, choice, finite

NONFINITE_POLICIES = ("skip", "stop")
UNREADABLE_POLICIES = ("refuse", "restart")
OBJECTIVES = ("diffusionblocks", "end_to_end")
PRECISIONS = ("fp32", "tf32", "bf16")
# torch.compile's modes: default (inductor), CUDA graphs, tuned kernels without or with them
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
LR_SCHEDULES = ("constant", "cosine")
AUGMENTS = ("none", "flip", "crop", "flip_crop")


@dataclass
class TrainConfig:
    objective: str = "diffusionblocks"  # diffusionblocks | end_to_end (the baseline, 1 block)
    steps: int = 1500  # optimizer steps per block
    # optimizer steps of each block, block 0 first (e.g. [1800, 600, 600]: more for the block
    # that limits the network, the same total); [] = train.steps for every block
    block_steps: list[int] = field(default_factory=list)
    batch_size: int = 64  # samples per step, per block
    # pieces each step's batch (each replica's share) is cut into, run forward and backward
    # one at a time with their gradients summed: the same step, with the activation memory
    # of one piece (the same noise draws; results equal up to the order of float sums)
    micro_batches: int = 1
    # activation checkpointing: keep only each transformer layer's inputs and run the layer
    # again in backward (one layer's activations at a time) for about a third more
    # arithmetic per step (the same step: the layers draw no random numbers)
    checkpoint_layers: bool = False
    lr: float = 1e-3  # AdamW learning rate (the peak, after warm-up)
    weight_decay: float = 0.0  # AdamW weight decay
    warmup_steps: int = 100  # linear learning-rate warm-up, steps
    # after warm-up: constant (train.lr) | cosine (from train.lr down towards train.min_lr,
    # reached after the block's last step, train.steps or its train.block_steps count)
    lr_schedule: str = "constant"
    min_lr: float = 0.0  # the learning rate a cosine schedule ends at
    # image tasks: none | flip (random horizontal flips) | crop (pad by image_size/8, at
    # least 1, with edge pixels, cut back at a random offset) | flip_crop, of the training
    # images only; none for digits and other images that a mirror changes
    augment: str = "none"
    # EMA of weights used for assembly; 0 = off. Warmed up: step s uses min(ema_decay,
    # (1+s)/(10+s)), so 0.999 holds from step 8,990 on
    ema_decay: float = 0.999
    grad_clip: float = 1.0  # max gradient norm; 0 = off
    label_dropout: float = 0.1  # probability a label is replaced by the null class (CFG)
    # steps between metric updates (metrics.jsonl, gauges, progress bars on a terminal); in
    # a log, a progress line comes at most every 15 s
    log_every: int = 25
    # steps between each block's held-out loss (and its last step): the mean weighted loss
    # of its EMA weights on the first train.heldout_rows rows of the validation split (else
    # test, else train), the same noise draws every time; metrics.jsonl, Prometheus,
    # curves.png; 0 = off
    heldout_every: int = 250
    heldout_rows: int = 256  # held-out rows of that loss (the first of the split)
    checkpoint_every: int = 250  # steps between checkpoints (and always at the end)
    keep_checkpoints: int = 2  # training states kept per block (older ones deleted)
    keep_snapshots: int = 1  # EMA snapshots kept per block (`dbparallel eval --step` reads them)
    precision: str = "fp32"  # fp32 | tf32 (TF32 matmuls on CUDA) | bf16 (autocast forward pass)
    compile: bool = False  # torch.compile each block's forward, loss and backward, once per
    # trainer process (the first step runs eager; the second compiles; needs a C++ compiler)
    compile_mode: str = "default"  # torch.compile's mode: default | reduce-overhead (CUDA
    # graphs) | max-autotune-no-cudagraphs | max-autotune (benchmarks/gpu_speed.py compares)
    nonfinite: str = "skip"  # on a NaN/Inf loss: skip the step, or stop the run
    assembly_timeout_s: float = 7200.0  # an assembly (during training or the final one)
    # fails the run after this long (inf: never)
    lease_timeout_s: float = 120.0  # a block's write lease lapses this long after its
    # writer last renewed it (writers renew it while they train)
    on_unreadable: str = "refuse"  # checkpoints listed, none readable: refuse to start, or
    # restart (discard them and train the block again from step 0)
    max_restarts: int = 3  # restarts of a failed (or stalled) block actor or replica group,
    # and of the assembly actor, before the run fails
    stall_timeout_s: float = 600.0  # a block without progress this long is restarted (inf:
    # never)
    assemble_every: int = 0  # steps between assemblies during training; 0 = at the end only
    bptt_truncate: int = 0  # looped end to end: last iterations backpropagated; 0 = all K

    def __post_init__(self) -> None:
        finite(self, "train", unbounded=("assembly_timeout_s", "stall_timeout_s"))
        for key in ("steps", "batch_size", "log_every", "checkpoint_every", "keep_checkpoints",
                    "keep_snapshots"):
            value = getattr(self, key)
            check(value >= 1, f"train.{key}", f"must be >= 1, got {value}")
        check(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        check(self.weight_decay >= 0, "train.weight_decay",
              f"must be >= 0, got {self.weight_decay}")
        check(self.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
        check(self.heldout_every >= 0, "train.heldout_every",
               f"must be >= 0 (0 = off), got {self.heldout_every}")
        check(self.heldout_rows >= 1, "train.heldout_rows",
               f"must be >= 1, got {self.heldout_rows}")
        check(self.micro_batches >= 1, "train.micro_batches",
               f"must be >= 1, got {self.micro_batches}")
        choice(self.lr_schedule, "train.lr_schedule", LR_SCHEDULES)
        check(0 <= self.min_lr <= self.lr, "train.min_lr",
               f"must be in [0, train.lr={self.lr}], got {self.min_lr}")
        choice(self.augment, "train.augment", AUGMENTS)
        check(isinstance(self.checkpoint_layers, bool), "train.checkpoint_layers",
               f"must be true or false, got {self.checkpoint_layers!r}")
        check(0 <= self.ema_decay < 1, "train.ema_decay", "must be in [0, 1)")
        check(self.grad_clip >= 0, "train.grad_clip", "must be >= 0")
        check(0 <= self.label_dropout < 1, "train.label_dropout", "must be in [0, 1)")
        choice(self.nonfinite, "train.nonfinite", NONFINITE_POLICIES)
        choice(self.on_unreadable, "train.on_unreadable", UNREADABLE_POLICIES)
        check(self.lease_timeout_s > 0, "train.lease_timeout_s", "must be > 0")
        check(self.assembly_timeout_s > 0, "train.assembly_timeout_s", "must be > 0")
        choice(self.objective, "train.objective", OBJECTIVES)
        choice(self.precision, "train.precision", PRECISIONS)
        check(isinstance(self.compile, bool), "train.compile",
               f"must be true or false, got {self.compile!r}")
        choice(self.compile_mode, "train.compile_mode", COMPILE_MODES)
        check(self.max_restarts >= 0, "train.max_restarts", "must be >= 0")
        check(self.stall_timeout_s > 0, "train.stall_timeout_s", "must be > 0")
        check(self.assemble_every >= 0, "train.assemble_every", "must be >= 0")
        check(self.bptt_truncate >= 0, "train.bptt_truncate", "must be >= 0")
        check(all(s >= 1 for s in self.block_steps), "train.block_steps",
               f"every count must be >= 1, got {list(self.block_steps)}")
        fewest = min(self.block_steps) if self.block_steps else self.steps
        check(self.lr_schedule != "cosine" or self.warmup_steps < fewest,
               "train.warmup_steps", f"{self.warmup_steps} leaves no step to decay with "
               f"train.lr_schedule=cosine: use fewer than a block's {fewest} steps")

    def steps_of(self, block: int) -> int:
        """Optimizer steps of ``block``: train.block_steps[block], else train.steps."""
        return self.block_steps[block] if self.block_steps else self.steps

    @property
    def max_steps(self) -> int:
        """The most steps any block takes."""
        return max(self.block_steps) if self.block_steps else self.steps
