"""`python -m app.synthetic --seed 20261122 --out fixtures`: write the synthetic fixtures."""

from __future__ import annotations

import argparse
from pathlib import Path

from app.synthetic.generator import DEFAULT_SEED, generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.synthetic", description=__doc__)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})")
    parser.add_argument("--out", type=Path, default=Path("fixtures"), help="fixtures directory (default fixtures)")
    args = parser.parse_args(argv)
    for path in generate(args.out, args.seed):
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
