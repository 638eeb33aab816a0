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
logits of shape (batch, width); `alone` says no other pass runs or waits, nor did lately (OpenVINO's adaptive plan
then gives the pass all the threads; the others ignore it). `backend.batching` says which windows may share a pass without changing a
window's logits (beyond float rounding): any (ANY_WIDTH), only windows padded to the same width
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


# ---- ONNX Runtime ---------------------------------------------------------------------------


class OnnxBackend:
    """An ONNX Runtime session; re-created in a forked child (ORT sessions do not survive fork)."""

    def __init__(self, path: Path, precision: str, threads: int):
        self.path = Path(path)
        # Dynamic int8 quantizes activations with one scale per tensor, so a window's logits
        # would shift with the windows (and padding) it shares a pass with: under load, the same
        # request could get another answer. int8 therefore runs one window per pass.
        self.batching = ALONE if precision == "int8" else ANY_WIDTH
        self.name = f"onnx-{precision}"
        self.threads = threads
        self._pid: int | None = None
        self._session: Any = None
        self._session_for_this_process()

    def _session_for_this_process(self):
        if self._pid != os.getpid():
            import onnxruntime as ort

            if self._session is not None:
                # Made before a fork (QA_PRELOAD): destroying it here would join intra-op
                # threads that only exist in the parent, which hangs. Keep it, unused, for good.
                ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._session))

            options = ort.SessionOptions()
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # Workers share few CPUs: idle pool threads must sleep, not spin.
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            # The arena reuses activation buffers within a run (without it, int8 at one window ran
            # 10-20% slower on an AVX2 CPU); shrinking it after each run gives the memory back, which
            # it would otherwise keep at the largest batch's size (+670 MB after 16 x 384 tokens).
            options.enable_cpu_mem_arena = True
            self._run_options = ort.RunOptions()
            self._run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
            self._session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            self.input_names = [i.name for i in self._session.get_inputs()]
            self._pid = os.getpid()
        return self._session

    def forward(self, inputs: Mapping[str, np.ndarray], alone: bool = False) -> tuple[np.ndarray, np.ndarray]:
        session = self._session_for_this_process()
        feed = {name: inputs[name] for name in self.input_names}
        start, end = session.run(list(OUTPUT_NAMES), feed, self._run_options)
        return start.astype(np.float32, copy=False), end.astype(np.float32, copy=False)


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
        self._lone: _Layout | None = None  # 1 stream of all the threads (adaptive only)
        self._side_by_side: _Layout | None = None  # `streams` streams
        self._graph: Any = None  # the graph as read, for both layouts (adaptive only)
        self._first_feed: Mapping[str, np.ndarray] | None = None
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
        return _Layout(core.compile_model(graph, "CPU", self.config(streams)), streams)

    def _for_this_process(self) -> None:
        if self._pid == os.getpid():
            return
        for made in (self._lone, self._side_by_side):
            if made is not None:
                # Made before a fork (QA_PRELOAD): its threads exist only in the parent; keep it,
                # unused, rather than let its destructor wait for them.
                ctypes.pythonapi.Py_IncRef(ctypes.py_object(made.compiled))
        self._graph = None  # read again in a forked child, as the compiled models are
        self._lone = self._compile(1) if self.adaptive else None
        self._side_by_side = None if self.adaptive else self._compile(self.streams)
        first = self._lone or self._side_by_side
        assert first is not None
        self._compiled = first.compiled
        self.input_names = [port.get_any_name() for port in first.compiled.inputs]
        self._cond = threading.Condition()
        self._free = self.streams
        self._side_by_side_started = not self.adaptive
        self._pid = os.getpid()

    def _compile_side_by_side(self) -> None:
        made = self._compile(self.streams)
        if self._first_feed is not None:  # its first pass plans and allocates: not on a request's time
            made.infer(self._first_feed)
        with self._cond:
            self._side_by_side = made
            self._cond.notify_all()

    def _enter(self, alone: bool) -> _Layout:
        """Wait for threads to run a pass on, and take them: all of them on the one-stream model
        for a lone pass (or while the streams' model is being made), one stream's share for a
        pass that overlaps others."""
        with self._cond:
            if not alone and not self._side_by_side_started:
                self._side_by_side_started = True
                # Not a daemon: a process that exits meanwhile waits for it (OpenVINO aborts the
                # process if its compiler is cut off at exit).
                threading.Thread(target=self._compile_side_by_side, name="openvino-compile").start()
            while True:
                side = self._side_by_side
                if self._lone is not None and self._free == self.streams and (side is None or alone):
                    self._free = 0
                    return self._lone
                if side is not None and self._free > 0:
                    self._free -= 1
                    return side
                self._cond.wait()

    def _leave(self, layout: _Layout) -> None:
        with self._cond:
            self._free += self.streams if layout is self._lone else 1
            self._cond.notify_all()

    def forward(self, inputs: Mapping[str, np.ndarray], alone: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """One pass. `alone`: no other pass is running or ready, nor was lately (the batcher knows), so this one
        may have all the threads."""
        self._for_this_process()
        feed = {name: inputs[name] for name in self.input_names}
        if self._first_feed is None:  # the warm-up's: it warms up the streams' model when made
            self._first_feed = feed
        layout = self._enter(alone)
        try:
            return layout.infer(feed)
        finally:
            self._leave(layout)


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
        made = OnnxBackend(graph, precision, threads)
    elif backend == "openvino":
        made = OpenVinoBackend(graph, precision, threads, streams=lanes, adaptive=adaptive)
    else:
        raise BackendError(f"unknown backend {backend!r}")
    made.forward(warmup(made.input_names))
    return made
