#!/usr/bin/env python3
"""Which submissions a run's spot checks drew: the coordinator recomputes a
submission when chosen_for_spot_check(seed, id, fraction) says so
(src/cluster/spot_check.cpp), with fraction = 1 - (1 - F)^k for a submission
of k units summed (coordinator.cpp, fetch_and_validate) and F the run's
--spot-check. A passed check leaves no trace in the database, so the count is
recomputed here from the same numbers: the run's seed and each submission's id.

  spot_check_draws.py --seed SEED --fraction F < submissions

stdin: one submission a line, "ID K" (the leader's id, the units in it).
Prints how many were drawn, and their ids on a second line.
"""
import argparse
import sys

M64 = (1 << 64) - 1


def splitmix(x):
    x = (x + 0x9E3779B97F4A7C15) & M64
    z = x
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return x, z ^ (z >> 31)


def rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & M64


def first_uniform(seed):
    """Rng(seed).uniform(): xoshiro256** seeded through splitmix64 (src/common/rng.h)."""
    s, x = [], seed & M64
    for _ in range(4):
        x, w = splitmix(x)
        s.append(w)
    r = (rotl((s[1] * 5) & M64, 7) * 9) & M64
    return (r >> 11) * 2.0 ** -53


def chosen(seed, sub_id, fraction):
    if fraction <= 0:
        return False
    if fraction >= 1:
        return True
    mixed = ((seed * 0x9E3779B97F4A7C15) & M64) ^ ((sub_id + 0x5851F42D4C957F2D) & M64)
    return first_uniform(mixed) < fraction


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--fraction", type=float, required=True, help="the run's --spot-check")
    args = ap.parse_args()
    drawn = []
    for line in sys.stdin:
        parts = line.split()
        if len(parts) < 2:
            continue
        sub_id, k = int(parts[0]), int(parts[1])
        f = 1.0 if args.fraction >= 1 else 1 - (1 - args.fraction) ** k
        if chosen(args.seed, sub_id, f):
            drawn.append(sub_id)
    print(len(drawn))
    print(" ".join(map(str, drawn)))


if __name__ == "__main__":
    main()
