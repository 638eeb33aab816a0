"""CloudWatch embedded metric format: one JSON line on stdout that SageMaker's log group turns
into metrics (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html).
Standard library only: the multi-model launcher imports it too."""

from __future__ import annotations

import json
import time


def emf_line(
    namespace: str,
    dimensions: dict[str, str],
    metrics: dict[str, tuple[float, str]],
    properties: dict | None = None,
) -> str:
    """One record: `metrics` is {name: (value, unit)}, `dimensions` {name: value} (one dimension
    set), `properties` are logged beside them and are no metric."""
    directive = {
        "Namespace": namespace,
        "Dimensions": [list(dimensions)],
        "Metrics": [{"Name": name, "Unit": unit} for name, (_, unit) in metrics.items()],
    }
    record = {
        "_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [directive]},
        **dimensions,
        **(properties or {}),
        **{name: value for name, (value, _) in metrics.items()},
    }
    return json.dumps(record)
