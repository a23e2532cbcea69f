"""The assembly actor as the Ray backend starts it (runtime/ray_backend.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from dbparallel.config import load_config

pytestmark = pytest.mark.ray
RECIPE = Path(__file__).resolve().parents[2] / "jobs" / "tiny_cpu.yaml"


def _answer(backend, timeout_s: float = 120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = backend.poll(1.0)
        if events:
            return events
    raise AssertionError("no answer")


def test_an_assembly_actor_lost_for_good_is_started_anew_for_the_next_assembly(
        ray_session, tmp_path, monkeypatch) -> None:
    """An assembly during training whose actor Ray will not start again (its start failed: the
    run directory's storage out of reach for a moment; or it died train.max_restarts times)
    fails, and training goes on; the next assembly, the final one, gets a new actor instead of
    the dead one, whose calls would all fail, failing the run at its end."""
    import os

    from dbparallel.runtime import ray_backend

    once = tmp_path / "unreachable"
    once.touch()

    class Assembler:  # sent to the actor by value: it is defined here
        def __init__(self, cfg, run_id, code=None):
            if os.path.exists(once):
                os.remove(once)
                raise OSError("the run directory's storage is out of reach")

        def assemble(self, write_samples: bool = True) -> dict[str, float]:
            return {"block_steps_min": 4.0, "final": float(write_samples)}

    monkeypatch.setattr(ray_backend, "AssemblerActor", Assembler)
    cfg = load_config([RECIPE], [f"run.dir={tmp_path / 'run'}", "train.max_restarts=1",
                                 "runtime.assembly_cpus=0"])
    backend = ray_backend.RayBackend(cfg, None, 1, "session", "run")
    try:
        backend.submit_assemble(False)
        [during] = _answer(backend)
        assert during.kind == "assemble" and during.error is not None
        backend.submit_assemble(True)
        [final] = _answer(backend)
        assert final.error is None, final.error
        assert final.result == {"block_steps_min": 4.0, "final": 1.0}
    finally:
        backend.close()
