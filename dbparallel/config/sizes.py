"""Sizes no machine can train: what a config asks torch to hold, counted with Python integers
before torch sees it, so that an absurd width, image side or sequence length (a typo's extra
zeros) is a ConfigError naming the key instead of torch's integer overflow or a failed
allocation. The bounds are far above any model a machine can train; the plan
(training/plan.py) counts what a block really needs, and says where it does not fit."""

from __future__ import annotations

from typing import Any

from dbparallel.config.checks import check
from dbparallel.config.presets import PRESET_DIMS, width
from dbparallel.errors import ConfigError

# a pebibyte: no one machine holds it (the largest hold tens of TiB), and a block trains in
# one process, on one device; torch's sizes (int64 bytes) end 8192 times higher
MOST_BYTES = 2**50
# layers of one block, and blocks: each is built as its own modules, one by one (a plan
# builds and steps every block on the meta device, about ten layers a second)
MOST_LAYERS = 100_000
# channels of an image: encoded images have 1 or 3; raw pixel lists of imaging spectrometers
# a few hundred bands
MOST_CHANNELS = 65_536
# token ids a text model embeds, and labels of an image task: the largest tokenizers hold a
# few hundred thousand (byte-level BPE here at most 65,536), the largest label sets some
# millions; every process builds the frozen table of them (text, vit) on its host
MOST_VOCAB = 2**24
FLOAT32, FLOAT64 = 4, 8
SIGMA_FEATURES = 256  # the sinusoidal features of the sigma embedding (models/layers.py)
TEXT_TASKS = ("mdm", "ar", "looped")
PAIRED = ("ar", "looped")  # a [clean; noisy] sequence of 2 x data.seq_len tokens


def check_layers(depth: int, blocks: int) -> None:
    """ConfigError naming the key unless model.blocks and the layers of one block are within
    MOST_LAYERS: checked before anything iterates over blocks or layers."""
    check(blocks <= MOST_LAYERS, "model.blocks",
          f"{blocks:,} blocks are more than the {MOST_LAYERS:,} a run can build (each is its "
          f"own network and its own actor)")
    check(depth <= MOST_LAYERS * blocks, "model.depth",
          f"{depth:,} layers in model.blocks={blocks} are more than {MOST_LAYERS:,} layers "
          f"per block (each layer is built as its own modules, one by one)")


def check_counts(channels: int, vocab_size: int, num_classes: int) -> None:
    """ConfigError naming data.channels above MOST_CHANNELS, or data.vocab_size or
    data.num_classes above MOST_VOCAB."""
    check(channels <= MOST_CHANNELS, "data.channels",
          f"{channels:,} channels per pixel: images have at most {MOST_CHANNELS:,} (encoded "
          f"images 1 or 3, raw pixel lists of spectrometers a few hundred)")
    check(vocab_size <= MOST_VOCAB, "data.vocab_size",
          f"{vocab_size:,} token ids: a model embeds at most {MOST_VOCAB:,} (the largest "
          f"tokenizers hold a few hundred thousand)")
    check(num_classes <= MOST_VOCAB, "data.num_classes",
          f"{num_classes:,} classes: a model embeds at most {MOST_VOCAB:,} labels")


def divisors(n: int) -> list[int]:
    """The divisors of ``n`` in ascending order, in sqrt(n) steps."""
    small = [k for k in range(1, int(n ** 0.5) + 1) if n % k == 0]
    return small + [n // k for k in reversed(small) if k * k != n]


def amount(n: int) -> str:
    """``n`` bytes in the largest binary unit that keeps a whole number in front."""
    for unit, power in (("EiB", 60), ("PiB", 50), ("TiB", 40), ("GiB", 30), ("MiB", 20)):
        if n >= 2**power:
            return f"{n / 2**power:,.1f} {unit}"
    return f"{n:,} B"


def check_sizes(cfg: Any) -> None:
    """ConfigError naming the key that grew it where one block's parameters, or one tensor of
    a block's step, would take more than MOST_BYTES. ``cfg`` is a Config (config/schema.py)
    whose other checks passed."""
    m, d, t = cfg.model, cfg.data, cfg.train
    hidden, _, mlp_ratio = width(m)
    base_hidden, _, base_ratio = PRESET_DIMS[m.preset]
    mlp = int(hidden * mlp_ratio)
    layers = m.layers_per_block
    rows = t.batch_size  # every draw is made for the global batch (training/step_pieces.py)
    share = -(-rows // cfg.runtime.replicas_per_block)  # one replica's rows
    piece = -(-share // t.micro_batches)  # what runs forward and backward at once
    grown = {"model.hidden": (hidden, base_hidden), "model.mlp_ratio": (mlp_ratio, base_ratio),
             "model.depth": (layers, 2), "train.batch_size": (rows, 64)}
    layer = 3 * hidden * hidden + hidden * hidden + 2 * hidden * mlp + 6 * hidden * hidden
    stem = SIGMA_FEATURES * hidden + hidden * hidden
    if cfg.task in TEXT_TASKS:
        tokens = d.seq_len * (2 if cfg.task in PAIRED else 1)
        grown |= {"data.seq_len": (d.seq_len, 128), "data.vocab_size": (d.vocab_size, 128)}
        stem += 2 * d.vocab_size * hidden  # the token table and the logits' projection
        tensors = [("a step's noise draws", rows * d.seq_len * hidden, FLOAT32,
                    ("train.batch_size", "data.seq_len", "model.hidden")),
                   ("one layer's activations", piece * tokens * max(3 * hidden, mlp), FLOAT32,
                    ("train.batch_size", "data.seq_len", "model.hidden", "model.mlp_ratio")),
                   ("a step's logits", piece * tokens * d.vocab_size, FLOAT32,
                    ("train.batch_size", "data.seq_len", "data.vocab_size")),
                   ("the token embedding table", (d.vocab_size + 1) * hidden, FLOAT64,
                    ("data.vocab_size", "model.hidden"))]
        if cfg.task in PAIRED:  # clean i sees clean j <= i, noisy i: (2T, 2T)
            tensors.append(("the attention mask", tokens * tokens, FLOAT32, ("data.seq_len",)))
    else:
        patch = m.patch_size ** 2 * d.channels
        tokens = (d.image_size // m.patch_size) ** 2 + (cfg.task == "vit")
        image = d.channels * d.image_size ** 2
        grown |= {"data.image_size": (d.image_size, 8), "data.channels": (d.channels, 1),
                  "data.num_classes": (d.num_classes, 10)}
        stem += 2 * patch * hidden + (d.num_classes + 1) * hidden
        tensors = [("a step's noise draws", rows * image, FLOAT32,
                    ("train.batch_size", "data.image_size", "data.channels")),
                   ("one layer's activations", piece * tokens * max(3 * hidden, mlp), FLOAT32,
                    ("train.batch_size", "data.image_size", "model.hidden", "model.mlp_ratio")),
                   ("the position embedding", tokens * hidden, FLOAT64,
                    ("data.image_size", "model.hidden")),
                   ("the label embedding table", (d.num_classes + 1) * hidden, FLOAT64,
                    ("data.num_classes", "model.hidden"))]
    params = (layers * layer + stem) * FLOAT32
    _refuse(cfg, grown, params, "one block's parameters",
            f"{layers:,} layers of width {hidden:,}, MLP width {mlp:,}, and a stem and head "
            f"of {stem:,} numbers",
            ("model.hidden", "model.mlp_ratio", "model.depth", "data.channels",
             "data.num_classes", "data.vocab_size"))
    for what, count, size, keys in tensors:
        _refuse(cfg, grown, count * size, what, f"{count:,} numbers", keys)


def _refuse(cfg: Any, grown: dict[str, tuple[float, float]], n: int, what: str,
            detail: str, keys: tuple[str, ...]) -> None:
    """ConfigError naming the one of ``keys`` furthest above its usual value (its default:
    the likely typo) where ``what`` would take ``n`` > MOST_BYTES bytes."""
    if n <= MOST_BYTES:
        return
    key = max((k for k in keys if k in grown), key=lambda k: grown[k][0] / grown[k][1])
    raise ConfigError(f"{_value(cfg, key)}: {what} alone would take {amount(n)} ({detail}), "
                      f"more than {amount(MOST_BYTES)}, more than any one machine holds")


def _value(cfg: Any, key: str) -> str:
    """``key=value`` as given; model.depth with model.blocks beside it."""
    section, name = key.split(".")
    value = getattr(getattr(cfg, section), name)
    if key == "model.depth":
        return f"model.depth={value} (model.blocks={cfg.model.blocks})"
    if key == "model.hidden" and value is None:
        return f"model.preset={cfg.model.preset}"
    return f"{key}={value}"
