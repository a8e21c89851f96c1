"""The README's tables of measured numbers, generated from the committed CSVs they come from, so the text can never
drift from the data (tests/report/test_readme_tables.py holds the README to this).

    .venv/bin/python benchmarks/readme_tables.py            # print what differs
    .venv/bin/python benchmarks/readme_tables.py --write    # rewrite the README's generated tables

Each table sits in the README between `<!-- generated: NAME -->` and `<!-- end: NAME -->`.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
sys.path.insert(0, str(REPO))

from tomebench.report.format import fmt  # noqa: E402
from tomebench.results.csv import read_csv  # noqa: E402

BASELINE = REPO / "results" / "baselines" / "demo-cpu.csv"
ABLATION = REPO / "docs" / "ablate-demo.csv"
SCHEDULES = REPO / "docs" / "schedules-demo.csv"
BATCH = REPO / "docs" / "batch-vit_s-cpu.csv"
FIELD = REPO / "docs" / "field-vitb16-cpu.csv"


def _ok(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["error"].isna()]


def _speedup(row) -> str:
    """ "1.32x (1.26-1.36)": the median and its interval (the 95% interval of the median when the CSV has it)."""
    low = row.get("speedup_ci_low")
    high = row.get("speedup_ci_high")
    if low is None or (isinstance(low, float) and math.isnan(low)):
        low, high = row.get("speedup_p10"), row.get("speedup_p90")
    return f"{fmt(row['speedup'], '.2f')}x ({fmt(low, '.2f')}-{fmt(high, '.2f')})"


def demo_top1() -> str:
    """Top-1 of every reducer at every r of the demo baseline."""
    frame = _ok(read_csv(BASELINE))
    base = frame[frame["reducer"] == "none"].iloc[0]
    patched = frame[frame["reducer"] != "none"]
    # A row matched to ToMe's cost (--match gmacs) belongs in the column of ToMe's r, not of the r it ran.
    matched = patched["note"].fillna("").str.extract(r"matched to \S+ r=(\d+)")[0]
    column = matched.astype(float).fillna(patched["r"].astype(float)).astype(int)
    rs = sorted(column[patched["reducer"] == "tome"].unique()) or sorted(column.unique())
    lines = ["| ToMe's r | " + " | ".join(map(str, rs)) + " |", "| --- |" + " --- |" * len(rs)]
    for reducer, rows in patched.groupby("reducer", sort=False):
        by_r = {int(r): t for r, t in zip(column[rows.index], rows["top1"])}
        lines.append(f"| {reducer} | " + " | ".join(fmt(by_r.get(r), ".2f") for r in rs) + " |")
    return "\n".join(lines) + f"\n\n(unpatched: {fmt(base['top1'], '.2f')}; 360 digits, one image is 0.28 points.)"


def demo_tome() -> str:
    """ToMe on the demo, block by block budget, cost, speed and accuracy, from the baseline."""
    frame = _ok(read_csv(BASELINE))
    rows = [frame[frame["reducer"] == "none"].iloc[0]] + [r for _, r in frame[frame["reducer"] == "tome"].iterrows()]
    head = ["unpatched" if row["reducer"] == "none" else str(int(row["r"])) for row in rows]
    lines = ["| r | " + " | ".join(head) + " |", "| --- |" + " --- |" * len(rows)]
    lines.append("| tokens after the last block | " + " | ".join(fmt(r["tokens_final"], ".0f") for r in rows) + " |")
    lines.append("| GFLOPs / image | " + " | ".join(fmt(r["infer_gflops"], ".4f") for r in rows) + " |")
    lines.append("| speedup (interval) | " + " | ".join(_speedup(r) for r in rows) + " |")
    lines.append("| top-1 (%) | " + " | ".join(fmt(r["top1"], ".2f") for r in rows) + " |")
    return "\n".join(lines)


def ablation() -> str:
    """The design study's top-1 per factor, from docs/ablate-demo.csv."""
    from tomebench.studies import ablate

    frame = read_csv(ABLATION)
    lines = ["| factor | paper's default | alternatives |", "| --- | --- | --- |"]
    for table in ablate.tables(frame):
        default = next(line for line in table.lines if line.default)
        others = ", ".join(f"{line.choice} {fmt(line.top1, '.2f')}" for line in table.lines if not line.default)
        name = table.title.removeprefix("similarity ").replace("partition into A and B", "partition")
        lines.append(f"| {name} | {default.choice} {fmt(default.top1, '.2f')} | {others} |")
    return "\n".join(lines)


def schedules() -> str:
    """Top-1 (GFLOPs) of the named schedules at each r, from docs/schedules-demo.csv."""
    frame = _ok(read_csv(SCHEDULES))
    named = frame[frame["schedule"].isin(["constant", "decreasing", "increasing"]) & (frame["reducer"] == "tome")]
    lines = ["| r | constant | decreasing (authors') | increasing (authors') |", "| --- | --- | --- | --- |"]
    for r in sorted(int(v) for v in named["r"].unique()):
        cells = []
        for schedule in ("constant", "decreasing", "increasing"):
            row = named[(named["r"] == r) & (named["schedule"] == schedule)]
            cells.append(
                "-" if row.empty else f"{fmt(row.iloc[0]['top1'], '.2f')} ({fmt(row.iloc[0]['infer_gflops'], '.4f')})"
            )
        lines.append(f"| {r} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def batch() -> str:
    """Speedup by batch size, from docs/batch-vit_s-cpu.csv."""
    frame = _ok(read_csv(BATCH))
    sizes = sorted(int(b) for b in frame["infer_batch_size"].unique())
    lines = ["| batch | " + " | ".join(map(str, sizes)) + " |", "| --- |" + " --- |" * len(sizes)]
    base = frame[frame["reducer"] == "none"].set_index("infer_batch_size")
    lines.append(
        "| unpatched, images/s | " + " | ".join(fmt(base.loc[b, "infer_samples_per_sec"], ".1f") for b in sizes) + " |"
    )
    for r, rows in frame[frame["reducer"] == "tome"].groupby("r"):
        by = rows.set_index("infer_batch_size")
        lines.append(f"| ToMe r={int(r)} | " + " | ".join(_speedup(by.loc[b]) for b in sizes) + " |")
    return "\n".join(lines)


def field() -> str:
    """Every reducer at ToMe's cost on ViT-B/16 (benchmarks/field.py, one interleaved run), from
    docs/field-vitb16-cpu.csv: the knob value matched, GMACs per image and their cut, speedup and the attention run;
    a reducer that could not run is listed with its reason."""
    frame = read_csv(FIELD)
    base = frame[(frame["reducer"] == "none") & frame["error"].isna()].iloc[0]
    lines = [
        "| reducer | ran at | GMACs | GMACs cut | speedup (95% interval) | attention |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| unpatched | - | {fmt(base['infer_gflops'] / 2, '.3f')} | - | 1.00x | {base['attn_impl']} |",
    ]
    for _, row in frame[frame["reducer"] != "none"].iterrows():
        if isinstance(row["error"], str):
            reason = row["error"].split(";")[0].split(": ", 1)[-1]
            lines.append(f"| {row['reducer']} | not run: {reason} | | | | |")
            continue
        ran = row["reducer_options"] if isinstance(row["reducer_options"], str) else f"r={row['r']}"
        cut = 1 - row["infer_gflops"] / base["infer_gflops"]
        lines.append(
            f"| {row['reducer']} | {ran} | {fmt(row['infer_gflops'] / 2, '.3f')} | {cut:.1%} | {_speedup(row)} "
            f"| {row['attn_impl']} |"
        )
    return "\n".join(lines)


# Where each method was published; the rest of the reducer table comes from what each reducer declares.
VENUES = {
    "tome": "ICLR 2023",
    "prune": "ToMe's baseline (ICLR 2023)",
    "attn-prune": "ToMe's baseline (ICLR 2023)",
    "kmeans": "ToMe's baseline (ICLR 2023)",
    "evit": "ICLR 2022",
    "pitome": "NeurIPS 2024",
    "diffrate": "ICCV 2023",
    "ppt": "arXiv 2310.01812 (2023)",
    "mctf": "CVPR 2024",
    "dct": "Findings of ACL 2023 (Fourier Transformer)",
    "tofu": "WACV 2024",
    "atc": "ECCV 2024",
}


def short_source(source: str) -> str:
    """A reducer's source as the table shows it: the repository@commit its parity was checked against (the first
    one named; its docs name the files), "the paper" and the port an option reproduces for a method from a paper,
    or the whole text where it names no repository (a baseline)."""
    repos = [word for word in source.replace(";", " ").split() if "@" in word and "/" in word]
    if source.startswith("the paper") and repos:
        head = source.split(";")[0]
        head += ")" * (head.count("(") - head.count(")"))
        return f"{head}; its port as an option: {repos[0]}"
    return repos[0] if repos else source


def reducers() -> str:
    """Every registered reducer as it declares itself: venue, the code it reproduces, knob, site, needs, default
    proportional attention and the attention it runs."""
    from tomebench.reducers import REDUCERS

    lines = [
        "| reducer | venue | reproduces | knob | acts | reads | prop. attn | attention |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for entry in sorted(
        REDUCERS, key=lambda e: (e.name not in VENUES, list(VENUES).index(e.name) if e.name in VENUES else 0)
    ):
        spec = entry.obj
        if spec.kind == "none":
            continue
        source = short_source(spec.source)
        attention = "eager (full matrix)" if "attention" in spec.needs else "fused (SDPA)"
        lines.append(
            f"| `{entry.name}` | {VENUES.get(entry.name, '')} | {source} | `{spec.knob}` | {spec.acts} "
            f"| {', '.join(sorted(spec.needs)) or '-'} | {'on' if spec.prop_attn else 'off'} | {attention} |"
        )
    return "\n".join(lines)


TABLES: dict[str, Callable[[], str]] = {
    "reducers": reducers,
    "demo-top1": demo_top1,
    "demo-tome": demo_tome,
    "ablation": ablation,
    "schedules": schedules,
    "batch": batch,
    "field": field,
}


def pattern(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- generated: {re.escape(name)} [^\n]*-->\n)(.*?)(\n<!-- end: {re.escape(name)} -->)", re.S)


def render(text: str) -> str:
    """The README with every generated table made anew."""
    for name, make in TABLES.items():
        found = pattern(name).search(text)
        if found is None:
            raise SystemExit(f"README.md has no table {name!r} (<!-- generated: {name} ... -->)")
        text = text[: found.start(2)] + make() + text[found.end(2) :]
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help="rewrite README.md")
    args = parser.parse_args()
    text = README.read_text()
    new = render(text)
    if args.write:
        README.write_text(new)
        print("README.md: tables regenerated" if new != text else "README.md: already up to date")
    else:
        print("up to date" if new == text else "README.md differs from the CSVs: run with --write")


if __name__ == "__main__":
    main()
