"""Self-supervised objectives, one file each: views/masking plus a pure loss function."""

from sslops.objectives.scarf import info_nce, scarf_corrupt

__all__ = ["info_nce", "scarf_corrupt"]
