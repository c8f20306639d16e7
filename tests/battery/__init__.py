"""The reliability battery: faults injected into the whole pipeline at once (``pytest -m battery``)."""
