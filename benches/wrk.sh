#!/usr/bin/env bash
# benches/wrk.sh: `handoff serve` measured as its users measure it, from
# outside, with wrk as the load generator (benches/serve.rs generates its
# load in the server's own process, which flatters the server).
#
# It measures, each on a fresh SQLite database in a temporary directory, with
# the bundled rules and templates and WhatsApp sends going to the built-in
# sandbox:
#   - durable intake (POST /v1/leads, committed before the answer) of
#     distinct realistic leads for 60 s from an empty database, while the
#     delivery worker drains the sends the decisions queued; and, on another
#     fresh database, its first 8 s and the 8 s after;
#   - POST /v1/dry-run against a trivial axum server (examples/baseline.rs),
#     in alternating rounds, so that whatever else the machine does weighs
#     on both alike.
# Any answer that is not a 2xx, or any socket error, makes the run invalid:
# the script says so and exits with status 1.
#
# Usage: bash benches/wrk.sh      (about 4 minutes; needs wrk on PATH)
# Shorter runs, to try the script: INTAKE_SECONDS=10 WINDOW_SECONDS=3 ROUNDS=1 ROUND_SECONDS=3 bash benches/wrk.sh
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}

connections=64
threads=2
intake_seconds=${INTAKE_SECONDS:-60}
window_seconds=${WINDOW_SECONDS:-8}
rounds=${ROUNDS:-5}
round_seconds=${ROUND_SECONDS:-10}
key=hk_wrk_bench

# Checked before building, so a missing tool costs no build; nothing is
# installed on the caller's behalf.
if ! command -v wrk >/dev/null 2>&1; then
    echo "benches/wrk.sh needs wrk (the HTTP load generator) on PATH:" >&2
    echo "  Debian/Ubuntu: apt-get install wrk    macOS: brew install wrk" >&2
    exit 1
fi
for tool in curl awk; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "benches/wrk.sh needs $tool on PATH" >&2
        exit 1
    fi
done

cargo build --release --locked
cargo build --release --locked --example baseline
handoff=$target/release/handoff
baseline=$target/release/examples/baseline

work=$(mktemp -d "${TMPDIR:-/tmp}/handoff-wrk.XXXXXX")
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
# An interrupt ends the script through its EXIT trap, servers and all.
trap 'exit 130' INT TERM

clock_ticks=$(getconf CLK_TCK)

# CPU time (user + system, in clock ticks) a process has used so far.
cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat"
}

# Waits for a server's first line ("... listening on http://ADDR") and sets
# $base from it; the servers pick a free port themselves (port 0).
await_listening() {
    local pid=$1 out=$2 err=$3 i
    for ((i = 0; i < 300; i++)); do
        # The file appears only once the started shell has opened it.
        if [[ -f $out ]]; then
            base=$(sed -n 's/^.* listening on \(http:[^ ]*\).*$/\1/p' "$out" | head -n 1)
            if [[ -n $base ]]; then
                return 0
            fi
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "the server did not start; its output:" >&2
            cat "$out" "$err" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "the server did not say where it listens within 30 s" >&2
    exit 1
}

# Starts `handoff serve` on a fresh, empty database in $work/NAME, as a user
# would from the Quick start: no configuration but sandbox delivery, so the
# demo account with our API key; default logging. Sets $pid and $base.
start_service() {
    local dir=$work/$1
    mkdir -p "$dir"
    # An explicit (nearly empty) configuration, so a handoff.toml in the
    # checkout cannot change what is measured.
    printf '[delivery]\nsandbox = true\n' >"$dir/handoff.toml"
    HANDOFF_DEMO_API_KEY=$key HANDOFF_TEMPLATES=$root/templates \
        "$handoff" serve --config "$dir/handoff.toml" --listen 127.0.0.1:0 \
        --database "sqlite://$dir/handoff.db" --rules "$root/rules" \
        >"$dir/stdout" 2>"$dir/stderr" &
    pid=$!
    pids+=("$pid")
    await_listening "$pid" "$dir/stdout" "$dir/stderr"
    local i
    for ((i = 0; i < 100; i++)); do
        if curl -fs "$base/readyz" >/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "$base/readyz never answered 200" >&2
    exit 1
}

start_baseline() {
    mkdir -p "$work/baseline"
    "$baseline" 0 >"$work/baseline/stdout" 2>"$work/baseline/stderr" &
    pid=$!
    pids+=("$pid")
    await_listening "$pid" "$work/baseline/stdout" "$work/baseline/stderr"
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# The outbox after a run: how far the delivery worker got with the sends.
outbox() {
    curl -fs "$1/metrics" | awk '
        /^handoff_outbox_messages\{kind="whatsapp"/ {
            match($0, /state="[a-z]*"/)
            printf "%s%s %s", sep, substr($0, RSTART + 7, RLENGTH - 8), $2
            sep = ", "
        }'
}

declare -A result
invalid=()

# measure LABEL SCRIPT URL SECONDS SERVER_PID [SCRIPT ARGS...]: one wrk run.
# Keeps wrk's RESULT line (see benches/wrk/common.lua), the load average
# when it started, and the server's CPU use over the run (out of 200% on
# two cores: what the server had, the rest went to wrk and the machine).
measure() {
    local label=$1 script=$2 url=$3 seconds=$4 server=$5
    shift 5
    local load before start line after end
    load=$(cut -d ' ' -f 1-3 /proc/loadavg)
    before=$(cpu_ticks "$server")
    start=$(date +%s.%N)
    echo "== $label: ${seconds} s, load $load"
    # --timeout 10s, the server's own limit: wrk leaves answers slower than
    # its timeout (2 s by default) out of the latency figures and only
    # counts them, which would hide the worst stalls from p99.
    wrk -t"$threads" -c"$connections" -d"${seconds}s" --timeout 10s --latency -s "$script" "$url" -- "$key" "$@" |
        tee "$work/$label.wrk"
    end=$(date +%s.%N)
    after=$(cpu_ticks "$server")
    line=$(grep '^RESULT ' "$work/$label.wrk" || true)
    if [[ -z $line ]]; then
        echo "wrk gave no RESULT line for $label" >&2
        exit 1
    fi
    result[$label]="$line load=${load// /\/} cpu=$(awk -v t="$((after - before))" -v hz="$clock_ticks" \
        -v s="$start" -v e="$end" 'BEGIN {printf "%.0f", 100 * t / hz / (e - s)}')"
    if [[ $(get "$label" non2xx) != 0 || $(get "$label" socket_errors) != 0 ]]; then
        invalid+=("$label")
    fi
}

# get LABEL KEY: one figure of a run.
get() {
    tr ' ' '\n' <<<"${result[$1]}" | sed -n "s/^$2=//p"
}

median() {
    sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

echo "machine: $(nproc) cores; load at start: $(cut -d ' ' -f 1-3 /proc/loadavg)"

# --- Dry run against the trivial handler ---------------------------------
start_service dry
service=$base service_pid=$pid
start_baseline
baseline_url=$base baseline_pid=$pid

# A few answers checked by hand first: a load run that only counts status
# codes would not notice a service answering the wrong thing.
check() {
    local what=$1 url=$2 expect=$3 body=$4 answer
    answer=$(curl -s -w '\n%{http_code}' "$url" -H "Authorization: Bearer $key" \
        -H 'Content-Type: application/json' -d "$body")
    if [[ ${answer##*$'\n'} != "$expect" || $answer != *'"decision"'* && $what != baseline ]]; then
        echo "$what: expected $expect with a decision, got:" >&2
        echo "$answer" >&2
        exit 1
    fi
    echo "checked: $what answers ${answer##*$'\n'}"
}
# Thread 0's numbers (980...) are never used by wrk's threads (1 and 2).
sample='{"name": "Aisha Khan", "phone": "+91 98012 34567", "channel": "instagram", "intent": "event_enquiry",
 "playbook": "events", "consent": {"whatsapp": true, "evidence": "Ticked Message me on WhatsApp"},
 "fields": {"city": "Goa", "event_date": "'"$(date -u -d '+90 days' +%F)"'", "guests": 120},
 "transcript": [{"channel": "instagram", "from": "lead", "text": "Planning a wedding in Goa", "at": "'"$(date -u +%FT%TZ)"'"}]}'
check "POST /v1/leads" "$service/v1/leads" 201 "$sample"
check "POST /v1/dry-run" "$service/v1/dry-run" 200 "${sample%\}}, \"window\": \"closed\"}"
check baseline "$baseline_url/" 200 "$sample"

# Warm both up (connections, caches, the allocator's pools), unrecorded.
measure warmup-baseline benches/wrk/dry_run.lua "$baseline_url/" 2 "$baseline_pid" >/dev/null
measure warmup-dry-run benches/wrk/dry_run.lua "$service/v1/dry-run" 2 "$service_pid" >/dev/null
for ((r = 1; r <= rounds; r++)); do
    measure "baseline-$r" benches/wrk/dry_run.lua "$baseline_url/" "$round_seconds" "$baseline_pid"
    measure "dry-run-$r" benches/wrk/dry_run.lua "$service/v1/dry-run" "$round_seconds" "$service_pid"
done
stop "$service_pid"
stop "$baseline_pid"

# --- Durable intake: the first 8 s and the next 8 s -----------------------
start_service windows
measure intake-first benches/wrk/leads.lua "$base/v1/leads" "$window_seconds" "$pid" 0
# The second run's counters start past anything the first one reached.
measure intake-next benches/wrk/leads.lua "$base/v1/leads" "$window_seconds" "$pid" 5000000
windows_outbox=$(outbox "$base")
stop "$pid"

# --- Durable intake sustained, from an empty database ---------------------
start_service sustained
measure intake-sustained benches/wrk/leads.lua "$base/v1/leads" "$intake_seconds" "$pid" 0
sustained_outbox=$(outbox "$base")
sustained_db=$(du -sh "$work/sustained" | cut -f 1)
sustained_log=$(wc -l <"$work/sustained/stderr")
stop "$pid"

# --- Summary --------------------------------------------------------------
ratio_rounds=()
for ((r = 1; r <= rounds; r++)); do
    ratio_rounds+=("$(awk -v d="$(get "dry-run-$r" ok_rps)" -v b="$(get "baseline-$r" ok_rps)" \
        'BEGIN {printf "%.2f", d / b}')")
done
dry_median=$(for ((r = 1; r <= rounds; r++)); do get "dry-run-$r" ok_rps; done | median)
base_median=$(for ((r = 1; r <= rounds; r++)); do get "baseline-$r" ok_rps; done | median)
dry_p99=$(for ((r = 1; r <= rounds; r++)); do get "dry-run-$r" p99_ms; done | median)
base_p99=$(for ((r = 1; r <= rounds; r++)); do get "baseline-$r" p99_ms; done | median)
ratio=$(awk -v d="$dry_median" -v b="$base_median" 'BEGIN {printf "%.2f", d / b}')

row() {
    printf '%-28s %8s %8s %8s %8s %8s %8s  %s\n' "$@"
}
echo
echo "== handoff serve measured with wrk: $connections connections, $threads threads, $(nproc) cores =="
row "run" "2xx/s" "p50 ms" "p99 ms" "non-2xx" "sock err" "srv CPU" "load 1/5/15 min at start"
for label in intake-sustained intake-first intake-next; do
    row "$label ($(get "$label" seconds) s)" "$(get "$label" ok_rps)" "$(get "$label" p50_ms)" \
        "$(get "$label" p99_ms)" "$(get "$label" non2xx)" "$(get "$label" socket_errors)" "$(get "$label" cpu)%" "$(get "$label" load)"
done
for ((r = 1; r <= rounds; r++)); do
    for label in "baseline-$r" "dry-run-$r"; do
        row "$label ($(get "$label" seconds) s)" "$(get "$label" ok_rps)" "$(get "$label" p50_ms)" \
            "$(get "$label" p99_ms)" "$(get "$label" non2xx)" "$(get "$label" socket_errors)" "$(get "$label" cpu)%" "$(get "$label" load)"
    done
done
echo "srv CPU: the server's CPU time over the run, of $(($(nproc) * 100))% (the rest went to wrk and the rest of the machine)"
echo
echo "outbox (WhatsApp) after the ${window_seconds} s runs: $windows_outbox"
echo "outbox (WhatsApp) after the sustained run: $sustained_outbox; data dir $sustained_db; $sustained_log log lines"
echo
intake_rps=$(get intake-sustained ok_rps)
intake_p99=$(get intake-sustained p99_ms)
verdict() {
    if awk "BEGIN {exit !($1)}"; then echo met; else echo "NOT met"; fi
}
echo "durable intake, ${intake_seconds} s from empty: $intake_rps leads/s, p99 $intake_p99 ms" \
    "(target >= 4000 leads/s with p99 < 50 ms: $(verdict "$intake_rps >= 4000 && $intake_p99 < 50"))"
echo "dry run / baseline: $ratio, ratio of the medians ($dry_median / $base_median req/s;" \
    "p99 $dry_p99 / $base_p99 ms); per round ${ratio_rounds[*]} (target >= 0.5: $(verdict "$ratio >= 0.5"))"
if ((${#invalid[@]} > 0)); then
    echo "INVALID: non-2xx answers or socket errors in: ${invalid[*]}" >&2
    for label in "${invalid[@]}"; do
        grep '^FIRST_ERROR ' "$work/$label.wrk" >&2 || true
    done
    exit 1
fi
