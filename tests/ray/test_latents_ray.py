"""A Ray run on latents whose sample.decoder is the user's own module, importable only where
the driver runs: the assembly actor is sent it and draws samples.png with it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dbparallel.config import load_config

pytestmark = pytest.mark.ray
RECIPE = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"
DECODER = '''
import os
import torch.nn.functional as F

def decode(latents):  # (N, 4, 4, 4) -> (N, 1, 8, 8) in [0, 1]; says which process ran it
    with open(os.path.join({folder!r}, f"{{os.getpid()}}.pid"), "w"):
        pass
    return F.interpolate(latents[:, :1], scale_factor=2).sigmoid()
'''


def test_the_assembly_actor_decodes_with_the_driver_s_own_decoder(ray_session, tmp_path,
                                                                  monkeypatch) -> None:
    from dbparallel.runtime.launch import run_ray

    rng = np.random.default_rng(0)
    latents = rng.normal(size=(240, 64)).astype(np.float32)
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"image": pa.array(list(latents), pa.list_(pa.float32())),
                             "label": pa.array(rng.integers(0, 10, 240))}),
                   data / "train.parquet")
    ran, code = tmp_path / "ran", tmp_path / "code"
    ran.mkdir()
    code.mkdir()
    (code / "driver_only_vae.py").write_text(DECODER.format(folder=str(ran)))
    monkeypatch.syspath_prepend(str(code))  # the driver's path, not the actors'
    cfg = load_config([RECIPE], [
        f"run.dir={tmp_path / 'run'}", "data.source=parquet", f"data.path={data}",
        "data.latents=true", "data.channels=4", "data.image_size=4", "data.num_classes=10",
        "data.latent_scale=0.5", "sample.decoder=driver_only_vae:decode", "train.steps=4",
        "train.checkpoint_every=4", "train.log_every=2", "train.warmup_steps=1",
        "data.validate=false"])
    sent = Path(tempfile.gettempdir())  # where the actor writes the decoder it is sent
    before = set(sent.glob("dbparallel-code-*"))
    try:
        report = run_ray(cfg, None, progress=False)
    finally:
        for made in set(sent.glob("dbparallel-code-*")) - before:
            shutil.rmtree(made, ignore_errors=True)
    assert len(report["per_block"]) == 2
    assert (tmp_path / "run" / "samples.png").is_file()
    assert not (tmp_path / "run" / "samples.safetensors").exists()
    import os

    assert {p.stem for p in ran.iterdir()} - {str(os.getpid())}  # decoded by the actor
