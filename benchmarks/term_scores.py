"""Top-1 accuracy of a trained [clip, symile] run scored with each term alone and with the sum.

    python benchmarks/term_scores.py RUN_DIR [RUN_DIR ...]

For each ``zero_shot`` evaluation of the run's recipe (target from its query modalities, a
candidate of the query's label counting as right where the evaluation says ``match: label``,
else its own row), on the test split: the accuracy of the weighted sum of the terms' logits
(what the run reports), of each term's logits alone, which tells whether a combination loses
accuracy in training (every score lower) or in the sum (one term alone better than the sum).
"""

from __future__ import annotations

import sys

import torch

import polyalign
from polyalign.core.assemble import assemble
from polyalign.core.loss import WeightedLoss, score_candidates


def main() -> None:
    for path in sys.argv[1:]:
        model = polyalign.load(path, device="cpu")
        recipe = polyalign.load_recipe(f"{path}/recipe.yaml")
        parts = assemble(recipe)
        test = list(parts.samples("test"))
        root = parts.dataset.root
        z = model.embed({m: [s[m] for s in test] for m in model.modalities}, root=root)
        labels = torch.tensor([s.get("label", i) for i, s in enumerate(test)])
        loss = model.loss
        assert isinstance(loss, WeightedLoss)
        rows = {"sum": [], **{k: [] for k in loss.scoring_terms()}}
        for ev in recipe.eval:
            opts = ev.options()
            if ev.plugin != "zero_shot":
                continue
            target = opts["target"]
            query = opts.get("query") or [m for m in model.modalities if m != target]
            by_label = opts.get("match") == "label"
            q, c = {m: z[m] for m in query}, z[target]
            scores = {"sum": score_candidates(loss, q, {target: c}, "sum")}
            for k, t in loss.scoring_terms().items():
                b = loss._blocks(k)[0]
                scores[k] = score_candidates(t, loss._slice(q, b), loss._slice({target: c}, b), k)
            for k, sc in scores.items():
                best = sc.argmax(1)
                hit = labels[best] == labels if by_label else best == torch.arange(len(test))
                rows[k].append(float(hit.float().mean()))
        print(path, {k: round(sum(v) / len(v), 3) for k, v in rows.items()})


if __name__ == "__main__":
    main()
