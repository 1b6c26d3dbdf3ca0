#!/usr/bin/env python3
"""An independent reference for the router model: pure Python (standard library only) reads
models/router, tokenises with its own BERT BasicTokenizer + WordPiece, pools, runs the heads and the window, and
prints the scores the Rust classifier must reproduce. Regenerate the committed golden file with
  python3 scripts/golden-reference.py > tests/golden/router.json
"""
import json, math, struct, sys, unicodedata

DIR = sys.argv[1] if len(sys.argv) > 1 else "models/router"
PROMPTS = [
    "hey, how's it going?",
    "Write a Python function that merges two sorted lists in O(n) time.",
    "What is the integral of x^2 sin(x) dx? Show each step.",
    "Does the indemnification clause survive termination of the Agreement? Answer Yes or No.",
    "Café owners in Zürich — résumé tips? 👍 {\"json\": [1, 2]}",
]

def load_safetensors(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    base = 8 + n
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        data = raw[base + a: base + b]
        if meta["dtype"] == "F32":
            vals = list(struct.unpack("<%df" % (len(data) // 4), data))
        elif meta["dtype"] == "F16":
            vals = list(struct.unpack("<%de" % (len(data) // 2), data))
        elif meta["dtype"] == "BF16":
            # The top half of an f32's bits (the heads' first layers).
            halves = struct.unpack("<%dH" % (len(data) // 2), data)
            vals = list(struct.unpack("<%df" % len(halves), struct.pack("<%dI" % len(halves), *(h << 16 for h in halves))))
        elif meta["dtype"] == "I8":
            vals = list(struct.unpack("<%db" % len(data), data))
        elif meta["dtype"] == "U8":
            vals = list(data)
        else:
            raise SystemExit("unsupported dtype " + meta["dtype"])
        out[name] = (vals, meta["shape"])
    return out

def softmax(z):
    m = max(z)
    e = [math.exp(x - m) for x in z]
    s = sum(e)
    return [x / s for x in e]

def signed4(n):
    return n - 16 if n >= 8 else n

def unpack_int4(packed, shape):
    """Two 4-bit two's-complement values per byte, the even column in the low nibble."""
    vals = []
    for b in packed:
        vals.append(signed4(b & 0x0F))
        vals.append(signed4(b >> 4))
    return vals, [shape[0], shape[1] * 2]

def is_punct(c):
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")

def is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)

def basic_tokenize(text):
    # clean: drop NUL, U+FFFD and control characters; white space becomes a space
    cleaned = []
    for c in text:
        cp = ord(c)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(c) in ("Cc", "Cf", "Co") and c not in "\t\n\r"):
            continue
        cleaned.append(" " if c.isspace() else c)
    out = []
    for c in "".join(cleaned):
        out.append(" %s " % c if is_cjk(ord(c)) else c)
    words = []
    for w in "".join(out).split():
        w = unicodedata.normalize("NFD", w.lower())
        w = "".join(c for c in w if unicodedata.category(c) != "Mn")
        cur = ""
        for c in w:
            if is_punct(c):
                if cur:
                    words.append(cur)
                    cur = ""
                words.append(c)
            else:
                cur += c
        if cur:
            words.append(cur)
    return words

def wordpiece(word, vocab):
    if len(word) > 100:
        return [vocab["[UNK]"]]
    ids, start = [], 0
    while start < len(word):
        end, found = len(word), None
        while start < end:
            piece = ("##" if start > 0 else "") + word[start:end]
            if piece in vocab:
                found = vocab[piece]
                break
            end -= 1
        if found is None:
            return [vocab["[UNK]"]]
        ids.append(found)
        start = end
    return ids

def tfidf(items, idf):
    # A TF-IDF bag of the distinct items with an idf: (1 + ln tf) * idf, L2-normalised, as
    # (item, weight) pairs (empty when no item has an idf).
    bag = [(i, (1 + math.log(items.count(i))) * idf[i]) for i in sorted(set(items)) if idf[i] > 0]
    norm = math.sqrt(sum(v * v for _, v in bag))
    return [(i, v / norm) for i, v in bag] if norm > 0 else []


def main():
    cfg = json.load(open(DIR + "/config.json"))
    vocab = {t: i for i, t in enumerate(open(DIR + "/vocab.txt", encoding="utf-8").read().split("\n")) if t or i == 0}
    w = load_safetensors(DIR + "/model.safetensors")
    if cfg.get("embedding_bits", 8) == 4:
        emb, (V, D) = unpack_int4(*w["embeddings"])
    else:
        emb, (V, D) = w["embeddings"][0], w["embeddings"][1]
    scales = w["embedding_scales"][0]
    weights = w["token_weights"][0]
    spans = [e for e in (cfg.get("edge_tokens", 0), cfg.get("wide_edge_tokens", 0)) if e > 0]

    def pool(ids, weighted):
        f = [0.0] * D
        for i in ids:
            k = scales[i] * (weights[i] if weighted else 1.0)
            row = emb[i * D:(i + 1) * D]
            f = [a + k * b for a, b in zip(f, row)]
        norm = math.sqrt(sum(x * x for x in f))
        return [x / norm for x in f] if norm > 0 else f

    results = []
    for p in PROMPTS:
        ids = [i for word in basic_tokenize(p) for i in wordpiece(word, vocab)]
        H, T = cfg["head_tokens"], cfg["tail_tokens"]
        if len(ids) > H + T:
            ids = ids[:H] + ids[-T:]
        visible = [c for c in p if not c.isspace()]
        v = max(len(visible), 1)
        digits = sum(c.isdigit() and c.isascii() for c in visible)
        code = sum(c in "{}[]();=<>_\\$^|#*" for c in visible)
        lines = p.count("\n") + 1
        f = [math.log(len(ids) + 1) / math.log(512), digits / v, code / v, min(math.log(lines) / 5, 1.0)]
        f += pool(ids, True)
        for e in spans:
            f += pool(ids[:e], False) + pool(ids[-e:], False)
        for name in ("domain_lexicon", "intent_lexicon"):
            if not cfg.get(name):
                continue
            # Over the lexicon rows of the prompt's distinct tokens: the softmax of their sum
            # (the naive-Bayes posterior), then their max. The domain lexicon's come first.
            lex, (_, n) = w[name]
            rows = [lex[i * n:(i + 1) * n] for i in sorted(set(ids))]
            if rows:
                f += softmax([sum(r[d] for r in rows) for d in range(n)])
                f += [max(r[d] for r in rows) for d in range(n)]
            else:
                f += [0.0] * (2 * n)

        def head(name, x):
            w1, (h, n_in) = w[name + ".w1"][0], w[name + ".w1"][1]
            b1 = w[name + ".b1"][0]
            w2, (o, _) = w[name + ".w2"][0], w[name + ".w2"][1]
            b2 = w[name + ".b2"][0]
            assert len(x) >= n_in, (name, len(x), n_in)
            hid = [max(0.0, sum(w1[j * n_in + k] * x[k] for k in range(n_in)) + b1[j]) for j in range(h)]
            return [sum(w2[j * h + k] * hid[k] for k in range(h)) + b2[j] for j in range(o)]

        def mean_of_members(name):
            # An ensemble's members are "name", "name.1", …; the model reports their mean.
            n = cfg.get("ensemble", 1)
            members = [softmax(head(name if m == 0 else "%s.%d" % (name, m), f)) for m in range(n)]
            return [sum(p) / n for p in zip(*members)]

        intent = mean_of_members("intent")
        # The complexity head reads the surface features and the leading complexity_dims of the
        # main pool (every feature when 0), then one complexity lexicon score per family, then
        # the intent probabilities.
        dims = cfg.get("complexity_dims", 0)
        x = list(f[:4 + dims] if dims else f)
        families = cfg.get("complexity_lexicon", [])
        if families:
            # The prompt's TF-IDF bag of tokens times each family's column of weights.
            idf = w["token_idf"][0]
            lex, (_, k) = w["complexity_lexicon"]
            bag = tfidf(ids, idf)
            scores = [sum(v * lex[i * k + j] for i, v in bag) for j in range(k)]
            if cfg.get("complexity_wide"):
                # Wide families also weigh the prompt's adjacent token pairs, hashed into
                # 2^bits buckets (the top bits of a 64-bit multiplicative hash of both ids) and
                # bagged the same way, and the surface features with an intercept.
                bits = cfg["complexity_pair_bits"]
                pairs = [(((a << 32 | b) * 0x9E3779B97F4A7C15) % (1 << 64)) >> (64 - bits) for a, b in zip(ids, ids[1:])]
                pidf = w["pair_idf"][0]
                plex = w["complexity_pairs"][0]
                pbag = tfidf(pairs, pidf)
                surface = w["complexity_surface"][0]
                for j in range(k):
                    scores[j] += sum(v * plex[i * k + j] for i, v in pbag)
                    row = surface[j * 5:(j + 1) * 5]
                    scores[j] += row[4] + sum(a * b for a, b in zip(row, f[:4]))
            x += scores
            topics = cfg.get("complexity_topics", 0)
            if topics:
                # The topic prior, which only the experts read (as "topic.FAMILY"): a softmax
                # over the main pool (f[4:4 + D]) says which source of labelled prompts the
                # prompt is like, and each family's per-topic mean label is averaged under it.
                tw, tb, tp = w["topic_weight"][0], w["topic_bias"][0], w["topic_prior"][0]
                main_pool = f[4:4 + D]
                probs = softmax([tb[t] + sum(a * b for a, b in zip(tw[t * D:(t + 1) * D], main_pool)) for t in range(topics)])
                for j in range(k):
                    scores.append(sum(probs[t] * tp[t * k + j] for t in range(topics)))
        if cfg.get("complexity_intent"):
            x += intent
        # Platt scaling of the head's logit, when the model was calibrated.
        a, b = cfg.get("complexity_calibration", [1.0, 0.0])
        z = a * head("complexity", x)[0] + b
        # Older models wrote their one expert as the object complexity_expert.
        experts = cfg.get("complexity_experts") or ([cfg["complexity_expert"]] if "complexity_expert" in cfg else [])
        for expert in experts:
            # Each expert adds its family's score again, centred and scaled, in proportion to
            # the probability of its intents.
            gate = sum(intent[cfg["intent_labels"].index(i)] for i in expert["intents"])
            name = expert["family"]
            at = len(families) + families.index(name[len("topic."):]) if name.startswith("topic.") else families.index(name)
            score = scores[at]
            z += min(max(gate, 0.0), 1.0) * expert["slope"] * (score - expert["centre"])

        def pool_bag(name, heads):
            # A bag is a multinomial logistic regression over the prompt's TF-IDF bag of tokens
            # (with the complexity lexicon's token_idf); its probabilities are pooled with the
            # heads' mean as p ~ heads^(1 - w) * bag^w.
            weight = cfg.get(name, 0.0)
            if not weight:
                return heads
            rows, (_, n) = w[name]
            bag = tfidf(ids, w["token_idf"][0])
            # The domain bag's weight grows with the bag's distinct tokens up to
            # domain_bag_tokens (absent or 0: the full weight always).
            full = cfg.get(name + "_tokens", 0)
            if full:
                weight = weight * min(len(bag), full) / full
            z = [w[name + "_bias"][0][j] + sum(v * rows[i * n + j] for i, v in bag) for j in range(n)]
            probs = softmax(z)
            floor = 1e-12
            return softmax([(1 - weight) * math.log(max(h, floor)) + weight * math.log(max(q, floor)) for h, q in zip(heads, probs)])

        def pool_window(probs):
            # The window: each filter's response at each place is the token before's "before"
            # tap, the token's own "centre" tap (the filter's bias folded in) and the token
            # after's "after" tap, each int8 times its token's scale (a missing neighbour adds
            # nothing); its ReLU, max-pooled over the prompt (0 if it never fires), joins the
            # heads' inputs f in the head "window", whose probabilities are pooled with the
            # intent as p ~ intent^(1 - w) * window^w.
            weight = cfg.get("intent_window", 0.0)
            if not weight:
                return probs
            F = cfg["window_filters"]
            taps, (_, n) = w["window_taps"]
            sc = w["window_scales"][0]

            def tap(i, k):
                return [sc[i] * t for t in taps[i * n + k * F:i * n + (k + 1) * F]]
            best = [0.0] * F
            for at, i in enumerate(ids):
                h = tap(i, 1)
                if at > 0:
                    h = [a + b for a, b in zip(h, tap(ids[at - 1], 0))]
                if at + 1 < len(ids):
                    h = [a + b for a, b in zip(h, tap(ids[at + 1], 2))]
                best = [max(a, b) for a, b in zip(best, h)]
            q = softmax(head("window", f + best))
            floor = 1e-12
            return softmax([(1 - weight) * math.log(max(a, floor)) + weight * math.log(max(b, floor)) for a, b in zip(probs, q)])

        # Each recorded pair's complexity: the same TF-IDF bag (token_idf) times the pair's
        # column of pair_lexicon, Platt-scaled with the pair's calibration to a logit, then pooled
        # with the head's logit z (experts included) with the pair's weight.
        pair_scores = {}
        pairs = cfg.get("complexity_pairs", [])
        if pairs:
            plex, (_, n) = w["pair_lexicon"]
            bag = tfidf(ids, w["token_idf"][0])
            for j, pair in enumerate(pairs):
                s = sum(v * plex[i * n + j] for i, v in bag)
                a, b = pair["calibration"]
                u = (1 - pair["pool"]) * z + pair["pool"] * (a * s + b)
                pair_scores[pair["name"]] = 1 / (1 + math.exp(-u))

        def offset(probs):
            # The domain offsets (config.json, by label) are added to the pooled log-probabilities,
            # which are renormalised.
            offsets = cfg.get("domain_offsets", {})
            if not offsets:
                return probs
            return softmax([math.log(max(q, 1e-12)) + offsets.get(label, 0.0)
                            for label, q in zip(cfg["domain_labels"], probs)])

        results.append({
            "prompt": p,
            "token_ids": ids,
            # The complexity above read the heads' intent; the reported one is pooled with the
            # bag, then with the window.
            "intent": dict(zip(cfg["intent_labels"], pool_window(pool_bag("intent_bag", intent)))),
            "domain": dict(zip(cfg["domain_labels"], offset(pool_bag("domain_bag", mean_of_members("domain"))))),
            "complexity": 1 / (1 + math.exp(-z)),
            "complexity_pairs": pair_scores,
        })
    json.dump(results, sys.stdout, indent=1)
    print()

main()
