"""Sample files: the questions the precision report asks (and int8 calibrates on), with their gold
answers when the file has them. Three forms, told apart by their content, not their name:

- JSON Lines of request bodies, as /invocations takes them (qa/request.py): no gold answers;
- a SQuAD v1.1 or v2.0 JSON file, recognised by its top-level "data":
  data[].paragraphs[].context and .qas[].{question, answers[].text, is_impossible (v2.0)};
- JSON Lines of labeled rows, as Hugging Face's `squad` and `squad_v2` data sets have them:
  {"question", "context", "answers": {"text": [...], "answer_start": [...]}} plus optional "id"
  and "title" ("answers" may also be SQuAD's list of {"text", "answer_start"}).

A question with no gold answer text is unanswerable (SQuAD 2.0); a v2.0 file, or labeled rows
with such a question, is asked with handle_impossible_answer. Gold answers are kept as texts: an
answer_start that does not point at its text (SQuAD has some) is not an error, and
plausible_answers are ignored. A malformed file raises `SamplesError`, whose message names the
entry (`data[0].paragraphs[2].qas[5]`, `line 17`) and what is wrong with it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from qa.errors import QAError

LABELED_LINES = "labeled JSON Lines"


class SamplesError(QAError):
    """A sample file cannot be read; the message names the entry and what is wrong."""


@dataclasses.dataclass(frozen=True)
class Samples:
    pairs: list[tuple[str, str]]  # (question, context)
    # Per pair, the gold answer texts ([]: unanswerable); None when the file has no labels.
    gold: list[list[str]] | None = None
    labels: str | None = None  # the labeled form, e.g. "SQuAD v2.0 JSON"; None: no labels
    no_answer: bool = False  # some questions may have no answer: ask with handle_impossible_answer

    def head(self, count: int) -> Samples:
        """The first `count` questions (whether to allow no answer is the whole file's)."""
        gold = None if self.gold is None else self.gold[:count]
        return dataclasses.replace(self, pairs=self.pairs[:count], gold=gold)


def read_samples(path: Path) -> Samples:
    """The questions of a sample file in any of the three forms (module docstring)."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SamplesError(f"not UTF-8 text: undecodable byte at offset {exc.start}") from None
    lines = [(number, line) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if not lines:
        raise SamplesError(
            "the file is empty: it needs JSON Lines of requests or of labeled rows, or SQuAD JSON"
        )
    document = _whole_document(text, lines[0][1])
    if isinstance(document, dict) and "data" in document:
        return squad_samples(document)
    first = _parse(lines[0][1], f"line {lines[0][0]}")
    if isinstance(first, dict) and "answers" in first:
        return labeled_lines(lines)
    from qa.request import JSONLINES, parse_request

    request = parse_request(text, JSONLINES, max_items=1_000_000)
    return Samples([(item.question, item.context) for query in request.queries for item in query.items])


def _whole_document(text: str, first_line: str):
    """The file as one JSON document (SQuAD's form), or None if it is JSON Lines."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        try:
            json.loads(first_line)
        except (ValueError, RecursionError):
            # Neither one document nor lines of them: the whole-file error names line and column.
            raise SamplesError(_json_problem(exc)) from None
        return None


def _parse(line: str, where: str):
    try:
        return json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise SamplesError(f"{where}: {_json_problem(exc, one_line=True)}") from None


def _json_problem(exc: Exception, one_line: bool = False) -> str:
    if isinstance(exc, json.JSONDecodeError):
        at = f"column {exc.colno}" if one_line else f"line {exc.lineno}, column {exc.colno}"
        return f"malformed JSON: {exc.msg} ({at})"
    return (
        "malformed JSON: nested too deeply" if isinstance(exc, RecursionError) else f"malformed JSON: {exc}"
    )


# ---- SQuAD's JSON -------------------------------------------------------------------------------


def squad_samples(document: dict) -> Samples:
    """The questions and gold answers of a SQuAD v1.1 or v2.0 document (`data` at its top)."""
    pairs: list[tuple[str, str]] = []
    gold: list[list[str]] = []
    v2 = str(document.get("version", "")).lstrip("v").startswith("2")
    for i, article in enumerate(_field(document, "data", list, "")):
        for j, paragraph in enumerate(
            _field(_object(article, f"data[{i}]"), "paragraphs", list, f"data[{i}]")
        ):
            where = f"data[{i}].paragraphs[{j}]"
            context = _text(_object(paragraph, where), "context", where)
            for k, qa in enumerate(_field(paragraph, "qas", list, where)):
                question, texts, says_impossible = _squad_question(qa, f"{where}.qas[{k}]")
                pairs.append((question, context))
                gold.append(texts)
                v2 = v2 or says_impossible
    v2 = v2 or any(not texts for texts in gold)
    return Samples(pairs, gold, "SQuAD v2.0 JSON" if v2 else "SQuAD v1.1 JSON", no_answer=v2)


def _squad_question(qa, where: str) -> tuple[str, list[str], bool]:
    """(question, gold answer texts, whether it has v2.0's is_impossible) of one entry of `qas`.
    As in SQuAD's evaluation, the answers decide: is_impossible only marks the file as v2.0."""
    question = _text(_object(qa, where), "question", where)
    impossible = qa.get("is_impossible", False)
    if not isinstance(impossible, bool):
        raise SamplesError(f"{where}.is_impossible must be true or false, not {_kind(impossible)}")
    if impossible and "answers" not in qa:
        return question, [], True
    texts = _answer_list(_field(qa, "answers", list, where), f"{where}.answers")
    return question, texts, "is_impossible" in qa


def _answer_list(answers: list, where: str) -> list[str]:
    """The texts of SQuAD's list of {"text", "answer_start"}."""
    texts = []
    for m, answer in enumerate(answers):
        answer = _object(answer, f"{where}[{m}]")
        texts.append(_field(answer, "text", str, f"{where}[{m}]"))
        start = answer.get("answer_start", 0)
        if isinstance(start, bool) or not isinstance(start, int):
            raise SamplesError(f"{where}[{m}].answer_start must be an integer, not {_kind(start)}")
    return texts


# ---- labeled JSON Lines -------------------------------------------------------------------------


def labeled_lines(lines: list[tuple[int, str]]) -> Samples:
    """Rows with gold answers, (line number, line) in the file: every row needs "answers"."""
    pairs: list[tuple[str, str]] = []
    gold: list[list[str]] = []
    for number, line in lines:
        where = f"line {number}"
        row = _object(_parse(line, where), f"{where}: the row")
        if "answers" not in row:
            raise SamplesError(
                f"{where}: 'answers' is missing: line {lines[0][0]} has gold answers, so every line needs them"
            )
        pairs.append((_text(row, "question", where), _text(row, "context", where)))
        gold.append(_row_answers(row["answers"], f"{where}: answers"))
    return Samples(pairs, gold, LABELED_LINES, no_answer=any(not texts for texts in gold))


def _row_answers(answers, where: str) -> list[str]:
    """Hugging Face's {"text": [...], "answer_start": [...]}, or SQuAD's list of answers."""
    if isinstance(answers, list):
        return _answer_list(answers, where)
    if not isinstance(answers, dict):
        raise SamplesError(
            f"{where} must be an object with a 'text' list (or a list of answers), not {_kind(answers)}"
        )
    texts = _field(answers, "text", list, where)
    for m, text in enumerate(texts):
        if not isinstance(text, str):
            raise SamplesError(f"{where}.text[{m}] must be a string, not {_kind(text)}")
    starts = answers.get("answer_start", [])
    if not isinstance(starts, list) or any(isinstance(s, bool) or not isinstance(s, int) for s in starts):
        raise SamplesError(f"{where}.answer_start must be a list of integers")
    return texts


# ---- checks -------------------------------------------------------------------------------------


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise SamplesError(f"{where} must be an object, not {_kind(value)}")
    return value


def _field(value: dict, key: str, kind: type, where: str):
    """value[key], of type `kind`; `where` names `value` ("" at the top, "line 3" for a row)."""
    if key not in value:
        raise SamplesError(f"{where or 'the top level'}: '{key}' is missing")
    if not isinstance(value[key], kind):
        want = "a list" if kind is list else "a string"
        raise SamplesError(f"{_member(where, key)} must be {want}, not {_kind(value[key])}")
    return value[key]


def _member(where: str, key: str) -> str:
    """How messages name a key: `data`, `data[0].paragraphs`, `line 3: question`."""
    if not where:
        return key
    return f"{where}: {key}" if re.fullmatch(r"line \d+", where) else f"{where}.{key}"


def _text(value: dict, key: str, where: str) -> str:
    text = _field(value, key, str, where)
    if not text.strip():
        raise SamplesError(f"{where}: '{key}' is empty or only whitespace")
    return text


def _kind(value) -> str:
    names = {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)
