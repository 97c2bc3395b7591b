#! /usr/bin/env bash
# Wall and CPU time of Zeek with and without the multa package on one trace.
#
# usage: bench-overhead.sh TRACE [ROUNDS]
#
# Variants, run interleaved ROUNDS times (default 5), all with Zeek's
# default scripts and -C:
#   plain    Zeek alone
#   collect  + multa collecting and publishing (pause_without_bridge=F, no
#            subscriber)
#   bridge   + multa in offline mode with the btests' fake bridge answering
#            every flow (benign) over the WebSocket API: multa.log and all.
#            Zeek's CPU is measured on its own; wall time includes waiting
#            for the last results. Needs $PYTHON (default python3) with
#            websockets.
# Prints the median wall and CPU (user+sys) seconds of each and the ratio
# to plain Zeek.
set -euo pipefail

trace=$(realpath "$1")
rounds=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
pkg=$(realpath "$here/../../../zeek_scripts")
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

run() {  # run VARIANT ROUND
    local v=$1 r=$2 port
    mkdir -p "$work/$v.$r" && cd "$work/$v.$r"
    case $v in
    plain)
        /usr/bin/time -f "%e %U %S" -o "$work/$v.time.$r" zeek -C -r "$trace" > /dev/null ;;
    collect)
        /usr/bin/time -f "%e %U %S" -o "$work/$v.time.$r" zeek -C -r "$trace" "$pkg" \
            Multa::pause_without_bridge=F > /dev/null ;;
    bridge)
        port=$(( 30000 + RANDOM % 20000 ))
        "$python" "$here/fake-bridge.py" "ws://127.0.0.1:$port/v1/messages/json" batches.txt --benign &
        /usr/bin/time -f "%e %U %S" -o "$work/$v.time.$r" zeek -C -r "$trace" "$pkg" "$pkg/offline.zeek" \
            "Multa::websocket_port=$port/tcp" > /dev/null 2> zeek.stderr
        wait
        # The wall time here includes the fake bridge connecting: subtract
        # nothing, but check that every flow got a result.
        if grep -q "got no result" zeek.stderr; then echo "bridge run $r: flows without result" >&2; fi ;;
    esac
}

variants=(plain collect bridge)
for ((r = 0; r < rounds; r++)); do
    for v in "${variants[@]}"; do
        run "$v" "$r"
    done
done

median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

base_wall=$(cat "$work"/plain.time.* | awk '{print $1}' | median)
base_cpu=$(cat "$work"/plain.time.* | awk '{print $2 + $3}' | median)
printf '%-8s %9s %9s %8s %8s\n' variant wall_s cpu_s wall_x cpu_x
for v in "${variants[@]}"; do
    wall=$(cat "$work/$v".time.* | awk '{print $1}' | median)
    cpu=$(cat "$work/$v".time.* | awk '{print $2 + $3}' | median)
    printf '%-8s %9.3f %9.3f %8.3f %8.3f\n' "$v" "$wall" "$cpu" \
        "$(echo "$wall / $base_wall" | bc -l)" "$(echo "$cpu / $base_cpu" | bc -l)"
done
conns=$(zeek-cut uid < "$work/plain.0/conn.log" | wc -l)
pkts=$(zeek-cut orig_pkts resp_pkts < "$work/plain.0/conn.log" | awk '{s += $1 + $2} END {print s}')
rows=$(zeek-cut uid < "$work/bridge.0/multa.log" 2>/dev/null | wc -l)
echo "trace: $trace: $conns connections, $pkts packets ($(echo "$pkts / $conns" | bc -l | cut -c1-5) per connection); multa.log rows (bridge): $rows"
echo "$rounds rounds, $(zeek --version), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
