"""Finds the model to serve: the mounted model dir, else a Hub download, else the baked-in model.

Order (docs/contract.md#lifecycle): `settings.model_dir` (SageMaker's /opt/ml/model) when it holds model
files; else `HF_MODEL_ID` at `HF_MODEL_REVISION`, downloaded once at start-up into the run dir;
else `settings.baked_model_dir`; else a start-up error that says how to provide a model.
The entrypoint resolves with `download=True`; workers resolve again with `download=False` and
land on the same directory without touching the network.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from serving.settings import Settings

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".download-complete"


class ModelSourceError(Exception):
    """No model can be found or fetched; the message says what was tried and how to fix it."""


def holds_model(directory: Path) -> bool:
    """True if the directory has files besides `code/` (a model.tar.gz may ship only code)."""
    if not directory.is_dir():
        return False
    return any(p.name != "code" and not p.name.startswith(".") for p in directory.iterdir())


def hub_download_dir(settings: Settings) -> Path:
    assert settings.hf_model_id is not None
    safe_id = re.sub(r"[^A-Za-z0-9._-]+", "--", settings.hf_model_id)
    return settings.run_dir / "hub" / safe_id / (settings.hf_model_revision or "main")


def _download(settings: Settings, target: Path) -> None:
    from huggingface_hub import snapshot_download
    from tqdm import tqdm  # plain tqdm: transformers' disable_progress_bar() must not hide these lines

    class LoggedProgress(tqdm):
        """Progress as log lines every few seconds (a download counts against the health check)."""

        def __init__(self, *args, **kwargs):
            kwargs.update(mininterval=5.0, disable=False)
            super().__init__(*args, **kwargs)

        def display(self, msg=None, pos=None):
            log.info("downloading %s: %s", settings.hf_model_id, self.format_meter(**self.format_dict))
            return True

    revision = settings.hf_model_revision or "main"
    log.info("downloading HF_MODEL_ID=%s at revision %s into %s", settings.hf_model_id, revision, target)
    started = time.monotonic()
    try:
        snapshot_download(
            settings.hf_model_id,
            revision=revision,
            local_dir=target,
            token=settings.hf_token,
            tqdm_class=LoggedProgress,
        )
    except Exception as exc:
        raise ModelSourceError(
            f"could not download HF_MODEL_ID={settings.hf_model_id} at revision {revision}: "
            f"{type(exc).__name__}: {exc} (check the id, the revision, HF_TOKEN for private models, and network access)"
        ) from exc
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())
    (target / COMPLETE_MARKER).write_text(revision)
    log.info(
        "downloaded %s (%.1f MB) in %.1f s", settings.hf_model_id, size / 1e6, time.monotonic() - started
    )


def resolve_model(settings: Settings, *, download: bool = True) -> Path:
    if holds_model(settings.model_dir):
        log.info("serving the model in %s", settings.model_dir)
        return settings.model_dir
    if settings.hf_model_id:
        target = hub_download_dir(settings)
        if not (target / COMPLETE_MARKER).is_file():
            if not download:
                raise ModelSourceError(
                    f"the download of HF_MODEL_ID={settings.hf_model_id} into {target} is not complete"
                )
            target.mkdir(parents=True, exist_ok=True)
            _download(settings, target)
        log.info("serving HF_MODEL_ID=%s from %s", settings.hf_model_id, target)
        return target
    if holds_model(settings.baked_model_dir):
        log.info("serving the model baked into the image at %s", settings.baked_model_dir)
        return settings.baked_model_dir
    raise ModelSourceError(
        f"no model to serve: {settings.model_dir} holds no model files, HF_MODEL_ID is not set, and no model "
        f"is baked in at {settings.baked_model_dir}. Provide one: mount it at {settings.model_dir} "
        f"(SageMaker: ModelDataUrl), set HF_MODEL_ID, or build the image with --model"
    )
