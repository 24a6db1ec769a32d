"""Wall time of the README's main job, `mim sweep regularizers --preset quickstart`, from nothing.

    python benchmarks/main_job.py            # prints the time; --write records it in docs/benchmarks.md

Runs in a fresh temporary folder (data generated, three runs trained and probed, table printed),
the way a user on a fresh machine runs it. Target (issue 9): under 3 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_table import machine, update_section  # noqa: E402

COMMAND = ["mim", "sweep", "regularizers", "--preset", "quickstart", "--no-progress"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="record the time in docs/benchmarks.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        done = subprocess.run(COMMAND, cwd=folder, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"main job failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    table = done.stdout[done.stdout.find("shapes pretraining"):].split("protocol")[0].rstrip()
    print(table)
    verdict = "meets" if seconds < 180 else "misses"
    line = f"`{' '.join(COMMAND[:5])}`: {seconds:.0f} s wall ({verdict} the 3-minute target)"
    print(line)
    if args.write:
        text = (f"## Main job: {machine()}\n\n`python benchmarks/main_job.py --write`, in an empty folder "
                f"(three runs trained and probed, table printed).\n\n{line}.")
        print(f"wrote {update_section('main_job', text)}")


if __name__ == "__main__":
    main()
