#!/usr/bin/env bash
# The one test command (README): a Python 3.11 venv (.venv) with requirements-dev.txt, the full and
# slim images built by build.sh with no model baked in (the tests mount their own tiny models), then the lint,
# format and type checks (scripts/check) and the whole pytest suite against the host stack and the
# image, container tests required.
#
#   scripts/test.sh [pytest arguments...]      e.g. scripts/test.sh -x tests/container
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
python=${PYTHON:-python3.11}
image=distilbert-qa:test
slim_image=distilbert-qa:test-slim
torch_index=https://download.pytorch.org/whl/cpu

command -v "$python" >/dev/null || { echo "test.sh: $python not found (Debian 12: apt-get install python3 python3-venv)" >&2; exit 1; }

# The venv is rebuilt only when the pins change.
stamp=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)
if [[ ! -x .venv/bin/python || $(cat .venv/.stamp 2>/dev/null) != "$stamp" ]]; then
    echo "test.sh: creating .venv from requirements-dev.txt" >&2
    rm -rf .venv
    "$python" -m venv .venv
    index_args=()
    # PyPI's default Linux torch is the CUDA build: take the CPU one when PyTorch's index answers.
    if "$python" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$torch_index/" 2>/dev/null; then
        index_args=(--extra-index-url "$torch_index")
    fi
    .venv/bin/python -m pip install -q --disable-pip-version-check "${index_args[@]}" -r requirements-dev.txt
    echo "$stamp" >.venv/.stamp
fi

scripts/check --no-tests  # lint, format and the type check of qa/

PYTHON="$root/.venv/bin/python" ./build.sh --no-model --tag "$image"
PYTHON="$root/.venv/bin/python" ./build.sh --slim --no-model --tag "$slim_image"

QA_REQUIRE_CONTAINER=1 exec .venv/bin/python -m pytest --image "$image" --slim-image "$slim_image" "$@"
