"""The looser look: the check by hand, beyond the near-duplicate test, that a new prompt file
asks no request already asked in training-data/ or eval/prompts/.

For each prompt of FILE it lists the earlier prompts and user turns (every .jsonl of
training-data/ and eval/prompts/ but FILE itself) that share its content words:
  NEAR  Jaccard >= 0.5, the rule of the repository's near-duplicate test;
  look  Jaccard >= 0.3 with at least two words shared, or at least half of the shorter
        prompt's content words (when it has four or more) within the other;
  SELF  Jaccard >= 0.3 with another prompt of FILE.
A listed pair is read by hand: shared topic words are fine, the same request in other words is
rewritten. Long tests 5 and 6 and training-data/long-2.jsonl were checked this way, each draft
in rounds until nothing listed asked an earlier request; the drafts are not kept, so the counts
of their datasheets came from runs on them.

    python3 eval/prototypes/looser_look.py FILE [--min-jaccard 0.1]
    python3 eval/prototypes/looser_look.py FILE --closest OTHER [N]

--min-jaccard also prints weaker look pairs from that Jaccard up. --closest prints the N (5)
closest pairs between FILE and OTHER by Jaccard, with the words they share.
"""
import glob
import json
import os
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
STOP = set("""a an the and or but if of to in on at by for with from into onto about as is are was
were be been being am do does did doing have has had having i me my mine we us our you your yours
he him his she her it its they them their this that these those there here what which who whom
whose when where why how can could would should will shall may might must not no yes so than then
too very just also only some any all each every more most much many such own same other another
one please pls thanks thank hi hey ok okay s t d ll m re ve don doesn didn isn aren wasn weren won
wouldn shouldn couldn get got make give tell write say show use""".split())


def words(text):
    out, cur = [], ""
    for c in text:
        if c.isalnum():
            cur += c.lower()
        elif cur:
            out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return {w for w in out if w not in STOP}


def prompts(path):
    """(prompt or user turn) of each line of a dataset-format file."""
    for line in open(path):
        r = json.loads(line)
        if "prompt" in r:
            yield r["prompt"]
        for m in r.get("messages", []):
            if m.get("role") == "user" and isinstance(m.get("content"), str):
                yield m["content"]


def jaccard(a, b):
    return len(a & b) / len(a | b) if a | b else 0.0


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    new_path = os.path.abspath(args[0])
    new = list(prompts(new_path))
    new_words = [words(p) for p in new]
    if "--closest" in args:
        i = args.index("--closest")
        other = [words(p) for p in prompts(args[i + 1])]
        n = int(args[i + 2]) if len(args) > i + 2 else 5
        pairs = sorted(((jaccard(a, b), x, y) for x, a in enumerate(new_words)
                        for y, b in enumerate(other)), reverse=True)[:n]
        for j, x, y in pairs:
            print(f"{j:.3f} line {x + 1} ~ line {y + 1}: {' '.join(sorted(new_words[x] & other[y]))}")
        return
    floor = float(args[args.index("--min-jaccard") + 1]) if "--min-jaccard" in args else None
    files = glob.glob(os.path.join(ROOT, "training-data", "*.jsonl")) + glob.glob(
        os.path.join(ROOT, "eval", "prompts", "*.jsonl"))
    earlier = [(os.path.basename(f), p, words(p)) for f in sorted(files)
               if os.path.abspath(f) != new_path for p in prompts(f)]
    for i, (prompt, a) in enumerate(zip(new, new_words)):
        hits = []
        for name, p, b in earlier:
            shared = len(a & b)
            if not shared:
                continue
            j = jaccard(a, b)
            small = min(len(a), len(b))
            if j >= 0.5:
                hits.append(("NEAR", j, name, p))
            elif (j >= 0.3 and shared >= 2) or (small >= 4 and shared >= 0.5 * small):
                hits.append(("look", j, name, p))
            elif floor is not None and j >= floor:
                hits.append(("weak", j, name, p))
        for k, b in enumerate(new_words):
            if k != i and jaccard(a, b) >= 0.3:
                hits.append(("SELF", jaccard(a, b), f"line {k + 1}", new[k]))
        if hits:
            print(f"line {i + 1} | {prompt[:90]!r}")
            for kind, j, where, p in sorted(hits, key=lambda h: -h[1])[:8]:
                print(f"    {kind} {j:.2f} {where}: {p[:100]!r}")


if __name__ == "__main__":
    main()
