#!/usr/bin/env bash
# The agent's cost to the champion's traffic, measured side by side on this
# machine (release builds; not a test):
#
#  1. fixed rate (1000 requests/s by default, open loop): the example
#     champion directly, through the agent with shadow scoring on (the
#     challenger model, events shipped to a sink), through nginx as a
#     plain reverse proxy, and through a relay that only copies bytes (the
#     least any proxy adds on this machine: the extra hop's system calls
#     and wakeups); p50 and p99, and what each adds;
#  2. saturation (closed loop, 32 connections): requests per second of the
#     same three, and the agent's throughput as a share of nginx's;
#  3. shadow scoring throughput: the agent's scorer against Python
#     onnxruntime's InferenceSession.run on the same batches;
#  4. gRPC at the fixed rate: KServe v2 `ModelInfer` calls (raw tensors,
#     the project's load generator over 4 HTTP/2 connections) to the
#     champion's gRPC endpoint directly, through the agent (the same
#     listener, `grpc_upstream`) and through nginx's `grpc_pass`;
#  5. the fixed rate again with an independent load generator, oha
#     (`cargo install oha`, installed here when missing): 1000 requests/s
#     over 4 connections with latency correction (latency from when each
#     request was due, not from when it left: a late send counts against
#     the target), 8 s rounds, direct, through the agent and through nginx;
#     with each round, where the threads of the agent, nginx and the
#     champion spent it (bench/schedstat.py: CPU time, time runnable but
#     waiting for a core, per request), and what the agent's own
#     added_latency histogram says it added (bench/added_latency.py).
#
# `--champion nginx` puts a fixed answer from nginx (one worker, `return
# 200`) in the example champion's place for the HTTP parts: a champion
# that costs next to nothing, so that what the proxies add stands out
# (gRPC still goes to the example champion).
#
# `--arms on` splits the agent's model into two arms of weight 50 on the
# same champion (each request drawn by its id; the nginx and relay
# targets are unchanged): what a traffic split costs on the fast path.
#
# `--busy N` runs N CPU-bound loops (other work on the node, in a session
# of their own) from the first measured round to the last, the same for
# every target (`BUSY_SETSID=env` starts them in the benchmark's own session
# instead, where they compete with each of its threads one for one).
#
# Each measurement runs ROUNDS times, the targets taking turns, and the
# median is printed. Usage: bench/agent_load.sh [--rounds N] [--rps R]
#   [--duration 20s] [--parts rate,max,onnx,grpc,oha] [--fast-path on|off]
#   [--busy N] [--champion example|nginx] [--agent-set 'KEY: VALUE']...
#   [--shadow-threads N] [--arms on|off]
# (`--agent-set` adds a top-level line to the agent's configuration, e.g.
# `--agent-set 'background_scheduling: nice'`; `--shadow-threads` sets the
# shadow's inference threads, default 1).
# (`--fast-path off` measures the agent with every request through hyper).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 rps=1000 duration=20s max_duration=10s parts=rate,max,onnx,grpc,oha fast_path=on busy=0 champion_kind=example agent_set="" shadow_threads=1 arms=off
while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) rounds=$2; shift 2 ;;
        --rps) rps=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --parts) parts=$2; shift 2 ;;
        --fast-path) fast_path=$2; shift 2 ;;
        --busy) busy=$2; shift 2 ;;
        --champion) champion_kind=$2; shift 2 ;;
        --agent-set) agent_set+="$2"$'\n'; shift 2 ;;
        --shadow-threads) shadow_threads=$2; shift 2 ;;
        --arms) arms=$2; shift 2 ;;
        *) echo "usage: $0 [--rounds N] [--rps R] [--duration 20s] [--parts rate,max,onnx,grpc,oha] [--fast-path on|off] [--busy N] [--champion example|nginx] [--agent-set 'KEY: VALUE']... [--shadow-threads N] [--arms on|off]" >&2; exit 2 ;;
    esac
done

if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    echo "installing nginx-light (Debian), the reverse proxy compared against" >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nginx-light >/dev/null \
        || { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nginx-light >/dev/null; }
fi
nginx=$(command -v nginx || echo /usr/sbin/nginx)
oha=$(command -v oha || echo "$HOME/.cargo/bin/oha")
if [[ ",$parts," == *",oha,"* ]] && [ ! -x "$oha" ]; then
    echo "installing oha (cargo install oha --locked), the independent load generator" >&2
    cargo install -q oha --locked
fi
ORT_DYLIB_PATH="$(scripts/setup-ort)"
export ORT_DYLIB_PATH
python=.cache/ort/bin/python
cargo build -q --release -p driftwatch-agent --bins --examples
bin=target/release
loadgen=$bin/examples/loadgen

work=$(mktemp -d)
chmod 755 "$work"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Starts a program whose stdout says "... on ADDR"; ADDR goes to $work/NAME.addr.
declare -A pid_of
# The start of an nginx configuration with its files under $work/NAME:
# nginx_head NAME WORKERS, then the rest of the http block.
nginx_head() {
    mkdir -p "$work/$1"
    cat <<EOF
worker_processes $2;
daemon off;
pid $work/$1/nginx.pid;
error_log $work/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $work/$1/body;
EOF
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
start() {
    local name=$1; shift
    "$@" >"$work/$name.out" 2>"$work/$name.err" &
    pids+=($!)
    pid_of[$name]=$!
    for _ in $(seq 100); do
        if grep -q " on " "$work/$name.out" 2>/dev/null; then
            grep -m1 " on " "$work/$name.out" | sed 's/.* on //' >"$work/$name.addr"
            return
        fi
        sleep 0.1
    done
    echo "$name did not start:" >&2
    cat "$work/$name.err" >&2
    exit 1
}

start sink "$loadgen" sink
start champion "$bin/driftwatch-example-champion" --model-file examples/credit/champion.onnx --listen 127.0.0.1:0 \
    --grpc-listen 127.0.0.1:0
sink=$(cat "$work/sink.addr") champion=$(cat "$work/champion.addr")
if [ "$champion_kind" = nginx ]; then
    # The example champion's answer to the benchmark's row, fixed.
    answer='{"model_name":"credit","model_version":"1","outputs":[{"data":[0],"datatype":"INT64","name":"label","shape":[1]},{"data":[0.9003168344497681,0.09968316555023193],"datatype":"FP32","name":"probabilities","shape":[1,2]}]}'
    fixed_port=$(free_port)
    { nginx_head fixed 1; cat <<EOF; } >"$work/fixed.conf"
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$fixed_port;
        location / { default_type application/json; return 200 '$answer'; }
    }
}
EOF
    "$(command -v nginx || echo /usr/sbin/nginx)" -c "$work/fixed.conf" -p "$work/fixed" 2>"$work/fixed.err" &
    pids+=($!)
    pid_of[champion]=$!
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$fixed_port) 2>/dev/null && break; sleep 0.1; done
    champion=127.0.0.1:$fixed_port
fi
for _ in $(seq 50); do grep -q "^grpc on " "$work/champion.out" && break; sleep 0.1; done
champion_grpc=$(grep -m1 "^grpc on " "$work/champion.out" | sed 's/.* on //')
start relay "$loadgen" relay --upstream "$champion"
cat >"$work/agent.yaml" <<EOF
listen: 127.0.0.1:0
admin_listen: 127.0.0.1:0
node: bench
fast_path: $([ "$fast_path" = off ] && echo false || echo true)
${agent_set}collector:
  url: http://$sink
models:
  - name: credit
$(if [ "$arms" = on ]; then printf '    arms:\n      - {name: a, upstream: "http://%s", weight: 50}\n      - {name: b, upstream: "http://%s", weight: 50}' "$champion" "$champion"; else echo "    upstream: http://$champion"; fi)
    grpc_upstream: http://$champion_grpc
    champion_version: champion
    shadow:
      path: $PWD/examples/credit/challenger.onnx
      version: challenger
      inputs: [age, income, loan_amount, bureau_score, dependents, has_card]
      threads: $shadow_threads
EOF
start agent "$bin/driftwatch-agent" --config "$work/agent.yaml"
agent=$(cat "$work/agent.addr")
for _ in $(seq 50); do grep -q "^admin on " "$work/agent.out" && break; sleep 0.1; done
admin=$(grep -m1 "^admin on " "$work/agent.out" | sed 's/.* on //')
nginx_port=$(free_port) nginx_grpc_port=$(free_port)
{ nginx_head nginx auto; cat <<EOF; } >"$work/nginx.conf"
    proxy_temp_path $work/nginx/proxy;
    fastcgi_temp_path $work/nginx/fastcgi;
    uwsgi_temp_path $work/nginx/uwsgi;
    scgi_temp_path $work/nginx/scgi;
    upstream champion { server $champion; keepalive 64; keepalive_requests 1000000; }
    upstream champion_grpc { server $champion_grpc; keepalive 64; keepalive_requests 1000000; }
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$nginx_grpc_port http2;
        location / { grpc_pass grpc://champion_grpc; }
    }
    server {
        listen 127.0.0.1:$nginx_port;
        location / {
            proxy_pass http://champion;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
"$nginx" -c "$work/nginx.conf" -p "$work/nginx" 2>"$work/nginx.err" &
pids+=($!)
pid_of[nginx]=$!
for _ in $(seq 50); do
    (exec 3<>/dev/tcp/127.0.0.1/$nginx_port) 2>/dev/null && break
    sleep 0.1
done

# One row of the example data as a KServe v2 request.
"$python" - "$work/body.json" <<'PY'
import json, sys
e = json.load(open("examples/credit/expected.json"))
row = e["rows"][0]
inputs = [{"name": f, "shape": [1], "datatype": "FP64", "data": [row[j]]}
          for j, f in enumerate(e["features"])]
json.dump({"inputs": inputs}, open(sys.argv[1], "w"))
PY

declare -A url=(
    [direct]="http://$champion/v2/models/credit/infer"
    [agent]="http://$agent/v2/models/credit/infer"
    [nginx]="http://127.0.0.1:$nginx_port/v2/models/credit/infer"
    [relay]="http://$(cat "$work/relay.addr")/v2/models/credit/infer"
)
results="$work/results.jsonl"
rate_targets="direct agent nginx relay"
for name in $rate_targets; do
    # Warm every path (connections, the shadow model) before measuring.
    "$loadgen" rate --url "${url[$name]}" --body "$work/body.json" --rps 500 --duration 2s --warmup 1s >/dev/null
done
has() { [[ ",$parts," == *",$1,"* ]]; }
# Other work on the node: CPU-bound loops in a session of their own.
for _ in $(seq "$busy"); do
    ${BUSY_SETSID:-setsid} bash -c 'while :; do :; done' &
    pids+=($!)
done
[ "$busy" -gt 0 ] && echo "$busy CPU-bound loop(s) running beside the measurements" >&2
has rate && echo "fixed rate: $rps requests/s for $duration, $rounds rounds" >&2
has rate && for r in $(seq "$rounds"); do
    for name in $rate_targets; do
        "$loadgen" rate --url "${url[$name]}" --body "$work/body.json" --rps "$rps" \
            --duration "$duration" | sed "s/^{/{\"target\":\"$name\",\"round\":$r,/" | tee -a "$results" >&2
    done
done
has max && echo "saturation: 32 connections for $max_duration, $rounds rounds" >&2
has max && for r in $(seq "$rounds"); do
    for name in direct agent nginx; do
        "$loadgen" max --url "${url[$name]}" --body "$work/body.json" --duration "$max_duration" \
            | sed "s/^{/{\"target\":\"$name\",\"round\":$r,/" | tee -a "$results" >&2
    done
done
declare -A grpc_addr=([direct]="$champion_grpc" [agent]="$agent" [nginx]="127.0.0.1:$nginx_grpc_port")
has grpc && for name in direct agent nginx; do
    "$loadgen" grpc-rate --addr "${grpc_addr[$name]}" --body "$work/body.json" --rps 500 --duration 2s --warmup 1s >/dev/null
done
has grpc && echo "gRPC at a fixed rate: $rps calls/s for $duration, $rounds rounds" >&2
has grpc && for r in $(seq "$rounds"); do
    for name in direct agent nginx; do
        "$loadgen" grpc-rate --addr "${grpc_addr[$name]}" --body "$work/body.json" --rps "$rps" \
            --duration "$duration" | sed "s/^{/{\"target\":\"$name\",\"round\":$r,/" | tee -a "$results" >&2
    done
done
has oha && echo "oha: $rps requests/s over 4 connections with latency correction, 8s, $rounds rounds" >&2
has oha && for r in $(seq "$rounds"); do
    for name in direct agent nginx; do
        python3 bench/schedstat.py snap "$work/sched.before" agent="${pid_of[agent]}" nginx="${pid_of[nginx]}" champion="${pid_of[champion]}"
        [ "$name" = agent ] && python3 bench/added_latency.py snap "$admin" "$work/own.before"
        "$oha" --no-tui --output-format json -z 8s -q "$rps" -c 4 --latency-correction \
            -m POST -T application/json -D "$work/body.json" "${url[$name]}" >"$work/oha.json"
        python3 bench/schedstat.py snap "$work/sched.after" agent="${pid_of[agent]}" nginx="${pid_of[nginx]}" champion="${pid_of[champion]}"
        [ "$name" = agent ] && python3 bench/added_latency.py diff "$work/own.before" <(python3 bench/added_latency.py snap "$admin" /dev/stdout) "$r" >>"$results"
        "$python" - "$work/oha.json" "$name" "$r" "$work/oha.requests" <<'PY' | tee -a "$results" >&2
import json, sys
o = json.load(open(sys.argv[1]))
p = o["latencyPercentiles"]
codes = o.get("statusCodeDistribution", {})
# Requests still in flight when the duration ends are "aborted due to
# deadline" in oha's report: not errors of the target.
failed = {e: n for e, n in o.get("errorDistribution", {}).items() if "deadline" not in e}
errors = sum(n for c, n in codes.items() if c != "200") + sum(failed.values())
if failed:
    print(f"{sys.argv[2]}: {failed}", file=sys.stderr)
open(sys.argv[4], "w").write(str(sum(codes.values())))
print(json.dumps({"target": sys.argv[2], "round": int(sys.argv[3]), "mode": "oha",
                  "p50_ms": p["p50"] * 1e3, "p90_ms": p["p90"] * 1e3, "p99_ms": p["p99"] * 1e3,
                  "p999_ms": p["p99.9"] * 1e3, "errors": errors,
                  "rps": o["summary"]["requestsPerSec"]}))
PY
        python3 bench/schedstat.py diff "$work/sched.before" "$work/sched.after" "$name" "$(cat "$work/oha.requests")" \
            | sed "s/^{/{\"round\":$r,/" >>"$results"
    done
done
curl -s "http://$admin/metrics" >"$work/agent.metrics" 2>/dev/null \
    || "$python" -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://$admin/metrics').read().decode())" >"$work/agent.metrics"
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
pids=()

has onnx && echo "shadow scoring throughput (the agent's scorer vs Python onnxruntime, 1 intra-op thread)" >&2
has onnx && for batch in 1 64; do
    for r in $(seq "$rounds"); do
        "$loadgen" onnx --model examples/credit/challenger.onnx --rows examples/credit/expected.json \
            --batch "$batch" | sed "s/^{/{\"target\":\"agent\",\"round\":$r,/" | tee -a "$results" >&2
        "$python" bench/ort_python.py --model examples/credit/challenger.onnx --rows examples/credit/expected.json \
            --batch "$batch" | sed "s/^{/{\"target\":\"python\",\"round\":$r,/" | tee -a "$results" >&2
    done
done

python3 - "$results" "$work/agent.metrics" "$rps" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
metrics = open(sys.argv[2]).read().splitlines()
rps = sys.argv[3]

def med(mode, target, key, **kw):
    v = [r[key] for r in rows if r["mode"] == mode and r["target"] == target
         and all(r.get(k) == x for k, x in kw.items())]
    return statistics.median(v)

def metric(name):
    return sum(float(l.rsplit(" ", 1)[1]) for l in metrics
               if l.startswith(name) and not l.startswith("#"))

modes = {r["mode"] for r in rows}
def latency_table(mode, title, targets, added, late=True):
    """Each target's latency quantiles, then what each adds to the first."""
    print(f"\n{title} (median of rounds; ms)")
    print(f"{'':>8}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}" + (f"{'late':>7}" if late else "") + f"{'errors':>8}")
    for t in targets:
        print(f"{t:>8}" + "".join(f"{med(mode, t, k):9.3f}" for k in ["p50_ms", "p90_ms", "p99_ms", "p999_ms"])
              + (f"{med(mode, t, 'late_sends'):7.0f}" if late else "") + f"{med(mode, t, 'errors'):8.0f}")
    for t in targets[1:]:
        print(f"{added} {t}: p50 {med(mode, t, 'p50_ms') - med(mode, targets[0], 'p50_ms'):+.3f} ms, "
              f"p99 {med(mode, t, 'p99_ms') - med(mode, targets[0], 'p99_ms'):+.3f} ms")

if "rate" in modes:
    latency_table("rate", f"fixed rate, {rps} requests/s", ["direct", "agent", "nginx", "relay"], "added by")
if "grpc-rate" in modes:
    latency_table("grpc-rate", f"gRPC ModelInfer, {rps} calls/s over 4 HTTP/2 connections",
                  ["direct", "agent", "nginx"], "gRPC added by")
if "oha" in modes:
    latency_table("oha", f"oha, {rps} requests/s over 4 connections, latency correction",
                  ["direct", "agent", "nginx"], "oha, added by", late=False)
if "own" in modes:
    # What the agent's own histogram says it added, beside what oha saw.
    print("\nthe agent's own driftwatch_agent_added_latency_seconds over its oha rounds "
          f"(median of rounds): p50 {med('own', 'agent', 'p50_ms'):.3f} ms, p90 {med('own', 'agent', 'p90_ms'):.3f} ms, "
          f"p99 {med('own', 'agent', 'p99_ms'):.3f} ms; oha saw the agent add p50 "
          f"{med('oha', 'agent', 'p50_ms') - med('oha', 'direct', 'p50_ms'):+.3f} ms, "
          f"p99 {med('oha', 'agent', 'p99_ms') - med('oha', 'direct', 'p99_ms'):+.3f} ms")
if "sched" in modes:
    # Each target's own threads during its oha rounds: what they ran and
    # how long they stood runnable, waiting for a core, per request.
    own = {"agent": "agent", "nginx": "nginx", "direct": "champion"}
    print("\nthreads during the oha rounds (median of rounds): CPU time in the round, "
          "run-queue wait per request, involuntary switches per 1000 requests")
    for t in ["direct", "agent", "nginx"]:
        groups = sorted({r["threads"] for r in rows if r["mode"] == "sched" and r["target"] == t
                         and r["threads"].startswith(own[t] + "/")})
        for g in groups:
            v = [r for r in rows if r["mode"] == "sched" and r["target"] == t and r["threads"] == g]
            n = statistics.median(r["cpu_ms"] for r in v)
            print(f"{t:>8} {g:<36} cpu {n:8.1f} ms  wait {statistics.median(r['wait_us_per_request'] for r in v):7.2f} us/req"
                  f"  involuntary {statistics.median(r['involuntary_per_1k'] for r in v):6.1f}/1k")
if "max" in modes:
    print("\nsaturation, 32 connections (median of rounds)")
    for t in ["direct", "agent", "nginx"]:
        print(f"{t:>8}{med('max', t, 'rps'):10.0f} requests/s  p50 {med('max', t, 'p50_ms'):.3f} ms  "
              f"p99 {med('max', t, 'p99_ms'):.3f} ms  errors {med('max', t, 'errors'):.0f}")
    print(f"agent / nginx throughput: {med('max', 'agent', 'rps') / med('max', 'nginx', 'rps'):.2f}; "
          f"agent / direct: {med('max', 'agent', 'rps') / med('max', 'direct', 'rps'):.2f}; "
          f"nginx / direct: {med('max', 'nginx', 'rps') / med('max', 'direct', 'rps'):.2f}")
if modes & {"rate", "max", "grpc-rate", "oha"}:
    print(f"agent during the run: {metric('driftwatch_agent_events_shipped_total'):.0f} events shipped, "
          f"{metric('driftwatch_agent_shadow_batch_rows_count'):.0f} shadow batches, "
          f"{metric('driftwatch_agent_shadow_shed_total'):.0f} rows shed, "
          f"{metric('driftwatch_agent_events_dropped_total'):.0f} events dropped")
if "onnx" in modes:
    print("\nshadow scoring throughput, rows/s (median of rounds)")
    for b in [1, 64]:
        a = med('onnx', 'agent', 'rows_per_s_median', batch=b)
        p = med('python-onnxruntime', 'python', 'rows_per_s_median', batch=b)
        print(f"batch {b:>3}: agent {a:10.0f}  python onnxruntime {p:10.0f}  ratio {a / p:.2f}")
PY
