"""Loading an extractive QA model, cutting inputs into windows, and the batched forward pass.

`QAModel.predict` hands every window of every item of a request to the worker's batcher
(qa_batcher.py), which runs them, together with other requests' windows, through the backend
that the execution plan chose (qa_plan.py) in batches of at most `forward_batch_size`, padded to
the longest window of each batch (never to `max_seq_len`), or for reduced precisions to the next
multiple of WIDTH_STEP tokens; each item's unpadded window logits then go to qa_spans.py.
"""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import json
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from qa_backends import ALONE, SAME_WIDTH, WIDTH_STEP, BackendError, create_backend
from qa_batcher import Batcher, padded_width
from qa_graphs import (
    GRAPH_DIR,
    REPORT_FILE,
    builtin_calibration_pairs,
    calibration_inputs,
    find_graph,
    find_or_build_graph,
    graph_kind,
    input_name_choices,
    model_input_names,
    untrained_weights,
)
from qa_plan import check_cpu, cpu_flags, resolve_plan
from qa_report import summary_line
from qa_request import BatchResults, LineResults, QAParams, QARequest
from qa_spans import WindowLogits, answer_from_windows

from serving.errors import BadRequest, InternalError, PayloadTooLarge
from serving.settings import Settings

log = logging.getLogger(__name__)

SAFETENSORS_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")
PIPELINE_MAX_SEQ_LEN = 384  # the pipeline's default window length
PIPELINE_MAX_DOC_STRIDE = 128  # the pipeline's default overlap cap
UNSET_MODEL_MAX_LENGTH = 1_000_000  # tokenizers without a limit report ~1e30
LONG_TEXT_CHARS = 20_000  # texts longer than this are counted piece by piece, up to the window budget
PIECES_PER_CALL = 8
_WHITESPACE = re.compile(r"\s")


class ModelLoadError(InternalError):
    """The model directory cannot be served; the message names the file and the fix."""


@dataclasses.dataclass
class Window:
    """One tokenized window of one item, unpadded."""

    item_index: int
    input_ids: list[int]
    type_ids: list[int]
    attention_mask: list[int]
    p_mask: np.ndarray
    encoding: object  # tokenizers.Encoding


def load_model(model_dir: Path, settings: Settings) -> QAModel:
    """An extractive QA model and its fast tokenizer from a save_pretrained directory, run by the
    execution plan for this CPU (qa_plan.py)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # progress bars garble the JSON log stream
    model_dir = Path(model_dir)
    use_safetensors = _check_model_files(model_dir, settings)
    torch.set_num_threads(settings.torch_threads)
    tokenizer = _load_tokenizer(model_dir)
    flags = cpu_flags()
    try:
        plan = resolve_plan(settings, flags)
    except BackendError as exc:
        raise ModelLoadError(f"{model_dir}: {exc}") from exc
    check_cpu(plan.precision, flags)
    _log_precision_report(model_dir, plan.precision)
    kind = graph_kind(plan.backend, plan.precision)

    found = None
    if kind is not None:
        found = find_graph(
            model_dir, input_name_choices(tokenizer.model_input_names), kind, settings.graph_cache
        )
    if found is not None:
        # Skipped: the weights and the model's Python class (importing it alone took 2.5 s in the
        # container). Every graph was made from trained weights (the exporter refuses others)
        # and its name hashes them.
        log.info("%s: using the graph %s; the PyTorch weights are not loaded", model_dir, found[0])
        model, (graph, input_names) = None, found
        config = _load_config(model_dir)
    else:
        model = _load_torch_model(model_dir, use_safetensors)
        config, input_names = model.config, model_input_names(model, tokenizer.model_input_names)
        graph = None
        if kind is not None:
            graph = _make_graph(model, model_dir, tokenizer, input_names, kind, settings)
    try:
        backend = create_backend(
            plan.backend,
            plan.precision,
            plan.threads,
            model=model,
            graph=graph,
            input_names=input_names,
            lanes=plan.lanes,
        )
    except Exception as exc:
        raise ModelLoadError(
            f"{model_dir}: the {plan.backend} backend cannot run {graph or 'the model'}: {exc}"
        ) from exc
    qa_model = QAModel(tokenizer, settings, backend, config=config, input_names=input_names, lanes=plan.lanes)
    log.info("%s", plan.describe(backend.batching, settings))
    if qa_model.model is None:
        # A graph backend has its own copy of the weights: the PyTorch module (and an export's
        # leftovers) can go, back to the OS, not only to malloc's free lists.
        del model
        gc.collect()
        _return_free_heap_to_os()
    return qa_model


def _check_model_files(model_dir: Path, settings: Settings) -> bool:
    """Refuses a directory that cannot be served, naming the file and the fix; True when the
    weights are safetensors, False for pickles (allowed by QA_ALLOW_PICKLE_WEIGHTS)."""
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    present = {p.name for p in model_dir.iterdir()}
    if "config.json" not in present:
        raise ModelLoadError(
            f"{model_dir}/config.json is missing: the model directory must hold the files written by "
            f"save_pretrained (config.json, model.safetensors, tokenizer.json)"
        )
    if not any(name in present for name in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{model_dir}/tokenizer.json is missing: save the tokenizer next to the model "
            f"(tokenizer.save_pretrained(dir))"
        )
    if any(name in present for name in SAFETENSORS_FILES):
        return True
    if any(name in present for name in PICKLE_FILES):
        if not settings.allow_pickle_weights:
            raise ModelLoadError(
                f"{model_dir} holds only pickle weights (pytorch_model.bin), which can run arbitrary code "
                f"when loaded, so they are refused. Convert them to model.safetensors "
                f"(model.save_pretrained(dir)), or set QA_ALLOW_PICKLE_WEIGHTS=true to load them with "
                f"torch.load(weights_only=True)."
            )
        log.warning(
            "loading pickle weights from %s with weights_only=True (QA_ALLOW_PICKLE_WEIGHTS)", model_dir
        )
        return False
    raise ModelLoadError(
        f"{model_dir}/model.safetensors is missing: no model weights found "
        f"(expected model.safetensors or a sharded model.safetensors.index.json)"
    )


def _load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot load the tokenizer from {model_dir} (tokenizer.json): {exc}") from exc
    if not getattr(tokenizer, "is_fast", False) or getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ModelLoadError(
            f"{model_dir}: the tokenizer is not a fast tokenizer; character offsets need tokenizer.json"
        )
    return tokenizer


def _load_config(model_dir: Path):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_dir, trust_remote_code=False, local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(f"cannot read {model_dir}/config.json: {exc}") from exc


def _load_torch_model(model_dir: Path, use_safetensors: bool):
    from transformers import AutoModelForQuestionAnswering

    try:
        model, info = AutoModelForQuestionAnswering.from_pretrained(
            model_dir,
            trust_remote_code=False,
            local_files_only=True,
            use_safetensors=use_safetensors,
            weights_only=True,
            output_loading_info=True,
        )
    except Exception as exc:
        raise ModelLoadError(f"cannot load a question-answering model from {model_dir}: {exc}") from exc
    untrained = untrained_weights(model_dir, info)
    if untrained:
        raise ModelLoadError(untrained)
    return model.eval()


def _make_graph(model, model_dir: Path, tokenizer, input_names, kind: str, settings: Settings) -> Path:
    """The graph of this kind in the cache, made now if no worker made it before. Static int8
    calibrates on the built-in corpus (`qa_graphs.py export --samples` takes the user's own)."""
    try:
        return find_or_build_graph(
            model,
            model_dir,
            input_names,
            kind,
            settings.graph_cache,
            calibration=lambda: calibration_inputs(tokenizer, input_names, builtin_calibration_pairs()),
        )
    except BackendError as exc:
        raise ModelLoadError(f"{model_dir}: {exc}") from exc
    except Exception as exc:
        raise ModelLoadError(
            f"cannot make the {kind} graph of {model_dir} in {settings.graph_cache}: {exc}"
        ) from exc


def _log_precision_report(model_dir: Path, precision: str) -> None:
    """The stored report's figures for a reduced precision (`deploy package` writes it), so the
    log says what this precision costs on this model."""
    path = model_dir / GRAPH_DIR / REPORT_FILE
    if precision == "fp32" or not path.is_file():
        return
    try:
        line = summary_line(json.loads(path.read_text()), precision)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("cannot read the precision report %s: %s", path, exc)
        return
    if line:
        log.info("%s", line)


def _return_free_heap_to_os() -> None:
    """glibc keeps freed heap pages for reuse; malloc_trim gives them back. Measured with the
    full-size stand-in, resident after loading: int8 that quantized at start-up 1310 -> 616 MB,
    fp32 ~800 -> ~700 MB."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        pass


class QAModel:
    """A loaded model + tokenizer; `predict` is safe to call from several threads at once."""

    def __init__(
        self, tokenizer, settings: Settings, backend, *, config, input_names: Sequence[str], lanes: int
    ):
        import tokenizers

        # The PyTorch module only when it computes; a graph backend does not need its weights.
        self.model = getattr(backend, "model", None)
        self.backend = backend
        self.settings = settings
        self.max_positions = _max_positions(config, tokenizer)
        # Windows padded to fixed widths when padding would change a window's logits (qa_backends).
        self.width_step = WIDTH_STEP if backend.batching == SAME_WIDTH else 1
        self.batcher = Batcher(
            self.forward_batch,
            max_windows=1 if backend.batching == ALONE else settings.forward_batch_size,
            max_tokens=settings.batch_max_tokens,
            max_wait_s=settings.batch_wait_ms / 1000,
            max_padding=settings.batch_max_padding_percent / 100,
            queue_windows=settings.batch_queue_windows,
            timeout_s=settings.request_timeout_s,
            parallel=lanes,
            width_step=self.width_step,
            max_width=self.max_positions,
        )
        # Our own copies of the Rust tokenizer: one that is never reconfigured counts tokens from
        # any thread; the windowing one gets per-call truncation settings under a lock.
        backend = tokenizer.backend_tokenizer.to_str()
        self._counter = tokenizers.Tokenizer.from_str(backend)
        self._tokenizer = tokenizers.Tokenizer.from_str(backend)
        for copy in (self._counter, self._tokenizer):
            copy.no_truncation()
            copy.no_padding()
            copy.encode_special_tokens = False
        self._tokenizer_lock = threading.Lock()

        self.question_first = tokenizer.padding_side == "right"
        self.truncation_side = tokenizer.truncation_side
        self.cls_token_id = tokenizer.cls_token_id
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.input_names = list(input_names)
        self.pair_special_tokens = tokenizer.num_special_tokens_to_add(pair=True)
        self.single_special_tokens = tokenizer.num_special_tokens_to_add(pair=False)

        tokenizer_max = tokenizer.model_max_length
        pipeline_default = min(tokenizer_max, PIPELINE_MAX_SEQ_LEN) if tokenizer_max else PIPELINE_MAX_SEQ_LEN
        self.default_max_seq_len = min(pipeline_default, self.max_positions)

    # ---- parameters -------------------------------------------------------------------------

    def window_lengths(self, params: QAParams, where: str) -> tuple[int, int]:
        """(max_seq_len, doc_stride) for these parameters, as the pipeline resolved them."""
        max_seq_len = self.default_max_seq_len if params.max_seq_len is None else params.max_seq_len
        shortest = self.pair_special_tokens + 2  # one question token and one context token
        if not shortest <= max_seq_len <= self.max_positions:
            raise BadRequest(
                f"{where}parameters.max_seq_len={max_seq_len} is out of range: this model takes between "
                f"{shortest} and {self.max_positions} tokens per window"
            )
        doc_stride = (
            min(max_seq_len // 2, PIPELINE_MAX_DOC_STRIDE) if params.doc_stride is None else params.doc_stride
        )
        # The tokenizer needs room for the special tokens beside the overlap.
        stride_limit = max_seq_len - self.single_special_tokens
        if doc_stride >= stride_limit:
            raise BadRequest(
                f"{where}parameters.doc_stride={doc_stride} is too large: with max_seq_len={max_seq_len} it "
                f"must be below {stride_limit} (max_seq_len minus {self.single_special_tokens} special tokens)"
            )
        return max_seq_len, doc_stride

    # ---- tokenization -----------------------------------------------------------------------

    def count_tokens(self, text: str, cap: int) -> int:
        """Tokens in `text`, exactly; or any number above `cap` once it is known to exceed it.

        A long text is first counted in pieces, so a huge context is rejected after tokenizing
        about `cap` tokens rather than all of it (a 6 MB context takes seconds to tokenize).
        """
        if len(text) > LONG_TEXT_CHARS:
            seen = 0
            pieces = split_at_whitespace(text, LONG_TEXT_CHARS)
            for begin in range(0, len(pieces), PIECES_PER_CALL):
                encodings = self._counter.encode_batch(
                    pieces[begin : begin + PIECES_PER_CALL], add_special_tokens=False
                )
                seen += sum(len(e.ids) for e in encodings)
                if seen > cap:
                    return seen
        # encode_batch, unlike encode, lets other threads run while it works.
        return len(self._counter.encode_batch([text], add_special_tokens=False)[0].ids)

    def _encode_pairs(self, pairs: Sequence[tuple[str, str]], max_seq_len: int, doc_stride: int) -> list:
        with self._tokenizer_lock:
            self._tokenizer.enable_truncation(
                max_seq_len,
                stride=doc_stride,
                strategy="only_second" if self.question_first else "only_first",
                direction=self.truncation_side,
            )
            try:
                return self._tokenizer.encode_batch(list(pairs), add_special_tokens=True)
            finally:
                self._tokenizer.no_truncation()

    def windows_for(self, request: QARequest, max_windows: int) -> list[list[Window]]:
        """The windows of each item (items flattened over queries), within `max_windows` in all."""
        lengths = []
        planned = 0
        for query in request.queries:
            max_seq_len, doc_stride = self.window_lengths(query.params, query.where)
            lengths.append((max_seq_len, doc_stride))
            for item in query.items:
                q_tokens = self.count_tokens(item.question, max_seq_len)
                room = max_seq_len - q_tokens - self.pair_special_tokens
                if room > doc_stride:
                    # The longest context that still fits in the windows left.
                    cap = room + (max_windows - planned - 1) * (room - doc_stride)
                else:
                    cap = max_seq_len  # enough to tell whether it must be cut (then it is an error)
                c_tokens = self.count_tokens(item.context, max(cap, 0))
                planned += self._plan_windows(item, q_tokens, c_tokens, max_seq_len, doc_stride)
                if planned > max_windows:
                    raise PayloadTooLarge(
                        f"the request needs more than {max_windows} model windows of {max_seq_len} tokens "
                        f"(limit QA_MAX_WINDOWS_PER_REQUEST={max_windows}); send shorter contexts or fewer "
                        f"items per request"
                    )

        windows: list[list[Window]] = []
        flat_index = 0
        for query, (max_seq_len, doc_stride) in zip(request.queries, lengths):
            pairs = [
                (item.question, item.context) if self.question_first else (item.context, item.question)
                for item in query.items
            ]
            for encoding in self._encode_pairs(pairs, max_seq_len, doc_stride):
                windows.append(self._item_windows(flat_index, encoding))
                flat_index += 1
        made = sum(map(len, windows))
        if made != planned:  # _plan_windows no longer mirrors the tokenizer's overflow rule
            log.warning("planned %d windows, the tokenizer made %d", planned, made)
        return windows

    def _plan_windows(self, item, q_tokens: int, c_tokens: int, max_seq_len: int, doc_stride: int) -> int:
        """Windows this item will need; rejects what the tokenizer cannot cut (it would panic)."""
        for key, count in (("question", q_tokens), ("context", c_tokens)):
            if count == 0:
                raise BadRequest(
                    f"{item.where}.{key} has no tokens left after the tokenizer's normalisation "
                    f"(only control, zero-width or whitespace characters?): send some text"
                )
        # Only the context is ever cut (it is the second sequence when the question comes first).
        if q_tokens + c_tokens + self.pair_special_tokens <= max_seq_len:
            return 1
        budget = max_seq_len - q_tokens - self.pair_special_tokens
        if budget < 1:
            raise BadRequest(
                f"{item.where}.question is too long: its {q_tokens} tokens plus {self.pair_special_tokens} special "
                f"tokens leave no room for the context in max_seq_len={max_seq_len}; shorten the question "
                f"or raise parameters.max_seq_len"
            )
        if doc_stride >= budget:
            raise BadRequest(
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
                    type_ids=enc.type_ids,
                    attention_mask=enc.attention_mask,
                    p_mask=np.array(p_mask),
                    encoding=enc,
                )
            )
        return windows

    # ---- forward ----------------------------------------------------------------------------

    def forward_windows(
        self, windows: Sequence[Window], batch_size: int, deadline: float | None = None
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """(start, end) float32 logits per window, unpadded, in the order given."""
        return self.batcher.submit(windows, deadline, max_windows=batch_size)

    def close(self) -> None:
        """Stop the batcher's thread (requests still queued get a 503)."""
        self.batcher.close()

    def forward_batch(self, chunk: Sequence[Window]) -> tuple[np.ndarray, np.ndarray]:
        """One forward pass, padded to the longest window (or its fixed width): the batcher's lanes call this."""
        width = padded_width(max(len(w.input_ids) for w in chunk), self.width_step, self.max_positions)
        input_ids = np.full((len(chunk), width), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(chunk), width), dtype=np.int64)
        type_ids = np.zeros((len(chunk), width), dtype=np.int64)
        for row, window in enumerate(chunk):
            n = len(window.input_ids)
            input_ids[row, :n] = window.input_ids
            attention_mask[row, :n] = window.attention_mask
            type_ids[row, :n] = window.type_ids
        arrays = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": type_ids}
        return self.backend.forward({name: arrays[name] for name in self.input_names})

    # ---- the whole request ------------------------------------------------------------------

    def predict(self, request: QARequest, settings: Settings | None = None, deadline: float | None = None):
        """Answers in the pipeline's shapes: per query a dict/list, or a list per item if batched.
        `deadline` (time.monotonic()) bounds the wait for the model: past it, a 504."""
        settings = settings or self.settings
        windows = self.windows_for(request, settings.max_windows_per_request)
        flat = [w for item_windows in windows for w in item_windows]
        logits = self.forward_windows(flat, settings.forward_batch_size, deadline)

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

        results = []
        flat_index = 0
        for query in request.queries:
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
            question_first=self.question_first,
        )


def _max_positions(config, tokenizer) -> int:
    """Tokens a window may hold: the model's positions, or the tokenizer's limit if lower."""
    limits = []
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        limits.append(positions)
    tokenizer_max = tokenizer.model_max_length
    if isinstance(tokenizer_max, int) and 0 < tokenizer_max < UNSET_MODEL_MAX_LENGTH:
        limits.append(tokenizer_max)
    return min(limits) if limits else 512


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
