"""invoicelab: which model, quantization, prompt and batch size extract invoice fields best.

Importing the package loads nothing heavy (no Ray, pandas or models); ``load`` imports its module on call.
"""

from __future__ import annotations

from typing import Any


def load(*args: Any, **kwargs: Any) -> Any:
    """A run's results as a pandas (or polars) frame: ``invoicelab.load("runs/quickstart")``.

    The arguments and the documented columns are those of ``invoicelab.loading.load``.
    """
    from invoicelab.loading import load as _load

    return _load(*args, **kwargs)
