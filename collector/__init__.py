"""runstream.collector: folds the ingest streams into run records, exactly once.

Reads the ingest shards with consumer groups and applies each batch to its run's
record with one Lua script per batch (:mod:`.service`); the folding itself is pure
(:mod:`.aggregate`) and the record layout is documented in :mod:`.records`.  It
imports the wire contract from ``runstream`` and nothing downstream.
"""

from runstream.collector.service import Collector, CollectorSettings, CollectorStats

__all__ = ["Collector", "CollectorSettings", "CollectorStats"]
