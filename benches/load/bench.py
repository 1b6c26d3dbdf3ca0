"""The load benchmark behind benches/load/run (see there). Standard library only.

Core 0: the proxy under test (switchyard or LiteLLM). Core 1: the simulated upstream, wrk and the
stream probe. Every figure in the report is computed from this run's own measurements.
"""

import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "target", "release", "switchyard")
PROBE = os.path.join(ROOT, "target", "release", "examples", "stream_probe")
PROXY_CORE, LOAD_CORE = "0", "1"
UP, SLOW_UP, SY, LL = 19701, 19702, 19710, 19720
CONCURRENCY = [1, 16, 64]
PROMPT = ("Our team is migrating a payments service from a monolith to smaller services. "
          "Explain the trade-offs of doing it incrementally and how to keep the ledger consistent.")
CLK_TCK = os.sysconf("SC_CLK_TCK")

LUA = """
wrk.method = "POST"
wrk.body = [[%(body)s]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nRESULT {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d,"p50":%%d,"p90":%%d,"p99":%%d,"max":%%d}\\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def get(port, path, headers=None, timeout=1.0):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def wait_ready(port, path, t0, limit, headers=None, proc=None):
    """Seconds from t0 until GET path answers 200."""
    while time.perf_counter() - t0 < limit:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the process for port {port} exited with {proc.returncode}")
        try:
            if get(port, path, headers) == 200:
                return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.001)
    raise SystemExit(f"port {port}{path} not ready after {limit} s")


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def tree_pids(pid):
    """pid and its descendants (LiteLLM's worker runs as a child process)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(x) for x in f.read().split())
        except OSError:
            pass
    return out


def tree_cpu_s(pid):
    return sum(proc_cpu_s(p) for p in tree_pids(pid))


def tree_kb(pid, key):
    return sum(proc_kb(p, key) for p in tree_pids(pid))


def wrk(port, model, stream, conc, duration, key, workdir):
    body = json.dumps({"model": model, "stream": stream,
                       "messages": [{"role": "user", "content": PROMPT}]})
    script = os.path.join(workdir, "req.lua")
    with open(script, "w") as f:
        f.write(LUA % {"body": body, "key": key})
    cmd = ["taskset", "-c", LOAD_CORE, "wrk", "-t1", f"-c{conc}", f"-d{duration}s", "--timeout", "10s",
           "-s", script, f"http://127.0.0.1:{port}/v1/chat/completions"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT "))
    r = json.loads(line[len("RESULT "):])
    r["errors"] = r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"]
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    return r


def probe(port, model, n, key):
    env = dict(os.environ, PROBE_KEY=key)
    out = subprocess.run(["taskset", "-c", LOAD_CORE, PROBE, f"http://127.0.0.1:{port}", model, str(n), PROMPT],
                         capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out)


def start(cmd, env=None, core=None):
    if core is not None:
        cmd = ["taskset", "-c", core] + cmd
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env, start_new_session=True)


def stop(p):
    if p and p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)


def switchyard_config(path, key):
    digest = hashlib.sha256(key.encode()).hexdigest()
    with open(path, "w") as f:
        f.write(f"""# One upstream for every tier, so the proxies differ only in themselves.
[server]
listen = "127.0.0.1:{SY}"
[auth]
keys = [{{ name = "bench", sha256 = "{digest}" }}]
[routing]
default_tier = "cheap"
strong_tier = "reasoning"
[providers.sim]
base_url = "http://127.0.0.1:{UP}/v1"
[providers.slow]
base_url = "http://127.0.0.1:{SLOW_UP}/v1"
[tiers.cheap]
slo = {{ ttft = "5s", total = "30s" }}
targets = [{{ provider = "sim", model = "sim-model" }}]
[tiers.reasoning]
slo = {{ ttft = "5s", total = "30s" }}
targets = [{{ provider = "sim", model = "sim-model" }}]
[tiers.slow]
slo = {{ ttft = "5s", total = "30s" }}
targets = [{{ provider = "slow", model = "slow-model" }}]
""")


def litellm_config(path):
    with open(path, "w") as f:
        f.write(f"""model_list:
  - model_name: sim-model
    litellm_params:
      model: openai/sim-model
      api_base: http://127.0.0.1:{UP}/v1
      api_key: sk-sim-not-a-secret
  - model_name: slow-model
    litellm_params:
      model: openai/slow-model
      api_base: http://127.0.0.1:{SLOW_UP}/v1
      api_key: sk-sim-not-a-secret
litellm_settings:
  telemetry: false
""")


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def measure(name, port, model, pid, key, args, workdir, results):
    """Every (mode, concurrency) cell for one proxy (or direct), after a warm-up."""
    for stream in (False, True):
        wrk(port, model, stream, 16, 1, key, workdir)  # warm-up, not recorded
        for conc in CONCURRENCY:
            cpu0 = tree_cpu_s(pid)
            r = wrk(port, model, stream, conc, args.duration, key, workdir)
            cpu = tree_cpu_s(pid) - cpu0
            r["cpu_s_per_1k"] = cpu / max(r["requests"], 1) * 1000
            r["rss_mb"] = tree_kb(pid, "VmRSS") / 1024
            r.update(proxy=name, stream=stream, conc=conc)
            results.append(r)
            log(f"  {name:22} {'sse ' if stream else 'json'} c{conc:<3} {r['rps']:8.0f} req/s  "
                f"p50 {r['p50'] / 1000:7.3f} ms  p99 {r['p99'] / 1000:7.3f} ms  errors {r['errors']}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=5, help="seconds per measured cell")
    ap.add_argument("--probe-n", type=int, default=300, help="sequential streams per TTFT probe")
    ap.add_argument("--litellm", default="")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--out", default=os.path.join(ROOT, "benches", "RESULTS.md"))
    args = ap.parse_args()
    began = time.time()
    workdir = tempfile.mkdtemp(prefix="switchyard-bench-")
    key = "sk-bench-" + secrets.token_hex(16)
    procs = []
    try:
        procs.append(start([BIN, "sim", "--listen", f"127.0.0.1:{UP}", "--model", "sim-model"], core=LOAD_CORE))
        procs.append(start([BIN, "sim", "--listen", f"127.0.0.1:{SLOW_UP}", "--model", "slow-model",
                            "--chunk-delay", "10ms", "--words", "8"], core=LOAD_CORE))
        wait_ready(UP, "/v1/models", time.perf_counter(), 10)
        wait_ready(SLOW_UP, "/v1/models", time.perf_counter(), 10)
        sim_pid = procs[0].pid

        results, probes, chunks = [], {}, {}
        log("direct to the simulated upstream")
        measure("direct", UP, "sim-model", sim_pid, key, args, workdir, results)
        probes["direct"] = probe(UP, "sim-model", args.probe_n, key)
        chunks["direct"] = probe(SLOW_UP, "slow-model", 20, key)

        # Each proxy runs alone on its core: switchyard first, stopped before LiteLLM starts.
        cfg = os.path.join(workdir, "switchyard.toml")
        switchyard_config(cfg, key)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        t0 = time.perf_counter()
        sy = start([BIN, "serve", "--config", cfg], env=env, core=PROXY_CORE)
        procs.append(sy)
        sy_ready = wait_ready(SY, "/ready", t0, 10, proc=sy)
        sy_rss_idle = proc_kb(sy.pid, "VmRSS") / 1024
        log(f"switchyard ready in {sy_ready * 1000:.1f} ms, {sy_rss_idle:.1f} MB")
        measure("switchyard classifier", SY, "switchyard", sy.pid, key, args, workdir, results)
        measure("switchyard pinned", SY, "switchyard/cheap", sy.pid, key, args, workdir, results)
        probes["switchyard classifier"] = probe(SY, "switchyard", args.probe_n, key)
        probes["switchyard pinned"] = probe(SY, "switchyard/cheap", args.probe_n, key)
        chunks["switchyard"] = probe(SY, "switchyard/slow", 20, key)
        sy_hwm = proc_kb(sy.pid, "VmHWM") / 1024
        stop(sy)

        ll, ll_ready, ll_rss_idle, ll_hwm = None, None, None, None
        if not args.no_litellm:
            lcfg = os.path.join(workdir, "litellm.yaml")
            litellm_config(lcfg)
            master = "sk-" + secrets.token_hex(16)
            lenv = dict(env, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_MASTER_KEY=master,
                        LITELLM_LOG="ERROR", HOME=workdir)
            t0 = time.perf_counter()
            ll = start([args.litellm, "--config", lcfg, "--host", "127.0.0.1", "--port", str(LL),
                        "--num_workers", "1"], env=lenv, core=PROXY_CORE)
            procs.append(ll)
            ll_ready = wait_ready(LL, "/health/readiness", t0, 180, proc=ll)
            ll_rss_idle = tree_kb(ll.pid, "VmRSS") / 1024
            log(f"litellm ready in {ll_ready:.1f} s, {ll_rss_idle:.1f} MB")
            measure("litellm", LL, "sim-model", ll.pid, master, args, workdir, results)
            probes["litellm"] = probe(LL, "sim-model", args.probe_n, master)
            chunks["litellm"] = probe(LL, "slow-model", 20, master)
            ll_hwm = tree_kb(ll.pid, "VmHWM") / 1024
            stop(ll)

        for k, v in probes.items():
            log(f"  {k:22} ttft p50 {v['ttft_us']['p50']:.0f} us  p99 {v['ttft_us']['p99']:.0f} us")
        data = {
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "cpu": cpu_model(), "cores": os.cpu_count(), "kernel": platform.release(),
            "wrk": " ".join(subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split()[:2]),
            "duration_s": args.duration, "probe_n": args.probe_n,
            "switchyard": {"ready_ms": sy_ready * 1000, "rss_idle_mb": sy_rss_idle, "rss_peak_mb": sy_hwm},
            "litellm": None if not ll else {"version": litellm_version(args.litellm), "ready_s": ll_ready,
                                            "rss_idle_mb": ll_rss_idle, "rss_peak_mb": ll_hwm},
            "cells": results, "ttft": probes, "chunks": chunks,
            "elapsed_s": time.time() - began,
        }
    finally:
        for p in reversed(procs):
            stop(p)
        shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(os.path.join(ROOT, "target", "bench"), exist_ok=True)
    with open(os.path.join(ROOT, "target", "bench", "results.json"), "w") as f:
        json.dump(data, f, indent=1)
    with open(args.out, "w") as f:
        f.write(report(data))
    log(f"wrote {args.out} ({data['elapsed_s']:.0f} s)")


def litellm_version(exe):
    py = os.path.join(os.path.dirname(exe), "python")
    out = subprocess.run([py, "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                         capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def cell(data, proxy, stream, conc):
    for r in data["cells"]:
        if r["proxy"] == proxy and r["stream"] == stream and r["conc"] == conc:
            return r
    return None


def ms(us):
    return f"{us / 1000:.3f}"


def report(d):
    have_ll = d["litellm"] is not None
    proxies = ["direct", "switchyard classifier", "switchyard pinned"] + (["litellm"] if have_ll else [])
    out = [
        "# Benchmark results",
        "",
        "Made by `benches/load/run` (one command; it installs wrk and LiteLLM itself). Every number below",
        "is from that one run; rerun it to check them. Loopback only.",
        "",
        f"- Date: {d['date']}",
        f"- Machine: {d['cpu']}, {d['cores']} cores, Linux {d['kernel']}",
        f"- Load generator: {d['wrk']}, one thread, closed loop, {d['duration_s']} s per cell after a 1 s warm-up",
        "- Pinning (`taskset`): the proxy under test on core 0, alone (each proxy is stopped before the next",
        "  starts); the simulated upstream (`switchyard sim`), wrk and the stream probe on core 1.",
        "  Direct means wrk straight to the simulated upstream.",
        f"- Request: one user message of {len(PROMPT.split())} words; the upstream answers at once with 12 words "
        f"({d['ttft']['direct']['events'] // max(d['probe_n'], 1)} SSE",
        "  events when streaming). Both proxies check a bearer key.",
        "- switchyard: release build, one tier per target, `model: switchyard` (classifier routing on:",
        "  rules, the embedded model, the policy) or `switchyard/cheap` (pinned, no classifier).",
    ]
    if have_ll:
        ll = d["litellm"]
        out.append(f"- LiteLLM {ll['version']} proxy, 1 worker, `LITELLM_LOCAL_MODEL_COST_MAP=True`, a random master key,")
        out.append("  the same upstream as an `openai/` model.")
    out += ["", "## Latency and throughput", ""]
    for stream in (False, True):
        out.append(f"### {'Streaming (SSE; latency is to the last byte)' if stream else 'Non-streaming'}")
        out.append("")
        out.append("| proxy | conc | req/s | errors | p50 ms | p90 ms | p99 ms | added p50 ms | added p99 ms | CPU s / 1k req | RSS MB |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for conc in CONCURRENCY:
            base = cell(d, "direct", stream, conc)
            for p in proxies:
                r = cell(d, p, stream, conc)
                if not r:
                    continue
                added = "" if p == "direct" else f"{ms(r['p50'] - base['p50'])} | {ms(r['p99'] - base['p99'])}"
                if p == "direct":
                    added = "– | –"
                out.append(f"| {p} | {conc} | {r['rps']:.0f} | {r['errors']} | {ms(r['p50'])} | {ms(r['p90'])} | "
                           f"{ms(r['p99'])} | {added} | {r['cpu_s_per_1k']:.3f} | {r['rss_mb']:.1f} |")
        out.append("")
    if have_ll:
        out += ["## switchyard against LiteLLM", "",
                "Added latency (through minus direct, same percentile, same concurrency), and how many times",
                "more LiteLLM adds than switchyard with classifier routing on. Throughput ratio is switchyard / LiteLLM.",
                "",
                "| mode | conc | switchyard added p50 / p99 ms | LiteLLM added p50 / p99 ms | LiteLLM ÷ switchyard p50 / p99 | req/s ratio |",
                "|---|---:|---:|---:|---:|---:|"]
        for stream in (False, True):
            for conc in CONCURRENCY:
                base, s, l = (cell(d, p, stream, conc) for p in ("direct", "switchyard classifier", "litellm"))
                sa50, sa99 = s["p50"] - base["p50"], s["p99"] - base["p99"]
                la50, la99 = l["p50"] - base["p50"], l["p99"] - base["p99"]
                out.append(f"| {'sse' if stream else 'json'} | {conc} | {ms(sa50)} / {ms(sa99)} | {ms(la50)} / {ms(la99)} | "
                           f"{ratio(la50, sa50)} / {ratio(la99, sa99)} | {s['rps'] / max(l['rps'], 1e-9):.1f}× |")
        out.append("")
    out += ["## Time to first token (sequential streams)", "",
            f"{d['probe_n']} streams one after another per row, after a warm-up; TTFT is until the first body bytes",
            "carrying an SSE event. Overhead is the row minus direct.", "",
            "| path | TTFT p50 µs | p90 µs | p99 µs | overhead p50 µs | overhead p99 µs |",
            "|---|---:|---:|---:|---:|---:|"]
    base = d["ttft"]["direct"]["ttft_us"]
    for k, v in d["ttft"].items():
        t = v["ttft_us"]
        oh = "– | –" if k == "direct" else f"{t['p50'] - base['p50']:.0f} | {t['p99'] - base['p99']:.0f}"
        out.append(f"| {k} | {t['p50']:.0f} | {t['p90']:.0f} | {t['p99']:.0f} | {oh} |")
    out += ["", "## Chunks forwarded as they arrive", "",
            "An upstream that sends each of its SSE events 10 ms apart (8 words: 11 events with the role,",
            "finish and `[DONE]` events); 20 streams per row. If a proxy coalesced chunks, one read would",
            "carry several events and the smallest gap between reads would be near zero.", "",
            "| path | events | reads | most events in one read | smallest gap ms | median gap ms |",
            "|---|---:|---:|---:|---:|---:|"]
    for k, v in d["chunks"].items():
        out.append(f"| {k} | {v['events']} | {v['reads']} | {v['max_events_per_read']} | "
                   f"{v['gap_us']['min'] / 1000:.2f} | {v['gap_us']['p50'] / 1000:.2f} |")
    sy = d["switchyard"]
    out += ["", "## Start-up and memory", "",
            f"- switchyard: ready (`/ready` answers 200) {sy['ready_ms']:.1f} ms after the process starts, with the",
            f"  embedded model loaded; resident memory {sy['rss_idle_mb']:.1f} MB idle, {sy['rss_peak_mb']:.1f} MB peak",
            "  (VmHWM) over the whole run."]
    if have_ll:
        ll = d["litellm"]
        out.append(f"- LiteLLM: ready (`/health/readiness`) {ll['ready_s']:.1f} s after start; resident memory "
                   f"{ll['rss_idle_mb']:.1f} MB idle, {ll['rss_peak_mb']:.1f} MB peak (its processes summed).")
    out += ["", "## Targets (issue #6)", ""]
    out += targets(d)
    out += ["", f"The whole run took {d['elapsed_s']:.0f} s.", ""]
    return "\n".join(out)


def ratio(a, b):
    if b <= 0:
        return "n/a (switchyard ≤ 0)"
    return f"{a / b:.0f}×"


def targets(d):
    rows = []
    c16 = cell(d, "switchyard classifier", False, 16)
    d16 = cell(d, "direct", False, 16)
    added = (c16["p99"] - d16["p99"]) / 1000
    rows.append(("added p99 ≤ 1 ms at c16, classifier on", f"{added:.3f} ms", added <= 1.0))
    best = max((r for r in d["cells"] if r["proxy"] == "switchyard classifier" and not r["stream"] and r["errors"] == 0),
               key=lambda r: r["rps"], default=None)
    rps = best["rps"] if best else 0
    rows.append(("≥ 5,000 req/s at 0% errors, classifier on", f"{rps:.0f} req/s (c{best['conc'] if best else '-'})", rps >= 5000))
    if d["litellm"]:
        worst = None
        for stream in (False, True):
            for conc in CONCURRENCY:
                base, s, l = (cell(d, p, stream, conc) for p in ("direct", "switchyard classifier", "litellm"))
                for q in ("p50", "p99"):
                    sa, la = s[q] - base[q], l[q] - base[q]
                    r = la / sa if sa > 0 else float("inf")
                    if worst is None or r < worst[0]:
                        worst = (r, f"{'sse' if stream else 'json'} c{conc} {q}")
        rows.append(("added latency ≥ 10× lower than LiteLLM's, every concurrency",
                     f"smallest ratio {worst[0]:.0f}× ({worst[1]})", worst[0] >= 10))
    sy = d["switchyard"]
    rows.append(("resident memory ≤ 60 MB under load", f"{sy['rss_peak_mb']:.1f} MB peak", sy["rss_peak_mb"] <= 60))
    rows.append(("ready ≤ 300 ms after start", f"{sy['ready_ms']:.1f} ms", sy["ready_ms"] <= 300))
    t = d["ttft"]
    oh = t["switchyard classifier"]["ttft_us"]["p99"] - t["direct"]["ttft_us"]["p99"]
    rows.append(("TTFT overhead ≤ 1 ms p99", f"{oh / 1000:.3f} ms", oh <= 1000))
    ch = d["chunks"]["switchyard"]
    ok = ch["max_events_per_read"] == 1 and ch["gap_us"]["min"] >= 5000
    rows.append(("chunks forwarded as they arrive", f"{ch['max_events_per_read']} event per read at most, "
                 f"smallest gap {ch['gap_us']['min'] / 1000:.2f} ms", ok))
    out = ["| target | measured | met |", "|---|---|---|"]
    out += [f"| {a} | {b} | {'yes' if c else '**no**'} |" for a, b, c in rows]
    return out


if __name__ == "__main__":
    main()
