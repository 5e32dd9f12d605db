"""Score whole archives: ``chestdx batch`` (a front end: only ``chestdx.cli`` imports it)."""

from chestdx.batch.discover import BatchItem, discover_studies
from chestdx.batch.run import BatchSummary, run_batch

__all__ = ["BatchItem", "BatchSummary", "discover_studies", "run_batch"]
