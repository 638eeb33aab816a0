"""The precision report on a labeled dev set: sample files read (qa/samples.py), SQuAD's exact match
and F1 (qa/report.py) against a computation written here from SQuAD's official evaluation script
(v2.0), and the report end to end on the tiny model with a SQuAD v2.0 file."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import io
import json
import re
import string

import pytest
from golden_texts import PARAGRAPHS

from qa import report as qa_report
from qa.graphs import sample_pairs
from qa.loading import load_model
from qa.options import QAOptions
from qa.request import request_from_object
from qa.samples import LABELED_LINES, read_samples

# ---- SQuAD's official evaluation (evaluate-v2.0.py), as the scores are meant to be ---------------


def official_normalize(s):
    def remove_articles(text):
        return re.sub(re.compile(r"\b(a|an|the)\b", re.UNICODE), " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def official_tokens(s):
    return official_normalize(s).split() if s else []


def official_exact(a_gold, a_pred):
    return int(official_normalize(a_gold) == official_normalize(a_pred))


def official_f1(a_gold, a_pred):
    gold_toks, pred_toks = official_tokens(a_gold), official_tokens(a_pred)
    num_same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision, recall = num_same / len(pred_toks), num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def official_scores(dataset: list[dict], preds: dict[str, str]) -> dict[str, float]:
    """get_raw_scores then make_eval_dict of the official script, over a SQuAD `data` list."""
    exact, f1 = [], []
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                gold = [a["text"] for a in qa["answers"] if official_normalize(a["text"])] or [""]
                exact.append(max(official_exact(a, preds[qa["id"]]) for a in gold))
                f1.append(max(official_f1(a, preds[qa["id"]]) for a in gold))
    return {"exact_match": 100.0 * sum(exact) / len(exact), "f1": 100.0 * sum(f1) / len(f1)}


# ---- a small SQuAD v2.0 dev set over the golden paragraphs ------------------------------------------


def _answers(context: str, *texts: str) -> list[dict]:
    return [{"text": t, "answer_start": context.index(t)} for t in texts]


def squad_v2() -> dict:
    harbour, railway, composer = PARAGRAPHS["harbour"], PARAGRAPHS["railway"], PARAGRAPHS["composer"]
    questions = {
        harbour: [
            ("h1", "When was the port of Valmont founded?", _answers(harbour, "1642")),
            (
                "h2",
                "Who designed the first stone lighthouse?",
                _answers(harbour, "Matthias Oort", "the engineer Matthias Oort"),
            ),
            ("h3", "How much did the city council borrow?", _answers(harbour, "40,000 guilders")),
            ("h4", "How many people live in Valmont today?", []),
        ],
        railway: [
            ("r1", "When was the Northern Pacific Railway chartered?", _answers(railway, "July 2, 1864")),
            (
                "r2",
                "Where was the golden spike driven?",
                _answers(railway, "Gold Creek, Montana", "Gold Creek"),
            ),
            ("r3", "Who drove the golden spike?", []),
        ],
        composer: [
            ("c1", "Where was Clara Weissmann born?", _answers(composer, "Leipzig")),
            # An answer_start off its text, as SQuAD has some: not an error, the text counts.
            ("c2", "Who conducted the premiere?", [{"text": "Felix Brandt", "answer_start": 3}]),
        ],
    }
    paragraphs = [
        {
            "context": context,
            "qas": [
                {
                    "id": qid,
                    "question": question,
                    "answers": answers,
                    "is_impossible": not answers,
                    **({"plausible_answers": _answers(context, context.split()[1])} if not answers else {}),
                }
                for qid, question, answers in qas
            ],
        }
        for context, qas in questions.items()
    ]
    return {"version": "v2.0", "data": [{"title": "Golden", "paragraphs": paragraphs}]}


def qa_entries(document: dict) -> list[dict]:
    return [qa for a in document["data"] for p in a["paragraphs"] for qa in p["qas"]]


# ---- reading the files ------------------------------------------------------------------------------


def test_a_squad_v2_file_gives_its_questions_and_gold_texts(tmp_path):
    document = squad_v2()
    path = tmp_path / "dev-v2.0.json"
    path.write_text(json.dumps(document, indent=2))  # pretty-printed: one document, many lines
    samples = read_samples(path)
    contexts = [p["context"] for p in document["data"][0]["paragraphs"] for _ in p["qas"]]
    entries = qa_entries(document)
    assert samples.pairs == [(qa["question"], c) for qa, c in zip(entries, contexts)]
    assert samples.gold == [[a["text"] for a in qa["answers"]] for qa in entries]
    assert samples.gold[3] == [] and samples.gold[1] == ["Matthias Oort", "the engineer Matthias Oort"]
    assert samples.labels == "SQuAD v2.0 JSON" and samples.no_answer


def test_a_squad_v11_file_is_asked_without_no_answer(tmp_path):
    document = squad_v2()
    document["version"] = "1.1"
    for paragraph in document["data"][0]["paragraphs"]:
        paragraph["qas"] = [
            {k: v for k, v in qa.items() if k in ("id", "question", "answers")}
            for qa in paragraph["qas"]
            if qa["answers"]
        ]
    path = tmp_path / "dev-v1.1.json"
    path.write_text(json.dumps(document))  # one line, as SQuAD's own files
    samples = read_samples(path)
    assert len(samples.pairs) == 7 and all(samples.gold)
    assert samples.labels == "SQuAD v1.1 JSON" and not samples.no_answer


def test_labeled_json_lines_as_the_hub_rows(tmp_path):
    rows = [
        {
            "id": qa["id"],
            "title": "Golden",
            "question": qa["question"],
            "context": paragraph["context"],
            "answers": {
                "text": [a["text"] for a in qa["answers"]],
                "answer_start": [a["answer_start"] for a in qa["answers"]],
            },
        }
        for paragraph in squad_v2()["data"][0]["paragraphs"]
        for qa in paragraph["qas"]
    ]
    path = tmp_path / "squad_v2.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    samples = read_samples(path)
    assert samples.pairs == [(r["question"], r["context"]) for r in rows]
    assert samples.gold == [r["answers"]["text"] for r in rows]
    assert samples.labels == LABELED_LINES and samples.no_answer  # it has unanswerable rows
    # All answerable: asked as the pipeline asks by default.
    path.write_text("".join(json.dumps(row) + "\n" for row in rows if row["answers"]["text"]))
    assert not read_samples(path).no_answer


def test_request_bodies_keep_working_without_labels(tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_text(
        json.dumps({"inputs": {"question": "Who?", "context": "Ada wrote."}})
        + "\n\n"
        + json.dumps({"question": "When?", "context": "In 1843."})
        + "\n"
    )
    samples = read_samples(path)
    assert samples.pairs == [("Who?", "Ada wrote."), ("When?", "In 1843.")]
    assert samples.gold is None and samples.labels is None and not samples.no_answer


def test_calibration_samples_take_a_labeled_file_too(tmp_path):
    # `deploy package --samples` hands the same file to the graph export and to the report.
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad_v2()))
    assert sample_pairs(path) == read_samples(path).pairs


def test_a_v2_file_and_only_it_is_asked_with_handle_impossible_answer(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad_v2()))
    requests = qa_report._requests(read_samples(path))
    assert len(requests) == 9 and all(r.queries[0].params.handle_impossible_answer for r in requests)
    path.write_text(json.dumps({"inputs": {"question": "Who?", "context": "Ada wrote."}}))
    requests = qa_report._requests(read_samples(path))
    assert not requests[0].queries[0].params.handle_impossible_answer


def test_requests_caps_the_questions_and_the_source_says_so(tmp_path):
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(squad_v2()))
    samples, source = qa_report.load_requests(path, 3)
    assert len(samples.pairs) == len(samples.gold) == 3 and samples.no_answer
    assert source == f"{path} (3 of 9 items)"


MALFORMED = [
    # (file text, what the one error line must name)
    ('{"data": {"paragraphs": []}}', ["data must be a list, not an object"]),
    ('{"data": [{"title": "x"}]}', ["data[0]: 'paragraphs' is missing"]),
    (
        '{"data": [{"paragraphs": [{"context": "c", "qas": []}, {"qas": []}]}]}',
        ["data[0].paragraphs[1]: 'context' is missing"],
    ),
    (
        '{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "q", "answers": []}]}]}]}',
        ["data[0].paragraphs[0].qas[0]: 'question' is missing"],
    ),
    (
        '{"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "q", "answers": "c"}]}]}]}',
        ["data[0].paragraphs[0].qas[0].answers must be a list, not a string"],
    ),
    (
        '{"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "q", "answers": [{"text": 1}]}]}]}]}',
        ["data[0].paragraphs[0].qas[0].answers[0].text must be a string, not a number"],
    ),
    (
        '{"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "q", "answers": [], "is_impossible": "yes"}]}]}]}',
        ["data[0].paragraphs[0].qas[0].is_impossible must be true or false"],
    ),
    (
        '{"data": [{"paragraphs": [{"context": "c", "qas": [{"question": " ", "answers": []}]}]}]}',
        ["data[0].paragraphs[0].qas[0]: 'question' is empty"],
    ),
    ('{\n "data": [\n  {"paragraphs": []\n ]\n}\n', ["malformed JSON", "line 4, column 2"]),
    (
        '{"question": "q", "context": "c", "answers": {"text": ["c"]}}\n{"question": "q", "context": "c"}\n',
        ["line 2: 'answers' is missing"],
    ),
    (
        '{"question": "q", "context": "c", "answers": {"text": ["c"]}}\n\n{"question": "q", "context": 3, "answers": {"text": []}}\n',
        ["line 3: context must be a string, not a number"],
    ),
    (
        '{"question": "q", "context": "c", "answers": {"text": "c"}}\n',
        ["line 1: answers.text must be a list, not a string"],
    ),
    (
        '{"question": "q", "context": "c", "answers": {"text": ["c"]}}\n{"question": "q", \n',
        ["line 2: malformed JSON"],
    ),
    ('{"question": "q", "context": "c"}\n{"question": "q", "context": "c", "parameters": 1}\n', ["line 2"]),
    ("\n\n", ["the file is empty"]),
]


@pytest.mark.parametrize("text,named", MALFORMED)
def test_a_malformed_file_is_one_error_line_naming_the_entry(tmp_path, capsys, text, named):
    path = tmp_path / "dev.json"
    path.write_text(text)
    assert qa_report.main([str(path)], QAOptions(), tmp_path, cache_named=False) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: samples {path}: ") and err.count("\n") == 1, err
    assert all(part in err for part in named), err
    assert "Traceback" not in err


# ---- the scores ---------------------------------------------------------------------------------------


def test_exact_match_and_f1_are_squads_on_hand_made_predictions():
    document = squad_v2()
    preds = {
        "h1": "in 1642",  # EM 0, F1 2/3
        "h2": "engineer Matthias Oort.",  # the second gold answer, with punctuation, article dropped
        "h3": "",  # no answer to an answerable question: 0
        "h4": "",  # no answer, rightly: 1
        "r1": "1864",  # F1 against "July 2, 1864": 1/2
        "r2": "at Gold Creek",  # best of the gold answers: F1 0.8 against "Gold Creek"
        "r3": "Henry Villard",  # an answer where there is none: 0
        "c1": "LEIPZIG",  # case does not count
        "c2": "the Felix Brandt",  # articles do not count
    }
    entries = qa_entries(document)
    golds = [[a["text"] for a in qa["answers"]] for qa in entries]
    got = qa_report.squad_scores([preds[qa["id"]] for qa in entries], golds)
    want = official_scores(document["data"], preds)
    assert got == pytest.approx(want)
    # By hand: exact h2 h4 c1 c2; F1 adds 2/3 (h1), 1/2 (r1) and 0.8 (r2).
    assert got["exact_match"] == pytest.approx(100 * 4 / 9)
    assert got["f1"] == pytest.approx(100 * (4 + 2 / 3 + 1 / 2 + 0.8) / 9)


@pytest.mark.parametrize(
    "prediction,gold",
    [
        ("", []),  # unanswerable, answered so
        ("Ada", []),  # unanswerable, answered anyway
        ("", ["Ada"]),  # answerable, not answered
        ("the", []),  # as the official script: "the" normalises to "", which is no answer
        ("Ada", ["the", "."]),  # gold texts that normalise to nothing: unanswerable
        ("a cat, the dog", ["cat dog", "the cat"]),  # best of several
    ],
)
def test_each_case_of_the_no_answer_rule_is_the_official_scripts(prediction, gold):
    dataset = [{"paragraphs": [{"qas": [{"id": "q", "answers": [{"text": t} for t in gold]}]}]}]
    assert qa_report.squad_scores([prediction], [gold]) == pytest.approx(
        official_scores(dataset, {"q": prediction})
    )


def test_the_table_and_log_line_carry_the_gold_figures_only_with_labels():
    row = {"backend": "openvino", "ms_per_window": 2.0, "speed_vs_fp32": 1.0}
    reduced = {"top_answers_equal": 0.5, "mean_token_f1": 0.75, "max_score_difference": 0.01}
    report = {
        "model_dir": "/m",
        "created": "today",
        "cpu": "cpu",
        "cpu_class": "avx2",
        "isa": ["avx2"],
        "threads": 1,
        "source": "dev.json (9 of 9 items)",
        "requests": 9,
        "timed_windows": 9,
        "labels": "SQuAD v2.0 JSON",
        "handle_impossible_answer": True,
        "rows": [
            {**row, "precision": "fp32", "exact_match": 55.5, "f1": 60.3},
            {**row, **reduced, "precision": "int8", "exact_match": 44.4, "f1": 50.0},
        ],
    }
    table = qa_report.render(report)
    assert "SQuAD v2.0 JSON" in table and "handle_impossible_answer" in table
    lines = [line for line in table.splitlines() if line.startswith("|")]
    assert "| exact match | F1 |" in lines[0] and len({line.count("|") for line in lines}) == 1
    assert lines[2].startswith("| fp32 | openvino | 55.5 | 60.3 | (reference) |")
    assert lines[3].startswith("| int8 | openvino | 44.4 | 50.0 | 50.0% |")
    line = qa_report.summary_line(report, "int8")
    assert "exact match 44.4 and F1 50.0 (fp32: 55.5 and 60.3)" in line and "\n" not in line

    unlabeled = {**report, "labels": None, "handle_impossible_answer": False}
    unlabeled["rows"] = [
        {k: v for k, v in r.items() if k not in ("exact_match", "f1")} for r in report["rows"]
    ]
    table = qa_report.render(unlabeled)
    assert "exact match" not in table and "gold" not in table and "| 55.5 |" not in table
    assert "exact match" not in qa_report.summary_line(unlabeled, "int8")


# ---- end to end on the tiny model ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def labeled_report(qa_model_dir, tmp_path_factory):
    """`precision-report dev-v2.0.json --json FILE` on the tiny model: (exit code, its table, the
    JSON report, the dev set, the options)."""
    tmp = tmp_path_factory.mktemp("labeled")
    document = squad_v2()
    for n, paragraph in enumerate(document["data"][0]["paragraphs"]):
        # A long answer too (a paragraph's last sentence), so that even the tiny model's random
        # spans overlap some: the scores checked are not all 0.
        last = re.split(r"(?<=\.) ", paragraph["context"])[-1]
        qa = {"id": f"last{n}", "question": "What is said at the end?"}
        paragraph["qas"].append(
            {**qa, "answers": _answers(paragraph["context"], last), "is_impossible": False}
        )
    dev = tmp / "dev-v2.0.json"
    dev.write_text(json.dumps(document))
    options = QAOptions(graph_cache=tmp / "graphs", inference_threads=1)
    out = tmp / "report.json"
    with contextlib.redirect_stdout(io.StringIO()) as table:
        code = qa_report.main([str(dev), "--json", str(out)], options, qa_model_dir, cache_named=True)
    report = json.loads(out.read_text()) if out.exists() else None
    return code, table.getvalue(), report, document, options


@pytest.mark.slow
def test_every_precision_gets_exact_match_and_f1_of_its_own_answers(labeled_report):
    code, table, report, document, _ = labeled_report
    assert code == 0
    assert (
        "against the file's gold answers (SQuAD v2.0 JSON)" in table and "handle_impossible_answer" in table
    )
    assert "| exact match | F1 | top answers equal to fp32 |" in table
    assert report["labels"] == "SQuAD v2.0 JSON" and report["handle_impossible_answer"] is True
    assert report["requests"] == 12
    entries = qa_entries(document)
    assert report["gold"] == [[a["text"] for a in qa["answers"]] for qa in entries]
    assert [row["precision"] for row in report["rows"]] == ["fp32", "bf16", "int8"]
    for row in report["rows"]:
        answers = report["answers"][row["precision"]]
        preds = {qa["id"]: answer["answer"] for qa, answer in zip(entries, answers, strict=True)}
        want = official_scores(document["data"], preds)
        assert row["exact_match"] == pytest.approx(want["exact_match"]), row["precision"]
        assert row["f1"] == pytest.approx(want["f1"]), row["precision"]
        assert 0 <= row["exact_match"] <= row["f1"] <= 100
    assert report["rows"][0]["f1"] > 0


@pytest.mark.slow
def test_the_answers_are_servings_with_handle_impossible_answer(labeled_report, qa_model_dir):
    code, _, report, document, options = labeled_report
    assert code == 0
    model = load_model(qa_model_dir, dataclasses.replace(options, precision="fp32", parallel_batches=1))
    for paragraph in document["data"][0]["paragraphs"]:
        for qa in paragraph["qas"]:
            body = {
                "question": qa["question"],
                "context": paragraph["context"],
                "parameters": {"handle_impossible_answer": True},
            }
            want = model.predict(request_from_object(body, max_items=1))
            assert report["answers"]["fp32"][qa_entries(document).index(qa)] == want
