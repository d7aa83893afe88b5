"""A modality that no train sample of a whole epoch (or of a whole run that ``train.max_steps`` ends
inside its first epoch) holds together with another modality: every step had nothing to learn from it.

A modality absent from the first rows of a split is refused before training
(:mod:`polyalign.core.modality_check`); what only the whole epoch shows (a shard whose members are not
adjacent gives rows holding one modality each; rows skipped with ``on_error: skip``) is tallied here,
from the batches' presence masks.
"""

from __future__ import annotations

from polyalign.core.batch import Batch
from polyalign.core.errors import PolyalignError

from .distributed import mean_across_ranks


class PresenceTally:
    """The modalities present, beside another one, in at least one row of the batches seen (a read of the
    CPU masks: no device wait)."""

    def __init__(self, modalities: list[str]):
        self.modalities = list(modalities)
        self.seen: set[str] = set()
        self.rows = 0

    def add(self, batch: Batch) -> None:
        """Count ``batch``'s rows and the modalities it holds in a row together with another modality."""
        self.rows += len(batch)
        masks = {m: batch.present[m] for m in self.modalities if m in batch.present}
        paired = sum(mask.long() for mask in masks.values()) >= 2  # rows a contrastive loss can learn from
        for m, mask in masks.items():
            if m not in self.seen and bool((mask & paired).any()):
                self.seen.add(m)

    def check(self, source: str, epoch: int) -> None:
        """Refuse to go on when a modality was in no row of the epoch beside another (on any rank)."""
        held = mean_across_ranks({m: float(m in self.seen) for m in self.modalities})
        absent = [m for m in self.modalities if held[m] == 0.0]
        if absent:
            names = ", ".join(map(repr, absent))
            raise PolyalignError(
                f"data ({source}): modality {names} had no value beside another modality's in any of the "
                f"{self.rows} train samples read in epoch {epoch + 1}, so no step had anything to learn from it (a "
                f"contrastive loss learns from rows holding two modalities or more). Check that the data holds it "
                f"in the same rows as the others: for shards, the member extensions under data.modalities and that "
                f"each sample's members are adjacent, regular files named <key>.<extension>.")
