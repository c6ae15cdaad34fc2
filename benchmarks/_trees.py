"""Test trees for the FIM benchmarks, generated deterministically (same seed, same tree)."""

from __future__ import annotations

import os
import random
from pathlib import Path


def mixed_tree(root: Path, files: int = 20_000, total_mb: int = 1024, seed: int = 7) -> tuple[int, int]:
    """~``files`` files of mixed sizes adding up to ~``total_mb``: many small, a few large (a web root
    with assets and a program directory with binaries). Returns (files, bytes)."""
    rng = random.Random(seed)
    sizes = [rng.choice((512, 2048, 8192, 32768)) for _ in range(files)]
    small_total = sum(sizes)
    large_count = max(1, files // 200)
    large = max(0, total_mb * 2**20 - small_total) // large_count
    for i in range(large_count):
        sizes[i * 200] = large
    return _write(root, sizes, rng, per_dir=100)


def small_tree(root: Path, files: int = 100_000, seed: int = 11) -> tuple[int, int]:
    """``files`` files of 1-8 KiB."""
    rng = random.Random(seed)
    return _write(root, [rng.randint(1024, 8192) for _ in range(files)], rng, per_dir=200)


def _write(root: Path, sizes: list[int], rng: random.Random, per_dir: int) -> tuple[int, int]:
    root.mkdir(parents=True, exist_ok=True)
    block = rng.randbytes(1 << 20)
    total = 0
    for i, size in enumerate(sizes):
        d = root / f"d{i // (per_dir * per_dir):03d}" / f"s{(i // per_dir) % per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        with open(d / f"f{i:06d}.dat", "wb") as f:
            remaining = size
            # Vary content per file so no two files hash alike.
            f.write(i.to_bytes(8, "little"))
            remaining -= 8
            while remaining > 0:
                chunk = block[: min(remaining, len(block))]
                f.write(chunk)
                remaining -= len(chunk)
        total += size
    os.sync()
    return len(sizes), total
