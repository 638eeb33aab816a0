"""Extractive question answering, with no web layer: parse a request (request.py), cut it into
model windows (windows.py), run them in batches (batcher.py) on a backend (backends.py) chosen for
this CPU (plan.py), decode answer spans (spans.py) and encode the response (response.py).

`loading.load_model(model_dir, QAOptions(...))` gives a `QAModel`; `code/inference.py` wires these
into SageMaker's four hooks. Errors are `qa.errors` types: the serving layer maps them to HTTP.
"""
