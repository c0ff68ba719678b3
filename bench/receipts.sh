#!/usr/bin/env bash
# bench/receipts.sh: fiscal e-receipts issued per second per gov-pay-worker
# process, beside the raw SM2 signing rate of `openssl speed sm2` measured in
# the same run (make bench).
#
# A private redis-server (AOF, appendfsync always, as the money path runs),
# N paid notices written straight into Redis (their payer sealed by
# `gov-pay-worker pii reseal`, as the edge stores it), then their notice.paid
# events, and WORKERS worker processes (default 1) issue every receipt: document,
# SM2 seal, staged in Redis, ledger append + fsync, commit, PDF, notice
# update and receipt.issued. Time runs from the moment the events are in the
# streams to the moment the last receipt is committed on its notice.
#
#   N=2000 WORKERS=1 bash bench/receipts.sh

set -euo pipefail

cd "$(dirname "$0")/.."
BUILD=${GOV_PAY_BUILD:-build}
N=${N:-2000}
WORKERS=${WORKERS:-1}
SHARDS=16

dir=$(mktemp -d /tmp/gov-pay-bench-XXXXXX)
port=$(perl -MIO::Socket::INET -e 'print IO::Socket::INET->new(Listen=>1,LocalAddr=>"127.0.0.1")->sockport')
pids=()

cleanup() {
    local p
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT

cli() { redis-cli -p "$port" "$@"; }

mkdir -p "$dir/redis" "$dir/ledger"
redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/redis" \
    --appendonly yes --appendfsync ${APPENDFSYNC:-always} --save '' --daemonize no \
    --logfile "$dir/redis.log" &
pids+=($!)
for _ in $(seq 100); do [ "$(cli ping 2>/dev/null)" = PONG ] && break; sleep 0.05; done

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:SM2 \
    -out "$dir/issuer.pem" 2>/dev/null
echo "bench $(openssl rand -hex 16)" > "$dir/pii.keys"

cat > "$dir/registry.json" <<JSON
{"units": [], "items": [{"code": "103001", "name": "学费", "department": "杭州市教育局",
  "amount": {"rule": "range", "min": 1, "max": 10000000000}}]}
JSON

for w in $(seq "$WORKERS"); do
    cat > "$dir/worker-$w.json" <<JSON
{"redis": "127.0.0.1:$port", "shards": $SHARDS, "consumer": "bench-$w",
 "registry": "$dir/registry.json", "block_ms": 100, "pii_key": "$dir/pii.keys",
 "plugins": {"receipt": {"region": "33", "category": "01", "kind": "01",
   "issuer_code": "330100000000", "issuer_name": "杭州市财政局",
   "key": "$dir/issuer.pem", "key_serial": "BENCH-SM2", "ledger_dir": "$dir/ledger",
   "verify_url": "http://127.0.0.1:8080"}}}
JSON
    "$BUILD/gov-pay-worker" -c "$dir/worker-$w.json" 2> "$dir/worker-$w.log" &
    pids+=($!)
done

# every worker connected and its consumer group created
for _ in $(seq 200); do
    [ "$(cat "$dir"/worker-*.log | grep -c 'connected to redis')" -ge "$WORKERS" ] && break
    sleep 0.05
done
sleep 0.3

now=$(date +%s)
# the notices, their payer in clear as an edge older than sealing stored it,
# then sealed as the edge stores it now (pii reseal: not timed)
cli EVAL "
local n, now = tonumber(ARGV[1]), ARGV[2]
for i = 1, n do
  local shard = i % $SHARDS
  local key = '{gp' .. shard .. '}:n:' .. i
  redis.call('HSET', key, 'unit', 'U', 'request_id', 'B' .. i, 'item_code', '103001',
    'amount', '125000', 'payer_type', 'person', 'payer_name', '张三',
    'payer_id', '330106200001011234', 'division', '330100', 'yy', '26',
    'status', 'PAID', 'channel', 'sandbox', 'channel_trade_no', 'T' .. i,
    'created_at', now, 'paid_at', now, 'paid_amount', '125000')
end
return n" 0 "$N" "$now" > /dev/null
"$BUILD/gov-pay-worker" -c "$dir/worker-1.json" pii reseal > "$dir/reseal.out"

t0=$(date +%s.%N)
# their events, in one script
cli EVAL "
local n, now = tonumber(ARGV[1]), ARGV[2]
for i = 1, n do
  local shard = i % $SHARDS
  local code = string.format('33010026%011d0', i)
  local key = '{gp' .. shard .. '}:n:' .. i
  redis.call('XADD', '{gp' .. shard .. '}:settled', '*', 'type', 'notice.paid',
    'payment_code', code, 'unit', 'U', 'item_code', '103001', 'amount', '125000',
    'channel', 'sandbox', 'channel_trade_no', 'T' .. i, 'paid_at', now,
    'notice_key', key)
end
return n" 0 "$N" "$now" > /dev/null

code="330101$(TZ=Asia/Shanghai date +%y)"
while :; do
    # receipts committed on their notices: one receipt.issued entry each
    done_n=$(cli EVAL "local s = 0
        for i = 0, $SHARDS - 1 do s = s + redis.call('XLEN', '{gp' .. i .. '}:settled') end
        return s - tonumber(ARGV[1])" 0 "$N")
    [ "$done_n" -ge "$N" ] && break
    sleep 0.05
done
t1=$(date +%s.%N)

"$BUILD/gov-pay-ledger" verify "$dir/ledger/$code.ledger" > "$dir/verify.out" \
    || { cat "$dir/verify.out"; exit 1; }

speed=$(openssl speed -seconds 3 sm2 2>/dev/null | awk '/SM2/ {print $(NF-1)}')

# one fsync of this disk (the ledger's and, with appendfsync always, Redis's
# AOF): every receipt costs five (ledger 1, AOF 4: stage, commit, PDF, notice)
fsync_ms=$(dd if=/dev/zero of="$dir/fsync.test" bs=512 count=100 oflag=dsync 2>&1 \
           | awk '/copied/ {print $(NF-3) * 1000 / 100}')

awk -v n="$N" -v w="$WORKERS" -v t0="$t0" -v t1="$t1" -v sp="$speed" -v fs="$fsync_ms" 'BEGIN {
    s = t1 - t0; rate = n / s;
    printf "receipts issued:              %d by %d worker process(es) in %.2f s\n", n, w, s;
    printf "receipts/s per worker process: %.0f\n", rate / w;
    printf "openssl speed sm2 (sign/s):    %.0f  (one core, same run)\n", sp;
    printf "ratio:                        %.3f of the raw signing rate\n", rate / w / sp;
    printf "one fsync on this disk:       %.2f ms (5 per receipt)\n", fs;
}'
echo "ledger: $(cat "$dir/verify.out")"
grep -h 'issued receipt' "$dir"/worker-*.log | sort | sed -n '1p;$p' \
    | awk '{ split(substr($1, 12, 12), t, ":"); s[NR] = t[1] * 3600 + t[2] * 60 + t[3] }
           END { if (NR == 2 && s[2] > s[1])
                     printf "from the worker logs:         %.0f receipts/s from the first to the last\n",
                            ('"$N"' - 1) / (s[2] - s[1]) }'
