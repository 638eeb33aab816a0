"""Benchmark harness: ours vs the Hugging Face inference container's stack (python -m bench.run)."""
