# Sourced by the GPU benchmark scripts that run many processes, from the repository root:
# this checkout's cud_jax on the path, one persistent compilation cache shared by the
# processes (seeds and cells reuse compiled programs), and, where ml_collections is not
# installed (a bare GPU machine without internet), its wheel from .whl/ installed offline.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/cud_jax_jit_cache}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=-1
if ! python3 -c "import ml_collections" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
