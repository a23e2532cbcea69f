"""Image classification with ViT blocks (docs/method.md, Losses: vit).

Target y = E[c], the class's row of a frozen unit-norm label embedding derived from the run
seed (identical in every block, no communication), or, with ``model.label_embedding=learned``,
of the block's own learned copy of it (rows normalised to unit length, trained with the block
through the target and the c_skip path, as in the paper's code, but private to the block);
condition x = the image's patches. A block
denoises z = y + sigma * eps, read out as logits; its loss is w(sigma) * CE per sample.
Prediction runs N = B Euler steps on the equi-probability schedule with the expected-embedding
readout D = softmax(logits) @ E (the table of the block that ran the step); the logits of the
last step, at sigma_min, are the prediction.

With ``train.objective=end_to_end`` the same ViT has a CLS token instead of the noisy label and
trains with plain cross-entropy: the baseline.

With ``train.augment`` the training loss conditions on flipped and/or cropped images
(tasks/augment.py); prediction is untouched.
"""

from __future__ import annotations

import torch

from dbparallel.config import Config
from dbparallel.core.losses import weighted_cross_entropy
from dbparallel.core.precond import edm_coefficients, edm_weight, precondition
from dbparallel.core.sampler import equiprobable_schedule, route
from dbparallel.models.presets import resolve
from dbparallel.models.vit import ViTBlock
from dbparallel.tasks.augment import augment, augment_draws
from dbparallel.tasks.base import Batch, Draws, gaussian_noise
from dbparallel.tasks.frozen_table import FrozenTable
from dbparallel.tasks.image_data import ImageData


class Classification(ImageData):
    """ViT denoisers of the label embedding, one block per slice of sigma."""

    name = "vit"

    def __init__(self, cfg: Config, shapes_only: bool = False):
        self.cfg = cfg
        n = cfg.noise
        self.noise, self.partition = gaussian_noise(cfg)
        self.sigma_data = n.sigma_data
        self.end_to_end = cfg.train.objective == "end_to_end"
        self.dims = resolve(cfg.model)
        self._table = FrozenTable(cfg.run.seed, cfg.data.num_classes, self.dims.hidden,
                                  "data.num_classes", shapes_only)
        self._E_on: dict[torch.device, torch.Tensor] = {}  # copies of E, one per device
        self.learned = cfg.model.label_embedding == "learned" and not self.end_to_end
        self.augment = cfg.train.augment  # the training loss's flips and crops

    @property
    def E(self) -> torch.Tensor:
        """The frozen label table, (num_classes, hidden), drawn at its first use."""
        return self._table.tensor()

    def build_block(self, block: int) -> ViTBlock:
        d = self.cfg.data
        table = self.E  # drawn here, not at its first use inside a compiled loss (table())
        return ViTBlock(self.dims, d.image_size, d.channels, self.cfg.model.patch_size,
                        d.num_classes, noisy_label=not self.end_to_end,
                        label_table=table if self.learned else None)

    def table(self, net: ViTBlock, device: torch.device) -> torch.Tensor:
        """The unit-norm label embedding (classes, D) that ``net`` denoises (the frozen one
        copied to each device once, not on every step)."""
        if self.learned:
            return net.targets()
        if device not in self._E_on:
            self._E_on[device] = self.E.to(device)
        return self._E_on[device]

    def denoise(self, net: ViTBlock, images: torch.Tensor, z: torch.Tensor,
                sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(D, logits) of the noisy label z (N, D) at sigma (N,):
        D = c_skip z + c_out F(c_in z, c_noise; image), logits = head(D)."""
        _, _, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        F_x, c = net(images, c_in[:, None] * z, c_noise)  # (N, D), (N, D)
        D = precondition(F_x, z, sigma, self.sigma_data)  # (N, D)
        return D, net.classify(D, c)  # (N, D), (N, classes)

    def draw(self, block: int, batch: Batch, total: int, generator: torch.Generator) -> Draws:
        """sigma (N,) and eps (N, D) (none end to end), then the augmentation's."""
        device, size = generator.device, batch["image"].shape[-1]
        draws: Draws = {}
        if not self.end_to_end:  # end to end, the augmentation's are the only draws
            lo, hi = self.partition.ranges[block]
            draws = {"sigma": self.noise.sample(total, lo, hi, generator, device=device),
                     "eps": torch.randn(total, self.dims.hidden, generator=generator,
                                        device=device)}
        # drawn after the noise, so that augment=none draws what it always drew
        return draws | augment_draws(self.augment, total, size, generator)

    def loss_on(self, net: ViTBlock, batch: Batch, block: int, draws: Draws) -> torch.Tensor:
        labels = batch["label"]
        images = augment(batch["image"], draws)  # (N, C, H, W)
        if self.end_to_end:
            F_x, c = net(images)  # (N, D), (N, D)
            return weighted_cross_entropy(net.classify(F_x, c), labels,
                                          torch.ones(len(labels), device=labels.device))  # (N,)
        sigma = draws["sigma"]  # (N,)
        y = self.table(net, labels.device)[labels]  # (N, D)
        _, logits = self.denoise(net, images, y + sigma[:, None] * draws["eps"], sigma)
        return weighted_cross_entropy(logits, labels, edm_weight(sigma, self.sigma_data))

    def inference_sigmas(self) -> torch.Tensor:
        """N = B descending sigmas of the equi-probability schedule, so each block runs once
        (at least 2: the first at sigma_max, the last, which gives the logits, at sigma_min)."""
        return equiprobable_schedule(self.noise, max(self.cfg.model.blocks, 2))

    def inference_blocks(self) -> list[int]:
        if self.end_to_end:
            return [0]
        return route(self.inference_sigmas(), self.partition)

    @torch.no_grad()
    def predict(self, nets: list[ViTBlock], images: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
        """Logits (N, classes) of the composed chain for images (N, C, H, W) in [-1, 1]."""
        if self.end_to_end:
            F_x, c = nets[0](images)
            return nets[0].classify(F_x, c)
        return self.predict_steps(nets, images, generator)[-1][2]

    @torch.no_grad()
    def predict_steps(self, nets: list[ViTBlock], images: torch.Tensor,
                      generator: torch.Generator) -> list[tuple[float, int, torch.Tensor]]:
        """(sigma, block, logits (N, classes)) of every step of the chain; the last step's
        logits are the prediction."""
        n, device = len(images), images.device
        sigmas = [float(s) for s in self.inference_sigmas()]
        if self.cfg.sample.label_start == "zero":
            z = torch.zeros(n, self.E.shape[1], device=device)  # the prior's mean, (N, D)
        else:
            z = sigmas[0] * torch.randn(n, self.E.shape[1], generator=generator).to(device)
        steps = []
        for sigma, sigma_next in zip(sigmas, sigmas[1:] + [None], strict=True):
            block = self.partition.owner(sigma)
            _, logits = self.denoise(nets[block], images, z,
                                     torch.full((n,), sigma, device=device))
            steps.append((sigma, block, logits))
            if sigma_next is None:
                break
            E = self.table(nets[block], device)  # (classes, D)
            D = logits.softmax(dim=1) @ E  # expected embedding, (N, D)
            z = z + (sigma_next - sigma) * (z - D) / sigma  # Euler step of the PF-ODE
        return steps
