"""ATC parity: the authors' released off-the-shelf code (JoakimHaurum/ATC `SSLBackbone_setup/token_reduc`) against
tomebench's `atc` reducer on timm's DeiT, same weights, same images.

    .venv/bin/python benchmarks/parity/atc.py --authors /path/to/ATC [--model deit_small_patch16_224]
        [--r 16] [--linkage average,single,complete] [--images 8] [--batch 4]

The model is timm's, random init with a fixed seed (no weights can be downloaded). The authors' side is their
`apply_patch(model, merge_type="atc", linkage=...)` (`token_reduc/patch/timm.py`, what their
`validate_ots_sslbackbone.py` calls) with `model.r = r`: their ToMeBlock clusters with scikit-learn per image on
the host (`token_reduc/merge.py`, `agglomerative_clustering`). Glue: none (their ToMeAttention, copied from an
older timm, skips timm 1.x's q/k norms and LayerScale, which are identities in DeiT); the package is imported
without its `__init__`.

Per linkage: tomebench's default (the authors' count, r - 1 per block with the cls token) and `exact_r` (r per
block). Prints the tokens each block kept, top-1 agreement, the largest |logit difference| against the authors',
whether every final token holds the same input patches (source tracking on both sides, clusters in any order) and
the GMACs of one image (torch's FLOP counter on both; scikit-learn's host work is invisible to it). Then the time of
the clustering alone: tomebench's batched `agglomerate` against scikit-learn per image, on the first block's
distances.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import authors_module, images, report, token_hook  # noqa: E402

import tomebench  # noqa: E402
from tomebench.measure.cost import count_gflops  # noqa: E402
from tomebench.patch import forward_with_state  # noqa: E402
from tomebench.reducers.atc import agglomerate, distances  # noqa: E402


def build(name: str, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return timm.create_model(name, pretrained=False).eval()


def run_authors(root: Path, name: str, seed: int, r: int, linkage: str, x: torch.Tensor, batch: int):
    warnings.filterwarnings("ignore", category=UserWarning)  # sklearn: "Partial build of the tree ..."
    patch = authors_module(root, "SSLBackbone_setup.token_reduc.patch.timm").apply_patch
    model = build(name, seed)
    patch(model, merge_type="atc", linkage=linkage, trace_source=True)
    model.r = r
    seen, handles = token_hook(list(model.blocks))
    logits, tokens, groups = [], None, []
    with torch.no_grad():
        for chunk in x.split(batch):
            seen.clear()
            logits.append(model(chunk))
            tokens = tuple(seen)
            groups += partitions(model._tome_info["source"])
        gmacs = count_gflops(model, x[:1]) / 2
    for handle in handles:
        handle.remove()
    return torch.cat(logits), tokens, gmacs, groups


def run_tomebench(name: str, seed: int, r: int, options: dict, x: torch.Tensor, batch: int):
    model = build(name, seed)
    tomebench.patch(model, "atc", r, trace_source=True, **options)
    logits, tokens, groups = [], None, []
    with torch.no_grad():
        for chunk in x.split(batch):
            out, state = forward_with_state(model, chunk)
            logits.append(out)
            tokens = state.tokens
            groups += partitions(state.source)
        gmacs = count_gflops(model, x[:1]) / 2
    return torch.cat(logits), tokens, gmacs, groups


def partitions(source: torch.Tensor) -> list[frozenset]:
    """(B, N', N0) 0/1 source maps -> per image, the set of final tokens, each the set of input tokens it holds:
    which patches ended up together, whatever order the clusters come in."""
    return [frozenset(frozenset(row.nonzero().flatten().tolist()) for row in image) for image in source]


def first_block_distances(name: str, seed: int, x: torch.Tensor) -> torch.Tensor:
    """(B, M, M) the cosine distances of the first block's head-mean keys, patches only."""
    model = build(name, seed)
    block = model.blocks[0]
    captured = {}

    def keys(_module, inputs, _out):
        t = inputs[0]  # (B, N, C), after norm1
        b, n, c = t.shape
        qkv = block.attn.qkv(t).reshape(b, n, 3, block.attn.num_heads, -1).permute(2, 0, 3, 1, 4)
        captured["k"] = qkv[1].mean(1)  # (B, N, D)

    handle = block.attn.register_forward_hook(keys)
    with torch.no_grad():
        model(x)
    handle.remove()
    return distances(captured["k"], 1)


def time_clustering(d: torch.Tensor, r: int, linkage: str, repeats: int = 3) -> tuple[float, float]:
    """Seconds per batch: tomebench's batched clustering into M - r + 1 clusters (the authors' count) and
    scikit-learn's fit per image, as the authors call it."""
    from sklearn.cluster import AgglomerativeClustering

    b, m, _ = d.shape
    k = m - r + 1
    best_ours, best_sklearn = float("inf"), float("inf")
    host = d.numpy()
    for _ in range(repeats):
        start = time.perf_counter()
        agglomerate(d, k, linkage)
        best_ours = min(best_ours, time.perf_counter() - start)
        start = time.perf_counter()
        clustering = AgglomerativeClustering(n_clusters=k, metric="precomputed", linkage=linkage)
        for image in host:
            clustering.fit(image)
        best_sklearn = min(best_sklearn, time.perf_counter() - start)
    return best_ours, best_sklearn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, required=True, help="a checkout of JoakimHaurum/ATC")
    parser.add_argument("--model", default="deit_small_patch16_224")
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--linkage", default="average,single,complete")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    x = images(args.images)
    print(
        f"{args.model}, random init (seed {args.seed}), {args.images} random images, batch {args.batch}, fp32 CPU, "
        f"r={args.r}; torch {torch.__version__}, timm {timm.__version__}\n"
    )
    gmacs = []
    for linkage in args.linkage.split(","):
        theirs, their_tokens, their_gmacs, their_groups = run_authors(
            args.authors, args.model, args.seed, args.r, linkage, x, args.batch
        )
        ours, our_tokens, our_gmacs, our_groups = run_tomebench(
            args.model, args.seed, args.r, {"linkage": linkage}, x, args.batch
        )
        exact, exact_tokens, exact_gmacs, _ = run_tomebench(
            args.model, args.seed, args.r, {"linkage": linkage, "exact_r": True}, x, args.batch
        )
        rows = [
            (f"authors, linkage={linkage}", theirs, their_tokens),
            (f"tomebench atc linkage={linkage}", ours, our_tokens),
            (f"tomebench atc linkage={linkage} exact_r", exact, exact_tokens),
        ]
        print("\n".join(report(f"linkage={linkage}", rows, rows[0][0])))
        same = sum(a == b for a, b in zip(their_groups, our_groups))
        print(f"\nthe same input patches in every final token (default count): {same} of {len(their_groups)} images\n")
        gmacs.append(f"{linkage}: authors {their_gmacs:.4f}, tomebench {our_gmacs:.4f}, exact_r {exact_gmacs:.4f}")
    print("GMACs per image (torch's FLOP counter on both): " + "; ".join(gmacs))
    d = first_block_distances(args.model, args.seed, x)
    for linkage in args.linkage.split(","):
        ours, theirs = time_clustering(d, args.r, linkage)
        print(
            f"clustering alone, first block, {d.shape[0]} images of M={d.shape[1]}, r={args.r}, {linkage}, "
            f"{torch.get_num_threads()} CPU threads: tomebench batched {ours * 1e3:.1f} ms, "
            f"scikit-learn per image {theirs * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    main()
