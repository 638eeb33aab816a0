"""A loaded QA model: a request's windows (windows.py) go to the worker's batcher (batcher.py),
which runs them, together with other requests' windows, through the backend the execution plan
chose (plan.py), in batches of at most `forward_batch_size` padded to the longest window of each
batch (never to `max_seq_len`), or for reduced precisions to the next multiple of WIDTH_STEP
tokens; each item's unpadded window logits then go to spans.py. Loading is in loading.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from qa import accounting
from qa.backends import ALONE, SAME_WIDTH, WIDTH_STEP
from qa.batcher import Batcher, padded_width
from qa.errors import QAError
from qa.options import QAOptions
from qa.request import BatchResults, LineResults, QAParams, QAQuery, QARequest
from qa.spans import WindowLogits, answer_from_windows
from qa.windows import Window, Windower, pad_windows

# Records per chunk of a streamed Batch Transform request: ~130-400 windows of realistic records,
# enough to keep every lane's batches full, well inside the batcher's queue (512 windows).
STREAM_RECORDS = 128


class QAModel:
    """A model's windows (its tokenizer) and backend; `predict` is safe to call from several threads at once."""

    def __init__(self, windows: Windower, options: QAOptions, backend, *, lanes: int):
        # The PyTorch module only when it computes; a graph backend does not need its weights.
        self.model = getattr(backend, "model", None)
        self.backend = backend
        self.options = options
        self.windows = windows
        self.max_positions = windows.max_positions
        # What the model takes (its forward signature, or its graph's inputs), not what the
        # tokenizer class lists: ALBERT and XLNet need their token_type_ids.
        self.input_names = list(backend.input_names)
        # Windows padded to fixed widths when padding would change a window's logits (backends.py).
        self.width_step = WIDTH_STEP if backend.batching == SAME_WIDTH else 1
        self.batcher = Batcher(
            self.forward_batch,
            max_windows=1 if backend.batching == ALONE else options.forward_batch_size,
            max_tokens=options.batch_max_tokens,
            max_wait_s=options.batch_wait_ms / 1000,
            max_padding=options.batch_max_padding_percent / 100,
            parallel=lanes,
            width_step=self.width_step,
            max_width=self.max_positions,
        )

    # ---- forward ----------------------------------------------------------------------------

    def forward_batch(self, chunk: Sequence[Window], alone: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """One forward pass, padded to the longest window (or its fixed width): the batcher's lanes
        call this. `alone`: no other pass runs or waits (the backend may give it all its threads)."""
        width = padded_width(max(len(w.input_ids) for w in chunk), self.width_step, self.max_positions)
        inputs = pad_windows(chunk, width, self.windows.pad_token_id, self.input_names)
        return self.backend.forward(inputs, alone=alone)

    # ---- the whole request ------------------------------------------------------------------

    def predict(self, request: QARequest, options: QAOptions | None = None, deadline: float | None = None):
        """Answers in the pipeline's shapes: per query a dict/list, or a list per item if batched.
        `deadline` (time.monotonic(); None: no limit) bounds the wait for the model: past it,
        DeadlineExceeded."""
        options = options or self.options
        if request.line_oriented and options.batch_transform:
            return self._stream(request, options, deadline)
        return self._predict(request, options, deadline)

    def _stream(self, request: QARequest, options: QAOptions, deadline: float | None) -> LineResults:
        """A Batch Transform mini-batch, STREAM_RECORDS records at a time through the batcher:
        memory holds one chunk's windows, never the request's, and each record keeps its own
        window limit (QA_MAX_WINDOWS_PER_REQUEST)."""
        results = LineResults()
        for begin in range(0, len(request.queries), STREAM_RECORDS):
            chunk = dataclasses.replace(request, queries=request.queries[begin : begin + STREAM_RECORDS])
            results.extend(self._predict(chunk, options, deadline, budget_per_record=True))
        return results

    def _predict(
        self, request: QARequest, options: QAOptions, deadline: float | None, budget_per_record: bool = False
    ):
        with accounting.timed("tokenize"):
            if request.line_oriented and options.jsonlines_errors == "record":
                request, windows = self._windows_per_record(
                    request, options.max_windows_per_request, budget_per_record
                )
            elif budget_per_record:
                windows = self.windows.windows_for(
                    request, options.max_windows_per_request * len(request.queries)
                )
            else:
                windows = self.windows.windows_for(request, options.max_windows_per_request)
        flat = [w for item_windows in windows for w in item_windows]
        account = accounting.current.get()
        if account is not None:
            account.items += len(windows)
            account.windows += len(flat)
            account.tokens += sum(sum(w.attention_mask) for w in flat)
        logits = self.batcher.submit(flat, deadline, max_windows=options.forward_batch_size)

        per_item: list[list[WindowLogits]] = [[] for _ in windows]
        for window, (start, end) in zip(flat, logits):
            per_item[window.item_index].append(
                WindowLogits(
                    start_logits=start,
                    end_logits=end,
                    p_mask=window.p_mask,
                    attention_mask=np.array(window.attention_mask),
                    encoding=window.encoding,
                )
            )

        with accounting.timed("decode"):
            return self._answers(request, per_item)

    def _windows_per_record(
        self, request: QARequest, max_windows: int, budget_per_record: bool = False
    ) -> tuple[QARequest, list[list[Window]]]:
        """Each jsonlines record's windows on its own: a record that cannot be served (too long,
        over what is left of the request's window budget, or of its own) is rejected alone."""
        queries: list[QAQuery] = []
        windows: list[list[Window]] = []
        for query in request.queries:
            if query.rejected is None:
                try:
                    mine = self.windows.windows_for(
                        dataclasses.replace(request, queries=(query,)), max_windows
                    )
                except QAError as exc:
                    query = dataclasses.replace(query, items=(), rejected=exc)
                else:
                    for item_windows in mine:
                        for window in item_windows:
                            window.item_index += len(windows)
                    windows += mine
                    if not budget_per_record:
                        max_windows -= sum(map(len, mine))
            queries.append(query)
        return dataclasses.replace(request, queries=tuple(queries)), windows

    def _answers(self, request: QARequest, per_item: list[list[WindowLogits]]):
        results: list = []
        flat_index = 0
        for query in request.queries:
            if query.rejected is not None:
                results.append(rejected_record(query.rejected))
                continue
            answers = []
            for item in query.items:
                answers.append(self._answer(item.context, per_item[flat_index], query.params))
                flat_index += 1
            results.append(BatchResults(answers) if query.batched else answers[0])
        if request.line_oriented:
            return LineResults(results)
        return results[0] if len(results) == 1 else results

    def _answer(self, context: str, windows: list[WindowLogits], params: QAParams):
        return answer_from_windows(
            windows,
            context,
            top_k=params.top_k,
            handle_impossible_answer=params.handle_impossible_answer,
            max_answer_len=params.max_answer_len,
            align_to_words=params.align_to_words,
            question_first=self.windows.question_first,
        )


def rejected_record(error: QAError) -> dict:
    """The output line of a jsonlines record refused on its own (QA_JSONLINES_ERRORS=record)."""
    return {"error": {"type": type(error).__name__, "message": error.message}}
