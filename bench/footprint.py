"""What a deployment pays before the first request: image size, start-up, memory, density.

    python -m bench.footprint --image distilbert-qa:test --slim-image distilbert-qa:test-slim \
        [--model build/standin-model] [--peer-venv /work/hf-venv] [--rounds 3]

For the full and slim images: the size uncompressed and as pushed (`docker save` gzipped, as a
registry stores the layers); `docker run` to the first answer with the model's graphs shipped
(and, for the full image, made at start-up), median of the rounds; the memory of all the
container's processes at the first answer and after 20 more (summed PSS: shared pages counted once) and whether any of
them maps libtorch; the top answers of both images on the same requests. Then a multi-model
endpoint of each image: the memory after each further model is loaded and has answered. The
peer (the Hugging Face toolkit's stack, in its venv) is measured the same way when --peer-venv is
given. All at QA_PRECISION=int8. Prints the tables; the figures go to bench/results/<class>.footprint.json
and so to BENCHMARKS.md. Traffic goes to 127.0.0.1 only (the multi-model containers have no network
and are asked from inside).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from bench import loadgen, render, servers
from bench.loopback import free_port, wait_until_ready
from bench.make_standin_model import DEFAULT_OUT as DEFAULT_MODEL
from bench.tables import Column, mib, table
from qa import corpus

MIB = 2**20
INT8 = {"QA_PRECISION": "int8"}
READY_TIMEOUT_S = 600
WARM_ANSWERS = 20


def image_sizes(image: str) -> dict:
    size = int(
        subprocess.run(
            ["docker", "image", "inspect", "-f", "{{.Size}}", image],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    saved = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
    pushed = _CountingSink()
    with gzip.GzipFile(fileobj=pushed, mode="wb", compresslevel=6, mtime=0) as packed:
        shutil.copyfileobj(saved.stdout, packed, 1 << 20)
    saved.wait()
    return {"uncompressed_mib": round(size / MIB), "pushed_mib": round(pushed.bytes / MIB)}


class _CountingSink:
    bytes = 0

    def write(self, data: bytes) -> int:
        self.bytes += len(data)
        return len(data)

    def flush(self) -> None:
        pass


def maps_libtorch(pids: set[int]) -> bool:
    for pid in pids:
        try:
            if "libtorch" in Path(f"/proc/{pid}/maps").read_text():
                return True
        except OSError:
            pass
    return False


def start_up(server: servers.Server, requests: list) -> dict:
    """Launch, time the first answer, answer WARM_ANSWERS more, read memory; always stops it."""
    try:
        server.start(free_port(between=(20000, 32000)))
        wait_until_ready(
            lambda: loadgen.first_answer(server.port, requests[0]), READY_TIMEOUT_S, server.alive, 0.05
        )
        first = time.perf_counter() - server.t_launch
        at_first = servers.memory_bytes(server.pids())
        answers = loadgen.collect_answers(server.port, requests[:WARM_ANSWERS])
        pids = server.pids()
        return {
            "first_answer_s": round(first, 2),
            "first_answer_mib": round(at_first / MIB),
            "memory_mib": round(servers.memory_bytes(pids) / MIB),
            "libtorch": maps_libtorch(pids),
            "answers": {str(k): v for k, v in answers.items()},
        }
    finally:
        server.stop()


def multi_model(image: str, model: Path, count: int, probe: dict, work: Path) -> list[int]:
    """MiB of the endpoint's processes with 0, 1, ... `count` models loaded and answered. Each
    model is a copy of its own (one file mapped by all would share its pages and flatter us)."""
    name = f"qa-footprint-{uuid.uuid4().hex[:8]}"
    copies = []
    for i in range(count):
        copies.append(work / f"{image.replace(':', '-')}-m{i}")
        shutil.copytree(model, copies[-1], ignore=shutil.ignore_patterns("*.onnx"))
    mounts = [arg for i, copy in enumerate(copies) for arg in ("-v", f"{copy}:/opt/ml/models/m{i}/model:ro")]
    env = ["-e", "SAGEMAKER_MULTI_MODEL=true", *(a for k, v in INT8.items() for a in ("-e", f"{k}={v}"))]
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "--network", "none", *mounts, *env, image, "serve"],
        check=True,
        capture_output=True,
    )

    def call(path: str, body: dict | None = None) -> int:
        script = (
            "import sys, urllib.request, urllib.error\n"
            "data = sys.stdin.buffer.read() or None\n"
            f"req = urllib.request.Request('http://127.0.0.1:8080{path}', data=data, headers={{'Content-Type': 'application/json'}})\n"
            "try:\n    print(urllib.request.urlopen(req, timeout=600).status)\n"
            "except urllib.error.HTTPError as exc:\n    print(exc.code)\n"
            "except OSError:\n    print(0)\n"
        )
        out = subprocess.run(
            ["docker", "exec", "-i", name, "python", "-c", script],
            input=json.dumps(body).encode() if body else b"",
            capture_output=True,
            check=False,
        )
        return int(out.stdout.strip() or 0)

    try:
        root = int(
            subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Pid}}", name],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        wait_until_ready(lambda: call("/ping") == 200, READY_TIMEOUT_S, lambda: True, 0.5)
        memory = [servers.memory_bytes(servers.session_pids(root, root))]
        for i in range(count):
            assert call("/models", {"model_name": f"m{i}", "url": f"/opt/ml/models/m{i}/model"}) == 200, (
                f"loading m{i} failed"
            )
            assert call(f"/models/m{i}/invoke", probe) == 200, f"m{i} did not answer"
            memory.append(servers.memory_bytes(servers.session_pids(root, root)))
        return [round(m / MIB) for m in memory]
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


TITLE = "Image size, start-up and memory"
SIZE_COLUMNS = [
    Column("image", "image", left=True),
    Column("uncompressed", "uncompressed_mib", mib),
    Column("as pushed (gzip)", "pushed_mib", mib),
]
START_UP_COLUMNS = [
    Column("configuration", "configuration", left=True),
    Column("`docker run` to first answer", "first_answer_s", lambda s: f"{s:.2f} s"),
    Column("memory at first answer", "first_answer_mib", mib),
    Column(f"after {WARM_ANSWERS} answers", "memory_mib", mib),
    Column("libtorch mapped", "libtorch", lambda mapped: "yes" if mapped else "no", left=True),
]


def _density_columns(models: int) -> list[Column]:
    return [
        Column("image", "image", left=True),
        *(Column(f"{i} models", lambda row, i=i: row["mib"][i], mib) for i in range(models + 1)),
        Column("added per further model", "further", mib),
    ]


def markdown(doc: dict) -> list[str]:
    """The section of BENCHMARKS.md: sizes, start-up and memory, multi-model density."""
    same, answered = doc["answers_same"]
    density = [
        {
            "image": kind,
            "mib": mib_,
            "further": max((b - a for a, b in zip(mib_[1:], mib_[2:])), default=None),
        }
        for kind, mib_ in doc["multi_model_mib"].items()
    ]
    models = len(density[0]["mib"]) - 1 if density else 0
    return [
        f"`python -m bench.footprint --image {doc['image']} --slim-image {doc['slim_image']}`, model `{doc['model']}`, "
        f"`QA_PRECISION=int8` (the peer: fp32, its only precision); medians of {doc['rounds']} rounds. Memory: "
        f"summed PSS of all the container's (or the peer's) processes, at the first answer and after "
        f"{doc['warm_answers']} more.",
        "",
        *table([{"image": kind, **s} for kind, s in doc["sizes"].items()], SIZE_COLUMNS),
        "",
        *table(doc["start_up"], START_UP_COLUMNS),
        "",
        f"int8 top answers, slim against full: {same} of {answered} identical.",
        "",
        f"Multi-model endpoint (`SAGEMAKER_MULTI_MODEL=true`), memory with 0..{models} int8 models (copies of the model, "
        "each its own files) loaded and answered:",
        "",
        *table(density, _density_columns(models)),
    ]


def start_ups(args, requests: list, work: Path) -> dict[str, list[dict]]:
    """Each configuration started `args.rounds` times, alternating: its runs (answers included)."""
    bare = work / "model-without-graphs"
    shutil.copytree(args.model, bare, ignore=shutil.ignore_patterns("graphs"))
    configs = {
        "full, graphs shipped": lambda: servers.ImageServer("full", args.model, work, args.image, INT8),
        "full, graphs made at start-up": lambda: servers.ImageServer(
            "full-make", bare, work, args.image, INT8
        ),
        "slim, graphs shipped": lambda: servers.ImageServer("slim", args.model, work, args.slim_image, INT8),
    }
    if args.peer_venv:
        configs["peer (HF toolkit, fp32)"] = lambda: servers.PeerServer(
            "peer", args.model, work, args.peer_venv
        )
    runs: dict[str, list[dict]] = {name: [] for name in configs}
    for round_ in range(args.rounds):
        for name, make in configs.items():
            runs[name].append(start_up(make(), requests))
            shown = {k: v for k, v in runs[name][-1].items() if k != "answers"}
            print(json.dumps({"round": round_, "config": name, **shown}), flush=True)
    return runs


def medians(name: str, rows: list[dict]) -> dict:
    return {
        "configuration": name,
        "first_answer_s": round(statistics.median(r["first_answer_s"] for r in rows), 2),
        "first_answer_mib": round(statistics.median(r["first_answer_mib"] for r in rows)),
        "memory_mib": round(statistics.median(r["memory_mib"] for r in rows)),
        "libtorch": any(r["libtorch"] for r in rows),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", required=True, help="the full image")
    parser.add_argument("--slim-image", required=True)
    parser.add_argument(
        "--model", type=Path, default=DEFAULT_MODEL, help="a model with its graphs in graphs/"
    )
    parser.add_argument("--peer-venv", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", type=int, default=3, help="models loaded on each multi-model endpoint")
    args = parser.parse_args()
    if not list((args.model / "graphs").glob("qa-int8-*")):
        parser.error(
            f"{args.model}/graphs has no int8 graphs: make them with the full image (python -m qa.graphs export)"
        )
    return args


def main() -> None:
    args = parse_args()
    requests = corpus.make_requests(WARM_ANSWERS)
    probe = {"inputs": {"question": requests[0].question, "context": requests[0].context}}
    sizes = {"full": image_sizes(args.image), "slim": image_sizes(args.slim_image)}
    print(json.dumps({"sizes": sizes}), flush=True)
    with tempfile.TemporaryDirectory(prefix="qa-bench-footprint-") as tmp:
        runs = start_ups(args, requests, Path(tmp))
        density = {
            kind: multi_model(image, args.model, args.models, probe, Path(tmp))
            for kind, image in (("full", args.image), ("slim", args.slim_image))
        }
        print(json.dumps({"multi_model_mib": density}), flush=True)
    full, slim = runs["full, graphs shipped"][0]["answers"], runs["slim, graphs shipped"][0]["answers"]
    data = {
        **{
            "image": args.image,
            "slim_image": args.slim_image,
            "model": str(args.model),
            "rounds": args.rounds,
        },
        "warm_answers": WARM_ANSWERS,
        "sizes": sizes,
        "start_up": [medians(name, rows) for name, rows in runs.items()],
        "answers_same": [sum(full[k] == slim.get(k) for k in full), len(full)],
        "multi_model_mib": density,
    }
    print("\n".join(markdown(data)))
    render.publish_side_run("footprint", data)


if __name__ == "__main__":
    main()
