"""Two sweeps' stored artifacts under the same keys, compared bit for bit.

    python bench/compare_artifacts.py /tmp/before /tmp/after

For changes meant to change no result: every model's weights (and imp rewind points),
every feature array and every attack fit that both storages hold under one key is
compared exactly; keys only one of them holds (a sweep still running) are left out.
Reads only the two storages' own files (weights_only, no pickle).
"""
import sys
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    a, b = Path(sys.argv[1]) / "artifacts", Path(sys.argv[2]) / "artifacts"
    for kind in ("models", "features", "attack_fits"):
        if not (b / kind).exists():
            continue
        names = [{p.name for p in (root / kind).iterdir()} for root in (a, b)]
        common = sorted(names[0] & names[1])
        same = differ = 0
        for key in common:
            for f in sorted((b / kind / key).iterdir()):
                g = a / kind / key / f.name
                if f.suffix == ".pt":
                    x, y = torch.load(g, weights_only=True), torch.load(f, weights_only=True)
                    ok = x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
                elif f.suffix == ".npz":
                    x, y = np.load(g, allow_pickle=False), np.load(f, allow_pickle=False)
                    ok = set(x.files) == set(y.files) and all(
                        np.array_equal(x[k], y[k]) for k in x.files)
                else:
                    continue
                same += ok
                differ += not ok
                if not ok:
                    print("differs:", kind, key, f.name)
        print(f"{kind}: {len(common)} keys in both, files bit-identical {same}, differing {differ}")


if __name__ == "__main__":
    main()
