"""dbparallel: DiffusionBlocks training with one concurrent, independent actor per block."""

__version__ = "0.1.0"
