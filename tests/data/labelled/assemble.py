#!/usr/bin/env python3
"""Rebuild the labelled development sets from the annotation passes.

    python3 tests/data/labelled/assemble.py [../shared/data]

Inputs (all in this folder except the source texts):
- ``passes/S{1..6}.{A,B}.tsv``: two independent passes (annotators A and B, who saw
  only the text and docs/LABELLING.md), ``id<TAB>labels`` per line;
- ``adjudicated.tsv``: the final labels of every item on which the passes disagree;
- ``weibo_sample.json``: which Weibo posts were sampled (seeded, before labelling);
- the source files ``dev_messages.csv`` and ``weibo_service_posts.jsonl``.

Outputs: ``food_shopping.jsonl`` and ``weibo_service.jsonl`` (one labelled message per
line with its provenance, both passes and its split) and ``agreement.json``.

The split is frozen by a hash of the item id (60 % train, 20 % dev, 20 % test), decided
before any keyword or model was tuned; it never depends on the labels.
"""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CATEGORIES = ("logistics", "food_safety", "quality", "order", "payment", "after_sales",
              "service", "account", "safety", "legal", "none")
SPLIT_SALT = "omniroute-labelled-2026-11-30"


def split_of(item_id: str) -> str:
    bucket = int(hashlib.sha256(f"{SPLIT_SALT}:{item_id}".encode()).hexdigest(), 16) % 100
    return "train" if bucket < 60 else "dev" if bucket < 80 else "test"


def read_pass(path: Path) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        item, _, labels = line.partition("\t")
        cats = frozenset(x.strip() for x in labels.split(",") if x.strip())
        bad = cats - set(CATEGORIES)
        if not cats or bad or ("none" in cats and len(cats) > 1) or item in out:
            raise SystemExit(f"{path}:{n}: bad line {line!r}")
        out[item] = cats
    return out


def kappa(a: list[bool], b: list[bool]) -> float:
    n = len(a)
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return 1.0 if pe == 1 else (po - pe) / (1 - pe)


def main(shared: Path) -> None:
    rows = list(csv.DictReader((shared / "dev_messages.csv").open(encoding="utf-8")))
    texts: dict[str, tuple[str, str, str]] = {
        f"d{i:04d}": (r["source"], r["text"], f"dev_messages.csv row {i + 2}")
        for i, r in enumerate(rows)
    }
    with (shared / "weibo_service_posts.jsonl").open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            d = json.loads(line)
            texts[d["id"]] = (d["source"], d["text"], f"weibo_service_posts.jsonl line {n}")
    # The seeded sample of 2,000 (S3, S4) was labelled first, the remaining posts (S5, S6)
    # the same way afterwards; the file keeps the sample first, then the rest in file order.
    sample = json.loads((HERE / "weibo_sample.json").read_text())["weibo_ids"]
    taken = set(sample)
    weibo_ids = sample + [i for i in texts if i.startswith("w") and i not in taken]
    a: dict[str, frozenset[str]] = {}
    b: dict[str, frozenset[str]] = {}
    for s in ("S1", "S2", "S3", "S4", "S5", "S6"):
        a |= read_pass(HERE / "passes" / f"{s}.A.tsv")
        b |= read_pass(HERE / "passes" / f"{s}.B.tsv")
    adjudicated = read_pass(HERE / "adjudicated.tsv") if (HERE / "adjudicated.tsv").exists() else {}
    agreement: dict[str, dict[str, object]] = {}
    for name, ids in (("food_shopping", [f"d{i:04d}" for i in range(len(rows))]),
                      ("weibo_service", weibo_ids)):
        missing = [i for i in ids if i not in a or i not in b]
        if missing:
            raise SystemExit(f"{name}: {len(missing)} items lack a pass, e.g. {missing[:3]}")
        disagree = [i for i in ids if a[i] != b[i]]
        unresolved = [i for i in disagree if i not in adjudicated]
        if unresolved:
            raise SystemExit(f"{name}: {len(unresolved)} disagreements not adjudicated, "
                             f"e.g. {unresolved[:3]}")
        per: dict[str, object] = {}
        for c in CATEGORIES:
            xa, xb = [c in a[i] for i in ids], [c in b[i] for i in ids]
            both = sum(x and y for x, y in zip(xa, xb, strict=True))
            either = sum(x or y for x, y in zip(xa, xb, strict=True))
            per[c] = {"kappa": round(kappa(xa, xb), 3),
                      "positive_agreement": round(2 * both / (sum(xa) + sum(xb)), 3)
                      if sum(xa) + sum(xb) else None,
                      "pass_a": sum(xa), "pass_b": sum(xb), "either": either}
        agreement[name] = {"items": len(ids), "exact_set_agreement":
                           round(1 - len(disagree) / len(ids), 3),
                           "adjudicated": len(disagree), "per_category": per}
        with (HERE / f"{name}.jsonl").open("w", encoding="utf-8") as out:
            for i in ids:
                source, text, origin = texts[i]
                final = adjudicated.get(i, a[i]) if a[i] != b[i] else a[i]
                out.write(json.dumps({
                    "id": i, "source": source, "origin": origin, "text": text,
                    "labels": sorted(final), "pass_a": sorted(a[i]), "pass_b": sorted(b[i]),
                    "adjudicated": a[i] != b[i], "split": split_of(i),
                }, ensure_ascii=False) + "\n")
    (HERE / "agreement.json").write_text(json.dumps(agreement, indent=2) + "\n")
    for name, info in agreement.items():
        print(f"{name}: {info['items']} items, both passes gave the same set on "
              f"{info['exact_set_agreement']:.1%}; {info['adjudicated']} adjudicated")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[3] / "shared" / "data")
