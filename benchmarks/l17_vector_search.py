"""L17 benchmark: our NumPy exact search and IVF vs FAISS Flat, IVFFlat and HNSW on uniform random vectors.

Prints one JSON object: build seconds, memory and (recall@10, R@1, queries/s) per index and setting.
Run heavy sizes under the shared lock: flock /tmp/mastery-cpu.lock python benchmarks/l17_vector_search.py --n 1000000
Usage: python benchmarks/l17_vector_search.py [--n 100000] [--dim 64] [--queries 1000] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import platform

from mastery.retrieval import vector_bench as vb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--nlist", type=int, default=None, help="default: 4 * sqrt(n)")
    parser.add_argument("--train-per-list", type=int, default=40)
    parser.add_argument("--nprobes", type=str, default="1,2,4,8,16,32,64,128")
    parser.add_argument("--ef", type=str, default="16,32,64,128,256")
    parser.add_argument("--no-hnsw", action="store_true")
    parser.add_argument("--threads", type=int, default=vb.thread_count())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    nlist = args.nlist or round(4 * math.sqrt(args.n))
    spec = vb.SweepSpec(nlist=nlist, n_train=min(args.n, args.train_per_list * nlist),
                        nprobes=tuple(p for p in map(int, args.nprobes.split(",")) if p <= nlist),
                        ef_searches=tuple(map(int, args.ef.split(","))), include_hnsw=not args.no_hnsw,
                        seed=args.seed)
    data = vb.random_vectors(args.n, args.dim, args.seed + 1)
    queries = vb.random_vectors(args.queries, args.dim, args.seed + 2)
    with vb.limited_threads(args.threads):
        res = vb.sweep(f"random-{args.n}", data, queries, spec)
    print(json.dumps({
        "benchmark": "l17_vector_search", "n": args.n, "dim": args.dim, "queries": args.queries, "nlist": nlist,
        "n_train": spec.n_train, "threads": args.threads, "build_seconds": res.build_seconds,
        "memory_mib": {k: v / 2**20 for k, v in res.memory_bytes.items()}, "exact_agreement": res.exact_agreement,
        "points": res.points, "machine": f"{platform.machine()} {platform.python_version()}",
    }, indent=1))


if __name__ == "__main__":
    main()
