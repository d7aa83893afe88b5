"""Write a toy activity dataset: accelerometer CSV files + captions + manifests.

    python make_data.py data            # 240 train / 40 val / 80 test tuples in ./data

Each tuple is an activity (sitting, walking, running, jumping) recorded at 50 Hz for 3-6 s,
and a caption naming the activity in varying words.
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


def write_toy_data(folder: Path, n_train: int = 240, n_val: int = 40, n_test: int = 80, seed: int = 0) -> Path:
    """Write ``imu/*.csv`` and ``train/val/test.jsonl`` into ``folder``; return it."""
    rng = np.random.default_rng(seed)
    (folder / "imu").mkdir(parents=True, exist_ok=True)
    names = list(ACTIVITIES)
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        rows = []
        for i in range(n):
            label = i % len(names)
            activity = names[label]
            path = f"imu/{split}-{i:04d}.csv"
            np.savetxt(folder / path, recording(activity, rng), delimiter=",", header="x,y,z", comments="",
                       fmt="%.4f")
            caption = f"{rng.choice(['someone', 'a person', 'the wearer'])} {rng.choice(ACTIVITIES[activity][2])}"
            rows.append({"id": f"{split}-{i:04d}", "label": label, "imu": path, "caption": caption})
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


if __name__ == "__main__":
    out = write_toy_data(Path(sys.argv[1] if len(sys.argv) > 1 else "data"))
    print(f"wrote {out}/train.jsonl, val.jsonl, test.jsonl and {out}/imu/*.csv")
