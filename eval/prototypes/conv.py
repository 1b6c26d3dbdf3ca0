"""A prototype, not the router: what a convolution over the static token rows would add.

The static model reads a prompt as pooled token vectors plus per-token tables, so it never sees
two tokens side by side ("a basic will", "tried twice"). This trains two small classifiers on the
same data with JAX, from the committed model's own token rows (frozen):

- pool: the rarity-weighted mean of the rows and the means of the first and the last 8 tokens,
  then a hidden layer of 64;
- conv: the same, plus a convolution of width 3 over the rows (128 filters, ReLU), max-pooled over
  the prompt: a feature fires wherever its three tokens appear;
- conv-edges: the conv arm, its filters also max-pooled over the first and the last 24 tokens
  alone (where a request to do something with pasted material usually sits);
- conv-quotes: the conv arm, its filters also max-pooled over the tokens outside pasted material
  (quoted spans of 40 characters or more, and lines after a line ending in a colon, up to a
  blank line: `material`);
- tokens and pairs (scikit-learn, no rows): a logistic regression over the prompt's TF-IDF bag of
  tokens, and over that bag and its pairs of adjacent tokens (hashed into 65536 buckets): whether
  neighbouring tokens help without the rows, as a pair bag in the model would.

Each is scored on the project's hand-written evaluation prompts (eval/prompts/*.jsonl, the ones
with a `prompt`; conversations and the sets named in eval/prompts/SEALED are left out), alone and pooled with the committed model's own
probabilities as its bags are pooled (p ∝ model^(1 − w) · prototype^w). The pool arm is the
control: any second model pooled in moves the figures; the conv arm's gain over it is what the
convolution adds. Run through scripts/prototype-conv, which installs what this needs.
"""

import argparse
import glob
import json
import random
import re
import struct
import subprocess
import time

import jax
import jax.numpy as jnp
import numpy as np
from tokenizers import BertWordPieceTokenizer

INTENTS = ["chat", "coding", "math", "reasoning", "creative_writing", "summarization",
           "extraction", "classification", "rewrite", "open_qa", "closed_qa", "brainstorming"]
DOMAINS = ["general", "legal", "medical", "finance"]
FILTERS = 128
HIDDEN = 64
EDGE = 24


def material(text):
    """Character spans of pasted material: quoted spans of 40 characters or more (an opening quote
    after a space, `(`, a colon or the start, a closing one before a space, punctuation or the end, so
    that apostrophes do not count), and the lines after a line ending in a colon, up to a blank
    line."""
    spans = [(m.start(), m.end()) for m in re.finditer(
        r"(?:^|(?<=[\s(:]))['\"\u2018\u201c].{40,}?['\"\u2019\u201d](?=$|[\s.,;:!?)])", text, re.S)]
    at, inside = 0, None
    for line in text.split("\n"):
        end = at + len(line)
        if inside is not None and not line.strip():
            spans.append((inside, at))
            inside = None
        if inside is None and line.rstrip().endswith(":"):
            inside = end + 1
        at = end + 1
    if inside is not None and inside < len(text):
        spans.append((inside, len(text)))
    return spans


def static_rows(model_dir):
    """The committed model's token rows (4-bit, two to a byte, low nibble first) and weights."""
    with open(f"{model_dir}/model.safetensors", "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        blob = f.read()

    def tensor(name, dtype):
        start, end = header[name]["data_offsets"]
        return np.frombuffer(blob[start:end], dtype=dtype).reshape(header[name]["shape"])

    packed = tensor("embeddings", np.uint8)
    rows = np.empty((packed.shape[0], packed.shape[1] * 2), np.float32)
    rows[:, 0::2] = ((packed << 4).astype(np.int8) >> 4).astype(np.float32)
    rows[:, 1::2] = (packed.astype(np.int8) >> 4).astype(np.float32)
    rows *= tensor("embedding_scales", np.float32)[:, None]
    return jnp.asarray(rows), jnp.asarray(tensor("token_weights", np.float32))


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def training_rows(data_dir, task, labels, cap, handwritten_weight):
    """(prompt, label index, weight): each source capped, hand-written prompts weighted up."""
    rng = random.Random(7)
    out = []
    for path in sorted(glob.glob(f"{data_dir}/*.jsonl")):
        by_source = {}
        for r in read_jsonl(path):
            by_source.setdefault(r["source"], []).append(r)
        for source in sorted(by_source):
            rows = by_source[source]
            rng.shuffle(rows)
            for r in rows[:cap]:
                if r.get(task) in labels and r.get("prompt"):
                    w = handwritten_weight if source.startswith("handwritten") else 1.0
                    out.append((r["prompt"], labels.index(r[task]), w))
    rng.shuffle(out)
    return out


def evaluation_rows(prompts_dir, task, labels):
    """The labelled prompts of the evaluation sets, less the sets named in SEALED (scored once,
    after the change they are sealed for; scripts/eval-reports skips them alike)."""
    with open(f"{prompts_dir}/SEALED") as f:
        sealed = {line.strip() for line in f if line.strip() and not line.startswith("#")}
    out = []
    for path in sorted(glob.glob(f"{prompts_dir}/*.jsonl")):
        if path.split("/")[-1] in sealed:
            continue
        for r in read_jsonl(path):
            if r.get("prompt") is not None and r.get(task) in labels:
                out.append((r["prompt"], labels.index(r[task]), path.split("/")[-1]))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--task", choices=["intent", "domain"], required=True)
    ap.add_argument("--arch", choices=["pool", "conv", "conv-edges", "conv-quotes", "tokens", "pairs"],
                    required=True)
    ap.add_argument("--filters", type=int, default=FILTERS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--data", required=True, help="the public sources, imported by eval import")
    ap.add_argument("--model", default="models/router")
    ap.add_argument("--prompts", default="eval/prompts")
    ap.add_argument("--switchyard", default="target/release/switchyard")
    ap.add_argument("--out", required=True, help="where to write the probabilities (.npy)")
    a = ap.parse_args()
    labels = DOMAINS if a.task == "domain" else INTENTS

    rows, weights = static_rows(a.model)
    tok = BertWordPieceTokenizer(f"{a.model}/vocab.txt", lowercase=True)

    def ids_of(text):
        return encode(text)[0]

    def encode(text):
        # As the model reads a long prompt: its first 192 and last 64 tokens; and which of them
        # lie outside pasted material (for conv-quotes).
        enc = tok.encode(text, add_special_tokens=False)
        ids, offsets = enc.ids, enc.offsets
        if len(ids) > 256:
            ids, offsets = ids[:192] + ids[-64:], offsets[:192] + offsets[-64:]
        keep = [True] * len(ids)
        if a.arch == "conv-quotes":
            spans = material(text)
            keep = [not any(s <= o[0] < e for s, e in spans) for o in offsets]
            if not any(keep):
                keep = [True] * len(ids)
        return (ids, keep) if ids else ([100], [True])  # [UNK]

    def batch(items):
        enc = [encode(it[0]) for it in items]
        width = (max(len(i) for i, _ in enc) + 15) // 16 * 16
        x = np.zeros((len(enc), width), np.int32)
        mask = np.zeros((len(enc), width), np.float32)
        keep = np.zeros((len(enc), width), np.float32)
        for k, (i, kp) in enumerate(enc):
            x[k, :len(i)] = i
            mask[k, :len(i)] = 1
            keep[k, :len(i)] = kp
        return jnp.asarray(x), jnp.asarray(mask), jnp.asarray(keep)

    def init(key):
        k = jax.random.split(key, 3)
        pools = {"conv": 1, "conv-edges": 3, "conv-quotes": 2}.get(a.arch, 0)
        d = rows.shape[1] * 3 + a.filters * pools
        p = {"w1": jax.random.normal(k[0], (d, HIDDEN)) * (2 / d) ** 0.5,
             "b1": jnp.zeros(HIDDEN),
             "w2": jax.random.normal(k[1], (HIDDEN, len(labels))) * (1 / HIDDEN) ** 0.5,
             "b2": jnp.zeros(len(labels))}
        if pools:
            fan_in = 3 * rows.shape[1]
            p["cw"] = jax.random.normal(k[2], (3, rows.shape[1], a.filters)) * (2 / fan_in) ** 0.5
            p["cb"] = jnp.zeros(a.filters)
        return p

    def features(p, x, mask, keep):
        e = rows[x]
        w = weights[x] * mask
        mean = (e * w[..., None]).sum(1)
        mean = mean / (jnp.linalg.norm(mean, axis=-1, keepdims=True) + 1e-6)
        pos = jnp.cumsum(mask, 1)
        n = mask.sum(1, keepdims=True)
        first = (pos <= 8) * mask
        last = (pos > n - 8) * mask
        first_mean = (e * first[..., None]).sum(1) / first.sum(1, keepdims=True)
        last_mean = (e * last[..., None]).sum(1) / last.sum(1, keepdims=True)
        fs = [mean, first_mean * 4, last_mean * 4]
        if a.arch.startswith("conv"):
            ep = jnp.pad(e * mask[..., None], ((0, 0), (1, 1), (0, 0)))
            h = (ep[:, :-2] @ p["cw"][0] + ep[:, 1:-1] @ p["cw"][1] + ep[:, 2:] @ p["cw"][2]
                 + p["cb"])
            h = jax.nn.relu(h)
            fs.append((h * mask[..., None]).max(1))
            if a.arch == "conv-edges":
                fs.append((h * ((pos <= EDGE) * mask)[..., None]).max(1))
                fs.append((h * ((pos > n - EDGE) * mask)[..., None]).max(1))
            elif a.arch == "conv-quotes":
                fs.append((h * keep[..., None]).max(1))
        return jnp.concatenate(fs, -1)

    def logits(p, x, mask, keep, key=None):
        f = features(p, x, mask, keep)
        if key is not None:  # input dropout, as the model's heads train
            f = f * jax.random.bernoulli(key, 0.7, f.shape) / 0.7
        return jax.nn.relu(f @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    def loss(p, x, mask, keep, y, w, key):
        lp = jax.nn.log_softmax(logits(p, x, mask, keep, key))
        return -(jnp.take_along_axis(lp, y[:, None], 1)[:, 0] * w).sum() / w.sum()

    @jax.jit
    def step(p, m, v, t, x, mask, keep, y, w, key):
        # Adam, learning rate 1e-3, decoupled weight decay 1e-4.
        g = jax.grad(loss)(p, x, mask, keep, y, w, key)
        m = jax.tree.map(lambda a_, b: 0.9 * a_ + 0.1 * b, m, g)
        v = jax.tree.map(lambda a_, b: 0.999 * a_ + 0.001 * b * b, v, g)

        def update(q, mq, vq):
            mh = mq / (1 - 0.9 ** t)
            vh = vq / (1 - 0.999 ** t)
            return q - 1e-3 * mh / (jnp.sqrt(vh) + 1e-8) - 1e-7 * q
        return jax.tree.map(update, p, m, v), m, v

    predict = jax.jit(lambda p, x, mask, keep: jax.nn.softmax(logits(p, x, mask, keep)))

    train = training_rows(a.data, a.task, labels, cap=2500, handwritten_weight=20.0)
    evals = evaluation_rows(a.prompts, a.task, labels)
    print(f"{a.task} {a.arch} seed {a.seed}: {len(train)} training, {len(evals)} evaluation prompts",
          flush=True)
    if a.arch in ("tokens", "pairs"):
        probs = bag_probs(train, evals, ids_of, a.arch == "pairs", len(labels))
    else:
        probs = train_jax(a, train, evals, batch, init, step, predict)
    np.save(a.out, probs)

    # The committed model's own probabilities for the same prompts.
    lines = "".join(json.dumps({"prompt": e[0]}) + "\n" for e in evals)
    out = subprocess.run([a.switchyard, "classify", "--jsonl", "--model", a.model],
                         input=lines, capture_output=True, text=True, check=True).stdout
    field = f"{a.task}_scores"
    model = np.array([[json.loads(line)[field][lab] for lab in labels]
                      for line in out.splitlines()])
    report(a.task, labels, evals, model, probs)


def bag_probs(train, evals, ids_of, pairs, n_labels):
    """A logistic regression over TF-IDF bags of token ids (and of hashed adjacent pairs)."""
    from scipy.sparse import csr_matrix
    from sklearn.feature_extraction.text import TfidfTransformer
    from sklearn.linear_model import LogisticRegression

    vocab = 30522

    def bags(items):
        data, cols, ptr = [], [], [0]
        for it in items:
            ids = ids_of(it[0])
            feats = list(ids)
            if pairs:
                feats += [vocab + (a_ * 30522 + b) % 65536 for a_, b in zip(ids, ids[1:])]
            cols += feats
            data += [1.0] * len(feats)
            ptr.append(len(cols))
        return csr_matrix((data, cols, ptr), shape=(len(items), vocab + 65536))

    tfidf = TfidfTransformer(sublinear_tf=True).fit(bags(train))
    x = tfidf.transform(bags(train))
    clf = LogisticRegression(C=1.0, max_iter=500)
    clf.fit(x, [it[1] for it in train], sample_weight=[it[2] for it in train])
    probs = np.zeros((len(evals), n_labels))
    probs[:, clf.classes_] = clf.predict_proba(tfidf.transform(bags(evals)))
    return probs


def train_jax(a, train, evals, batch, init, step, predict):
    key = jax.random.PRNGKey(a.seed)
    p = init(key)
    m = jax.tree.map(jnp.zeros_like, p)
    v = jax.tree.map(jnp.zeros_like, p)
    # Batches of 64 prompts of like length, so that padding stays small.
    order = sorted(range(len(train)), key=lambda i: len(train[i][0]))
    batches = [order[i:i + 64] for i in range(0, len(order), 64)]
    t = 0
    for epoch in range(a.epochs):
        random.Random(a.seed * 100 + epoch).shuffle(batches)
        start = time.time()
        for b in batches:
            items = [train[i] for i in b]
            x, mask, keep = batch(items)
            t += 1
            key, sub = jax.random.split(key)
            p, m, v = step(p, m, v, t, x, mask, keep, jnp.asarray([it[1] for it in items]),
                           jnp.asarray([it[2] for it in items]), sub)
        print(f"epoch {epoch}: {time.time() - start:.0f} s", flush=True)
    return np.concatenate([np.asarray(predict(p, *batch(evals[i:i + 64])))
                           for i in range(0, len(evals), 64)])


def report(task, labels, evals, model, probs):
    y = np.array([e[1] for e in evals])
    names = np.array([e[2] for e in evals])
    logm = np.log(np.clip(model, 1e-7, 1))
    logp = np.log(np.clip(probs, 1e-7, 1))
    readings = [("the model", logm), ("the prototype", logp)]
    for w in (0.25, 0.5):
        readings.append((f"pooled, w = {w}", (1 - w) * logm + w * logp))
    for name, scores in readings:
        pred = scores.argmax(1)
        if task == "intent":
            sets = {s: names == s
                    for s in ("long-dev.jsonl", "long-test-1.jsonl", "long-test-2.jsonl")}
            sets["everyday-test-*"] = np.char.startswith(names.astype(str), "everyday-test")
            parts = "  ".join(f"{s} {(pred[k] == y[k]).sum()}/{k.sum()}" for s, k in sets.items())
            print(f"{name:16s} intent {(pred == y).sum()}/{len(y)}  {parts}")
        else:
            dom = y > 0
            # Each domain's log-probability moved by one offset: prompts found against general
            # prompts called a domain, along the curve an offset draws.
            curve = []
            for o in (-1, -0.5, 0, 0.5, 1, 1.5, 2):
                moved = scores.copy()
                moved[:, 1:] += o
                pm = moved.argmax(1)
                curve.append(f"{o:+.1f}: {(pm[dom] == y[dom]).sum()}/{(pm[~dom] > 0).sum()}")
            print(f"{name:16s} of {dom.sum()} domain and {(~dom).sum()} general prompts, "
                  f"found/false alarms by offset: " + ", ".join(curve))


if __name__ == "__main__":
    main()
