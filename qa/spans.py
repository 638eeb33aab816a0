"""Answer-span decoding: a faithful port of transformers 4.57.6 `QuestionAnsweringPipeline.postprocess`.

transformers removed the question-answering pipeline in 5.3; users expect the answers it gave, so
this module repeats its arithmetic step by step (same numpy calls, dtypes and tie-breaking) on
the logits of each window, for one (question, context) pair at a time. It knows nothing of
models or HTTP: it takes logits, masks and `tokenizers.Encoding` objects.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

NO_ANSWER_SCORE_START = 1000000  # the pipeline's "large and positive" initial null score


@dataclasses.dataclass
class WindowLogits:
    """One window of one input, unpadded: the model's logits and what postprocess needs."""

    start_logits: np.ndarray  # (tokens,) float32
    end_logits: np.ndarray  # (tokens,) float32
    p_mask: np.ndarray  # (tokens,) int: 1 where a token cannot be part of an answer
    attention_mask: np.ndarray  # (tokens,) int
    encoding: object  # tokenizers.Encoding of this window


def decode_spans(
    start: np.ndarray, end: np.ndarray, topk: int, max_answer_len: int, undesired_tokens: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The best (start, end) token pairs by start x end probability, longest `max_answer_len`."""
    if start.ndim == 1:
        start = start[None]
    if end.ndim == 1:
        end = end[None]

    outer = np.matmul(np.expand_dims(start, -1), np.expand_dims(end, 1))
    # Keep end >= start and end - start < max_answer_len.
    candidates = np.tril(np.triu(outer), max_answer_len - 1)

    scores_flat = candidates.flatten()
    if topk == 1:
        idx_sort = np.array([np.argmax(scores_flat)])
    elif len(scores_flat) < topk:
        idx_sort = np.argsort(-scores_flat)
    else:
        idx = np.argpartition(-scores_flat, topk)[0:topk]
        idx_sort = idx[np.argsort(-scores_flat[idx])]

    starts, ends = np.unravel_index(idx_sort, candidates.shape)[1:]
    # nonzero() of the 2-D mask is (rows, cols); the pipeline tests membership in both, so keep that.
    desired_spans = np.isin(starts, undesired_tokens.nonzero()) & np.isin(ends, undesired_tokens.nonzero())
    starts = starts[desired_spans]
    ends = ends[desired_spans]
    scores = candidates[0, starts, ends]
    return starts, ends, scores


def select_starts_ends(
    start: np.ndarray,
    end: np.ndarray,
    p_mask: np.ndarray,
    attention_mask: np.ndarray | None,
    min_null_score: float = NO_ANSWER_SCORE_START,
    top_k: int = 1,
    handle_impossible_answer: bool = False,
    max_answer_len: int = 15,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Softmax over the allowed tokens of one window, then `decode_spans`; arrays are (1, tokens)."""
    undesired_tokens = np.abs(np.array(p_mask) - 1)
    if attention_mask is not None:
        undesired_tokens = undesired_tokens & attention_mask
    undesired_tokens_mask = undesired_tokens == 0.0

    start = np.where(undesired_tokens_mask, -10000.0, start)
    end = np.where(undesired_tokens_mask, -10000.0, end)

    start = np.exp(start - start.max(axis=-1, keepdims=True))
    start = start / start.sum()
    end = np.exp(end - end.max(axis=-1, keepdims=True))
    end = end / end.sum()

    if handle_impossible_answer:
        min_null_score = min(min_null_score, (start[0, 0] * end[0, 0]).item())

    # The CLS position scores the null answer, never a span.
    start[0, 0] = end[0, 0] = 0.0

    starts, ends, scores = decode_spans(start, end, top_k, max_answer_len, undesired_tokens)
    return starts, ends, scores, min_null_score


def char_span(encoding, s: int, e: int, sequence_index: int, align_to_words: bool) -> tuple[int, int]:
    """Character offsets in the context of tokens s..e, widened to whole words when asked."""
    if align_to_words:
        try:
            start_word = encoding.token_to_word(s)
            end_word = encoding.token_to_word(e)
            start_index = encoding.word_to_chars(start_word, sequence_index=sequence_index)[0]
            end_index = encoding.word_to_chars(end_word, sequence_index=sequence_index)[1]
        except Exception:
            # Some tokenizers have no words (or the token is special): keep the token offsets.
            start_index = encoding.offsets[s][0]
            end_index = encoding.offsets[e][1]
    else:
        start_index = encoding.offsets[s][0]
        end_index = encoding.offsets[e][1]
    return start_index, end_index


def _find_same_answer(answers: list[dict], target: str) -> dict | None:
    for answer in answers:
        if answer["answer"].lower() == target.lower():
            return answer
    return None


def answer_from_windows(
    windows: Sequence[WindowLogits],
    context: str,
    *,
    top_k: int = 1,
    handle_impossible_answer: bool = False,
    max_answer_len: int = 15,
    align_to_words: bool = True,
    question_first: bool = True,
) -> dict | list[dict]:
    """The pipeline's answer for one input: a dict when exactly one answer remains, else a list."""
    min_null_score: float = NO_ANSWER_SCORE_START
    answers: list[dict] = []
    sequence_index = 1 if question_first else 0
    # Some candidates are dropped when aligning to words, so ask for more first.
    pre_topk = top_k * 2 + 10 if align_to_words else top_k
    for window in windows:
        starts, ends, scores, min_null_score = select_starts_ends(
            window.start_logits[None],
            window.end_logits[None],
            window.p_mask[None],
            window.attention_mask[None] if window.attention_mask is not None else None,
            min_null_score,
            pre_topk,
            handle_impossible_answer,
            max_answer_len,
        )
        for s, e, score in zip(starts, ends, scores):
            start_index, end_index = char_span(window.encoding, s, e, sequence_index, align_to_words)
            target_answer = context[start_index:end_index]
            answer = _find_same_answer(answers, target_answer)
            if answer:
                answer["score"] += score.item()
            else:
                answers.append(
                    {"score": score.item(), "start": start_index, "end": end_index, "answer": target_answer}
                )

    if handle_impossible_answer:
        answers.append({"score": min_null_score, "start": 0, "end": 0, "answer": ""})
    answers = sorted(answers, key=lambda x: x["score"], reverse=True)[:top_k]
    if len(answers) == 1:
        return answers[0]
    return answers
