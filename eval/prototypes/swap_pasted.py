"""Swapped pasted texts: the training prompts of the twenty-first session's second try for
prompts that paste material in (eval/router-development.md, "Pasted texts"; not kept).

Each hand-written prompt in training-data/ of an intent that works on a given text
(summarization, extraction, classification, rewrite, closed_qa) whose pasted text stands in a
paragraph of its own (at least 300 characters, split at blank lines, the longest paragraph at
least half of them) is copied K times with that paragraph swapped for another such prompt's,
chosen at random (seeded). The copy keeps the request's intent and has no domain.

    python3 eval/prototypes/swap_pasted.py 2 7 > target/swapped.jsonl
    switchyard train --data ../shared/data --extra target/swapped.jsonl --out target/router-swapped

The record's rows used K 2 and seed 7 (148 prompts from 74).
"""
import glob
import json
import random
import re
import sys

INTENTS = {"summarization", "extraction", "classification", "rewrite", "closed_qa"}


def pasted_paragraph(prompt):
    """The prompt's paragraphs and the index of its pasted one, or None."""
    if len(prompt) < 300:
        return None
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", prompt) if p.strip()]
    if len(paragraphs) < 2:
        return None
    longest = max(range(len(paragraphs)), key=lambda i: len(paragraphs[i]))
    if len(paragraphs[longest]) < 0.5 * len(prompt):
        return None
    return paragraphs, longest


def main():
    per_prompt, seed = int(sys.argv[1]), int(sys.argv[2])
    rng = random.Random(seed)
    base = []
    for path in sorted(glob.glob("training-data/*.jsonl")):
        for line in open(path, encoding="utf-8"):
            record = json.loads(line)
            prompt = record.get("prompt")
            if not prompt or record.get("intent") not in INTENTS:
                continue
            found = pasted_paragraph(prompt)
            if found:
                base.append((*found, record["intent"]))
    count = 0
    for i, (paragraphs, at, intent) in enumerate(base):
        others = [j for j in range(len(base)) if j != i]
        for j in rng.sample(others, min(per_prompt, len(others))):
            theirs, their_at, _ = base[j]
            swapped = paragraphs[:at] + [theirs[their_at]] + paragraphs[at + 1:]
            record = {"prompt": "\n\n".join(swapped), "intent": intent,
                      "source": "handwritten-swapped-pasted"}
            print(json.dumps(record, ensure_ascii=False))
            count += 1
    print(f"{count} swapped prompts from {len(base)}", file=sys.stderr)


if __name__ == "__main__":
    main()
