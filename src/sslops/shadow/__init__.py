"""Shadow tests: a candidate model scored beside the incumbent, read-only, with business KPIs."""

from sslops.shadow.kpi import decision_costs, labels_saved, labels_to_reach
from sslops.shadow.stage import shadow

__all__ = ["decision_costs", "labels_saved", "labels_to_reach", "shadow"]
