#!/usr/bin/env bash
# chroot-install.sh DEB-DIR: installs the Debian packages built by `make deb`
# in a fresh Debian bookworm chroot and serves a payment there (make deb-test;
# not part of `make test`: it needs root, debootstrap, Debian's mirror and a
# few minutes).
#
#  1. debootstraps bookworm (minbase) into a temporary folder; the result is
#     cached as build/packaging/bookworm-minbase.tar.gz for the next run
#  2. `apt-get install ./*.deb redis-server` inside it (recommends on, as an
#     operator would; services kept from starting by policy-rc.d)
#  3. checks where the files went, the module's load snippet is enabled and
#     the package depends on the nginx ABI; `systemd-analyze verify` of the
#     unit when the host has it
#  4. writes a small configuration from conf/demo (demo keys, registry, Redis
#     ACL) into /etc/gov-pay and /etc/nginx/conf.d, runs `nginx -t`
#  5. starts redis-server, nginx and the unit's ExecStart line by hand as the
#     user gov-pay (no systemd in a chroot)
#  6. creates a notice with scripts/govpay-client, pays it with the sandbox
#     channel (scripts/demo-pay) and waits for the receipt, then checks the
#     ledger with gov-pay-ledger inside the chroot
#
# The chroot shares the host's network: nginx and redis-server listen on free
# loopback ports picked at start. GOV_PAY_KEEP=1 keeps the chroot folder;
# it is kept too when the test fails.

set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
DEB_DIR=$(cd "${1:-build/deb}" && pwd)
CACHE=$ROOT/build/packaging/bookworm-minbase.tar.gz
MIRROR=${GOV_PAY_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${GOV_PAY_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}

ok=0
step() { printf '\n== %s\n' "$*"; }
pass() { ok=$((ok + 1)); printf 'ok %d - %s\n' "$ok" "$*"; }
fail() { printf 'not ok - %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || fail "needs root (debootstrap, chroot)"
ls "$DEB_DIR"/*.deb >/dev/null 2>&1 || fail "no .deb in $DEB_DIR: run make deb"

CH=$(mktemp -d /tmp/gov-pay-chroot.XXXXXX)
# the chroot's / : mktemp's 0700 would keep every user but root out
chmod 0755 "$CH"
MOUNTED=()

in_chroot() {
    chroot "$CH" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
        LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

cleanup() {
    local rc=$? pid m

    set +e
    for pid in /run/nginx.pid /run/gov-pay-test/worker.pid \
               /run/gov-pay-test/redis.pid; do
        if [ -s "$CH$pid" ]; then
            kill -TERM "$(cat "$CH$pid")" 2>/dev/null
        fi
    done
    for pid in /run/nginx.pid /run/gov-pay-test/worker.pid \
               /run/gov-pay-test/redis.pid; do
        if [ -s "$CH$pid" ]; then
            for _ in $(seq 100); do
                kill -0 "$(cat "$CH$pid")" 2>/dev/null || break
                sleep 0.1
            done
        fi
    done
    for ((m = ${#MOUNTED[@]} - 1; m >= 0; m--)); do
        umount -l "${MOUNTED[m]}"
    done
    if [ $rc -ne 0 ] || [ -n "${GOV_PAY_KEEP:-}" ]; then
        echo "chroot kept in $CH" >&2
    else
        rm -rf --one-file-system "$CH"
    fi
    exit $rc
}
trap cleanup EXIT

# a free loopback port (the kernel's pick; a race with another program
# taking it before we bind is possible but harmless: the start then fails)
free_port() {
    perl -MIO::Socket::INET -e '
        my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1",
                                      LocalPort => 0, Listen => 1) or die;
        print $s->sockport, "\n"'
}

wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}

# -- 1. a fresh bookworm ----------------------------------------------------

step "1. a fresh Debian bookworm in $CH"
if [ -s "$CACHE" ]; then
    tar -C "$CH" -xzf "$CACHE"
    echo "from the cache $CACHE"
else
    command -v debootstrap >/dev/null \
        || fail "debootstrap is missing: make deb-test installs it"
    debootstrap --variant=minbase --include=perl,curl,ca-certificates,procps \
        bookworm "$CH" "$MIRROR" > "$CH.debootstrap.log" 2>&1 \
        || { tail -n 20 "$CH.debootstrap.log" >&2; fail "debootstrap"; }
    rm -f "$CH.debootstrap.log"
    mkdir -p "$(dirname "$CACHE")"
    tar -C "$CH" -czf "$CACHE.tmp" . && mv "$CACHE.tmp" "$CACHE"
fi

chmod 0755 "$CH"  # a tarball made from a 0700 folder brings 0700 back

cat > "$CH/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
EOF
cp /etc/resolv.conf "$CH/etc/resolv.conf"
# no service starts on install: the chroot shares the host's ports
printf '#!/bin/sh\nexit 101\n' > "$CH/usr/sbin/policy-rc.d"
chmod +x "$CH/usr/sbin/policy-rc.d"
for m in proc sys dev dev/pts; do
    mkdir -p "$CH/$m"
    mount --bind "/$m" "$CH/$m"
    MOUNTED+=("$CH/$m")
done
pass "bookworm chroot ready"

# -- 2. install the packages ------------------------------------------------

step "2. apt-get install ./*.deb redis-server"
mkdir -p "$CH/tmp/debs"
for f in "$DEB_DIR"/*.deb; do
    case "$f" in *-dbgsym_*) continue ;; esac
    cp "$f" "$CH/tmp/debs/"
done
in_chroot apt-get update -q > "$CH/tmp/apt.log" 2>&1 \
    || { tail -n 20 "$CH/tmp/apt.log" >&2; fail "apt-get update"; }
in_chroot sh -c 'cd /tmp/debs && apt-get install -y -q ./*.deb redis-server' \
    >> "$CH/tmp/apt.log" 2>&1 \
    || { tail -n 30 "$CH/tmp/apt.log" >&2; fail "apt-get install"; }
in_chroot dpkg-query -W -f '${Package} ${Version} ${db:Status-Abbrev}\n' \
    libnginx-mod-http-gov-pay gov-pay-worker nginx redis-server
pass "the packages install on a fresh bookworm"

# -- 3. where the files went ------------------------------------------------

step "3. files, load snippet, ABI dependency, user, unit"
for f in /usr/lib/nginx/modules/ngx_http_gov_pay_module.so \
         /usr/share/nginx/modules-available/mod-http-gov-pay.conf \
         /usr/sbin/gov-pay-worker /usr/bin/gov-pay-ledger \
         /lib/systemd/system/gov-pay-worker@.service \
         /usr/share/doc/gov-pay-worker/examples/worker.json.example \
         /usr/share/doc/libnginx-mod-http-gov-pay/examples/nginx.conf.example; do
    [ -e "$CH$f" ] || fail "$f is missing"
done
pass "module, load snippet, worker, ledger tool, unit and examples installed"

[ "$(readlink "$CH/etc/nginx/modules-enabled/50-mod-http-gov-pay.conf")" \
  = /usr/share/nginx/modules-available/mod-http-gov-pay.conf ] \
    || fail "the load snippet is not enabled in /etc/nginx/modules-enabled"
grep -qx 'load_module modules/ngx_http_gov_pay_module.so;' \
    "$CH/usr/share/nginx/modules-available/mod-http-gov-pay.conf" \
    || fail "the load snippet does not load the module"
pass "load snippet enabled as 50-mod-http-gov-pay.conf"

abi=$(in_chroot dpkg-query -W -f '${Depends}' libnginx-mod-http-gov-pay \
      | tr ',' '\n' | grep -o 'nginx-abi-[0-9.-]*' || true)
[ -n "$abi" ] || fail "libnginx-mod-http-gov-pay has no nginx-abi dependency"
in_chroot dpkg-query -W -f '${Provides}' nginx | grep -qF "$abi" \
    || fail "the installed nginx does not provide $abi"
pass "the module depends on $abi, which the installed nginx provides"

in_chroot getent passwd gov-pay >/dev/null || fail "no user gov-pay"
[ "$(in_chroot stat -c %U /var/lib/gov-pay/ledger)" = gov-pay ] \
    || fail "/var/lib/gov-pay/ledger does not belong to gov-pay"
pass "system user gov-pay and its state folder"

if command -v systemd-analyze >/dev/null; then
    # verify needs an instance name and the binary where the unit says
    vdir=$(mktemp -d)
    cp "$CH/lib/systemd/system/gov-pay-worker@.service" "$vdir/"
    ln -s gov-pay-worker@.service "$vdir/gov-pay-worker@main.service"
    if [ -x /usr/sbin/gov-pay-worker ]; then
        out=$(systemd-analyze verify "$vdir/gov-pay-worker@main.service" 2>&1 || true)
    else
        # the host has no gov-pay-worker: check with the chroot's binary in
        # the ExecStart lines
        sed -i "s|/usr/sbin/gov-pay-worker|$CH/usr/sbin/gov-pay-worker|" \
            "$vdir/gov-pay-worker@.service"
        out=$(systemd-analyze verify "$vdir/gov-pay-worker@main.service" 2>&1 || true)
    fi
    rm -rf "$vdir"
    # the host's own units may draw warnings of their own: only ours count
    if grep -i 'gov-pay' <<<"$out"; then
        fail "systemd-analyze verify complains about the unit"
    fi
    pass "systemd-analyze verify: the unit is clean"
else
    echo "# systemd-analyze is not available: unit not verified"
fi

# -- 4. configuration -------------------------------------------------------

step "4. a configuration from conf/demo; nginx -t"
PORT=$(free_port)
RPORT=$(free_port)
URL=http://127.0.0.1:$PORT

install -d -o root -g root -m 0755 "$CH/etc/gov-pay/keys"
in_chroot chgrp gov-pay /etc/gov-pay/keys
chmod 0750 "$CH/etc/gov-pay/keys"
cp conf/demo/keys/* "$CH/etc/gov-pay/keys/"
rm -f "$CH/etc/gov-pay/keys/README.md"
in_chroot sh -c 'chgrp gov-pay /etc/gov-pay/keys/* && chmod 0640 /etc/gov-pay/keys/*'
install -m 0644 conf/demo/registry.json "$CH/etc/gov-pay/registry.json"

# the worker: the packaged example with the demo's Redis port and names
PORT=$PORT RPORT=$RPORT perl -MJSON::PP -0777 -ne '
    my $json = JSON::PP->new->utf8->pretty->canonical;
    my $c = $json->decode($_);
    $c->{redis} = "127.0.0.1:$ENV{RPORT}";
    $c->{plugins}{receipt}{key_serial} = "DEMO-SM2-01";
    $c->{plugins}{receipt}{verify_url} = "http://127.0.0.1:$ENV{PORT}";
    print $json->encode($c);
' "$CH/usr/share/doc/gov-pay-worker/examples/worker.json.example" \
    > "$CH/etc/gov-pay/main.json"

# redis-server: the demo's ACL users, data in /var/lib/redis
mkdir -p "$CH/run/gov-pay-test"
in_chroot chown redis:redis /run/gov-pay-test
install -m 0640 conf/demo/users.acl "$CH/etc/redis/gov-pay-users.acl"
in_chroot chown redis:redis /etc/redis/gov-pay-users.acl
cat > "$CH/etc/redis/gov-pay-test.conf" <<EOF
bind 127.0.0.1
port $RPORT
daemonize yes
pidfile /run/gov-pay-test/redis.pid
logfile /var/log/redis/gov-pay-test.log
dir /var/lib/redis
appendonly yes
save ""
aclfile /etc/redis/gov-pay-users.acl
EOF

# nginx: Debian's nginx.conf loads modules-enabled/ and includes conf.d/;
# the site on port 80 goes (the chroot shares the host's ports)
rm -f "$CH/etc/nginx/sites-enabled/default"
K=/etc/gov-pay/keys
cat > "$CH/etc/nginx/conf.d/gov-pay.conf" <<EOF
gov_pay_redis 127.0.0.1:$RPORT;
gov_pay_redis_auth gp-edge $K/redis-gp-edge.password;
gov_pay_shards 16;
gov_pay_registry /etc/gov-pay/registry.json;
gov_pay_code_key $K/code.key;
gov_pay_division 330100;
gov_pay_public_url $URL;
gov_pay_sandbox_key $K/sandbox.key;
gov_pay_pii_key $K/pii.keys;
gov_pay_receipt_key sm2 $K/receipt-issuer-sm2.pub.pem DEMO-SM2-01;

server {
    listen 127.0.0.1:$PORT;
    server_name localhost;

    location /v1/ {
        client_max_body_size 64k;
        gov_pay_api;
    }
    location /q/ { gov_pay_payer; }
    location /pay/ { gov_pay_payer; }
    location /r/ { gov_pay_receipt; }
    location = /notify/sandbox {
        client_max_body_size 64k;
        gov_pay_notify sandbox;
    }
    location /sandbox/ { gov_pay_sandbox_gateway; }
}
EOF
in_chroot nginx -t 2>&1 || fail "nginx -t"
pass "nginx -t accepts the configuration with the packaged module"

# -- 5. start redis, nginx and the worker -----------------------------------

step "5. redis-server, nginx, gov-pay-worker (the unit's ExecStart as gov-pay)"
in_chroot runuser -u redis -- redis-server /etc/redis/gov-pay-test.conf \
    || fail "redis-server did not start"
redis_up() {
    [ "$(in_chroot sh -c 'REDISCLI_AUTH=$(cat /etc/gov-pay/keys/redis-gp-admin.password) \
             exec redis-cli --user gp-admin -p "$1" ping' sh "$RPORT" 2>/dev/null)" = PONG ]
}
wait_for 15 redis_up || fail "redis-server does not answer on $RPORT"

in_chroot nginx || { tail -n 20 "$CH/var/log/nginx/error.log" >&2; fail "nginx did not start"; }
nginx_up() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
               "$URL/q/00000000000000000000" 2>/dev/null) || true
    [ -n "$code" ] && [ "$code" != 000 ]
}
wait_for 15 nginx_up || { tail -n 20 "$CH/var/log/nginx/error.log" >&2; fail "nginx does not answer on $URL"; }
pass "redis-server and nginx (module from modules-enabled) running"

unit=$CH/lib/systemd/system/gov-pay-worker@.service
pre=$(sed -n 's/^ExecStartPre=//p' "$unit" | sed 's/%i/main/g')
start=$(sed -n 's/^ExecStart=//p' "$unit" | sed 's/%i/main/g')
[ -n "$start" ] || fail "no ExecStart in the unit"
echo "ExecStartPre: $pre"
echo "ExecStart:    $start"
# shellcheck disable=SC2086
in_chroot runuser -u gov-pay -- $pre || fail "the unit's ExecStartPre (-t) failed"
# shellcheck disable=SC2086
chroot "$CH" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    /bin/sh -c 'cd /var/lib/gov-pay && umask 0027 &&
                exec runuser -u gov-pay -- "$@" 2>> /var/log/gov-pay-worker-main.log' \
    sh $start < /dev/null > /dev/null &
echo $! > "$CH/run/gov-pay-test/worker.pid"
sleep 0.5
kill -0 "$(cat "$CH/run/gov-pay-test/worker.pid")" 2>/dev/null \
    || { cat "$CH/var/log/gov-pay-worker-main.log" >&2; fail "gov-pay-worker stopped at once"; }
pass "gov-pay-worker running as gov-pay"

# -- 6. a payment -----------------------------------------------------------

step "6. create a notice, pay it with the sandbox channel, wait for the receipt"
body=$(printf '{"request_id":"CHROOT-%s-%s","item_code":"103001","amount":125000,"payer":{"type":"person","name":"张三","id_no":"11010519491231002X"},"remark":"packaging test"}' "$$" "$RANDOM")
out=$(scripts/govpay-client --url "$URL" --body-only POST /v1/notices "$body") \
    || { echo "$out" >&2; tail -n 20 "$CH/var/log/nginx/error.log" >&2; fail "creating the notice"; }
code=$(printf '%s' "$out" | perl -MJSON::PP -0777 -ne 'print JSON::PP->new->decode($_)->{payment_code} // ""')
[ -n "$code" ] || fail "no payment_code in: $out"
pass "notice $code created"

scripts/demo-pay "$URL" "$code" || fail "paying $code with the sandbox channel"
pass "paid with the sandbox channel"

has_receipt() {
    out=$(scripts/govpay-client --url "$URL" --body-only GET "/v1/notices/$code" 2>/dev/null) \
        || return 1
    printf '%s' "$out" | perl -MJSON::PP -0777 -ne '
        my $n = JSON::PP->new->decode($_);
        exit(($n->{status} // "") eq "PAID" && $n->{receipt} ? 0 : 1)'
}
if ! wait_for 30 has_receipt; then
    echo "$out" >&2
    tail -n 20 "$CH/var/log/gov-pay-worker-main.log" >&2
    fail "no receipt for $code after 30 s"
fi
printf '%s' "$out" | perl -MJSON::PP -0777 -ne '
    my $n = JSON::PP->new->decode($_);
    print "status $n->{status}, receipt ", JSON::PP->new->canonical->encode($n->{receipt}), "\n"'
pass "the notice is paid and has its receipt"

ledgers=$(find "$CH/var/lib/gov-pay/ledger" -type f | sed "s|^$CH||")
[ -n "$ledgers" ] || fail "no ledger file under /var/lib/gov-pay/ledger"
for l in $ledgers; do
    in_chroot gov-pay-ledger verify "$l" \
        --pubkey /etc/gov-pay/keys/receipt-issuer-sm2.pub.pem \
        || fail "gov-pay-ledger verify $l"
done
pass "gov-pay-ledger verifies the ledger in /var/lib/gov-pay/ledger"

printf '\n1..%d\nall %d checks passed\n' "$ok" "$ok"
