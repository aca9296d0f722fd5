"""Data readers, canonicalization, deduplication, splits, feature encoding and data cards."""
