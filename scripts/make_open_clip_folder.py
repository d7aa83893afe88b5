"""Write a small open_clip model folder with random weights (what recipes/demo-open-clip-lora.yaml loads).

    python scripts/make_open_clip_folder.py models/tiny-open-clip

The folder has open_clip's layout, as on the Hugging Face Hub: ``open_clip_config.json`` (the
architecture and its preprocessing) and ``open_clip_model.safetensors``. The weights are random:
nothing is downloaded. For real weights, download a model folder yourself and point the recipe's
``model`` and ``pretrained`` to it.
"""

from __future__ import annotations

import argparse

from polyalign.plugins.encoders.open_clip import save_random_model

# a ViT-B-32-shaped CLIP cut down to 2 blocks of width 64, for 32x32 images and short captions
TINY_CLIP = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="where to write the model folder")
    ap.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = ap.parse_args()
    weights = save_random_model(args.folder, TINY_CLIP, seed=args.seed)
    print(f"wrote {weights} and open_clip_config.json beside it (random weights, seed {args.seed})")


if __name__ == "__main__":
    main()
