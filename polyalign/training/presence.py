"""A modality that no train sample of a whole epoch (or of a whole run that ``train.max_steps`` ends
inside its first epoch) holds: every step had nothing to learn from it.

A manifest that never names a modality is refused when it is read (``data.modalities``); streamed
shards are only known once read, so the trainer tallies which modalities each epoch's batches held.
"""

from __future__ import annotations

from polyalign.core.batch import Batch
from polyalign.core.errors import PolyalignError

from .distributed import mean_across_ranks


class PresenceTally:
    """The modalities present in at least one row of the batches seen (a CPU mask read: no device wait)."""

    def __init__(self, modalities: list[str]):
        self.modalities = list(modalities)
        self.seen: set[str] = set()
        self.rows = 0

    def add(self, batch: Batch) -> None:
        """Count ``batch``'s rows and the modalities it holds."""
        self.rows += len(batch)
        for m in self.modalities:
            if m not in self.seen and m in batch.present and bool(batch.present[m].any()):
                self.seen.add(m)

    def check(self, source: str, epoch: int) -> None:
        """Refuse to go on when a modality was absent from every row of the epoch (on every rank)."""
        held = mean_across_ranks({m: float(m in self.seen) for m in self.modalities})
        absent = [m for m in self.modalities if held[m] == 0.0]
        if absent:
            names = ", ".join(map(repr, absent))
            raise PolyalignError(
                f"data ({source}): modality {names} had no value in any of the {self.rows} train samples read in "
                f"epoch {epoch + 1}, so no step had anything to learn from it. Check that the data holds it: for "
                f"shards, the member extensions under data.modalities and that each sample's members are adjacent, "
                f"regular files named <key>.<extension> (`polyalign validate --check-data RECIPE` shows what the "
                f"first rows hold).")
