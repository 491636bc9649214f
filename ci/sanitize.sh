#!/usr/bin/env bash
# The native modules built with -fsanitize=address,undefined and their tests run against that
# build. Run from a checkout with the test dependencies installed (pip install '.[test]').
# The build happens in a scratch copy so the developer's own build is left alone.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/ebsfast-asan.XXXXXX)
trap 'rm -rf "$work"' EXIT

# Only what git tracks (plus untracked, unignored files), so stale builds do not leak in.
(cd "$root" && git ls-files -co --exclude-standard -z) | (cd "$root" && xargs -0 cp --parents -t "$work")
cd "$work"

# The build requirements (pyproject's build-system) are not in a test environment by default.
python -m pip install -q "Cython>=3.0" "setuptools>=77" "numpy>=1.26"
EBSFAST_SANITIZE=1 python setup.py -q build_ext --inplace --force

asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
# CPython itself leaks at exit by design, so leak detection is off; every other ASan and UBSan
# finding aborts the run. PYTHONMALLOC=malloc lets ASan see each Python allocation.
export LD_PRELOAD="$asan $ubsan"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONMALLOC=malloc
# The scratch copy has no ../shared beside it: point the SigV4 suite tests at the real one.
if [ -d "$root/../shared/sigv4-test-suite" ]; then
  export EBSFAST_SIGV4_SUITE="$root/../shared/sigv4-test-suite"
fi
# PYTHONPATH puts this scratch copy first on sys.path, in pytest and in the subprocesses tests
# start, so the sanitized modules are the ones used.
export PYTHONPATH="$work"
python -m pytest -q -p no:cacheprovider tests/test_package.py tests/test_sha256*.py tests/test_sigv4*.py tests/test_http_exchange.py tests/test_tls_direct.py tests/test_block_getter.py tests/test_pages.py tests/test_lane.py "$@"
