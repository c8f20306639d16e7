"""runstream.collector: folds the ingest streams into run records, exactly once.

Reads the ingest shards with consumer groups and applies each batch to its run's
record with one Lua script per batch.  It imports the wire contract from
``runstream`` (:mod:`runstream.codec`, :mod:`runstream.keys`) and nothing downstream.
"""

__all__: list[str] = []
