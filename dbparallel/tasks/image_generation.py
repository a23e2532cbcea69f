"""Class-conditional image generation with DiT blocks (docs/method.md, Losses: dit).

Target y = image in [-1, 1] (or latents, shifted and scaled: tasks/image_data.py); condition
x = class label, replaced by the null label with probability ``train.label_dropout`` so that
sampling can use classifier-free guidance. With
``train.augment`` the training loss denoises flipped and/or cropped images (tasks/augment.py);
sampling is untouched.
"""

from __future__ import annotations

import torch

from dbparallel.config import Config
from dbparallel.core.losses import weighted_mse
from dbparallel.core.precond import edm_coefficients, edm_weight, precondition
from dbparallel.core.sampler import (
    Denoiser,
    classifier_free_guidance,
    equiprobable_schedule,
    euler_sample,
    heun_sample,
    karras_schedule,
    route,
)
from dbparallel.models.dit import DiTBlock
from dbparallel.models.presets import resolve
from dbparallel.tasks.augment import augment, augment_draws
from dbparallel.tasks.base import Batch, Draws, gaussian_noise
from dbparallel.tasks.image_data import ImageData


class ImageGeneration(ImageData):
    """DiT denoisers of images, one block per slice of sigma."""

    name = "dit"

    def __init__(self, cfg: Config):
        self.cfg = cfg
        n = cfg.noise
        self.noise, self.partition = gaussian_noise(cfg)
        self.sigma_data = n.sigma_data
        self.null_label = cfg.data.num_classes
        self.augment = cfg.train.augment  # the training loss's flips and crops

    def build_block(self, block: int) -> DiTBlock:
        d = self.cfg.data
        return DiTBlock(resolve(self.cfg.model), d.image_size, d.channels,
                        self.cfg.model.patch_size, d.num_classes)

    def denoise(
        self, net: DiTBlock, z: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """D(z, sigma; label) = c_skip z + c_out F(c_in z, c_noise, label)."""
        _, _, c_in, c_noise = edm_coefficients(sigma, self.sigma_data)
        F_x = net(c_in.view(-1, 1, 1, 1) * z, c_noise, labels)  # (N, C, H, W)
        return precondition(F_x, z, sigma, self.sigma_data)

    def draw(self, block: int, batch: Batch, total: int, generator: torch.Generator) -> Draws:
        """sigma (N,), eps (N, C, H, W), dropped labels (N,), then the augmentation's."""
        lo, hi = self.partition.ranges[block]
        device, y = generator.device, batch["image"]
        draws = {"sigma": self.noise.sample(total, lo, hi, generator, device=device),
                 "eps": torch.randn(total, *y.shape[1:], generator=generator, device=device),
                 "dropped": torch.rand(total, generator=generator, device=device)
                 < self.cfg.train.label_dropout}
        # drawn last, so that augment=none draws what it always drew
        return draws | augment_draws(self.augment, total, y.shape[-1], generator)

    def loss_on(self, net: DiTBlock, batch: Batch, block: int, draws: Draws) -> torch.Tensor:
        labels, sigma = batch["label"], draws["sigma"]
        labels = torch.where(draws["dropped"], torch.full_like(labels, self.null_label), labels)
        y = augment(batch["image"], draws)  # (N, C, H, W)
        D = self.denoise(net, y + sigma.view(-1, 1, 1, 1) * draws["eps"], sigma, labels)
        return weighted_mse(D, y, edm_weight(sigma, self.sigma_data))  # (N,)

    def inference_blocks(self) -> list[int]:
        # Heun's second call of a step is at the next step's sigma: the same blocks
        return route(self._sigmas(self.cfg.sample.steps), self.partition)

    def _sigmas(self, steps: int) -> torch.Tensor:
        if self.cfg.sample.schedule == "equiprobable":
            return equiprobable_schedule(self.noise, steps)
        return karras_schedule(self.noise, steps)

    @torch.no_grad()
    def generate(
        self, nets: list[DiTBlock], labels: torch.Tensor, generator: torch.Generator,
        steps: int | None = None, cfg_scale: float | None = None,
    ) -> torch.Tensor:
        """Images in [0, 1] (latents as stored, with data.latents) for ``labels`` from the
        composed chain of blocks, with ``steps`` solver steps and guidance ``cfg_scale``
        (default: sample.steps, sample.cfg_scale)."""
        s, d = self.cfg.sample, self.cfg.data
        device = labels.device
        steps = s.steps if steps is None else steps
        sigmas = self._sigmas(steps)
        shape = (len(labels), d.channels, d.image_size, d.image_size)
        z = self.noise.sigma_max * torch.randn(shape, generator=generator).to(device)
        solver = euler_sample if s.solver == "euler" else heun_sample
        scale = s.cfg_scale if cfg_scale is None else cfg_scale
        x = solver(self.guided_denoiser(nets, labels, scale), z, sigmas, self.partition)
        return self.to_stored(x).float()

    def guided_denoiser(self, nets: list[DiTBlock], labels: torch.Tensor,
                        scale: float) -> Denoiser:
        """(z, sigma, block) -> D, with classifier-free guidance when ``scale`` != 1."""
        null = torch.full_like(labels, self.null_label)

        def denoise(z: torch.Tensor, sigma: float, block: int) -> torch.Tensor:
            net = nets[block]
            if scale == 1.0:
                return self.denoise(net, z, torch.full((len(z),), sigma, device=z.device), labels)
            both = torch.cat([z, z])
            s = torch.full((len(both),), sigma, device=z.device)
            D_cond, D_uncond = self.denoise(net, both, s, torch.cat([labels, null])).chunk(2)
            return classifier_free_guidance(D_cond, D_uncond, scale)

        return denoise
