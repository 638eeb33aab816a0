"""Inference backends: the model's forward pass on padded int64 arrays.

    torch    + fp32       the transformers model as loaded (the reference)
    torch    + bf16       the same under torch.autocast("cpu", bfloat16); logits upcast to float32
    onnx     + fp32       ONNX Runtime on the fp32 graph (qa/graphs.py)
    onnx     + int8       ONNX Runtime on the dynamically quantized graph
    openvino + fp32       OpenVINO on the fp32 graph, f32 kernels
    openvino + bf16       OpenVINO on the fp32 graph, bf16 kernels (native on avx512_bf16 / AMX)
    openvino + int8       OpenVINO on the statically quantized graph (NNCF)

`backend.input_names` are the inputs the model takes (its forward signature, or its graph's);
`backend.forward({"input_ids": ..., "attention_mask": ...}, alone=...)` returns float32 (start, end)
logits of shape (batch, width). `alone` says no other pass runs or waits, nor did lately: the
adaptive plans of OpenVINO and ONNX Runtime then give the pass all the threads (`_Gate`); torch
ignores it. `backend.batching` says which windows may share a pass without changing a window's
logits (beyond float rounding): any (ANY_WIDTH), only windows padded to the same width
(SAME_WIDTH), or none (ALONE). Which backend serves which precision on which CPU: qa/plan.py.
"""

from __future__ import annotations

import ctypes
import inspect
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

OUTPUT_NAMES = ("start_logits", "end_logits")
# The inputs a QA model may take, fed whenever its forward pass (or graph) takes them.
FORWARD_INPUTS = ("input_ids", "attention_mask", "token_type_ids")

ANY_WIDTH = "any width"  # padding a window changes its logits by float rounding only (< 1e-5)
# Reduced precision rounds: a window padded to another width gets other logits (measured: up to
# 3e-2 for OpenVINO int8, 1e-2 for bf16), but at one width it gets the same, bit for bit, alone or
# beside any other windows. Such windows are padded to a multiple of WIDTH_STEP, whatever the batch.
SAME_WIDTH = "same width"
ALONE = "alone"  # one window per pass
WIDTH_STEP = 16


class BackendError(RuntimeError):
    """The backend cannot be built (bad combination, failed export); the message says why."""


# ---- PyTorch --------------------------------------------------------------------------------


class TorchBackend:
    batching = ANY_WIDTH

    def __init__(self, model, precision: str):
        import torch  # here: the graph backends serve without it

        self._torch = torch
        self.model = model
        self.name = f"torch-{precision}"
        self.autocast = precision == "bf16"
        accepted = inspect.signature(model.forward).parameters
        self.input_names = [name for name in FORWARD_INPUTS if name in accepted]
        self._use_cache_arg = "use_cache" in accepted

    def forward(self, inputs: Mapping[str, np.ndarray], alone: bool = False) -> tuple[np.ndarray, np.ndarray]:
        torch = self._torch
        tensors = {name: torch.from_numpy(array) for name, array in inputs.items()}
        if self._use_cache_arg:
            tensors["use_cache"] = False
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            output = self.model(**tensors)
        # The pipeline upcast bfloat16 logits; float32 is what decoding works in.
        return output[0].float().numpy().copy(), output[1].float().numpy().copy()


class _Gate:
    """The adaptive plan's two forms of one model in a worker: `lone`, all the threads for a pass
    that runs alone, and `side`, `shares` passes side by side on a share of the threads each, made
    by `make_side()` in the background the first time passes overlap (until then overlapping
    passes take turns on `lone`), and given `first_feed` for its first pass, which plans and
    allocates: not on a request's time. Shares in use are counted: whichever form runs, no more
    threads are busy than the worker's."""

    def __init__(self, lone, make_side: Callable[[], Any], shares: int):
        self.lone, self.side, self.shares = lone, None, shares
        self._make_side = make_side
        self.first_feed: Mapping[str, np.ndarray] | None = None
        self.free = shares
        self._started = False
        self._cond = threading.Condition()

    def _make(self, run: Callable[[Any, Mapping[str, np.ndarray]], object]) -> None:
        made = self._make_side()
        if self.first_feed is not None:
            run(made, self.first_feed)
        with self._cond:
            self.side = made
            self._cond.notify_all()

    def enter(self, alone: bool, run: Callable[[Any, Mapping[str, np.ndarray]], object]):
        """Wait for threads to run a pass on, and take them: all of them on `lone` for a lone
        pass (or while `side` is being made), one share on `side` for a pass that overlaps."""
        with self._cond:
            if not alone and not self._started:
                self._started = True
                # Not a daemon: a process that exits meanwhile waits for it (OpenVINO aborts the
                # process if its compiler is cut off at exit).
                threading.Thread(target=self._make, args=(run,), name="qa-side-by-side").start()
            while True:
                if self.free == self.shares and (self.side is None or alone):
                    self.free = 0
                    return self.lone
                if self.side is not None and self.free > 0:
                    self.free -= 1
                    return self.side
                self._cond.wait()

    def leave(self, used) -> None:
        with self._cond:
            self.free += self.shares if used is self.lone else 1
            self._cond.notify_all()

    def run(
        self, feed: Mapping[str, np.ndarray], alone: bool, run: Callable[[Any, Mapping[str, np.ndarray]], Any]
    ):
        """`run(form, feed)` on the form this pass may take."""
        if self.first_feed is None:  # the warm-up's
            self.first_feed = feed
        form = self.enter(alone, run)
        try:
            return run(form, feed)
        finally:
            self.leave(form)


# ---- ONNX Runtime ---------------------------------------------------------------------------


class OnnxBackend:
    """An ONNX Runtime session; re-created in a forked child (ORT sessions do not survive fork).
    Adaptive (`adaptive=True`, lanes > 1): a pass that runs alone gets a session of all the
    threads, and passes that overlap share a second session of `threads // lanes` threads each
    (concurrent runs of one session are safe), made the first time passes overlap. Fixed, every
    lane runs on one session of all the threads."""

    def __init__(self, path: Path, precision: str, threads: int, lanes: int = 1, adaptive: bool = False):
        self.path = Path(path)
        # Dynamic int8 quantizes activations with one scale per tensor, so a window's logits
        # would shift with the windows (and padding) it shares a pass with: under load, the same
        # request could get another answer. int8 therefore runs one window per pass.
        self.batching = ALONE if precision == "int8" else ANY_WIDTH
        self.name = f"onnx-{precision}"
        self.threads, self.lanes = threads, lanes
        self.adaptive = adaptive and lanes > 1 and threads > 1
        self._pid: int | None = None
        self._sessions: list[Any] = []
        self._for_this_process()

    def _session(self, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Workers share few CPUs: idle pool threads must sleep, not spin.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # The arena reuses activation buffers within a run (without it, int8 at one window ran
        # 10-20% slower on an AVX2 CPU); shrinking it after each run gives the memory back, which
        # it would otherwise keep at the largest batch's size (+670 MB after 16 x 384 tokens).
        options.enable_cpu_mem_arena = True
        session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self._sessions.append(session)
        return session

    def _for_this_process(self) -> None:
        if self._pid == os.getpid():
            return
        import onnxruntime as ort

        for made in self._sessions:
            # Made before a fork (QA_PRELOAD): destroying it here would join intra-op threads
            # that only exist in the parent, which hangs. Keep it, unused, for good.
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(made))
        self._sessions = []
        self._run_options = ort.RunOptions()
        self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        first = self._session(self.threads)
        self.input_names = [i.name for i in first.get_inputs()]
        if self.adaptive:
            side_threads = max(1, self.threads // self.lanes)
            self._gate: _Gate | None = _Gate(first, lambda: self._session(side_threads), self.lanes)
        else:
            self._gate, self._fixed = None, first
        self._pid = os.getpid()

    def forward(self, inputs: Mapping[str, np.ndarray], alone: bool = False) -> tuple[np.ndarray, np.ndarray]:
        self._for_this_process()
        feed = {name: inputs[name] for name in self.input_names}
        if self._gate is None:
            start, end = self._run(self._fixed, feed)
        else:
            start, end = self._gate.run(feed, alone, self._run)
        return start.astype(np.float32, copy=False), end.astype(np.float32, copy=False)

    def _run(self, session, feed: Mapping[str, np.ndarray]):
        return session.run(list(OUTPUT_NAMES), feed, self._run_options)


# ---- OpenVINO -------------------------------------------------------------------------------


class _Layout:
    """One compiled model of the graph: `streams` streams sharing `threads` threads."""

    def __init__(self, compiled, streams: int):
        self.compiled, self.streams = compiled, streams
        self.outputs = [compiled.output(name) for name in OUTPUT_NAMES]
        self.local = threading.local()  # one infer request per lane thread: they are not thread-safe

    def infer(self, feed: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        request = getattr(self.local, "request", None)
        if request is None:
            request = self.local.request = self.compiled.create_infer_request()
        results = request.infer(feed)
        # Copies: the request reuses its output buffers on the next pass.
        start, end = (np.array(results[port], dtype=np.float32) for port in self.outputs)
        return start, end


class OpenVinoBackend:
    """An OpenVINO CPU model, compiled again in a forked child (its thread pool does not survive
    fork). `streams` streams run passes side by side, the worker's `threads` shared out between
    them. Adaptive (`adaptive=True`, streams > 1): a pass that runs alone gets all the threads on
    a compiled model of one stream (int8 on 2 threads: a 192-token window in 16 ms instead of 29),
    and passes that overlap run on a second one, of `streams` streams, compiled the first time
    passes overlap: a worker that never sees two at once never holds its memory (stand-in: int8
    93 MiB, bf16 185 MiB). Either way no more threads are busy than `threads`, and a window's
    logits are the same bit for bit on either model (tests)."""

    def __init__(self, path: Path, precision: str, threads: int, streams: int = 1, adaptive: bool = False):
        self.path = Path(path)
        self.name = f"openvino-{precision}"
        self.precision = precision
        self.threads, self.streams = threads, streams
        self.adaptive = adaptive and streams > 1 and threads > 1
        self.batching = ANY_WIDTH if precision == "fp32" else SAME_WIDTH
        self._pid: int | None = None
        # Compiled in this process (adaptive: 1 stream of all the threads, then `streams` streams).
        self._layouts: list[_Layout] = []
        self._graph: Any = None  # the graph as read, for both layouts (adaptive only)
        self._for_this_process()

    def config(self, streams: int | None = None) -> dict[str, object]:
        return {
            # OpenVINO's own default is bf16 on CPUs that have it: fp32 and int8 ask for f32.
            "INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
            # The CPU plugin quantizes activations per pass by default, which makes a window's
            # logits depend on its batch (1.6e-2 alone vs batched); static int8 has fixed scales.
            "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
            "INFERENCE_NUM_THREADS": self.threads,
            "NUM_STREAMS": self.streams if streams is None else streams,
            # Workers share the CPUs: no worker may pin its threads to cores the others use.
            "ENABLE_CPU_PINNING": False,
        }

    def _compile(self, streams: int) -> _Layout:
        import openvino as ov

        core = ov.Core()
        if self.adaptive and self._graph is None:
            # Both layouts compiled from one read of the graph share its constants: the second
            # then adds 185 MiB for the stand-in in bf16, not 600 (int8: 93 MiB either way).
            self._graph = core.read_model(str(self.path))
        graph = self._graph if self.adaptive else str(self.path)
        layout = _Layout(core.compile_model(graph, "CPU", self.config(streams)), streams)
        self._layouts.append(layout)
        return layout

    def _for_this_process(self) -> None:
        if self._pid == os.getpid():
            return
        for made in self._layouts:
            # Made before a fork (QA_PRELOAD): its threads exist only in the parent; keep it,
            # unused, rather than let its destructor wait for them.
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(made.compiled))
        self._layouts = []
        self._graph = None  # read again in a forked child, as the compiled models are
        first = self._compile(1 if self.adaptive else self.streams)
        self._compiled = first.compiled
        self.input_names = [port.get_any_name() for port in first.compiled.inputs]
        if self.adaptive:
            self._gate: _Gate | None = _Gate(first, lambda: self._compile(self.streams), self.streams)
        else:
            self._gate, self._fixed = None, first
        self._pid = os.getpid()

    def forward(self, inputs: Mapping[str, np.ndarray], alone: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """One pass. `alone`: no other pass is running or ready, nor was lately (the batcher
        knows), so this one may have all the threads."""
        self._for_this_process()
        feed = {name: inputs[name] for name in self.input_names}
        if self._gate is None:
            return self._fixed.infer(feed)
        return self._gate.run(feed, alone, _Layout.infer)


def create_backend(
    backend: str,
    precision: str,
    threads: int,
    *,
    warmup: Callable[[Sequence[str]], Mapping[str, np.ndarray]],
    model=None,
    graph: Path | None = None,
    lanes: int = 1,
    adaptive: bool = False,
):
    """The backend, warmed up with one forward pass of `warmup(input_names)` (the runtimes
    allocate and plan on the first run). torch needs `model`; the others their `graph`."""
    made: TorchBackend | OnnxBackend | OpenVinoBackend
    if backend == "torch":
        made = TorchBackend(model, precision)
    elif graph is None:
        raise BackendError(f"the {backend} backend needs a graph (qa/graphs.py)")
    elif backend == "onnx":
        made = OnnxBackend(graph, precision, threads, lanes=lanes, adaptive=adaptive)
    elif backend == "openvino":
        made = OpenVinoBackend(graph, precision, threads, streams=lanes, adaptive=adaptive)
    else:
        raise BackendError(f"unknown backend {backend!r}")
    made.forward(warmup(made.input_names))
    return made
