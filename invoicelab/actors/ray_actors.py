"""Ray-side set-up of the stage classes: thread counts from the actor's CPU allocation.

Ray sets ``OMP_NUM_THREADS=1`` in workers, so torch and onnxruntime would use one thread
whatever the actor reserved; these subclasses read the reservation and pass it on.
"""

from __future__ import annotations

import ray

from invoicelab.actors.extractor import Extractor
from invoicelab.actors.pages import PageReader


def assigned_threads() -> int:
    """Whole CPUs reserved by the current actor (at least 1)."""
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, int(cpus))


class ExtractorActor(Extractor):
    """An ``Extractor`` whose model uses as many threads as the actor reserved CPUs."""

    def __init__(self, experiment_json: str, variant_name: str):
        super().__init__(experiment_json, variant_name, num_threads=assigned_threads())


class PageActor(PageReader):
    """A ``PageReader`` whose OCR engine uses as many threads as the actor reserved CPUs."""

    def __init__(self, setting: dict, cache_dir: str | None = None):
        super().__init__(setting, cache_dir, num_threads=assigned_threads())
