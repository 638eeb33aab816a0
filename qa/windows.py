"""Cutting a request's items into model windows, as transformers' QA pipeline cuts them.

Each item (question, context) becomes one or more windows of at most `max_seq_len` tokens: the
context is cut with `doc_stride` tokens of overlap, the question repeated in each. Each text is
tokenized once: the pair without special tokens, which gives the counts that plan the windows
(refusing what the tokenizer cannot cut, and requests over their window budget, before any window
is made), then the windows are cut from those same tokens by the tokenizer's own post-processing
(truncation with stride, special tokens), as encoding the pair with truncation would cut them. A
text too long to count whole cheaply is first counted in pieces, up to what the request's windows
can hold, so that a huge one is refused after about that many tokens.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Mapping, Sequence

import numpy as np

from qa.errors import InvalidRequest, RequestTooLarge
from qa.request import QAParams, QARequest
from qa.tokenizer import QATokenizer

log = logging.getLogger(__name__)

PIPELINE_MAX_SEQ_LEN = 384  # the pipeline's default window length
PIPELINE_MAX_DOC_STRIDE = 128  # the pipeline's default overlap cap
UNSET_MODEL_MAX_LENGTH = 1_000_000  # tokenizers without a limit report ~1e30
# Model types whose position ids start after the padding index (so 514 positions hold 512 tokens).
POSITIONS_AFTER_PADDING = (
    "roberta",
    "xlm-roberta",
    "camembert",
    "longformer",
    "xlm-roberta-xl",
    "data2vec-text",
)
LONG_TEXT_CHARS = 20_000  # texts longer than this are counted piece by piece, up to the window budget
PIECES_PER_CALL = 8
_WHITESPACE = re.compile(r"\s")
EXAMPLE_QUESTION = "Who built the lighthouse?"
EXAMPLE_CONTEXT = (
    "The first stone lighthouse on the western coast was built by the engineer Matthias Oort and "
    "completed in 1711. It stood 38 metres tall, burned whale oil until 1860, and guided grain and "
    "timber ships into the harbour for two centuries before an electric lamp replaced the flame."
)


@dataclasses.dataclass
class Window:
    """One tokenized window of one item, unpadded."""

    item_index: int
    input_ids: list[int]
    type_ids: list[int]
    attention_mask: list[int]
    p_mask: np.ndarray
    encoding: object  # tokenizers.Encoding


class Windower:
    """Windows for a model's tokenizer; safe to call from several threads at once."""

    def __init__(self, tokenizer: QATokenizer, config: Mapping):
        self.max_positions = max_positions(config, tokenizer.model_max_length)
        # Our own copies of the Rust tokenizer: one that is never reconfigured tokenizes from any
        # thread (without post-processing: the windowing one adds it to the tokens); the windowing
        # one gets per-call truncation settings under a lock.
        self._counter = tokenizer.copy_of_backend()
        self._counter.post_processor = None
        self._tokenizer = tokenizer.copy_of_backend()
        self._tokenizer_lock = threading.Lock()

        # A model with one token type (the RoBERTa family) was fed none, so all zeros: the
        # tokenizer can mark overflowing windows' context as type 1, out of its range.
        self.uses_token_types = int(config.get("type_vocab_size", 2)) > 1
        self.question_first = tokenizer.question_first
        self.truncation_side = tokenizer.truncation_side
        self.cls_token_id = tokenizer.cls_token_id
        self.pad_token_id = tokenizer.pad_token_id
        self.pair_special_tokens = tokenizer.num_special_tokens_to_add(pair=True)
        self.single_special_tokens = tokenizer.num_special_tokens_to_add(pair=False)

        tokenizer_max = tokenizer.model_max_length
        pipeline_default = min(tokenizer_max, PIPELINE_MAX_SEQ_LEN) if tokenizer_max else PIPELINE_MAX_SEQ_LEN
        self.default_max_seq_len = min(pipeline_default, self.max_positions)

    def tokenizer_json(self) -> str:
        """The tokenizer as a tokenizer.json document (one made by conversion is kept so)."""
        with self._tokenizer_lock:  # (no truncation set outside a call)
            return self._tokenizer.to_str()

    # ---- parameters -------------------------------------------------------------------------

    def window_lengths(self, params: QAParams, where: str) -> tuple[int, int]:
        """(max_seq_len, doc_stride) for these parameters, as the pipeline resolved them."""
        max_seq_len = self.default_max_seq_len if params.max_seq_len is None else params.max_seq_len
        shortest = self.pair_special_tokens + 2  # one question token and one context token
        if not shortest <= max_seq_len <= self.max_positions:
            raise InvalidRequest(
                f"{where}parameters.max_seq_len={max_seq_len} is out of range: this model takes between "
                f"{shortest} and {self.max_positions} tokens per window"
            )
        doc_stride = (
            min(max_seq_len // 2, PIPELINE_MAX_DOC_STRIDE) if params.doc_stride is None else params.doc_stride
        )
        # The tokenizer needs room for the special tokens beside the overlap.
        stride_limit = max_seq_len - self.single_special_tokens
        if doc_stride >= stride_limit:
            raise InvalidRequest(
                f"{where}parameters.doc_stride={doc_stride} is too large: with max_seq_len={max_seq_len} it "
                f"must be below {stride_limit} (max_seq_len minus {self.single_special_tokens} special tokens)"
            )
        return max_seq_len, doc_stride

    # ---- tokenization -----------------------------------------------------------------------

    def tokens_over(self, text: str, cap: int) -> int:
        """A number of tokens above `cap` if `text` is known to hold more, else 0. A long text is
        counted in pieces, so a huge context is refused after tokenizing about `cap` tokens rather
        than all of it (a 6 MB context takes seconds to tokenize); a shorter one is not counted."""
        if len(text) <= LONG_TEXT_CHARS:
            return 0
        seen = 0
        pieces = split_at_whitespace(text, LONG_TEXT_CHARS)
        for begin in range(0, len(pieces), PIECES_PER_CALL):
            encodings = self._counter.encode_batch(
                pieces[begin : begin + PIECES_PER_CALL], add_special_tokens=False
            )
            seen += sum(len(e.ids) for e in encodings)
            if seen > cap:
                return seen
        return 0

    def _tokens(self, question: str, context: str) -> tuple:
        """The pair tokenized once, without special tokens: (its Encoding, tokens in the question,
        tokens in the context)."""
        pair = self._counter.encode_batch([self._pair(question, context)], add_special_tokens=False)[0]
        first = pair.type_ids.count(0)
        second = len(pair.ids) - first
        return (pair, first, second) if self.question_first else (pair, second, first)

    def _split(self, pair, question: str, context: str) -> tuple:
        """(question's, context's) tokens, each an Encoding as the tokenizer encodes its sequence of
        a pair (the second one's type ids are 1), cut from the pair's one tokenization."""
        first_text = question if self.question_first else context
        first = pair.type_ids.count(0)
        if first == 1 and len(pair.ids) == 2:  # too short to cut apart: its one token again
            pair.truncate(1, 0, "right")
            head = self._counter.encode_batch([first_text], add_special_tokens=False)[0]
            tail = pair.overflowing[0]
        else:
            head, tail = split_pair(pair, first)
        return (head, tail) if self.question_first else (tail, head)

    def _cut(self, items: Sequence[tuple], max_seq_len: int, doc_stride: int) -> list:
        """Each (question tokens, context tokens) cut into windows: an Encoding per item, the others
        in its `overflowing`, exactly as encoding the pair with this truncation would make them."""
        with self._tokenizer_lock:
            self._tokenizer.enable_truncation(
                max_seq_len,
                stride=doc_stride,
                strategy="only_second" if self.question_first else "only_first",
                direction=self.truncation_side,
            )
            try:
                return [
                    self._tokenizer.post_process(*self._pair(question, context), add_special_tokens=True)
                    for question, context in items
                ]
            finally:
                self._tokenizer.no_truncation()

    def windows_for(self, request: QARequest, max_windows: int) -> list[list[Window]]:
        """The windows of each item (items flattened over queries), within `max_windows` in all."""
        planned = 0
        queries = []
        for query in request.queries:
            max_seq_len, doc_stride = self.window_lengths(query.params, query.where)
            tokens = []
            for item in query.items:
                self._refuse_long_texts(item, max_seq_len, doc_stride, max_windows - planned)
                pair, q_tokens, c_tokens = self._tokens(item.question, item.context)
                planned += self._plan_windows(item, q_tokens, c_tokens, max_seq_len, doc_stride)
                self._check_budget(planned, max_windows, max_seq_len)
                tokens.append(self._split(pair, item.question, item.context))
            queries.append((tokens, max_seq_len, doc_stride))

        windows: list[list[Window]] = []
        for tokens, max_seq_len, doc_stride in queries:
            for encoding in self._cut(tokens, max_seq_len, doc_stride):
                windows.append(self._item_windows(len(windows), encoding))
        made = sum(map(len, windows))
        if made != planned:  # _plan_windows no longer mirrors the tokenizer's overflow rule
            log.warning("planned %d windows, the tokenizer made %d", planned, made)
        return windows

    def _refuse_long_texts(self, item, max_seq_len: int, doc_stride: int, windows_left: int) -> None:
        """Refuses an item whose long text holds more tokens than the windows left can take,
        counting it in pieces up to that (its exact count is not known yet: a question of one
        token is assumed, the most room it can leave)."""
        q_tokens = self.tokens_over(item.question, max_seq_len)
        room = max_seq_len - max(q_tokens, 1) - self.pair_special_tokens
        # The longest context that still fits in the windows left; else enough to tell whether
        # it must be cut (then it is an error).
        cap = room + (windows_left - 1) * (room - doc_stride) if room > doc_stride else max_seq_len
        c_tokens = self.tokens_over(item.context, max(cap, 0))
        if q_tokens or c_tokens:
            windows = self._plan_windows(item, q_tokens or 1, c_tokens or 1, max_seq_len, doc_stride)
            self._check_budget(windows, windows_left, max_seq_len)

    def _check_budget(self, planned: int, max_windows: int, max_seq_len: int) -> None:
        if planned > max_windows:
            raise RequestTooLarge(
                f"the request needs more than {max_windows} model windows of {max_seq_len} tokens "
                f"(limit QA_MAX_WINDOWS_PER_REQUEST={max_windows}); send shorter contexts or fewer "
                f"items per request"
            )

    def windows_of(self, question: str, context: str, max_seq_len: int, doc_stride: int = 0) -> list[Window]:
        """One pair's windows, cut with these lengths; no limits checked (examples, calibration)."""
        tokens = self._split(self._tokens(question, context)[0], question, context)
        return self._item_windows(0, self._cut([tokens], max_seq_len, doc_stride)[0])

    def _pair(self, question: str, context: str) -> tuple[str, str]:
        # The pipeline put the question first unless the tokenizer pads on the left (XLNet).
        return (question, context) if self.question_first else (context, question)

    def _plan_windows(self, item, q_tokens: int, c_tokens: int, max_seq_len: int, doc_stride: int) -> int:
        """Windows this item will need; rejects what the tokenizer cannot cut (it would panic)."""
        for key, count in (("question", q_tokens), ("context", c_tokens)):
            if count == 0:
                raise InvalidRequest(
                    f"{item.where}.{key} has no tokens left after the tokenizer's normalisation "
                    f"(only control, zero-width or whitespace characters?): send some text"
                )
        # Only the context is ever cut (it is the second sequence when the question comes first).
        if q_tokens + c_tokens + self.pair_special_tokens <= max_seq_len:
            return 1
        budget = max_seq_len - q_tokens - self.pair_special_tokens
        if budget < 1:
            raise InvalidRequest(
                f"{item.where}.question is too long: its {q_tokens} tokens plus {self.pair_special_tokens} special "
                f"tokens leave no room for the context in max_seq_len={max_seq_len}; shorten the question "
                f"or raise parameters.max_seq_len"
            )
        if doc_stride >= budget:
            raise InvalidRequest(
                f"{item.where}: parameters.doc_stride={doc_stride} is too large for this question: with "
                f"max_seq_len={max_seq_len} each window holds {budget} context tokens, and doc_stride must "
                f"be below that; lower doc_stride or raise max_seq_len"
            )
        return 1 + -(-(c_tokens - budget) // (budget - doc_stride))

    def _item_windows(self, item_index: int, encoding) -> list[Window]:
        windows = []
        for enc in [encoding] + list(encoding.overflowing):
            # 1 for tokens that cannot be in the answer: everything but the context...
            if self.question_first:
                p_mask = [int(seq != 1) for seq in enc.sequence_ids]
            else:
                p_mask = [0] * len(enc.ids)
            # ...except CLS, which some models use to say "no answer".
            if self.cls_token_id is not None:
                for index, token_id in enumerate(enc.ids):
                    if token_id == self.cls_token_id:
                        p_mask[index] = 0
            windows.append(
                Window(
                    item_index=item_index,
                    input_ids=enc.ids,
                    type_ids=enc.type_ids if self.uses_token_types else [0] * len(enc.ids),
                    attention_mask=enc.attention_mask,
                    p_mask=np.array(p_mask),
                    encoding=enc,
                )
            )
        return windows


def max_positions(config: Mapping, tokenizer_max_length: int) -> int:
    """Tokens a window may hold: the model's positions, or the tokenizer's limit if lower."""
    limits = []
    positions = config.get("max_position_embeddings")
    if isinstance(positions, int) and positions > 0:
        # RoBERTa-style embeddings number positions from the padding index + 1 on.
        offset = (
            config.get("pad_token_id", 1) + 1 if config.get("model_type") in POSITIONS_AFTER_PADDING else 0
        )
        limits.append(positions - offset)
    if 0 < tokenizer_max_length < UNSET_MODEL_MAX_LENGTH:
        limits.append(tokenizer_max_length)
    return min(limits) if limits else 512


def pad_windows(windows: Sequence[Window], width: int, pad_token_id: int, input_names: Sequence[str]):
    """The batch of windows as the model's padded int64 inputs, padded on the right to `width`."""
    input_ids = np.full((len(windows), width), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(windows), width), dtype=np.int64)
    type_ids = np.zeros((len(windows), width), dtype=np.int64)
    for row, window in enumerate(windows):
        n = len(window.input_ids)
        input_ids[row, :n] = window.input_ids
        attention_mask[row, :n] = window.attention_mask
        type_ids[row, :n] = window.type_ids
    arrays = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": type_ids}
    return {name: arrays[name] for name in input_names}


def example_inputs(
    windower: Windower, input_names: Sequence[str], widths: Sequence[int]
) -> dict[str, np.ndarray]:
    """A padded batch of real windows, a row of at most each width, for warm-up and graph export:
    made by the model's own tokenizer, so every special token stands where the model expects it
    (Longformer's QA head refuses inputs without its three separators)."""
    context = " ".join([EXAMPLE_CONTEXT] * (1 + max(widths) // 40))  # long enough to fill each row
    rows = [windower.windows_of(EXAMPLE_QUESTION, context, width)[0] for width in widths]
    return pad_windows(rows, max(widths), windower.pad_token_id, input_names)


def split_at_whitespace(text: str, size: int) -> list[str]:
    """Pieces of about `size` characters, each cut just before a whitespace character."""
    pieces = []
    begin = 0
    while len(text) - begin > size:
        match = _WHITESPACE.search(text, begin + size)
        if match is None:
            break
        pieces.append(text[begin : match.start()])
        begin = match.start()
    pieces.append(text[begin:])
    return pieces


def split_pair(pair, first_length: int) -> tuple:
    """The two sequences of a pair encoded without special tokens, each an Encoding of its own, as
    the tokenizer made it before joining them (token for token, type ids, offsets, words), cut
    apart without tokenizing again. `Encoding.truncate` cuts an encoding into parts of a length,
    overlapping by a stride; the first part keeps the others as its `overflowing`, every other
    part is clean. So each sequence is taken as the second part of a cut made to fall on it."""
    total = len(pair.ids)
    first, second = first_length, total - first_length
    if second > first:
        pair.truncate(second, second - first, "right")  # [0, second), then [first, total)
        tail = pair.overflowing[0]
        step = second - first
        length = max(first, step)
        pair.truncate(length, length - step, "left")  # of [0, second): its end, then [0, first)
        return pair.overflowing[0], tail
    if first > second:
        pair.truncate(first, first - second, "left")  # [second, total), then [0, first)
        head = pair.overflowing[0]
        step = first - second
        length = max(second, step)
        pair.truncate(length, length - step, "right")  # of [second, total): its start, then [first, total)
        return head, pair.overflowing[0]
    pair.truncate(first + 1, 1, "right")  # equal lengths: [0, first + 1), then [first, total)
    tail = pair.overflowing[0]
    pair.truncate(first, first - 1, "left")  # of [0, first + 1): [1, first + 1), then [0, first)
    return pair.overflowing[0], tail
