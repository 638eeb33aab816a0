"""The parts of the Hugging Face inference toolkit (sagemaker-huggingface-inference-toolkit 2.6.0)
that users' inference.py scripts import: `decoder_encoder` and `content_types`, behaving as the
toolkit's. Written here because the real package pins audio libraries that need numpy < 2. A
real installation (a user's requirements.txt) comes first on sys.path and wins."""
