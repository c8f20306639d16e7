"""runstream.consumer: reading runs and following them live.

Readers of the records the collector writes: ``get_metrics``, live subscriptions,
``wait_for_completion``, the ``tail`` CLI and the server.  It imports the contract
from ``runstream`` and the record layout from ``runstream.collector``.
"""

__all__: list[str] = []
