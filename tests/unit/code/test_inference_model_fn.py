"""model_fn: what it loads, and what it refuses with a message naming the file and the fix."""

from __future__ import annotations

import json
import shutil

import inference
import pytest
import torch
from safetensors.torch import load_file

from qa.errors import ModelLoadError

ITEM = {
    "question": "Who designed the lighthouse?",
    "context": "The first stone lighthouse, designed by the engineer Matthias Oort, was completed in 1711.",
}


def answer(model, context=None):
    body = json.dumps({"inputs": ITEM, "parameters": {"top_k": 3}}).encode()
    return inference.predict_fn(inference.input_fn(body, "application/json", context), model, context)


@pytest.fixture
def model_copy(qa_model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(qa_model_dir, target)
    return target


def pickle_only(directory):
    torch.save(load_file(directory / "model.safetensors"), directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()
    return directory


def refused(directory, *names, context=None) -> str:
    with pytest.raises(ModelLoadError) as caught:
        inference.model_fn(directory, context)
    for name in names:
        assert name in caught.value.message, f"{name!r} not named in: {caught.value.message}"
    return caught.value.message


def test_loads_a_transformers_4_directory_in_eval_mode(qa_model):
    assert not qa_model.model.training
    assert qa_model.max_positions == 512
    assert qa_model.windows.default_max_seq_len == 384


def test_torch_threads_come_from_settings(qa_model_dir, make_context):
    """When PyTorch runs the model (a graph backend never loads it)."""
    before = torch.get_num_threads()
    try:
        inference.model_fn(qa_model_dir, make_context(inference_threads=2, backend="torch"))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_pickle_weights_are_refused_by_default(model_copy):
    message = refused(
        pickle_only(model_copy), "pytorch_model.bin", "QA_ALLOW_PICKLE_WEIGHTS=true", "safetensors"
    )
    assert "arbitrary code" in message


def test_pickle_weights_load_when_allowed(model_copy, qa_model, make_context):
    context = make_context(
        allow_pickle_weights=True, inference_threads=torch.get_num_threads(), backend="torch"
    )
    model = inference.model_fn(pickle_only(model_copy), context)
    assert answer(model) == answer(qa_model)


def test_pickle_weights_with_code_in_them_are_not_executed(model_copy, make_context, tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    state = load_file(model_copy / "model.safetensors")
    state["payload"] = Payload()
    torch.save(state, model_copy / "pytorch_model.bin")
    (model_copy / "model.safetensors").unlink()
    context = make_context(allow_pickle_weights=True, inference_threads=torch.get_num_threads())
    with pytest.raises(ModelLoadError):
        inference.model_fn(model_copy, context)
    assert not marker.exists()


def test_safetensors_win_over_pickle_when_both_exist(model_copy, qa_model, make_context):
    torch.save({"garbage": torch.zeros(1)}, model_copy / "pytorch_model.bin")
    context = make_context(inference_threads=torch.get_num_threads(), backend="torch")
    assert answer(inference.model_fn(model_copy, context)) == answer(qa_model)


def test_missing_directory(tmp_path):
    refused(tmp_path / "nowhere", "does not exist")


def test_missing_config(model_copy):
    (model_copy / "config.json").unlink()
    refused(model_copy, "config.json", "save_pretrained")


def test_missing_weights(model_copy):
    (model_copy / "model.safetensors").unlink()
    refused(model_copy, "model.safetensors")


def test_missing_tokenizer(model_copy):
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (model_copy / name).unlink()
    refused(model_copy, "tokenizer.json")


def test_weights_without_a_question_answering_head_are_refused(model_copy):
    state = {
        k: v for k, v in load_file(model_copy / "model.safetensors").items() if not k.startswith("qa_outputs")
    }
    from safetensors.torch import save_file

    save_file(state, model_copy / "model.safetensors", metadata={"format": "pt"})
    refused(model_copy, "qa_outputs", "not a trained question-answering model")


def test_the_exporter_refuses_weights_without_a_question_answering_head(model_copy, capsys):
    """Start-up skips the weights when it finds a graph, so no graph of random weights may exist."""
    from safetensors.torch import save_file

    from qa import graphs as qa_graphs

    state = {
        k: v for k, v in load_file(model_copy / "model.safetensors").items() if not k.startswith("qa_outputs")
    }
    save_file(state, model_copy / "model.safetensors", metadata={"format": "pt"})
    assert qa_graphs.main(["export", str(model_copy), "--precision", "fp32"]) == 2
    assert "not a trained question-answering model" in capsys.readouterr().err
    assert not list(model_copy.glob("graphs/qa-*"))


def test_with_its_onnx_graph_found_the_pytorch_weights_are_not_loaded(
    model_copy, make_context, tmp_path, monkeypatch
):
    from transformers import AutoModelForQuestionAnswering

    context = make_context(backend="onnx", run_dir=tmp_path / "run")
    first = answer(inference.model_fn(model_copy, context))  # loads the weights and exports the graph

    def refuse(*args, **kwargs):
        raise AssertionError("the PyTorch weights were loaded although the graph exists")

    monkeypatch.setattr(AutoModelForQuestionAnswering, "from_pretrained", refuse)
    again = inference.model_fn(model_copy, context)
    assert again.model is None and answer(again) == first
    assert again.max_positions == 512 and again.input_names == ["input_ids", "attention_mask"]
    # The torch backend, or a graph for other weights, still loads them.
    with pytest.raises(ModelLoadError, match="weights were loaded"):
        inference.model_fn(model_copy, make_context(backend="torch", run_dir=tmp_path / "run"))
    (model_copy / "config.json").write_text(
        (model_copy / "config.json").read_text().replace("}", ', "extra": 1}', 1)
    )
    with pytest.raises(ModelLoadError, match="weights were loaded"):
        inference.model_fn(model_copy, context)


def test_remote_code_is_never_run(model_copy, tmp_path):
    marker = tmp_path / "remote-code-ran"
    (model_copy / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    config = json.loads((model_copy / "config.json").read_text())
    config["auto_map"] = {"AutoModelForQuestionAnswering": "evil.EvilModel", "AutoConfig": "evil.EvilConfig"}
    (model_copy / "config.json").write_text(json.dumps(config))
    try:
        inference.model_fn(model_copy)
    except ModelLoadError:
        pass
    assert not marker.exists()


@pytest.mark.parametrize("backend, kept", [("onnx", False), ("openvino", False), ("torch", True)])
def test_the_pytorch_module_is_released_when_onnx_runs_the_model(
    qa_model_dir, make_context, tmp_path, monkeypatch, backend, kept
):
    """A graph runtime holds its own copy of the weights: the PyTorch module must not stay resident
    beside it, and the heap it (and an int8 quantization) used goes back to the OS (a full-size
    int8 worker: 1310 MB resident before, 616 MB after)."""
    import weakref

    from qa import loading as qa_model

    modules, trims = [], []
    create_backend = qa_model.create_backend

    def recording(*args, model, **kwargs):
        modules.append(weakref.ref(model))
        return create_backend(*args, model=model, **kwargs)

    monkeypatch.setattr(qa_model, "create_backend", recording)
    monkeypatch.setattr(qa_model, "_return_free_heap_to_os", lambda: trims.append(modules[0]() is None))
    loaded = inference.model_fn(qa_model_dir, make_context(backend=backend, run_dir=tmp_path))
    assert len(modules) == 1
    assert (modules[0]() is not None) == kept
    assert trims == ([] if kept else [True]), "the heap is trimmed once, after the module is gone"
    assert answer(loaded)  # and it still answers
