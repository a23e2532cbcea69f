"""A small image classifier of the training data, trained once and cached.

It scores generated images two ways: the accuracy of its prediction against the class the
image was generated for (``sample_accuracy``), and the Fréchet distance between real and
generated images in its penultimate features (``fd_indomain``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable

import torch
from torch import nn

from dbparallel.data.cache import atomic_path, cache_dir
from dbparallel.training.seeding import generator

VERSION = 2  # bump when the architecture or training recipe changes (invalidates caches)


class FeatureClassifier(nn.Module):
    """MLP on flattened pixels; ``features`` is its penultimate layer."""

    def __init__(self, pixels: int, num_classes: int, width: int = 256, feature_dim: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Flatten(), nn.Linear(pixels, width), nn.GELU(), nn.Linear(width, feature_dim),
            nn.GELU(),
        )
        self.out = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (N, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))  # (N, classes)


Batches = Callable[[int], tuple[torch.Tensor, torch.Tensor]]  # step -> (images, labels)
BATCH = 128  # rows per training step of the classifier


def train_classifier(batches: Batches, pixels: int, num_classes: int, steps: int = 600,
                     seed: int = 0) -> FeatureClassifier:
    """Fit a FeatureClassifier to the stream ``batches`` of images (N, C, H, W) in [0, 1],
    deterministically."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FeatureClassifier(pixels, num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    g = generator(seed, "classifier")
    for step in range(steps):
        images, labels = batches(step)
        x = images + 0.05 * torch.randn(images.shape, generator=g)  # light noise
        loss = nn.functional.cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def cached_classifier(key: dict, batches: Batches, pixels: int,
                      num_classes: int) -> FeatureClassifier:
    """The classifier for the data set described by ``key``, trained on first use."""
    digest = hashlib.sha256(json.dumps({**key, "version": VERSION},
                                       sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"classifier_{digest}.pt"
    model = FeatureClassifier(pixels, num_classes)
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except (RuntimeError, OSError, EOFError):
            pass  # unreadable cache: retrain and overwrite below
    model = train_classifier(batches, pixels, num_classes)
    tmp = atomic_path(path)
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, path)
    return model


@torch.no_grad()
def accuracy(model: FeatureClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((model(images).argmax(1) == labels).float().mean())
