"""Shadow tests: a candidate model scored beside the incumbent, read-only, with business KPIs.

The stage is imported on first use so that ``sslops --help`` stays quick.
"""

from typing import Any

__all__ = ["decision_costs", "labels_saved", "labels_to_reach", "shadow"]


def __getattr__(name: str) -> Any:
    if name == "shadow":
        from sslops.shadow.stage import shadow

        return shadow
    if name in ("decision_costs", "labels_saved", "labels_to_reach"):
        from sslops.shadow import kpi

        return getattr(kpi, name)
    raise AttributeError(name)
