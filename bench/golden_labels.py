"""Classify the shipped samples with an installed `lungedge` and compare with the golden labels
(tests/golden/sample_cycles.json): the same cycles, the same labels but for near ties. For
another machine or architecture (bench/aarch64_check.sh), where the tests are not installed.

    python bench/golden_labels.py [--lungedge PATH] [--name NAME]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# runtimes and CPUs round int8 kernels differently: a label may flip where the two most probable
# classes are this close (the tolerance of tests/test_convert.py's runtime agreement test)
TIE = 0.02


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lungedge", default=str(Path(sys.executable).with_name("lungedge")))
    ap.add_argument("--name", default=platform.machine(), help="printed before each line")
    args = ap.parse_args()
    golden = json.loads((ROOT / "tests/golden/sample_cycles.json").read_text())["labels"]
    different = 0
    for name, want in sorted(golden["cycles"].items()):
        command = [args.lungedge, "classify", str(ROOT / "models/samples" / name),
                   "--model", str(ROOT / "models/lungedge-cnnlstm"), "--json"]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        cycles = json.loads(out)["files"][0]["cycles"]
        if [c["start_s"] for c in cycles] != [start for start, _, _ in want]:
            different += 1
            print(f"{args.name}: {name}: NOT the same cycles as the golden: "
                  f"{[c['start_s'] for c in cycles]}")
            continue
        notes = []
        for c, (start, label, confidence) in zip(cycles, want, strict=True):
            if c["label"] == label:
                continue
            top = sorted(c["probs"].values(), reverse=True)
            margin = top[0] - top[1]
            notes.append(f"at {start} s {c['label']} instead of {label} (golden {confidence}, "
                         f"here a margin of {margin:.3f}: "
                         f"{'a near tie' if margin < TIE else 'NOT a near tie'})")
            different += margin >= TIE
        print(f"{args.name}: {name}: {len(cycles)} cycles, the golden's; labels "
              f"{'; '.join(notes) if notes else 'the same'}: "
              f"{' '.join(c['label'] for c in cycles)}")
    import numpy

    print(f"{args.name}: {platform.machine()}, Python {platform.python_version()}, numpy "
          f"{numpy.__version__}")
    return 1 if different else 0


if __name__ == "__main__":
    raise SystemExit(main())
