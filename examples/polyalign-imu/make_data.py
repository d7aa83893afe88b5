"""Write a toy activity dataset: accelerometer CSV files + captions, in one of two layouts.

    python make_data.py data                    # manifests: data/train.jsonl ... + data/imu/*.csv
    python make_data.py data-folders folders    # one folder per tuple: data-folders/train/<id>/imu.csv ...

240 train / 40 val / 80 test tuples. Each is an activity (sitting, walking, running, jumping)
recorded at 50 Hz for 3-6 s, and a caption naming the activity in varying words.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

RATE = 50
ACTIVITIES = {  # step frequency (Hz), amplitude (g), words
    "sitting": (0.0, 0.02, ["sitting still", "resting on a chair", "seated and calm"]),
    "walking": (1.8, 0.35, ["walking", "strolling to the shop", "a slow walk"]),
    "running": (2.8, 1.2, ["running", "jogging in the park", "a fast run"]),
    "jumping": (1.1, 2.0, ["jumping", "hopping up and down", "jumping jacks"]),
}


def recording(activity: str, rng: np.random.Generator) -> np.ndarray:
    """``(samples, 3)`` accelerations in g: gravity on a random axis mix, the gait, noise."""
    freq, amp, _ = ACTIVITIES[activity]
    t = np.arange(int(RATE * rng.uniform(3, 6))) / RATE
    gravity = rng.normal(size=3)
    gravity /= np.linalg.norm(gravity)
    gait = amp * np.abs(np.sin(np.pi * freq * t + rng.uniform(0, np.pi))) ** 3
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    return gravity + gait[:, None] * direction + rng.normal(0, 0.03, size=(t.size, 3))


def write_toy_data(folder: Path, n_train: int = 240, n_val: int = 40, n_test: int = 80, seed: int = 0,
                   layout: str = "manifest") -> Path:
    """Write the tuples into ``folder``: ``imu/*.csv`` + ``train/val/test.jsonl`` (``layout="manifest"``),
    or ``<split>/<id>/{imu.csv, caption.txt, label.txt}`` (``layout="folders"``); return ``folder``."""
    rng = np.random.default_rng(seed)
    names = list(ACTIVITIES)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        rows = []
        for i in range(n):
            label = i % len(names)
            activity = names[label]
            signal = recording(activity, rng)
            caption = f"{rng.choice(['someone', 'a person', 'the wearer'])} {rng.choice(ACTIVITIES[activity][2])}"
            tuple_id = f"{split}-{i:04d}"
            tuple_dir = folder / split / tuple_id if layout == "folders" else folder / "imu"
            tuple_dir.mkdir(parents=True, exist_ok=True)
            csv_file = tuple_dir / ("imu.csv" if layout == "folders" else f"{tuple_id}.csv")
            np.savetxt(csv_file, signal, delimiter=",", header="x,y,z", comments="", fmt="%.4f")
            if layout == "folders":
                (tuple_dir / "caption.txt").write_text(caption, encoding="utf-8")
                (tuple_dir / "label.txt").write_text(str(label), encoding="utf-8")
            else:
                rows.append({"id": tuple_id, "label": label, "imu": f"imu/{csv_file.name}", "caption": caption})
        if layout != "folders":
            (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


if __name__ == "__main__":
    out = write_toy_data(Path(sys.argv[1] if len(sys.argv) > 1 else "data"),
                         layout=sys.argv[2] if len(sys.argv) > 2 else "manifest")
    print(f"wrote the toy activity dataset to {out}")
