"""Classify the shipped samples with an installed `lungedge` and compare with the golden labels
(tests/golden/sample_cycles.json): the same cycles, the same labels. For another machine or
architecture (bench/aarch64_check.sh), where the tests and their dependencies are not installed.

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
        got = [(c["start_s"], c["label"]) for c in cycles]
        same = got == [(start, label) for start, label, _ in want]
        different += not same
        print(f"{args.name}: {name}: {len(cycles)} cycles, "
              f"{'the same' if same else 'NOT the same'} cycles and labels as the golden: "
              f"{' '.join(label for _, label in got)}")
    import numpy

    print(f"{args.name}: {platform.machine()}, Python {platform.python_version()}, numpy "
          f"{numpy.__version__}")
    return 1 if different else 0


if __name__ == "__main__":
    raise SystemExit(main())
