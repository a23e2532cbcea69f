"""Only dbparallel.runtime may import Ray: the other layers run where Ray is absent."""

from __future__ import annotations

import subprocess
import sys


def test_ray_free_layers_do_not_import_ray() -> None:
    code = (
        "import sys\n"
        "import dbparallel.config, dbparallel.cli\n"
        "import dbparallel.core.noise, dbparallel.core.partition, dbparallel.core.precond\n"
        "import dbparallel.core.losses, dbparallel.core.sampler, dbparallel.core.memory\n"
        "import dbparallel.models.dit, dbparallel.tasks.image_generation\n"
        "import dbparallel.data.sources, dbparallel.training.loop\n"
        "import dbparallel.training.assemble, dbparallel.training.plan\n"
        "import dbparallel.runtime.local, dbparallel.runtime.replica_worker\n"
        "import dbparallel.data.text, dbparallel.models.lm, dbparallel.tasks.masked_lm\n"
        "import dbparallel.tasks.autoregressive, dbparallel.tasks.looped\n"
        "import dbparallel.training.eval.text, dbparallel.training.eval.scorer\n"
        "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if 'ray' in m)\n"
        "assert 'omegaconf' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_what_gpu_sh_runs_imports_no_ray() -> None:
    # benchmarks/gpu.sh runs on a CUDA machine without Ray, where the GPU tests do not skip:
    # every module they and the GPU benchmarks import (in a function body too) must load there
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    sources = [*(root / "tests" / "gpu").glob("test_*.py"),
               *(root / "benchmarks").glob("gpu_*.py")]
    modules = {"benchmarks." + p.stem for p in sources if p.parent.name == "benchmarks"}
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module)
            elif isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
    ours = sorted(m for m in modules if m.split(".")[0] in ("dbparallel", "benchmarks"))
    assert "dbparallel.runtime.local" in ours and "benchmarks.gpu_speed" in ours
    code = ("import sys\nsys.modules['ray'] = None  # absent: importing it raises\n"
            + "".join(f"import {m}\n" for m in ours))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)
