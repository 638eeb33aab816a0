"""The tokenizer a model was trained with, as transformers 4.57.6 loaded it for the QA pipeline.

That version built a fast tokenizer from the model directory's `tokenizer.json` as saved, then
applied what `tokenizer_config.json` (or, for older saves, `special_tokens_map.json`) said:
special tokens, padding and truncation side, `model_max_length`, `add_prefix_space`. transformers
5 rebuilds many tokenizer classes from its own code instead and keeps only parts of the file
(sentencepiece models lost their pre-tokenizer and DeBERTa-v3 its NFKC normaliser), so the model
would be fed tokens it was never trained with. Here the file is read with `tokenizers` alone and
those settings are applied as 4.57.6 applied them; no transformers import.

A directory with only a slow tokenizer's files (`vocab.txt`, `spiece.model`, ...) is converted
once by qa/tokenizer_conversion.py, as 4.57.6 converted it at load.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from qa.json_files import read_json_object

log = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
UNSET_MODEL_MAX_LENGTH = int(1e30)  # transformers' VERY_LARGE_INTEGER: no limit was saved
SPECIAL_TOKEN_KEYS = (
    "bos_token",
    "eos_token",
    "unk_token",
    "sep_token",
    "pad_token",
    "cls_token",
    "mask_token",
)
# Tokenizer classes whose 4.57.6 default was left padding (the pipeline then puts the context
# first); every other class defaulted to the right.
LEFT_PADDING_CLASSES = ("XLNetTokenizer",)
LEFT_PADDING_MODEL_TYPES = ("xlnet",)


@dataclasses.dataclass(frozen=True)
class QATokenizer:
    """A model's tokenizer: the `tokenizers.Tokenizer` and the settings the QA pipeline read."""

    backend: object  # tokenizers.Tokenizer, no truncation or padding set
    cls_token_id: int | None
    pad_token_id: int
    padding_side: str  # "right": question first; "left" (XLNet): context first
    truncation_side: str
    model_max_length: int
    source: str  # where it came from, for the log

    @property
    def question_first(self) -> bool:
        return self.padding_side == "right"

    def num_special_tokens_to_add(self, pair: bool) -> int:
        processor = self.backend.post_processor  # type: ignore[attr-defined]
        return 0 if processor is None else processor.num_special_tokens_to_add(pair)

    def copy_of_backend(self):
        """A private copy of the Rust tokenizer, for a caller that reconfigures it."""
        import tokenizers

        copy = tokenizers.Tokenizer.from_str(self.backend.to_str())  # type: ignore[attr-defined]
        copy.encode_special_tokens = self.backend.encode_special_tokens  # type: ignore[attr-defined]
        return copy


class TokenizerFilesError(ValueError):
    """The directory's tokenizer files are missing or unreadable; the message names the file."""


def load_tokenizer(model_dir: Path, converted_dir: Path | None = None) -> QATokenizer:
    """The tokenizer of a save_pretrained directory. Without `tokenizer.json`, the slow
    tokenizer's files are converted (and the result kept in `converted_dir` when given)."""
    import tokenizers

    model_dir = Path(model_dir)
    config = read_json_file(model_dir / CONFIG_FILE)
    path = model_dir / TOKENIZER_FILE
    default_specials: dict[str, str] = {}
    if path.is_file():
        source = str(path)
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise TokenizerFilesError(f"cannot read {path}: {exc}") from exc
    else:
        from qa.tokenizer_conversion import converted_tokenizer_json

        document, source, default_specials = converted_tokenizer_json(model_dir, config, converted_dir)
    _apply_prefix_space(document, config)
    try:
        backend = tokenizers.Tokenizer.from_str(json.dumps(document))
    except Exception as exc:
        raise TokenizerFilesError(f"cannot build the tokenizer from {source}: {exc}") from exc
    backend.no_truncation()
    backend.no_padding()
    specials = default_specials | _special_tokens(model_dir, config)
    _add_missing_special_tokens(backend, specials)
    backend.encode_special_tokens = bool(config.get("split_special_tokens", False))
    return QATokenizer(
        backend=backend,
        cls_token_id=_token_id(backend, specials, "cls_token"),
        pad_token_id=_token_id(backend, specials, "pad_token") or 0,
        padding_side=_side(config, document, "padding") or _default_padding_side(model_dir, config),
        truncation_side=_side(config, document, "truncation") or "right",
        model_max_length=int(config.get("model_max_length") or UNSET_MODEL_MAX_LENGTH),
        source=source,
    )


def _token_text(value) -> str | None:
    """A special token as saved: a string, or an AddedToken's {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _special_tokens(model_dir: Path, config: dict) -> dict[str, str]:
    """The special tokens 4.57.6 used: tokenizer_config.json's; special_tokens_map.json's only
    for saves without `added_tokens_decoder` (its legacy path)."""
    tokens = {key: _token_text(config.get(key)) for key in SPECIAL_TOKEN_KEYS}
    if "added_tokens_decoder" not in config:
        for key, value in read_json_file(model_dir / SPECIAL_TOKENS_FILE).items():
            if key in SPECIAL_TOKEN_KEYS and _token_text(value) is not None:
                tokens[key] = _token_text(value)
    return {key: token for key, token in tokens.items() if token is not None}


def _token_id(backend, specials: dict[str, str], key: str) -> int | None:
    """The id of a configured special token; as 4.57.6's convert_tokens_to_ids, a token the
    vocabulary lacks is the unknown token's id."""
    if key not in specials:
        return None
    found = backend.token_to_id(specials[key])
    if found is None and key != "unk_token":
        return _token_id(backend, specials, "unk_token")
    return found


def _add_missing_special_tokens(backend, specials: dict[str, str]) -> None:
    """4.57.6 added, as special tokens, the configured ones the tokenizer file did not list."""
    import tokenizers

    known = {token.content for token in backend.get_added_tokens_decoder().values()}
    missing = [token for token in dict.fromkeys(specials.values()) if token not in known]
    if missing:
        backend.add_special_tokens([tokenizers.AddedToken(token, special=True) for token in missing])


def _apply_prefix_space(document: dict, config: dict) -> None:
    """4.57.6 set the pre-tokenizer's `add_prefix_space` to the config's (default false), and the
    RoBERTa-family classes also their post-processor's `add_prefix_space` and `trim_offsets`."""
    wanted = bool(config.get("add_prefix_space", False))
    pre = document.get("pre_tokenizer")
    if isinstance(pre, dict) and "add_prefix_space" in pre and pre["add_prefix_space"] != wanted:
        pre["add_prefix_space"] = wanted
    post = document.get("post_processor")
    if isinstance(post, dict) and post.get("type") == "RobertaProcessing":
        post["add_prefix_space"] = wanted
        post["trim_offsets"] = bool(config.get("trim_offsets", True))


def _side(config: dict, document: dict, what: str) -> str | None:
    """`padding_side` / `truncation_side` as configured, else as tokenizer.json's own padding or
    truncation section says ("Left"/"Right"), else None."""
    side = config.get(f"{what}_side") or str((document.get(what) or {}).get("direction", "")).lower()
    return side if side in ("left", "right") else None


def _default_padding_side(model_dir: Path, config: dict) -> str:
    tokenizer_class = str(config.get("tokenizer_class") or "").removesuffix("Fast")
    if tokenizer_class in LEFT_PADDING_CLASSES:
        return "left"
    if (
        not tokenizer_class
        and read_json_file(model_dir / "config.json").get("model_type") in LEFT_PADDING_MODEL_TYPES
    ):
        return "left"
    return "right"


def read_json_file(path: Path) -> dict:
    """A tokenizer's JSON file: {} when the model has none."""
    return read_json_object(path, TokenizerFilesError, missing_ok=True)
