#!/bin/sh
# Builds /opt/venv inside the image build from the pinned requirements: offline from the wheels
# build.sh put in the wheelhouse when there are any, else from the index (a plain `docker build`).
#   make-venv.sh WHEELHOUSE PIP_REQUIREMENT_ARGS...    e.g. make-venv.sh /tmp/wheelhouse -r requirements.txt
set -eu
wheelhouse=$1
shift
python3 -m venv /opt/venv
if ls "$wheelhouse"/*.whl >/dev/null 2>&1; then
    set -- --no-index --find-links "$wheelhouse" "$@"
else
    set -- --extra-index-url "$TORCH_INDEX_URL" "$@"
    if [ -f "$wheelhouse/ca-bundle.crt" ]; then export PIP_CERT="$wheelhouse/ca-bundle.crt"; fi
fi
cd "$wheelhouse"  # the requirement files name each other relative to it
/opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check "$@"
/opt/venv/bin/pip check
