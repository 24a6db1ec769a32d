"""Rewrite every marked section of README.md and docs/*.md from the committed run records.

    python experiments/update_docs.py            # rewrite the sections and their figures
    python experiments/update_docs.py --check    # write nothing; exit 1 naming each section that differs
    python experiments/update_docs.py --check --tables-only   # the test suite's check (figure bytes vary
                                                               # with matplotlib: only their presence)

How a section is marked and what it holds: mimcli/report/sections.py and docs/report.md ("Records").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mimcli.errors import UsageError
from mimcli.report.sections import update

ROOT = Path(__file__).resolve().parents[1]


def documents(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a section differs")
    parser.add_argument("--tables-only", action="store_true", help="leave figures as they are (check presence)")
    args = parser.parse_args(argv)
    try:
        drifted = update(documents(ROOT), ROOT, check=args.check, figures=not args.tables_only)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name in drifted:
        print(f"{'differs from its records' if args.check else 'rewritten'}: {name}", file=sys.stderr)
    return 1 if args.check and drifted else 0


if __name__ == "__main__":
    sys.exit(main())
