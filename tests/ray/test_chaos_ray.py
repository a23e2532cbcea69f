"""Chaos: a seeded schedule of hard kills of block actors and of the assembly actor at random
steps; the run ends with the weights of an unfaulted run, bit for bit (CPU). Quick in the
default suite; longer schedules with ``-m slow``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dbparallel.config import load_config
from dbparallel.runtime.faults import ASSEMBLER, kill_steps
from dbparallel.training.checkpoint import BlockCheckpoints
from dbparallel.training.history import metrics_file, read_assemblies, read_lines
from dbparallel.training.storage import Storage

pytestmark = pytest.mark.ray
RECIPE = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"


def _weights(run_dir: Path, blocks: int) -> list[dict[str, torch.Tensor]]:
    return [BlockCheckpoints(Storage(str(run_dir)), b).load_latest("snapshot")["ema"]
            for b in range(blocks)]


def _chaos(tmp_path: Path, seed: int, kills: int, steps: int) -> None:
    from dbparallel.runtime.launch import run_ray
    from dbparallel.runtime.local import run_local

    common = [f"train.steps={steps}", "train.checkpoint_every=5", "train.assemble_every=8",
              "train.max_restarts=8", "sample.eval_samples=10"]
    faulted = load_config([RECIPE], [f"run.dir={tmp_path / 'chaos'}", *common,
                                     f"debug.chaos_seed={seed}", f"debug.chaos_kills={kills}"])
    schedule = kill_steps(faulted)
    assert sum(map(len, schedule.values())) == kills
    report = run_ray(faulted, None, progress=False)
    run_local(load_config([RECIPE], [f"run.dir={tmp_path / 'clean'}", *common]), None, False)
    for block, (a, b) in enumerate(zip(_weights(tmp_path / "chaos", 2),
                                       _weights(tmp_path / "clean", 2), strict=True)):
        assert all(torch.equal(a[k], b[k]) for k in a), f"block {block} differs"
    for block in (0, 1):  # every scheduled kill of a block happened and was survived
        kills = schedule.get(block, [])
        assert report["per_block"][block]["restarts"] == len(kills)
        # its last actor went on from the checkpoint before its last kill (every 5 steps;
        # one of the kill's own step is written before it dies), not from the start
        assert report["per_block"][block]["resumed_from"] == (5 * (kills[-1] // 5)
                                                              if kills else 0)
    assert report["assembly"]  # the final assembly, after any kills of the assembler
    chaos, clean = Storage(str(tmp_path / "chaos")), Storage(str(tmp_path / "clean"))
    for block in (0, 1):  # the steps replayed after each kill left no line missing or twice
        lines = [[(r["step"], r["loss"], r["lr"]) for r in read_lines(s, metrics_file(block))]
                 for s in (chaos, clean)]
        assert lines[0] == lines[1]
        assert [step for step, _, _ in lines[0]] == list(range(4, steps + 1, 4))
    assembled = [r["step"] for r in read_assemblies(chaos)]
    assert assembled == sorted(set(assembled)) and assembled[-1] == steps
    if schedule.get(ASSEMBLER):
        assert Storage(str(tmp_path / "chaos")).read_json("assembler_restarts.json")


def test_chaos_quick(ray_session, tmp_path) -> None:
    _chaos(tmp_path, seed=0, kills=3, steps=24)  # each block and the assembler once


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chaos_long(ray_session, tmp_path, seed) -> None:
    _chaos(tmp_path, seed=seed, kills=8, steps=60)
