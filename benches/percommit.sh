#!/bin/bash
# Per-commit cost of a walship binary, for profiling (docs/benchmarks.md):
#   benches/percommit.sh target/release/walship [COMMITS]
# A writer appends 4 KiB to a raw WAL segment, fdatasyncs it and waits through
# POST /v1/wait (quorum 1, flush) before the next commit; `perf stat` on the
# sender and on the receiver counts system calls, context switches and CPU per
# commit. RENV / SENV add environment variables to the receiver / sender
# (e.g. SENV=TOKIO_WORKER_THREADS=2). Needs perf, python3 and a free port.
set -e
BIN=$1; N=${2:-400}; T=$(mktemp -d "${TMPDIR:-/tmp}/walship-percommit.XXXX")
trap 'rm -rf "$T"' EXIT
$BIN cert init --dir $T/certs >/dev/null 2>&1
mkdir $T/wal; : > $T/wal/000000010000000000000001
RP=$((20000 + RANDOM % 20000)); AP=$((RP+1)); SAP=$((RP+2))
env $RENV $BIN receive --listen 127.0.0.1:$RP --dir $T/mirror --ca $T/certs/ca.pem --cert $T/certs/server.pem --key $T/certs/server.key --admin-addr 127.0.0.1:$AP --log warn > $T/recv.log 2>&1 &
R=$!
env $SENV $BIN send --wal-dir $T/wal --to 127.0.0.1:$RP --ca $T/certs/ca.pem --cert $T/certs/client.pem --key $T/certs/client.key --server-name localhost --admin-addr 127.0.0.1:$SAP --sync-quorum 1 --log warn > $T/send.log 2>&1 &
S=$!
sleep 2
perf stat -x, -e raw_syscalls:sys_enter,context-switches,task-clock -p $S -o $T/perf.send &
PS=$!
perf stat -x, -e raw_syscalls:sys_enter,context-switches,task-clock -p $R -o $T/perf.recv &
PR=$!
sleep 0.5
python3 - $T/wal/000000010000000000000001 $SAP $N <<'PY'
import os, sys, time, json, urllib.request, http.client, statistics
path, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
conn = http.client.HTTPConnection("127.0.0.1", port)
lat = []
for i in range(n):
    t = time.perf_counter()
    os.write(fd, os.urandom(4096)); os.fdatasync(fd)
    conn.request("POST", "/v1/wait", body=json.dumps({"timeout_ms": 5000}), headers={"content-type": "application/json"})
    r = conn.getresponse(); body = r.read()
    if r.status != 200: print("wait", r.status, body); break
    lat.append(time.perf_counter() - t)
    time.sleep(0.002)
lat.sort()
print("commits %d  p50 %.3f ms  p90 %.3f ms  p99 %.3f ms" % (len(lat), lat[len(lat)//2]*1e3, lat[int(len(lat)*.9)]*1e3, lat[int(len(lat)*.99)]*1e3))
PY
kill -INT $PS $PR; wait $PS $PR 2>/dev/null || true
for w in send recv; do awk -F, -v n=$N -v w=$w '/sys_enter|context|task-clock/ {printf "%s %-26s %10.3f per commit\n", w, $3, $1/n}' $T/perf.$w; done
kill $S $R; wait 2>/dev/null || true
