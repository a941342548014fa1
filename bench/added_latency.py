#!/usr/bin/env python3
"""The agent's own view of what it adds, beside the client's: the
`driftwatch_agent_added_latency_seconds` histogram over one measured
interval, its quantiles interpolated within buckets as Prometheus's
histogram_quantile does.

    added_latency.py snap ADMIN_ADDR OUT     the histogram's buckets now
    added_latency.py diff BEFORE AFTER ROUND one JSON line: count, p50_ms,
                                             p90_ms, p99_ms over the interval

The agent times a request from when its traffic thread has read it to
when the answer is written, less the champion's time; a request that
waited for its thread (a core taken, a wakeup) waited before that clock
started, so the client's view adds the hop and the scheduling delays.
"""
import json
import re
import sys
import urllib.request

NAME = "driftwatch_agent_added_latency_seconds_bucket"


def snap(admin, out):
    text = urllib.request.urlopen(f"http://{admin}/metrics", timeout=10).read().decode()
    buckets = {}
    for line in text.splitlines():
        if line.startswith(NAME):
            le = re.search(r'le="([^"]+)"', line).group(1)
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0) + float(line.rsplit(" ", 1)[1])
    with open(out, "w") as f:
        json.dump(sorted([b, n] for b, n in buckets.items()), f)


def quantile(q, buckets):
    """histogram_quantile: linear within the bucket that holds rank q."""
    total = buckets[-1][1]
    if total == 0:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound, n in buckets:
        if n >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(n - below, 1e-12)
        lower, below = bound, n
    return lower


def diff(before, after, round_):
    a = {b: n for b, n in json.load(open(before))}
    b = [[bound, n - a.get(bound, 0)] for bound, n in json.load(open(after))]
    print(json.dumps({"target": "agent", "round": int(round_), "mode": "own",
                      "count": b[-1][1] if b else 0,
                      **{f"p{q}_ms": quantile(q / 100, b) * 1e3 for q in (50, 90, 99)}}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "snap":
        snap(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "diff":
        diff(*sys.argv[2:5])
    else:
        sys.exit(__doc__)
