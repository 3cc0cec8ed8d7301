#!/usr/bin/env python3
"""Reads the TensorBoard event files of a run with TensorBoard's own reader.

    cargo xtask train --config configs/classify-minilm.toml --log-to tensorboard --out runs/r
    python3 scripts/read_tensorboard.py runs/r/tensorboard

Loads every event file of the folder with tensorboard's EventAccumulator (as `tensorboard
--logdir` does: the files in name order, a resumed session's START dropping what an interrupted
one wrote past its checkpoint) and prints one line of JSON: each scalar tag with its
`[step, value]` pairs. Needs the `tensorboard` package (pip install tensorboard).
"""

import json
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: read_tensorboard.py RUN/tensorboard")
    accumulator = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
    accumulator.Reload()
    scalars = {
        tag: [[event.step, event.value] for event in accumulator.Scalars(tag)]
        for tag in sorted(accumulator.Tags()["scalars"])
    }
    print(json.dumps(scalars))


if __name__ == "__main__":
    main()
