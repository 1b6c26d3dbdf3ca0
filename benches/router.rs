//! In-process figures for the request hot path: request parse and re-serialisation, the routing
//! decision, response serialisation (JSON and SSE), the cascade's answer checks on a 2 KB
//! structured answer, and the classifier end to end. `cargo bench --bench router`.

use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Value};
use std::hint::black_box;
use switchyard::api::request::ChatRequest;
use switchyard::cascade::checks::{check, RequestChecks};
use switchyard::cascade::schema::SchemaCache;
use switchyard::config::{cascade_for_eval, Check};

fn schema() -> Value {
    json!({"type": "object", "required": ["order_id", "items"], "properties": {
        "order_id": {"type": "string"},
        "items": {"type": "array", "items": {"type": "object", "required": ["sku", "name", "price", "qty"], "properties": {
            "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
            "name": {"type": "string", "minLength": 1},
            "price": {"type": "number", "minimum": 0},
            "qty": {"type": "integer", "minimum": 1},
            "tags": {"type": "array", "items": {"type": "string"}}}}}}})
}

/// A schema-valid answer of about 2 KB.
fn answer_2kb() -> (Value, usize) {
    let items: Vec<Value> = (0..25)
        .map(|i| json!({"sku": format!("ABC-{:04}", 1000 + i), "name": format!("Item number {i}"), "price": 3.5 + i as f64, "qty": i + 1, "tags": ["x", "y"]}))
        .collect();
    let content = json!({"order_id": "ord_12345", "items": items}).to_string();
    let len = content.len();
    (
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}),
        len,
    )
}

fn bench(c: &mut Criterion) {
    let body = json!({
        "model": "switchyard",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant that answers briefly."},
            {"role": "user", "content": "Summarise the plot of Hamlet in two sentences, then list three themes."}
        ],
        "temperature": 0.3, "max_tokens": 256, "stream": false, "metadata": {"team": "search"}
    })
    .to_string();
    c.bench_function("request_parse", |b| {
        b.iter(|| ChatRequest::parse(black_box(body.as_bytes())))
    });
    let req = ChatRequest::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("request_body_for_target", |b| {
        b.iter(|| req.body_for(black_box("gpt-4o-mini")))
    });

    let cache = SchemaCache::new();
    let rf = json!({"response_format": {"type": "json_schema", "json_schema": {"name": "order", "schema": schema()}}});
    let rf = rf.as_object().cloned().unwrap_or_default();
    let checks = RequestChecks::from_request(&rf, &cache).unwrap_or_else(|e| panic!("{e:?}"));
    let (answer, len) = answer_2kb();
    assert!((1800..2600).contains(&len), "answer is {len} bytes");
    let schema_only = cascade_for_eval(vec![Check::Schema]);
    assert!(check(&answer, &checks, &schema_only).accepted());
    c.bench_function("schema_check_2kb_answer", |b| {
        b.iter(|| check(black_box(&answer), &checks, &schema_only))
    });
    let all = cascade_for_eval(vec![
        Check::Completion,
        Check::Schema,
        Check::ToolCalls,
        Check::Confidence,
        Check::Arithmetic,
    ]);
    c.bench_function("all_checks_2kb_answer", |b| {
        b.iter(|| check(black_box(&answer), &checks, &all))
    });
    c.bench_function("schema_compile_cache_hit", |b| {
        let s = schema();
        b.iter(|| cache.get(black_box(&s)))
    });
    c.bench_function("response_serialise_json", |b| {
        b.iter(|| serde_json::to_vec(black_box(&answer)))
    });
    c.bench_function("response_serialise_sse", |b| {
        b.iter(|| switchyard::api::sse::completion_to_events(black_box(&answer), true))
    });
}

/// A prompt of about `n` WordPiece tokens, from varied English text.
fn prompt_of(c: &switchyard::classifier::Classifier, n: usize) -> String {
    let text = "Our team is migrating a payments service from a monolith to smaller services. \
        Explain the trade-offs of doing it incrementally, how to keep the ledger consistent during the move, \
        which metrics to watch, and write a short Python example of an idempotent transfer endpoint. ";
    let mut out = String::new();
    while c.tokenizer().encode(&out, usize::MAX).len() < n {
        out.push_str(text);
    }
    let words: Vec<&str> = out.split(' ').collect();
    let mut lo = 0;
    let mut hi = words.len();
    while lo < hi {
        let mid = (lo + hi) / 2;
        if c.tokenizer()
            .encode(&words[..mid].join(" "), usize::MAX)
            .len()
            < n
        {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    words[..lo].join(" ")
}

fn classifier(c: &mut Criterion) {
    let Some(Ok(model)) = switchyard::classifier::Classifier::embedded() else {
        panic!("the benchmark needs the embedded model (models/router)");
    };
    for n in [20usize, 128, 512] {
        let p = prompt_of(&model, n);
        let got = model.tokenizer().encode(&p, usize::MAX).len();
        assert!(got >= n && got < n + 12, "{got} tokens for {n}");
        c.bench_function(&format!("classify_{n}_tokens"), |b| {
            b.iter(|| model.classify(black_box(&p)))
        });
        c.bench_function(&format!("tokenize_{n}_tokens"), |b| {
            b.iter(|| model.tokens(black_box(&p)))
        });
    }
    // A conversation: about 128 tokens of earlier turns, then a short follow-up. It is read
    // twice (whole, and the last turn alone) and the two readings pooled.
    let context = prompt_of(&model, 128);
    let chat = switchyard::classifier::chat_text(&[
        json!({"role": "user", "content": context}),
        json!({"role": "assistant", "content": "Here is a first outline of the migration."}),
        json!({"role": "user", "content": "now write the Python example with type hints"}),
    ]);
    assert!(chat.has_context());
    c.bench_function("classify_chat_128_tokens_then_a_follow_up", |b| {
        b.iter(|| model.classify_chat(black_box(&chat)))
    });
    // The routing decision for the model `switchyard` under the default policy: rules (keywords,
    // regex, metadata) over the prompt, then the tier for the scores. The scores are computed
    // once outside the loop so this measures the policy alone.
    let policy = switchyard::routing::Policy::default_for_classify();
    let prompt = prompt_of(&model, 128);
    let scores = model.classify(&prompt);
    let metadata = json!({"team": "search", "region": "us"});
    c.bench_function("routing_decision_128_tokens", |b| {
        b.iter(|| {
            let p = black_box(&prompt);
            match policy.rule_for(p, Some(&metadata)) {
                Some(rule) => (rule.tier.clone(), rule.name.clone()),
                None => policy.tier_for_scores(black_box(&scores), None),
            }
        })
    });
    c.bench_function("load_embedded_model", |b| {
        b.iter(switchyard::classifier::Classifier::embedded)
    });
}

criterion_group!(benches, bench, classifier);
criterion_main!(benches);
