"""What a shared embedding space does to [clip, symile]: geometry of the space Symile scores in.

    python benchmarks/spaces_diagnostics.py RUN_DIR [RUN_DIR ...]

For each trained run of a recipe whose loss is [clip, symile] on three modalities (a, b, c of the
XOR sets), on its test split: the mean cosine of a tuple's embeddings pair by pair in Symile's
space (its block with model.spaces: per_term, the whole embedding with shared), how much of the
product a ⊙ c is the same for every tuple (the cosine of a tuple's product to the mean product:
1 when z_a ≈ z_c makes the product a squared, nearly constant vector), Symile's score margin
(positive MIP minus the mean MIP of the other b of the split), and the cosine between the two
terms' gradients on the shared embedding (negative = the terms pull against each other).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

import polyalign


def main() -> None:
    for path in sys.argv[1:]:
        model = polyalign.load(path, device="cpu")
        parts = model.parts
        data = polyalign.load_recipe(f"{path}/recipe.yaml")
        from polyalign.core.assemble import assemble
        test = assemble(data).dataset.split("test")
        names = model.modalities
        z = model.embed({m: [s[m] for s in test] for m in names})
        loss = model.loss
        block = loss._blocks("symile")[0] if hasattr(loss, "_blocks") else 0
        zs = {m: v.double() for m, v in loss._slice(z, block).items()}
        zc = {m: v.double() for m, v in loss._slice(z, loss._blocks("clip")[0]).items()}
        cos = {f"{x}{y}": float((zs[x] * zs[y]).sum(1).mean()) for x, y in (("a", "b"), ("a", "c"), ("b", "c"))}
        prod = zs["a"] * zs["c"]
        const = float(F.cosine_similarity(prod, prod.mean(0, keepdim=True)).mean())
        mips = prod @ zs["b"].T
        margin = float((mips.diag() - mips.mean(1)).mean())
        # gradient agreement of the two terms on one training batch of embeddings
        train = assemble(data).dataset.split("train")[:64]
        with torch.enable_grad():
            parts.model.train()
            emb = parts.model({m: parts.model.encoders[m].collate([parts.model.encoders[m].load(s[m], None)
                                                                   for s in train]) for m in names})
            terms = loss.terms
            grads = []
            for name in ("clip", "symile"):
                out = terms[name](loss._slice(emb, loss._blocks(name)[0]))
                g = torch.autograd.grad(out.loss, [p for p in parts.model.parameters() if p.requires_grad],
                                        retain_graph=True, allow_unused=True)
                grads.append(torch.cat([x.flatten() if x is not None else torch.zeros(p.numel()) for x, p in
                                        zip(g, [p for p in parts.model.parameters() if p.requires_grad])]))
        gcos = float(F.cosine_similarity(grads[0], grads[1], dim=0))
        print(f"{path}\n  symile space: cos ab {cos['ab']:.3f} ac {cos['ac']:.3f} bc {cos['bc']:.3f}; "
              f"a⊙c vs its mean {const:.3f}; MIP margin {margin:.4f}; clip space cos ac "
              f"{float((zc['a'] * zc['c']).sum(1).mean()):.3f}; grad cos(clip, symile) {gcos:+.3f}")


if __name__ == "__main__":
    main()
