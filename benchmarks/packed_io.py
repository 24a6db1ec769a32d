"""Streamed probe features keep memory flat, and reading an image folder vs its HDF5 pack (`mim pack`).

1. Generates 1k and 4k photo-sized JPEGs (500 x 375, `stream_memory.write_photos`, 10 classes, a
   train/ and a test/ split of the same images) in a temporary directory.
2. For each set, in a fresh subprocess (peak RSS is per process): streamed feature extraction of
   both splits (`FeatureCache(loader="stream").get`: a train statistics pass, then train and test
   features, HDF5 written batch by batch, then read back as a probe does) with a random width-8
   ResNet-18 at SIZE px, 0 and 2 decoding workers: peak RSS of the process and of its largest worker
   (`resource.getrusage`), and the peaks of the process's RSS and of the anonymous + shared-memory PSS
   of the process plus its live workers, sampled every 0.1 s from /proc (`MemorySampler`). The
   2-worker case runs again with glibc's mmap threshold pinned (a control: growth that disappears
   there is heap fragmentation, not data held). The difference 4k - 1k is what the number of images
   costs.
3. Reading the 1k folder vs its pack, side by side in one process, in the training sampler's
   random order: bytes only (open + read) and read + PIL decode to RGB, images/s; and the time to
   write the pack.

    OMP_NUM_THREADS=1 python benchmarks/packed_io.py            # print the tables
    OMP_NUM_THREADS=1 python benchmarks/packed_io.py --write    # also replace its section of docs/benchmarks.md

About ten minutes on 2 shared cores. On a local disk with a warm page cache the pack cannot win (an
HDF5 read costs more than reading a cached small file); its gain is on network file systems (one
open per worker instead of one per image), which this machine cannot show.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_table import in_fresh_process, machine, markdown_table, update_section
from stream_memory import write_photos

COUNTS = (1000, 4000)
SIZE, BATCH, WORKERS = 64, 256, 2
CONFIGS = [(0, "default"), (WORKERS, "default"), (WORKERS, "fixed")]  # (decoding workers, malloc)
ROUNDS = 2  # read passes per path (alternating), best kept


def make_set(folder: Path, n: int) -> None:
    """train/<class>/ from write_photos, and test/ holding a link to every 5th train image."""
    write_photos(folder, n)
    for path in sorted((folder / "train").rglob("*.jpg"))[::5]:
        target = folder / "test" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, target)


class MemorySampler(threading.Thread):
    """Every `period` seconds: the RSS of this process, and the anonymous + shared-memory PSS of this
    process plus its live children (the DataLoader workers) from /proc/<pid>/smaps_rollup. PSS splits a
    page shared by k processes into k parts, so the sum is the memory the group holds (summed RSS would
    count twice the pages a forked worker shares with its parent, and the batches in /dev/shm); file
    pages (the libraries, shared with every other torch process on the machine) are left out.
    `peak_rss` and `peak_pss` keep the maxima, in MiB."""

    def __init__(self, period: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.period, self.peak_rss, self.peak_pss = period, 0.0, 0.0
        self.done = threading.Event()
        self.page = os.sysconf("SC_PAGE_SIZE") / 2**20

    def rss(self) -> float:
        return int(Path("/proc/self/statm").read_text().split()[1]) * self.page

    @staticmethod
    def pss(pid: str) -> float:
        try:
            lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
            return sum(int(line.split()[1]) for line in lines if line.startswith(("Pss_Anon:", "Pss_Shmem:"))) / 1024
        except (OSError, IndexError, ValueError):
            return 0.0  # the process ended between listing and reading

    @staticmethod
    def children() -> list[str]:
        me, found = str(os.getpid()), []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if stat.read_text().rsplit(")", 1)[1].split()[1] == me:  # field 4, after "pid (comm) state"
                    found.append(stat.parent.name)
            except (OSError, IndexError):
                continue
        return found

    def run(self) -> None:
        while not self.done.wait(self.period):
            self.peak_rss = max(self.peak_rss, self.rss())
            self.peak_pss = max(self.peak_pss, sum(self.pss(pid) for pid in ["self", *self.children()]))


def extract_pass(job: str) -> dict[str, float]:
    """Run in a subprocess: streamed features of imagefolder:FOLDER with WORKERS decoding processes
    (job = "FOLDER|WORKERS"); peak RSS in MiB."""
    folder, workers = job.rsplit("|", 1)
    import torch

    from mimcli.config import load_config
    from mimcli.data.transfer import resolve_dataset
    from mimcli.models.resnet import build_backbone
    from mimcli.probe.cache import FeatureCache
    from mimcli.rundir.runs import BACKBONE, save_config

    torch.set_num_threads(1)
    run_dir = Path(tempfile.mkdtemp(prefix="features-"))
    config = load_config(None, ["model.width=8", f"data.image_size={SIZE}"])
    save_config(run_dir, config)
    torch.manual_seed(0)
    torch.save(build_backbone("resnet18", 8, SIZE, "auto").state_dict(), run_dir / BACKBONE)
    cache = FeatureCache(
        run_dir, device="cpu", batch_size=BATCH, loader="stream", workers=int(workers), normalize="train_stats"
    )
    dataset = resolve_dataset(f"imagefolder:{folder}", root=folder, image_size=SIZE)
    sampler = MemorySampler()
    sampler.start()
    start = time.perf_counter()
    train, test = cache.get(dataset)  # statistics pass over train, then train and test features
    seconds = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    images = 2 * len(train) + len(test)  # images decoded
    return {
        "workers": int(workers),
        "images": images,
        "seconds": seconds,
        "images/s": images / seconds,
        "main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # with no workers the only children are helpers forked while importing torch and h5py, whose peak
        # is the parent's size at the fork (436 then 514 MiB measured): not a worker, so left blank
        "worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 if int(workers) else "",
        "sampled_rss_mib": sampler.peak_rss,
        "sampled_pss_mib": sampler.peak_pss,
        "cache_mib": sum(p.stat().st_size for p in (run_dir / "features").iterdir()) / 2**20,
    }


def measure_extract(folder: Path, workers: int, malloc: str) -> dict[str, object]:
    """extract_pass in a fresh process; malloc "fixed": glibc's mmap threshold pinned at 128 KiB
    (MALLOC_MMAP_THRESHOLD_), so every large buffer is its own mapping, returned when freed."""
    env = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)} if malloc == "fixed" else {}
    return {"malloc": malloc, **in_fresh_process("packed_io", "extract_pass", f"{folder}|{workers}", env)}


def measure_reading(folder: Path, pack: Path) -> list[dict[str, object]]:
    """Images/s of folder vs pack, bytes only and bytes + decode, in one epoch order (best of ROUNDS)."""
    from mimcli.data.packing import pack_folder
    from mimcli.data.sampler import epoch_order
    from mimcli.data.stream import index_split

    start = time.perf_counter()
    pack_folder(folder, pack)
    pack_seconds = time.perf_counter() - start
    indexes = {"folder": index_split(folder, "train"), "pack": index_split(pack, "train")}
    order = epoch_order(len(indexes["folder"]), 0, 1).flatten().tolist()
    readers = {"folder": lambda i: Path(indexes["folder"].path(i)).read_bytes(), "pack": indexes["pack"].read}
    best: dict[tuple[str, str], float] = {}
    for _ in range(ROUNDS):
        for kind in ("folder", "pack"):
            for what, run in (("bytes", readers[kind]), ("bytes + decode", indexes[kind].open)):
                start = time.perf_counter()
                for i in order:
                    run(i)
                rate = len(order) / (time.perf_counter() - start)
                best[kind, what] = max(best.get((kind, what), 0.0), rate)
    size = pack.stat().st_size / 2**20
    rows: list[dict[str, object]] = []
    for what in ("bytes", "bytes + decode"):
        rows.append(
            {
                "read": what,
                "folder images/s": best["folder", what],
                "pack images/s": best["pack", what],
                "pack / folder": best["pack", what] / best["folder", what],
            }
        )
    rows.append(
        {"read": f"writing the pack ({size:.0f} MiB, train + test)", "pack images/s": len(order) / pack_seconds}
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="replace this section of docs/benchmarks.md")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    print(f"load average at the start: {load_start:.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for n in COUNTS:
            make_set(Path(tmp) / f"photos{n}", n)
        extract_rows = []
        for workers, malloc in CONFIGS:
            for n in COUNTS:
                extract_rows.append(measure_extract(Path(tmp) / f"photos{n}", workers, malloc))
                print(extract_rows[-1], flush=True)
        read_rows = measure_reading(Path(tmp) / "photos1000", Path(tmp) / "photos1000.h5")
    load_end = os.getloadavg()[0]

    def growth(key: str, k: int) -> str:  # 4k minus 1k images, in the k-th configuration
        return f"{float(extract_rows[2 * k + 1][key]) - float(extract_rows[2 * k][key]):+.1f} MiB"

    columns = ["workers", "malloc", "images", "seconds", "images/s", "main_mib", "worker_mib"]
    extract_table = markdown_table(extract_rows, [*columns, "sampled_rss_mib", "sampled_pss_mib", "cache_mib"])
    read_table = markdown_table(read_rows, ["read", "folder images/s", "pack images/s", "pack / folder"])
    body = (
        f"## Streamed probe features and the HDF5 pack: {machine()}\n\n"
        f"`OMP_NUM_THREADS=1 python benchmarks/packed_io.py --write` (500 x 375 JPEGs). Load average "
        f"{load_start:.1f} at the start and {load_end:.1f} at the end of the run: the machine's 2 cores are shared "
        f"with other jobs, so speeds are noisy and peaks move by tens of MiB between runs.\n\n"
        f"Streamed feature extraction, `FeatureCache.get` of train (N) and test (N / 5) (random ResNet-18 width 8, "
        f"{SIZE} px, batch {BATCH}, 0 or {WORKERS} decoding workers; a statistics pass over train, then the HDF5 "
        f"caches written batch by batch and read back); images = images decoded. MiB: peak RSS of the extracting "
        f"process and of its largest worker (getrusage), the process's RSS sampled every 0.1 s, and the PSS of the "
        f"process plus its live workers sampled with it (anonymous and shared memory, each shared page split "
        f"between the processes). malloc "
        f"`fixed`: the same run with glibc's mmap threshold pinned at 128 KiB (`MALLOC_MMAP_THRESHOLD_=131072`), "
        f"a control for heap fragmentation:\n\n{extract_table}\n\n"
        f"4k - 1k images: no workers **{growth('main_mib', 0)}** peak RSS; {WORKERS} workers "
        f"**{growth('main_mib', 1)}** in the extracting process, {growth('worker_mib', 1)} per worker, "
        f"**{growth('sampled_pss_mib', 1)}** PSS of the process and its workers together; the same with the mmap "
        f"threshold pinned: {growth('main_mib', 2)} in the process, {growth('sampled_pss_mib', 2)} PSS together. "
        f"The limit the issue sets for stream mode: 100 MB. The cache file grows with the set, on disk.\n\n"
        f"Reading 1,000 of the same JPEGs in the sampler's random order, one process, best of {ROUNDS} "
        f"alternating passes (local disk, warm page cache: the pack's gain on a network file system, one open "
        f"instead of one per image, does not show here):\n\n{read_table}\n"
    )
    print(body)
    if args.write:
        print(f"wrote {update_section('packed-io', body)}")


if __name__ == "__main__":
    main()
