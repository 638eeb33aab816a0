"""A `tokenizer.json` for a model saved with only a slow tokenizer's files, made as transformers
4.57.6 made it when it loaded such a directory, and kept so it is made once.

Converted here, each by the rules of 4.57.6's `convert_slow_tokenizer.py` and of its slow class's
`__init__` defaults (transformers 5 rebuilds these tokenizers its own way, so neither its classes
nor its converters are used; only its protobuf schema reads a sentencepiece model):

- WordPiece `vocab.txt`: BERT, DistilBERT, ELECTRA, MobileBERT, ... (BertConverter);
- sentencepiece `spiece.model`: ALBERT (AlbertConverter), XLNet (XLNetConverter);
- sentencepiece `spm.model`: DeBERTa-v2/v3 (DebertaV2Converter);
- sentencepiece `sentencepiece.bpe.model`: XLM-RoBERTa, CamemBERT (their fairseq id layouts);
- byte-level BPE `vocab.json` + `merges.txt`: RoBERTa, Longformer (RobertaConverter).

The class is tokenizer_config.json's `tokenizer_class`, else config.json's, else its `model_type`'s.
Anything else is refused with the fix. The added tokens are those 4.57.6's fast tokenizer added at
load: the sentencepiece control and user-defined pieces, then `added_tokens_decoder` (older saves:
special_tokens_map.json, added_tokens.json), then the special tokens, as its class made them.

Where the result is kept: `<model_dir>/graphs/tokenizer.json` when `python -m qa.graphs export`
made it ahead of time, else `<cache>/tokenizer-<key>.json` (QA_GRAPH_CACHE_DIR) at start-up.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qa.graph_files import GRAPH_DIR
from qa.tokenizer import SPECIAL_TOKEN_KEYS, TokenizerFilesError, read_json_file

KEPT_NAME = "tokenizer.json"  # in <model_dir>/graphs, beside the graphs made ahead of time
CONVERSION_VERSION = "2"  # in the cache key: a changed conversion is not read from an old cache
# 4.57.6's SPECIAL_TOKENS_ATTRIBUTES, in its order (the order special tokens were added in).
SPECIAL_KEYS = (*SPECIAL_TOKEN_KEYS, "additional_special_tokens")
SPIECE = "▁"
CONTROL, USER_DEFINED = 3, 4  # sentencepiece piece types the converters made added tokens of
UNIGRAM, BPE = 1, 2  # sentencepiece model types they converted


@dataclasses.dataclass(frozen=True)
class SlowKind:
    """One 4.57.6 slow tokenizer class: its files, its `__init__` defaults, its converter."""

    files: tuple[str, ...]
    specials: dict[str, str | list[str]]
    # (model_dir, options, special token texts) -> the tokenizers.Tokenizer, no post-processor yet
    build: Callable[[Path, dict, dict], Any]
    post: Callable[[Any, dict, dict], Any]  # (that Tokenizer, options, texts) -> its post-processor
    options: dict[str, object] = dataclasses.field(default_factory=dict)  # the ones the converter read
    # Special tokens given as text that __init__ wrapped in an AddedToken with these settings.
    wrapped: dict[str, dict[str, bool]] = dataclasses.field(default_factory=dict)


def converted_tokenizer_json(
    model_dir: Path, config: dict, cache_dir: Path | None
) -> tuple[dict, str, dict[str, str]]:
    """(the tokenizer.json document, where it came from, the special tokens the class gave where
    tokenizer_config.json names none) for a directory without one."""
    model_dir = Path(model_dir)
    name, kind = slow_kind(model_dir, config)
    files = " + ".join(str(model_dir / file) for file in kind.files)
    defaults = {
        key: value for key, value in kind.specials.items() if isinstance(value, str) and key not in config
    }
    kept = [model_dir / GRAPH_DIR / KEPT_NAME]
    if cache_dir is not None:
        kept.append(Path(cache_dir) / f"tokenizer-{_key(model_dir, kind)}.json")
    for path in kept:
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8")), f"{path} (converted from {files})", defaults
    document = convert(model_dir, config)
    if cache_dir is not None:
        write_atomically(kept[-1], json.dumps(document))
    return document, f"{files}, converted as transformers 4.57.6 converted a {name}", defaults


def convert(model_dir: Path, config: dict) -> dict:
    """The tokenizer.json 4.57.6's AutoTokenizer made from the directory's slow tokenizer files."""
    model_dir = Path(model_dir)
    _, kind = slow_kind(model_dir, config)
    options = {key: config.get(key, default) for key, default in kind.options.items()}
    specials = _special_tokens(model_dir, config, kind)
    texts = {key: str(_text(value)) for key, value in specials.items() if _text(value) is not None}
    backend = kind.build(model_dir, options, texts)
    backend.add_tokens(_tokens_to_add(backend, model_dir, config, specials))
    backend.post_processor = kind.post(backend, options, texts)
    return json.loads(backend.to_str())


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, encoding="utf-8") as tmp:
        tmp.write(text)
    os.replace(tmp.name, path)


def slow_kind(model_dir: Path, config: dict) -> tuple[str, SlowKind]:
    """The slow class 4.57.6's AutoTokenizer took, if converted here and its files are there."""
    model_config = read_json_file(Path(model_dir) / "config.json")
    name = str(config.get("tokenizer_class") or model_config.get("tokenizer_class") or "")
    name = name.removesuffix("Fast") or MODEL_TYPE_CLASSES.get(str(model_config.get("model_type")), "")
    kind = KINDS.get(name)
    if kind is None or not all((Path(model_dir) / file).is_file() for file in kind.files):
        present = sorted(p.name for p in Path(model_dir).iterdir() if p.is_file())
        raise TokenizerFilesError(
            f"{model_dir}/tokenizer.json is missing and its slow tokenizer files cannot be converted here "
            f"(tokenizer class {name or 'unknown'}; found {', '.join(present)}; converted: WordPiece vocab.txt, "
            f"the sentencepiece models of ALBERT, XLNet, DeBERTa-v2/v3, XLM-RoBERTa and CamemBERT, "
            f"RoBERTa/Longformer vocab.json + merges.txt). Save the fast tokenizer with the model: "
            f"AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR) with transformers 4.x writes "
            f"tokenizer.json as the model was trained with it"
        )
    return name, kind


# ---- the added tokens: 4.57.6's from_pretrained and PreTrainedTokenizerFast.__init__ ---------------


def _added_token(value: dict, **extra: bool):
    """An AddedToken from its saved form (`normalized` left unset when the save had none: tokenizers
    then takes `not special`, as 4.57.6 did)."""
    from tokenizers import AddedToken

    names = ("single_word", "lstrip", "rstrip", "normalized", "special")
    return AddedToken(str(value["content"]), **{k: bool(value[k]) for k in names if k in value} | extra)


def _saved_token(value):
    """A special token as a config saved it: text, an AddedToken's dict, or a list of them."""
    if isinstance(value, list):
        return [_saved_token(item) for item in value]
    return _added_token(value) if isinstance(value, dict) and "content" in value else value


def _special_tokens(model_dir: Path, config: dict, kind: SlowKind) -> dict:
    """Each special token as the fast tokenizer held it: text, an AddedToken, a list, or None."""
    from tokenizers import AddedToken

    values = {key: _saved_token(config.get(key, kind.specials.get(key))) for key in SPECIAL_KEYS}
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, dict):  # a special token it lists is that AddedToken
        listed = {str(entry.get("content")): entry for entry in decoder.values() if isinstance(entry, dict)}
        for key in SPECIAL_KEYS[:-1]:
            content = _text(values[key])
            if content in listed:
                values[key] = _added_token(listed[content])
    else:  # older saves: special_tokens_map.json overrides tokenizer_config.json
        for key, value in read_json_file(Path(model_dir) / "special_tokens_map.json").items():
            if key not in SPECIAL_KEYS:
                continue
            if isinstance(value, dict):
                value = _added_token(value, special=True)
            elif key == SPECIAL_KEYS[-1] and isinstance(value, list):
                merged = list(_saved_token(config.get(key)) or [])
                for token in value:
                    token = _added_token(token, special=True) if isinstance(token, dict) else token
                    if not any(_text(token) == _text(seen) for seen in merged):
                        merged.append(token)
                value = merged
            values[key] = value
    for key, settings in kind.wrapped.items():
        if isinstance(values[key], str):
            # The class's AddedToken reached the fast tokenizer deep-copied, which fixed its
            # `normalized` (unset: `not special` at that time).
            normalized = settings.get("normalized", not settings.get("special", False))
            values[key] = AddedToken(values[key], **{**settings, "normalized": normalized})
    return values


def _tokens_to_add(backend, model_dir: Path, config: dict, specials: dict) -> list:
    """The tokens 4.57.6 added after converting, in its order: the saved added tokens (by id) not
    already there as they are, then the special tokens (text only when not added yet)."""
    from tokenizers import AddedToken

    decoder = config.get("added_tokens_decoder")
    saved: list[tuple[int, Any]] = []
    if isinstance(decoder, dict):
        saved = [(int(i), _added_token(e)) for i, e in decoder.items() if isinstance(e, dict)]
    else:  # older saves: added_tokens.json, special when a configured special token
        configured = config | read_json_file(Path(model_dir) / "special_tokens_map.json")
        named = {_text(t) for key in SPECIAL_KEYS for t in _as_list(configured.get(key))}
        for text, index in read_json_file(Path(model_dir) / "added_tokens.json").items():
            special = text in named
            saved.append((int(index), AddedToken(text, normalized=not special, special=special)))
    present = {repr(token) for token in backend.get_added_tokens_decoder().values()}
    tokens = [token for _, token in sorted(saved, key=lambda item: item[0]) if repr(token) not in present]
    known = {token.content for token in backend.get_added_tokens_decoder().values()}
    known |= {token.content for token in tokens}
    seen: set[str | None] = set()
    special_tokens: list[Any] = []  # all_special_tokens_extended: the first of each text
    for key in SPECIAL_KEYS:
        for token in _as_list(specials[key]):
            if _text(token) not in seen:
                special_tokens.append(token)
        seen |= {_text(token) for token in _as_list(specials[key])}
    tokens += [t for t in special_tokens if not isinstance(t, str) or t not in known]
    out = []
    for token in tokens:
        if isinstance(token, str):
            token = AddedToken(token, special=True)
        else:
            token.special = token.special or token.content in seen
        out.append(token)
    return out


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] if value else []


def _text(value) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    elif value is not None and not isinstance(value, str):
        value = getattr(value, "content", None)
    return value if isinstance(value, str) else None


def _token_id(backend, token: str, fallback: str | None) -> int:
    """The slow tokenizer's convert_tokens_to_ids: an unknown token is the fallback's id."""
    found = backend.token_to_id(token)
    if found is None and fallback is not None:
        found = backend.token_to_id(fallback)
    if found is None:
        raise TokenizerFilesError(f"{token!r} is neither in the vocabulary nor an added token")
    return found


# ---- WordPiece (BertConverter) -------------------------------------------------------------------


def _wordpiece(model_dir: Path, options: dict, texts: dict):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    vocab: dict[str, int] = {}
    with open(Path(model_dir) / "vocab.txt", encoding="utf-8") as lines:  # BertTokenizer's load_vocab
        for index, line in enumerate(lines):
            vocab[line.rstrip("\n")] = index
    backend = Tokenizer(models.WordPiece(vocab, unk_token=str(texts.get("unk_token"))))
    # As BertTokenizerFast.__init__ set it after converting, whatever do_basic_tokenize said.
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True,
        handle_chinese_chars=bool(options["tokenize_chinese_chars"]),
        strip_accents=options["strip_accents"],
        lowercase=bool(options["do_lower_case"]),
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix="##")
    return backend


def _wordpiece_post(backend, options: dict, texts: dict):
    from tokenizers import processors

    cls, sep, unk = texts.get("cls_token"), texts.get("sep_token"), texts.get("unk_token")
    return processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {sep}:0 $B:1 {sep}:1",
        special_tokens=[
            (str(cls), _token_id(backend, str(cls), unk)),
            (str(sep), _token_id(backend, str(sep), unk)),
        ],
    )


# ---- sentencepiece (SpmConverter and its subclasses) ---------------------------------------------


def _sentencepiece_model(path: Path):
    try:
        from transformers.convert_slow_tokenizer import import_protobuf
    except ImportError as exc:
        raise TokenizerFilesError(
            f"converting {path} to a tokenizer.json needs transformers, which this image does not have "
            f"(the slim image): make the model's graphs with the full image (`python -m qa.graphs export`), "
            f"which keeps the converted tokenizer in {GRAPH_DIR}/{KEPT_NAME}, or save a tokenizer.json "
            f"beside the model"
        ) from exc

    proto = import_protobuf().ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as exc:
        raise TokenizerFilesError(f"cannot read the sentencepiece model {path}: {exc}") from exc
    return proto


def _spm(file: str, vocab: Callable | None = None, unk_id: int | None = None, normalizer=None, pre=None):
    """SpmConverter.converted with a subclass's vocab(), unk_id(), normalizer() and pre_tokenizer()."""

    def build(model_dir: Path, options: dict, texts: dict):
        from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

        path = Path(model_dir) / file
        proto = _sentencepiece_model(path)
        scores = vocab(proto) if vocab else [(p.piece, p.score) for p in proto.pieces]
        model_type = proto.trainer_spec.model_type
        if model_type == UNIGRAM:
            unk = proto.trainer_spec.unk_id if unk_id is None else unk_id
            backend = Tokenizer(models.Unigram(scores, unk_id=unk, byte_fallback=False))
        elif model_type == BPE:
            pieces = {p.piece: i for i, p in enumerate(proto.pieces)}
            backend = Tokenizer(
                models.BPE(
                    {word: i for i, (word, _) in enumerate(scores)},
                    _merges(pieces, scores),
                    unk_token=proto.trainer_spec.unk_piece,
                    fuse_unk=True,
                    byte_fallback=False,
                    dropout=None,
                )
            )
        else:
            raise TokenizerFilesError(
                f"{path}: sentencepiece model type {model_type} is neither unigram nor BPE"
            )
        # Control pieces are special added tokens, user-defined ones plain added tokens.
        added = [p for p in proto.pieces if p.type in (CONTROL, USER_DEFINED)]
        backend.add_tokens([AddedToken(p.piece, normalized=False, special=p.type == CONTROL) for p in added])
        charsmap = proto.normalizer_spec.precompiled_charsmap
        if normalizer is None:
            steps = [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(" {2,}"), SPIECE)]
            backend.normalizer = normalizers.Sequence(
                ([normalizers.Precompiled(charsmap)] if charsmap else []) + steps
            )
        else:
            backend.normalizer = normalizer(options, charsmap)
        # The slow classes had no add_prefix_space: the converter's default (True) held.
        metaspace = pre_tokenizers.Metaspace(replacement=SPIECE, prepend_scheme="always")
        backend.pre_tokenizer = pre(options, metaspace) if pre else metaspace
        backend.decoder = decoders.Metaspace(replacement=SPIECE, prepend_scheme="always")
        return backend

    return build


def _merges(pieces: dict[str, int], scores: list) -> list[tuple[str, str]]:
    """generate_merges of a BPE sentencepiece model, ordered by the merged piece's score."""
    merges = []
    for merged, score in dict(scores).items():
        local = [
            (merged[:i], merged[i:], score)
            for i in range(1, len(merged))
            if merged[:i] in pieces and merged[i:] in pieces
        ]
        merges += sorted(local, key=lambda m: (pieces[m[0]], pieces[m[1]]))
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def _number_comma_down(proto) -> list:
    """ALBERT and XLNet: pieces like "9," lose 100 from their score."""
    return [
        (
            p.piece,
            p.score if len(p.piece) < 2 or p.piece[-1] != "," or not p.piece[-2].isdigit() else p.score - 100,
        )
        for p in proto.pieces
    ]


def _albert_normalizer(options: dict, charsmap: bytes):
    """AlbertConverter's and XLNetConverter's normalizer."""
    from tokenizers import Regex, normalizers

    steps: list[Any] = [normalizers.Replace("``", '"'), normalizers.Replace("''", '"')]
    if not options["keep_accents"]:
        steps += [normalizers.NFKD(), normalizers.StripAccents()]
    if options["do_lower_case"]:
        steps.append(normalizers.Lowercase())
    if charsmap:
        steps.append(normalizers.Precompiled(charsmap))
    return normalizers.Sequence([*steps, normalizers.Replace(Regex(" {2,}"), " ")])


def _deberta_normalizer(options: dict, charsmap: bytes):
    from tokenizers import Regex, normalizers

    steps: list[Any] = [normalizers.Lowercase()] if options["do_lower_case"] else []
    steps.append(normalizers.Strip())
    if charsmap:
        steps.append(normalizers.Precompiled(charsmap))
    return normalizers.Sequence([*steps, normalizers.Replace(Regex(" {2,}"), " ")])


def _deberta_pre(options: dict, metaspace):
    from tokenizers import pre_tokenizers

    punctuation = [pre_tokenizers.Punctuation(behavior="isolated")] if options["split_by_punct"] else []
    return pre_tokenizers.Sequence([*punctuation, metaspace])


def _xlm_roberta_vocab(proto) -> list:
    """fairseq's ids: <s> <pad> </s> <unk>, the pieces after sentencepiece's first three, <mask>."""
    head = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    return head + [(p.piece, p.score) for p in proto.pieces[3:]] + [("<mask>", 0.0)]


def _camembert_vocab(proto) -> list:
    """fairseq's ids: five tokens (the sentencepiece <unk> kept as an unused one), the pieces after
    sentencepiece's first, <mask>."""
    head = [("<s>NOTUSED", 0.0), ("<pad>", 0.0), ("</s>NOTUSED", 0.0), ("<unk>", 0.0), ("<unk>NOTUSED", -100)]
    return head + [(p.piece, p.score) for p in proto.pieces[1:]] + [("<mask>", 0.0)]


def _template(single: str, pair: str, cls: str, sep: str):
    """A converter's template: its token texts are fixed, not the configured special tokens."""

    def post(backend, options: dict, texts: dict):
        from tokenizers import processors

        unk = texts.get("unk_token")
        ids = [(token, _token_id(backend, token, unk)) for token in (cls, sep)]
        return processors.TemplateProcessing(single=single, pair=pair, special_tokens=ids)

    return post


BERT_TEMPLATE = _template("[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1", "[CLS]", "[SEP]")
FAIRSEQ_TEMPLATE = _template("<s> $A </s>", "<s> $A </s> </s> $B </s>", "<s>", "</s>")
XLNET_TEMPLATE = _template("$A:0 <sep>:0 <cls>:2", "$A:0 <sep>:0 $B:1 <sep>:1 <cls>:2", "<cls>", "<sep>")


# ---- byte-level BPE (RobertaConverter) -----------------------------------------------------------


def _byte_level_bpe(model_dir: Path, options: dict, texts: dict):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = read_json_file(Path(model_dir) / "vocab.json")
    with open(Path(model_dir) / "merges.txt", encoding="utf-8") as handle:
        # RobertaTokenizer dropped the first line (the "#version" header) and the last (empty).
        lines = handle.read().split("\n")[1:-1]
    ranks: dict[tuple[str, ...], None] = dict.fromkeys(tuple(line.split()) for line in lines)
    if any(len(merge) != 2 for merge in ranks):
        raise TokenizerFilesError(f"{model_dir}/merges.txt: a line is not two tokens")
    backend = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=[(left, right) for left, right in ranks],
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
        )
    )
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(options["add_prefix_space"]))
    backend.decoder = decoders.ByteLevel()
    return backend


def _roberta_post(backend, options: dict, texts: dict):
    from tokenizers import processors

    unk = texts.get("unk_token")
    sep, cls = str(texts.get("sep_token")), str(texts.get("cls_token"))
    return processors.RobertaProcessing(  # positional: tokenizers 0.23 renamed `cls`
        (sep, _token_id(backend, sep, unk)),
        (cls, _token_id(backend, cls, unk)),
        trim_offsets=bool(options["trim_offsets"]),  # True, then RobertaTokenizerFast set the config's
        add_prefix_space=bool(options["add_prefix_space"]),
    )


# ---- the classes (4.57.6's __init__ defaults) ----------------------------------------------------

BERT_SPECIALS: dict[str, str | list[str]] = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}
FAIRSEQ_SPECIALS: dict[str, str | list[str]] = {
    "bos_token": "<s>",
    "eos_token": "</s>",
    "sep_token": "</s>",
    "cls_token": "<s>",
    "unk_token": "<unk>",
    "pad_token": "<pad>",
    "mask_token": "<mask>",
}
WORDPIECE = SlowKind(
    files=("vocab.txt",),
    specials=BERT_SPECIALS,
    build=_wordpiece,
    post=_wordpiece_post,
    options={
        "do_lower_case": True,
        "tokenize_chinese_chars": True,
        "strip_accents": None,
    },
)
MASK_LSTRIP = {"lstrip": True, "rstrip": False, "normalized": False}
ROBERTA = SlowKind(
    files=("vocab.json", "merges.txt"),
    specials=FAIRSEQ_SPECIALS,
    build=_byte_level_bpe,
    post=_roberta_post,
    options={"add_prefix_space": False, "trim_offsets": True},
    wrapped={
        **{key: {"lstrip": False, "rstrip": False} for key in ("bos_token", "pad_token", "eos_token")},
        **{key: {"lstrip": False, "rstrip": False} for key in ("unk_token", "sep_token", "cls_token")},
        "mask_token": MASK_LSTRIP,
    },
)
KINDS: dict[str, SlowKind] = {
    **dict.fromkeys(
        (
            "BertTokenizer",
            "ConvBertTokenizer",
            "DistilBertTokenizer",
            "DPRContextEncoderTokenizer",
            "DPRQuestionEncoderTokenizer",
            "DPRReaderTokenizer",
            "ElectraTokenizer",
            "LayoutLMTokenizer",
            "LxmertTokenizer",
            "MobileBertTokenizer",
            "RealmTokenizer",
            "RetriBertTokenizer",
            "SqueezeBertTokenizer",
        ),
        WORDPIECE,
    ),
    "AlbertTokenizer": SlowKind(
        files=("spiece.model",),
        specials={
            "bos_token": "[CLS]",
            "eos_token": "[SEP]",
            "unk_token": "<unk>",
            "sep_token": "[SEP]",
            "pad_token": "<pad>",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
        },
        build=_spm("spiece.model", vocab=_number_comma_down, normalizer=_albert_normalizer),
        post=BERT_TEMPLATE,
        options={"do_lower_case": True, "keep_accents": False},
        wrapped={"mask_token": MASK_LSTRIP},
    ),
    "XLNetTokenizer": SlowKind(
        files=("spiece.model",),
        specials={
            "bos_token": "<s>",
            "eos_token": "</s>",
            "unk_token": "<unk>",
            "sep_token": "<sep>",
            "pad_token": "<pad>",
            "cls_token": "<cls>",
            "mask_token": "<mask>",
            "additional_special_tokens": ["<eop>", "<eod>"],
        },
        build=_spm("spiece.model", vocab=_number_comma_down, normalizer=_albert_normalizer),
        post=XLNET_TEMPLATE,
        options={"do_lower_case": False, "keep_accents": False},
        wrapped={"mask_token": {"lstrip": True, "special": True}},
    ),
    "DebertaV2Tokenizer": SlowKind(
        files=("spm.model",),
        specials={
            "bos_token": "[CLS]",
            "eos_token": "[SEP]",
            "unk_token": "[UNK]",
            "sep_token": "[SEP]",
            "pad_token": "[PAD]",
            "cls_token": "[CLS]",
            "mask_token": "[MASK]",
        },
        build=_spm("spm.model", normalizer=_deberta_normalizer, pre=_deberta_pre),
        post=BERT_TEMPLATE,
        options={"do_lower_case": False, "split_by_punct": False},
        wrapped={"unk_token": {"normalized": True, "special": True}},
    ),
    "XLMRobertaTokenizer": SlowKind(
        files=("sentencepiece.bpe.model",),
        specials=FAIRSEQ_SPECIALS,
        build=_spm("sentencepiece.bpe.model", vocab=_xlm_roberta_vocab, unk_id=3),
        post=FAIRSEQ_TEMPLATE,
        wrapped={"mask_token": {"lstrip": True, "special": True}},
    ),
    "CamembertTokenizer": SlowKind(
        files=("sentencepiece.bpe.model",),
        specials={
            **FAIRSEQ_SPECIALS,
            "additional_special_tokens": ["<s>NOTUSED", "</s>NOTUSED", "<unk>NOTUSED"],
        },
        build=_spm("sentencepiece.bpe.model", vocab=_camembert_vocab, unk_id=3),
        post=FAIRSEQ_TEMPLATE,
        wrapped={"mask_token": {**MASK_LSTRIP, "special": True}},
    ),
    "RobertaTokenizer": ROBERTA,
    "LongformerTokenizer": ROBERTA,
}
# 4.57.6's tokenizer class of a model type, for directories whose configs name none.
MODEL_TYPE_CLASSES = {
    **dict.fromkeys(("bert", "ernie", "megatron-bert", "nezha", "qdqbert"), "BertTokenizer"),
    "convbert": "ConvBertTokenizer",
    "distilbert": "DistilBertTokenizer",
    "electra": "ElectraTokenizer",
    "layoutlm": "LayoutLMTokenizer",
    "mobilebert": "MobileBertTokenizer",
    "squeezebert": "SqueezeBertTokenizer",
    **dict.fromkeys(("albert", "nystromformer", "yoso"), "AlbertTokenizer"),
    "xlnet": "XLNetTokenizer",
    "deberta-v2": "DebertaV2Tokenizer",
    **dict.fromkeys(("xlm-roberta", "xlm-roberta-xl", "xmod"), "XLMRobertaTokenizer"),
    "camembert": "CamembertTokenizer",
    **dict.fromkeys(
        ("roberta", "roberta-prelayernorm", "data2vec-text", "ibert", "mega", "mra"), "RobertaTokenizer"
    ),
    "longformer": "LongformerTokenizer",
}


def _key(model_dir: Path, kind: SlowKind) -> str:
    """The cache key: every file the conversion reads, and the conversion's version."""
    digest = hashlib.sha256(CONVERSION_VERSION.encode())
    names = (
        *kind.files,
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "config.json",
    )
    for name in names:
        path = Path(model_dir) / name
        digest.update(name.encode() + (path.read_bytes() if path.is_file() else b"-"))
    return digest.hexdigest()[:16]
