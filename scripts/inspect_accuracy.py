"""Measure `edge-compile inspect` against models Google's edgetpu_compiler really compiled.

Give it folders (searched recursively) or files holding pairs `X.tflite` / `X_edgetpu.tflite`,
for example a checkout of google-coral/test_data, and/or pair fixtures (`*.json`, as kept in
tests/data/coral_pairs/). It prints a Markdown table: per model, the operators, how many ran on
the Edge TPU, how many inspect predicted right, and each disagreement with inspect's status.

    .venv/bin/python scripts/inspect_accuracy.py ~/src/test_data
    .venv/bin/python scripts/inspect_accuracy.py tests/data/coral_pairs
    .venv/bin/python scripts/inspect_accuracy.py ~/src/test_data --write-fixtures tests/data/coral_pairs \\
        --only mobilenet_v1_0.25_128_quant keras_lstm_mnist_ptq

Pairs whose files are missing or not TensorFlow Lite models (Git LFS pointers) are skipped
with a note on stderr. Exit status 1 when any operator disagrees.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from compiler import accuracy, tflite  # noqa: E402
from compiler.errors import ModelSourceError  # noqa: E402

SUFFIX = "_edgetpu.tflite"


def find_pairs(paths: List[Path]) -> Tuple[List[Tuple[Path, Path]], List[Path]]:
    """(model pairs, fixture files) under ``paths``."""
    pairs, fixtures = [], []
    for path in paths:
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in files:
            if f.suffix == ".json":
                fixtures.append(f)
            elif f.name.endswith(SUFFIX):
                source = f.with_name(f.name[: -len(SUFFIX)] + ".tflite")
                if source.is_file():
                    pairs.append((source, f))
    return pairs, fixtures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="folders or files of pairs / fixtures")
    parser.add_argument("--write-fixtures", type=Path, help="also write each pair's fixture (graph + split) here")
    parser.add_argument("--only", nargs="*", help="only pairs whose source model is named so (without .tflite)")
    parser.add_argument("--source-root", type=Path, help="fixtures record paths relative to this folder")
    args = parser.parse_args()
    pairs, fixture_files = find_pairs(args.paths)
    rows = []
    for source, compiled in pairs:
        if args.only and source.stem not in args.only:
            continue
        try:
            cpu, twin = tflite.read(source), tflite.read(compiled)
            truth = accuracy.ground_truth(cpu, twin)
        except (ModelSourceError, ValueError) as exc:
            print(f"skipped {source.name}: {exc}", file=sys.stderr)
            continue
        rows.append(accuracy.compare(accuracy.analyze(cpu, source.stem), truth))
        if args.write_fixtures:
            rel = source.relative_to(args.source_root) if args.source_root else Path(source.name)
            fixture = accuracy.pair_fixture(cpu, twin, f"google-coral/test_data/{rel.as_posix()}")
            args.write_fixtures.mkdir(parents=True, exist_ok=True)
            out = args.write_fixtures / f"{source.stem}.json"
            out.write_text(json.dumps(fixture, separators=(",", ":")) + "\n")
    for f in fixture_files:
        if args.only and f.stem not in args.only:
            continue
        rows.append(accuracy.measure_fixture(json.loads(f.read_text()), f.stem))
    rows.sort(key=lambda r: r.model)
    print(accuracy.render_table(rows))
    for r in rows:
        for d in r.disagreements:
            where = f"predicted {d.predicted}, ran on {d.actual}"
            print(f"{r.model}: operator {d.index} {d.op}: {where}: {d.status} {d.reason}")
    return 0 if all(r.exact for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
