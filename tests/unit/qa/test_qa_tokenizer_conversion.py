"""qa/tokenizer_conversion.py: a directory with only a slow tokenizer's files gets the tokenizer
transformers 4.57.6 made from them.

Each fixture model below was saved by 4.57.6 with both its slow files and the tokenizer.json
4.57.6 made from them; a copy without tokenizer.json must tokenize every golden case (and texts
that exercise normalisation, whitespace, CJK, emoji, accents and special tokens) exactly as the
original does, with the same document.
"""

from __future__ import annotations

import json
import shutil

import pytest
from golden_cases import load_architecture_cases, model_dir

from qa import tokenizer_conversion
from qa.tokenizer import TokenizerFilesError, load_tokenizer

CONVERTED = [
    "albert-tiny",  # spiece.model, AlbertConverter
    "xlnet-tiny",  # spiece.model, XLNetConverter (context first)
    "deberta-v3-tiny",  # spm.model, DebertaV2Converter
    "xlm-roberta-tiny",  # sentencepiece.bpe.model, XLMRobertaConverter
    "camembert-tiny",  # sentencepiece.bpe.model, CamembertConverter
    "roberta-tiny",  # vocab.json + merges.txt, RobertaConverter
    "longformer-tiny",  # vocab.json + merges.txt, RobertaConverter
    "bert-cased-tiny",  # vocab.txt, BertConverter
    "electra-tiny",
    "mobilebert-tiny",
]
SLOW_COPIES = {"albert-slow-tiny": "albert-tiny", "bert-cased-slow-tiny": "bert-cased-tiny"}
TEXTS = [
    "The \ufb01rst \ufb02oor: ＡＢＣ（株）１９９０年, E = mc², ½ cup, ㎞, Ⅻ, ①, ™, №\u00a05.",  # NFKC
    "  spaces   and\ttabs\t\tand\n\nnew lines \u00a0\u202f\u2009 at both ends   ",
    "北京是中华人民共和国的首都。東京は日本の首都です。서울은 대한민국의 수도이다.",
    "We won 🏆🎂 👩\u200d🚀 🧑🏽\u200d🏫 🇫🇷🇩🇪 ❤️ ☀️ 👍🏻!",
    "Café, naïve, Zürich, Ærø, smørrebrød; Cafe\u0301 nai\u0308ve; ``quoted'' text; 1,000 and 9, 10,",
    "ÉLÈVE Straße İstanbul DŽ ǅ ß ΣΑΣ",
    "<mask> [MASK] <s> </s> <pad> <unk> [CLS] [SEP] <cls> <sep> <eop> a<mask>b x [MASK]y <s>NOTUSED",
    "",
]


def slow_copy(name: str, tmp_path):
    """The fixture directory without tokenizer.json (and without the weights, not read here)."""
    out = tmp_path / name
    shutil.copytree(model_dir(name), out, ignore=shutil.ignore_patterns("tokenizer.json", "*.safetensors"))
    return out


def pairs(model: str) -> list[tuple[str, str, int, int]]:
    """(question, context, max_seq_len, doc_stride) of the golden cases: the pipeline's defaults
    (384, 128) and each case's own."""
    out = []
    for case in load_architecture_cases(model):
        inputs = case["request"]["inputs"]
        parameters = case["request"].get("parameters", {})
        for item in inputs if isinstance(inputs, list) else [inputs]:
            out.append((item["question"], item["context"], 384, 128))
            if "max_seq_len" in parameters:
                seq, stride = parameters["max_seq_len"], parameters.get("doc_stride", 128)
                out.append((item["question"], item["context"], seq, min(stride, seq // 2)))
    assert out, model
    return out


def described(encoding) -> list[tuple]:
    """Everything the windowing reads from an encoding and its overflowing windows."""
    return [
        (
            e.ids,
            e.type_ids,
            e.tokens,
            e.offsets,
            e.word_ids,
            e.sequence_ids,
            e.attention_mask,
            e.special_tokens_mask,
        )
        for e in [encoding, *encoding.overflowing]
    ]


def encode_pair(tokenizer, question: str, context: str, max_length: int, stride: int) -> list[tuple]:
    backend = tokenizer.copy_of_backend()
    if tokenizer.question_first:
        backend.enable_truncation(max_length, stride=stride, strategy="only_second")
        return described(backend.encode(question, context))
    backend.enable_truncation(max_length, stride=stride, strategy="only_first")
    return described(backend.encode(context, question))


def assert_same_settings(got, expected) -> None:
    assert got.cls_token_id == expected.cls_token_id
    assert got.pad_token_id == expected.pad_token_id
    assert got.padding_side == expected.padding_side
    assert got.truncation_side == expected.truncation_side
    assert got.model_max_length == expected.model_max_length
    assert got.num_special_tokens_to_add(True) == expected.num_special_tokens_to_add(True)
    assert got.backend.get_vocab() == expected.backend.get_vocab()
    assert got.backend.get_added_tokens_decoder() == expected.backend.get_added_tokens_decoder()


# ---- the same tokenizer as 4.57.6's ---------------------------------------------------------------


@pytest.mark.parametrize("name", CONVERTED)
def test_the_converted_document_is_the_one_4_57_6_saved(name, tmp_path):
    directory = slow_copy(name, tmp_path)
    config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    document, source, _ = tokenizer_conversion.converted_tokenizer_json(directory, config, None)
    assert document == json.loads((model_dir(name) / "tokenizer.json").read_text(encoding="utf-8"))
    assert "converted as transformers 4.57.6 converted" in source


@pytest.mark.parametrize("name", CONVERTED)
def test_golden_pairs_tokenize_as_the_saved_tokenizer(name, tmp_path):
    converted = load_tokenizer(slow_copy(name, tmp_path))
    original = load_tokenizer(model_dir(name))
    assert "converted" in converted.source and converted.source != original.source
    assert_same_settings(converted, original)
    assert converted.question_first is (name != "xlnet-tiny")
    for question, context, max_length, stride in pairs(name):
        assert encode_pair(converted, question, context, max_length, stride) == encode_pair(
            original, question, context, max_length, stride
        ), (question, max_length)


@pytest.mark.parametrize("name", CONVERTED)
def test_other_texts_tokenize_as_the_saved_tokenizer(name, tmp_path):
    converted = load_tokenizer(slow_copy(name, tmp_path))
    original = load_tokenizer(model_dir(name))
    for text in TEXTS:
        for add_special_tokens in (True, False):
            assert described(
                converted.backend.encode(text, add_special_tokens=add_special_tokens)
            ) == described(original.backend.encode(text, add_special_tokens=add_special_tokens)), text
        for other in TEXTS[:3]:
            assert encode_pair(converted, text, other, 128, 8) == encode_pair(original, text, other, 128, 8)
            assert encode_pair(converted, other, text, 128, 8) == encode_pair(original, other, text, 128, 8)


@pytest.mark.parametrize("name", sorted(SLOW_COPIES))
def test_the_committed_slow_copies_tokenize_as_their_originals(name):
    converted = load_tokenizer(model_dir(name))
    original = load_tokenizer(model_dir(SLOW_COPIES[name]))
    assert_same_settings(converted, original)
    for question, context, max_length, stride in pairs(name):
        assert encode_pair(converted, question, context, max_length, stride) == encode_pair(
            original, question, context, max_length, stride
        )


def test_without_tokenizer_config_the_class_defaults_hold(tmp_path):
    """No tokenizer_config.json: the class is config.json's model type's, its special tokens the
    class's (4.57.6 gave XLNet's <mask> lstrip, not normalised)."""
    directory = slow_copy("xlnet-tiny", tmp_path)
    (directory / "tokenizer_config.json").unlink()
    (directory / "special_tokens_map.json").unlink()
    converted = load_tokenizer(directory)
    original = load_tokenizer(model_dir("xlnet-tiny"))
    assert (converted.cls_token_id, converted.pad_token_id, converted.padding_side) == (
        original.cls_token_id,
        original.pad_token_id,
        "left",
    )
    mask = [t for t in converted.backend.get_added_tokens_decoder().values() if t.content == "<mask>"]
    assert [(t.lstrip, t.normalized, t.special) for t in mask] == [(True, False, True)]
    for question, context, max_length, stride in pairs("xlnet-tiny")[:6]:
        assert encode_pair(converted, question, context, max_length, stride) == encode_pair(
            original, question, context, max_length, stride
        )


# ---- kept, and reused ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["albert-tiny", "roberta-tiny", "bert-cased-tiny"])
def test_the_conversion_is_kept_in_the_cache_and_reused(name, tmp_path, monkeypatch):
    directory = slow_copy(name, tmp_path / "model")
    cache = tmp_path / "cache"
    first = load_tokenizer(directory, cache)
    kept = list(cache.glob("tokenizer-*.json"))
    assert len(kept) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("converted again")

    monkeypatch.setattr(tokenizer_conversion, "convert", refuse)
    second = load_tokenizer(directory, cache)
    assert str(kept[0]) in second.source
    assert second.backend.to_str() == first.backend.to_str()
    # Another tokenizer config is another conversion (another key).
    config = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))
    (directory / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 256}))
    with pytest.raises(AssertionError, match="converted again"):
        load_tokenizer(directory, cache)


def test_a_tokenizer_kept_beside_the_graphs_is_used_without_a_cache(tmp_path, monkeypatch):
    directory = slow_copy("deberta-v3-tiny", tmp_path)
    converted = load_tokenizer(directory)
    (directory / "graphs").mkdir()
    tokenizer_conversion.write_atomically(directory / "graphs" / "tokenizer.json", converted.backend.to_str())
    monkeypatch.setattr(tokenizer_conversion, "convert", lambda *a, **k: pytest.fail("converted again"))
    kept = load_tokenizer(directory)
    assert str(directory / "graphs" / "tokenizer.json") in kept.source
    assert_same_settings(kept, load_tokenizer(model_dir("deberta-v3-tiny")))


# ---- what is not converted -----------------------------------------------------------------------


def _t5_like(directory):
    shutil.copy(model_dir("albert-tiny") / "spiece.model", directory / "spiece.model")
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer"}))


def _gpt2_like(directory):
    shutil.copy(model_dir("roberta-tiny") / "vocab.json", directory / "vocab.json")
    shutil.copy(model_dir("roberta-tiny") / "merges.txt", directory / "merges.txt")
    (directory / "config.json").write_text(json.dumps({"model_type": "gpt2"}))


def _albert_without_its_model(directory):
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "AlbertTokenizerFast"}))
    (directory / "vocab.txt").write_text("[PAD]\n[UNK]\n")


def _nothing(directory):
    (directory / "config.json").write_text(json.dumps({"model_type": "albert"}))


@pytest.mark.parametrize("make", [_t5_like, _gpt2_like, _albert_without_its_model, _nothing])
def test_what_is_not_converted_is_refused_with_the_fix(make, tmp_path):
    make(tmp_path)
    with pytest.raises(TokenizerFilesError) as refused:
        load_tokenizer(tmp_path)
    message = str(refused.value)
    assert "tokenizer.json is missing" in message and "cannot be converted here" in message
    assert "save_pretrained(DIR)" in message
    for present in sorted(p.name for p in tmp_path.iterdir()):
        assert present in message


def test_a_sentencepiece_model_of_another_kind_or_unreadable_is_refused(tmp_path):
    from transformers.convert_slow_tokenizer import import_protobuf

    directory = slow_copy("albert-tiny", tmp_path)
    proto = import_protobuf().ModelProto()
    proto.ParseFromString((directory / "spiece.model").read_bytes())
    proto.trainer_spec.model_type = 3  # WORD: 4.57.6's converter refused it too
    (directory / "spiece.model").write_bytes(proto.SerializeToString())
    with pytest.raises(TokenizerFilesError, match="neither unigram nor BPE"):
        load_tokenizer(directory)
    (directory / "spiece.model").write_bytes(b"\xff not a model")
    with pytest.raises(TokenizerFilesError, match="cannot read the sentencepiece model"):
        load_tokenizer(directory)
