#!/usr/bin/env bash
# Build the SageMaker question-answering image, optionally bake a model in, optionally push it.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: ./build.sh [options]

Builds the image from this directory. By default it is tagged distilbert-qa:<git revision> and
distilbert-qa:latest. The pinned wheels (requirements.txt) are downloaded on this host into
build/wheels/ and installed offline inside the build, so the build needs no index access of its
own (works behind TLS-intercepting proxies and in air gaps once the wheels are cached).

Image:
  --slim                build the slim image (the Dockerfile's `slim` target): no PyTorch, transformers,
                        onnx or NNCF; it serves models whose graphs were made ahead of time (shipped
                        in the model, or baked with --model). Tagged distilbert-qa:<revision>-slim and
                        distilbert-qa:slim by default
  --tag NAME:TAG        tag the image NAME:TAG instead of the two default tags (repeatable;
                        with --push the repository is NAME of the first)
  --torch-index URL     index for the CPU build of torch (default https://download.pytorch.org/whl/cpu;
                        "none" leaves torch to pip's own configuration)
  --online              install inside the build from the index instead (the build needs network)
  --ca-bundle FILE      with --online: an extra CA bundle pip trusts inside the build (proxies);
                        used in the builder stage only, never in the final image

Model (the container serves /opt/ml/model when SageMaker fills it; a baked model is the fallback):
  --model DIR           bake DIR (save_pretrained output: config.json, tokenizer, *.safetensors) with
                        every precision's graphs, made in the build (with --slim too: by the full image)
  --model-id ID         download ID from the Hugging Face Hub on this host and bake it
  --model-revision REV  revision for --model-id
  --no-model            bake nothing (default when the Hub is unreachable; otherwise the default
                        is --model-id distilbert/distilbert-base-uncased-distilled-squad)

Push (the image URI is printed last):
  --push                push to Amazon ECR: account from STS, repository created with
                        scan-on-push when missing, docker login via get-login-password
  --region REGION       ECR region (default: $AWS_REGION, then $AWS_DEFAULT_REGION)
  --registry HOST       push to another registry (HOST[:PORT][/PATH]; docker login first if needed)

  -h, --help            this text

Environment: PYTHON (default python3) runs pip, huggingface_hub and, without the aws CLI, boto3.
Examples:
  ./build.sh --no-model
  ./build.sh --slim --model ./my-model
  ./build.sh --model ./my-model --push --region eu-west-1
EOF
}

die() { echo "build.sh: $*" >&2; exit 1; }
note() { echo "build.sh: $*" >&2; }

root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${PYTHON:-python3}
default_model_id="distilbert/distilbert-base-uncased-distilled-squad"

tags=()
target=full
torch_index="https://download.pytorch.org/whl/cpu"
online=false
ca_bundle=""
model_dir=""
model_id=""
model_revision=""
no_model=false
push_ecr=false
region="${AWS_REGION:-${AWS_DEFAULT_REGION:-}}"
registry=""

need_value() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
    case "$1" in
        --tag) need_value "$@"; tags+=("$2"); shift 2 ;;
        --slim) target=slim; shift ;;
        --torch-index) need_value "$@"; torch_index="$2"; shift 2 ;;
        --online) online=true; shift ;;
        --ca-bundle) need_value "$@"; ca_bundle="$2"; shift 2 ;;
        --model) need_value "$@"; model_dir="$2"; shift 2 ;;
        --model-id) need_value "$@"; model_id="$2"; shift 2 ;;
        --model-revision) need_value "$@"; model_revision="$2"; shift 2 ;;
        --no-model) no_model=true; shift ;;
        --push) push_ecr=true; shift ;;
        --region) need_value "$@"; region="$2"; shift 2 ;;
        --registry) need_value "$@"; registry="${2%/}"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

[[ -n "$ca_bundle" && $online == false ]] && die "--ca-bundle is for --online builds (the default wheelhouse build needs no CA inside)"
[[ -z "$ca_bundle" || -f "$ca_bundle" ]] || die "--ca-bundle $ca_bundle: no such file"
[[ -n "$model_dir" && -n "$model_id" ]] && die "--model and --model-id exclude each other"
[[ $no_model == true && -n "$model_dir$model_id" ]] && die "--no-model excludes --model and --model-id"
[[ -n "$model_revision" && -z "$model_id" ]] && die "--model-revision needs --model-id"
[[ $push_ecr == true && -n "$registry" ]] && die "--push (ECR) and --registry exclude each other"
if [[ -n "$model_dir" ]]; then
    [[ -f "$model_dir/config.json" ]] || die "--model $model_dir: no config.json there (expected save_pretrained output)"
    model_dir=$(cd "$model_dir" && pwd)
fi

# ---- Docker engine ----------------------------------------------------------------------------
command -v docker >/dev/null || die "docker is not installed (https://docs.docker.com/engine/install/)"
if ! docker_arch=$(docker version --format '{{.Server.Arch}}' 2>/dev/null); then
    die "cannot reach a Docker engine (is dockerd running? DOCKER_HOST=${DOCKER_HOST:-unset})"
fi
case "$docker_arch" in
    amd64) wheel_arch=x86_64 ;;
    arm64) wheel_arch=aarch64 ;;
    *) die "unsupported Docker engine architecture '$docker_arch' (amd64 or arm64)" ;;
esac

# ---- names --------------------------------------------------------------------------------------
cd "$root"
revision=unknown
version=dev
if git rev-parse --git-dir >/dev/null 2>&1; then
    revision=$(git rev-parse HEAD)
    version=$(git rev-parse --short=12 HEAD)
    # What goes into the image differs from the commit: say so in the tag, never reuse a clean one.
    if [[ -n $(git status --porcelain -- Dockerfile requirements.txt requirements-slim.txt entrypoint.py qa serving code docker) ]]; then
        version="$version-dirty"
    fi
fi
if [[ ${#tags[@]} -eq 0 ]]; then
    if [[ $target == slim ]]; then
        tags=("distilbert-qa:slim")
        [[ $revision != unknown ]] && tags=("distilbert-qa:$version-slim" "distilbert-qa:slim")
    else
        tags=("distilbert-qa:latest")
        [[ $revision != unknown ]] && tags=("distilbert-qa:$version" "distilbert-qa:latest")
    fi
fi
for t in "${tags[@]}"; do
    [[ "$t" == *:* && "$t" != */* ]] || die "--tag $t: use NAME:TAG without a registry (push with --push or --registry)"
done

# ---- ECR, checked before the long build ----------------------------------------------------------
# Runs one ECR step through the aws CLI when present, else through boto3 (scripts/ecr.py).
ecr() {
    local step=$1; shift
    if command -v aws >/dev/null; then
        case "$step" in
            account) aws sts get-caller-identity --query Account --output text ;;
            ensure-repository)
                if aws ecr describe-repositories --repository-names "$1" >/dev/null 2>&1; then
                    echo exists
                else
                    aws ecr create-repository --repository-name "$1" \
                        --image-scanning-configuration scanOnPush=true >/dev/null && echo created
                fi ;;
            login-password) aws ecr get-login-password ;;
        esac
    else
        "$python" "$root/scripts/ecr.py" "$step" "$@"
    fi
}

if [[ $push_ecr == true ]]; then
    [[ -n "$region" ]] || die "--push needs a region: --region REGION or AWS_REGION"
    export AWS_REGION=$region AWS_DEFAULT_REGION=$region
    account=$(ecr account) || die "could not read the AWS account from STS (see above): configure credentials (aws configure, AWS_PROFILE, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)"
    ecr_registry="$account.dkr.ecr.$region.amazonaws.com"
    [[ "$region" == cn-* ]] && ecr_registry="$ecr_registry.cn"
fi

url_reachable() {  # URL -> exit 0 when an HTTPS GET answers within 5 s (any HTTP status counts)
    "$python" - "$1" <<'PY' >/dev/null 2>&1
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=5)
except urllib.error.HTTPError:
    pass
PY
}

# ---- wheels -------------------------------------------------------------------------------------
# wheelhouse/ is the build context's copy; build/wheels/ the cache, refilled when the pins change.
rm -rf wheelhouse
mkdir -p wheelhouse
trap 'rm -rf "$root/wheelhouse"' EXIT
build_args=(--build-arg "GIT_REVISION=$revision" --build-arg "VERSION=$version")
if [[ $online == true ]]; then
    [[ -n "$ca_bundle" ]] && cp "$ca_bundle" wheelhouse/ca-bundle.crt
    [[ $torch_index != none ]] && build_args+=(--build-arg "TORCH_INDEX_URL=$torch_index")
    note "online build: pip inside the build installs from the index"
else
    "$python" -m pip --version >/dev/null 2>&1 || die "$python has no pip: it downloads the wheels (set PYTHON=...)"
    cache=build/wheels
    stamp=$( (cat requirements.txt; echo "$wheel_arch $torch_index") | sha256sum | cut -c1-16)
    if [[ ! -f "$cache/.stamp" || $(cat "$cache/.stamp") != "$stamp" ]]; then
        rm -rf "$cache"
        mkdir -p "$cache"
    fi
    pip_args=(-r requirements.txt --dest "$cache" --only-binary=:all: --python-version 3.11
              --implementation cp --abi cp311 --platform "manylinux2014_$wheel_arch")
    for minor in $(seq 17 36); do pip_args+=(--platform "manylinux_2_${minor}_$wheel_arch"); done
    if [[ $torch_index != none ]]; then
        if url_reachable "$torch_index/"; then
            pip_args+=(--extra-index-url "$torch_index")
        else
            note "$torch_index is not reachable: torch comes from pip's own configuration"
        fi
    fi
    # Pure-Python packages published only as source (sdist): built into wheels here, then found
    # by the download below through --find-links.
    sdist_only=$(grep -E '^sagemaker-inference==' requirements.txt || true)
    if [[ -n "$sdist_only" ]]; then
        # shellcheck disable=SC2086  # one argument per requirement line
        "$python" -m pip wheel -qq --disable-pip-version-check --no-deps --wheel-dir "$cache" $sdist_only \
            || die "building wheels of the source-only packages failed (see above)"
    fi
    pip_args+=(--find-links "$cache")
    note "downloading the pinned wheels for cp311/$wheel_arch into $cache"
    "$python" -m pip download -qq --disable-pip-version-check "${pip_args[@]}" \
        || die "pip download failed (see above); a proxy CA for the host goes in pip's 'cert' setting"
    if compgen -G "$cache/nvidia_*.whl" >/dev/null; then
        die "pip chose the CUDA build of torch (nvidia_* wheels): pass --torch-index URL of a CPU index"
    fi
    echo "$stamp" >"$cache/.stamp"
    # Hard links when possible: no copy of several hundred MB per build.
    ln "$cache"/*.whl wheelhouse/ 2>/dev/null || cp "$cache"/*.whl wheelhouse/
fi

# ---- model --------------------------------------------------------------------------------------
if [[ -z "$model_dir$model_id" && $no_model == false ]]; then
    if url_reachable "https://huggingface.co/api/models/$default_model_id"; then
        model_id=$default_model_id
    else
        note "the Hugging Face Hub is not reachable: no model baked (the container loads /opt/ml/model or HF_MODEL_ID)"
    fi
fi
if [[ -n "$model_id" ]]; then
    model_dir="$root/build/models/${model_id//\//--}${model_revision:+@$model_revision}"
    note "downloading $model_id${model_revision:+@$model_revision} into $model_dir"
    "$python" - "$model_id" "$model_revision" "$model_dir" <<'PY' || die "download of $model_id failed (see above)"
import sys
try:
    from huggingface_hub import snapshot_download
except ImportError:
    sys.exit("huggingface_hub is not installed for this python (pip install huggingface_hub), or use --model DIR")
repo_id, revision, local_dir = sys.argv[1], sys.argv[2] or None, sys.argv[3]
# Weights as safetensors only (no pickles), plus config and tokenizer files.
snapshot_download(repo_id, revision=revision, local_dir=local_dir,
                  allow_patterns=["*.json", "*.txt", "*.model", "*.safetensors"])
PY
    compgen -G "$model_dir/*.safetensors" >/dev/null || die "$model_id has no safetensors weights"
fi

# ---- build --------------------------------------------------------------------------------------
tag_args=()
for t in "${tags[@]}"; do tag_args+=(-t "$t"); done
start=$SECONDS
image_id() {  # TARGET -> builds that target of the Dockerfile, prints its image id
    local iid
    iid=$(mktemp)
    docker build --network host "${build_args[@]}" --target "$1" --iidfile "$iid" . >&2 \
        || die "docker build of the $1 image failed (see above)"
    cat "$iid"
    rm -f "$iid"
}
if [[ -z "$model_dir" ]]; then
    docker build --network host "${build_args[@]}" --target "$target" "${tag_args[@]}" . \
        || die "docker build failed (see above)"
else
    full_image=$(image_id full)
    base_image=$full_image
    [[ $target == slim ]] && base_image=$(image_id slim)
    note "baking $model_dir into /opt/program/model, with its graphs made by the full image"
    # The model is its own build context and layer on top of the code image: no copy of it in
    # the repository, and a code change does not resend the model. Every precision's graphs are
    # made in the build so start-up does not make them (their names hash the weights).
    docker build --network host "${tag_args[@]}" -f - "$model_dir" <<EOF || die "baking the model failed (see above)"
FROM $full_image AS graphs
COPY . /opt/program/model/
RUN ["/opt/venv/bin/python", "-m", "qa.graphs", "export", "/opt/program/model"]
FROM $base_image
COPY --from=graphs /opt/program/model/ /opt/program/model/
LABEL org.opencontainers.image.description="Extractive question answering for SageMaker ($target image): nginx + gunicorn; model ${model_id:-$(basename "$model_dir")}"
EOF
fi
size=$(docker image inspect --format '{{.Size}}' "${tags[0]}")
note "built ${tags[*]} in $((SECONDS - start)) s, $((size / 1000000)) MB"

# ---- push ---------------------------------------------------------------------------------------
push_to() {  # REGISTRY -> pushes every tag there, prints the URI of the first one last
    local target uri=""
    for t in "${tags[@]}"; do
        target="$1/$t"
        docker tag "$t" "$target"
        note "pushing $target"
        docker push "$target" >&2 || die "push of $target failed (see above): is the registry reachable, are you logged in?"
        uri=${uri:-$target}
    done
    echo "$uri"
}

if [[ -n "$registry" ]]; then
    push_to "$registry"
elif [[ $push_ecr == true ]]; then
    repository=${tags[0]%%:*}
    state=$(ecr ensure-repository "$repository") || die "cannot create or read ECR repository $repository (see above)"
    note "ECR repository $repository: $state"
    ecr login-password | docker login --username AWS --password-stdin "$ecr_registry" >&2 \
        || die "docker login to $ecr_registry failed (see above)"
    push_to "$ecr_registry"
fi
