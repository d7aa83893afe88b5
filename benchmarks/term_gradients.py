"""The gradient each term of a trained [clip, symile] run sends to the embeddings, at its start and end.

    python benchmarks/term_gradients.py RUN_DIR [RUN_DIR ...]

For one batch of the run's training split (``train.batch_size`` rows, the first ones), with a
model freshly built from the run's recipe and seed (untrained; its initial weights need not be
bit-identical to the run's) and as trained (its last checkpoint): each
term's loss on its own block and the norm of that loss's gradient with respect to the embeddings of
every modality together. With a space per term, this is what each term pulls the shared encoders
with; ``model.balance: gradients`` makes the two equal (docs/choosing-an-objective.md).
"""

from __future__ import annotations

import sys

import torch

import polyalign
from polyalign.core.assemble import assemble
from polyalign.core.loss import WeightedLoss


def term_gradients(loss: WeightedLoss, embeddings: dict[str, torch.Tensor]) -> dict[str, tuple[float, float]]:
    """{term: (its loss, the norm of its gradient at the embeddings)} on one batch of embeddings."""
    z = {m: e.detach().requires_grad_(True) for m, e in embeddings.items()}
    out = {}
    for name, term in loss.terms.items():
        value = term(loss._slice(z, loss._blocks(name)[0])).loss
        grads = torch.autograd.grad(value, list(z.values()))
        out[name] = (value.item(), torch.sqrt(sum((g ** 2).sum() for g in grads)).item())
    return out


def main() -> None:
    torch.set_num_threads(1)
    for path in sys.argv[1:]:
        trained = polyalign.load(path, device="cpu")
        recipe = trained.recipe
        torch.manual_seed(recipe.seed)
        parts = assemble(recipe)
        rows = list(parts.samples("train"))[:recipe.train.batch_size]
        root = getattr(parts.dataset, "root", None)
        print(path)
        for label, model in (("before training", parts.model), ("trained", trained.parts.model)):
            with torch.no_grad():
                z = {m: model.embed_values(m, [r[m] for r in rows], root, torch.device("cpu"))
                     for m in trained.modalities}
            grads = term_gradients(trained.parts.loss, z)
            ratio = grads["symile"][1] / grads["clip"][1] if {"clip", "symile"} <= set(grads) else float("nan")
            cells = ", ".join(f"{k}: loss {v[0]:.3f}, gradient {v[1]:.4f}" for k, v in grads.items())
            print(f"  {label:15s} {cells}  (symile / clip {ratio:.1f}x)")


if __name__ == "__main__":
    main()
