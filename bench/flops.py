"""FLOP accounting: the model's forward FLOPs per request, and the CPU's fp32 ceiling.

The ceiling is the single-thread rate of a large fp32 matrix product (torch.mm), the most a CPU
does with fp32 arithmetic; `bench.run` measures it in a child process before the servers (so
the bench process itself never imports torch). GFLOP per CPU-second of a configuration is its
GFLOP per request over its CPU-seconds per request, the ceiling's share says how close the
whole serving stack (HTTP, tokenisation, Python, the forward pass) comes to it.

    python -m bench.flops ceiling [--seconds 2] [--n 2048]   # JSON on stdout
    python -m bench.flops tokens MODEL_DIR                   # the corpus's tokens and GFLOP
    python -m doctest -v bench/flops.py                      # the hand-checked figures below
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MAX_SEQ = 384  # the QA window (max_seq_len); the corpus's requests fit in one
QA_LABELS = 2  # the qa head: start and end logits
CEILING_N = 2048
CEILING_S = 2.0


def forward_gflop(tokens: int, dim: int, hidden: int, layers: int, labels: int = QA_LABELS) -> float:
    """GFLOP of one encoder forward pass over one window of `tokens` tokens (s), no padding.

    Multiply-adds per token, for a DistilBERT/BERT-like encoder of width d, FFN width h:

        per layer:  4*d*d     the Q, K, V and output projections
                  + 2*d*h     the FFN, up (d -> h) and down (h -> d)
                  + 2*s*d     attention: the scores Q.K^T and the weighted sum of V
        qa head:    d*labels  the start/end logits

        FLOP = 2 * s * (layers * (4*d*d + 2*d*h + 2*s*d) + d*labels)    (2 FLOP per multiply-add)

    Not counted: embeddings (look-ups), biases, LayerNorm, softmax, GELU; together well under
    1% at DistilBERT's size.

    By hand, DistilBERT (d 768, h 3072, 6 layers), s = 200: 4*768*768 = 2,359,296;
    2*768*3072 = 4,718,592; 2*200*768 = 307,200; per layer 7,385,088, x 6 = 44,310,528;
    + 768*2 = 44,312,064 multiply-adds per token; x 2 x 200 = 17,724,825,600 FLOP.

    >>> forward_gflop(200, 768, 3072, 6)
    17.7248256
    >>> forward_gflop(1, 1, 1, 1, labels=1) * 1e9  # 2*1*(1*(4 + 2 + 2) + 1)
    18.0
    """
    d, h, s = dim, hidden, tokens
    return 2 * s * (layers * (4 * d * d + 2 * d * h + 2 * s * d) + d * labels) / 1e9


def per_cpu_second(gflop_per_req: float | None, cpu_s_per_req: float | None) -> float | None:
    """GFLOP per CPU-second = GFLOP per request / CPU-seconds per request (None when unknown)."""
    if gflop_per_req is None or not cpu_s_per_req:
        return None
    return gflop_per_req / cpu_s_per_req


def model_shape(model_dir: Path) -> dict[str, int]:
    """dim, hidden and layers from config.json (DistilBERT's or BERT's key names)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())

    def pick(*keys: str) -> int:
        for key in keys:
            if config.get(key) is not None:
                return int(config[key])
        raise KeyError(f"config.json has none of {', '.join(keys)}")

    return {
        "dim": pick("dim", "hidden_size"),
        "hidden": pick("hidden_dim", "intermediate_size"),
        "layers": pick("n_layers", "num_hidden_layers"),
    }


def request_tokens(model_dir: Path, requests) -> dict[int, int]:
    """Tokens per request (question + context pair, special tokens included), by request index.

    Uncapped: a request over MAX_SEQ would be split into windows by the servers.
    """
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return {r.index: len(tokenizer.encode(r.question, r.context).ids) for r in requests}


def request_flops(model_dir: Path, requests) -> dict:
    """GFLOP per request for the corpus: {"gflop": {index: GFLOP}, ...summary}, windows capped at MAX_SEQ."""
    shape = model_shape(model_dir)
    tokens = request_tokens(model_dir, requests)
    gflop = {i: forward_gflop(min(n, MAX_SEQ), **shape) for i, n in tokens.items()}
    counts = list(tokens.values())
    return {
        "shape": shape,
        "max_seq": MAX_SEQ,
        "tokens": [min(counts), round(statistics.fmean(counts), 1), max(counts)],
        "over_max_seq": sum(n > MAX_SEQ for n in counts),
        "gflop_per_req_corpus": round(statistics.fmean(gflop.values()), 4),
        "gflop": gflop,
        "tokens_by_index": tokens,
    }


def level_flops(flops: dict | None, answered: list[int]) -> dict:
    """Mean tokens and GFLOP over the requests a level answered (its measured window)."""
    if not flops or "gflop" not in flops or not answered:
        return {"tokens_per_req": None, "gflop_per_req": None}
    return {
        "tokens_per_req": round(
            statistics.fmean(min(flops["tokens_by_index"][i], MAX_SEQ) for i in answered), 1
        ),
        "gflop_per_req": round(statistics.fmean(flops["gflop"][i] for i in answered), 4),
    }


def fp32_ceiling(seconds: float = CEILING_S, n: int = CEILING_N) -> dict:
    """Single-thread GFLOP/s of an n x n fp32 torch.mm: the best of repeated products over `seconds`."""
    import torch

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up: first-call dispatch and page faults
    rates = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(rates) < 3:
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return {
        "gflops_per_cpu": round(max(rates), 1),
        "gflops_median": round(statistics.median(rates), 1),
        "what": f"torch.mm fp32 {n}x{n}, 1 thread, best of {len(rates)}",
        "n": n,
        "threads": torch.get_num_threads(),
        "reps": len(rates),
        "torch": torch.__version__,
    }


def measure_ceiling(seconds: float = CEILING_S, n: int = CEILING_N, python: str = sys.executable) -> dict:
    """fp32_ceiling() in a child process (one thread everywhere); raises RuntimeError on failure."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    out = subprocess.run(
        [python, "-m", "bench.flops", "ceiling", "--seconds", str(seconds), "--n", str(n)],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120 + 10 * seconds,
        check=False,
    )
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"exit {out.returncode}: {tail}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.flops", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("ceiling", help="single-thread fp32 GFLOP/s of torch.mm, as JSON")
    c.add_argument("--seconds", type=float, default=CEILING_S)
    c.add_argument("--n", type=int, default=CEILING_N)
    t = sub.add_parser("tokens", help="tokens and GFLOP per request of the benchmark corpus")
    t.add_argument("model_dir", type=Path)
    t.add_argument("--requests", type=int, default=400)
    args = p.parse_args(argv)
    if args.cmd == "ceiling":
        print(json.dumps(fp32_ceiling(args.seconds, args.n)))
    else:
        from qa.corpus import make_requests

        info = request_flops(args.model_dir, make_requests(args.requests))
        print(json.dumps({k: v for k, v in info.items() if k not in ("gflop", "tokens_by_index")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
