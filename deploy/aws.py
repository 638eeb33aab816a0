"""AWS clients from the standard configuration (deploy.errors words their failures)."""

from __future__ import annotations

import boto3
from botocore.config import Config


class Clients:
    """Lazily built, cached boto3 clients sharing one session (profile and region)."""

    def __init__(self, profile: str | None = None, region: str | None = None):
        self._session = boto3.Session(profile_name=profile, region_name=region)
        # Standard retry mode backs off on throttling, which SageMaker control-plane calls hit.
        self._config = Config(retries={"mode": "standard", "max_attempts": 5})
        self._cache: dict[str, object] = {}

    def __call__(self, service: str):
        if service not in self._cache:
            self._cache[service] = self._session.client(service, config=self._config)
        return self._cache[service]
