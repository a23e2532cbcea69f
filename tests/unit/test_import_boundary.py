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
