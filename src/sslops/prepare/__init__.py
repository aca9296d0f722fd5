"""The prepare stage and the reader of its output."""

from sslops.prepare.dataset import PreparedData, Split
from sslops.prepare.stage import check_inputs, prepare

__all__ = ["PreparedData", "Split", "check_inputs", "prepare"]
