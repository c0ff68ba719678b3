#!/usr/bin/env bash
# install-deps.sh: makes sure the Debian (bookworm) packages that gov-pay edge
# builds, tests and demos with are installed.
#
# As root it installs what is missing with apt-get; as another user it prints
# the apt-get command to run and exits 1. Packages that start a service on
# install (nginx on port 80, redis-server on 6379) are stopped again if this
# script installed them: the tests and the demo start their own on other ports.
#
# build/.deps-ok records the hash of this script once everything is present;
# the check itself is one dpkg-query call and always runs.

set -euo pipefail

cd "$(dirname "$0")/.."

packages=(
    build-essential pkg-config
    nginx nginx-dev
    libhiredis-dev libjansson-dev libssl-dev libqrencode-dev qrencode
    libcurl4-openssl-dev libgcrypt20-dev
    redis-server redis-tools
    perl libredis-perl libjson-xs-perl libwww-perl libhttp-daemon-perl libtest-tcp-perl
    libcrypt-openssl-rsa-perl libcryptx-perl
    zbar-tools openssl ca-certificates curl procps psmisc valgrind wrk
    # the payer pages' browser tests (t/browser.t): Debian's Chromium, a
    # Chinese font for its screenshots, Node.js for playwright-core/axe-core
    chromium fonts-wqy-microhei nodejs
    libcairo2-dev libfreetype-dev poppler-utils
    # the fuzz targets (fuzz/, make fuzz; t/fuzz_smoke.t): clang's libFuzzer
    # with AddressSanitizer and UBSan
    clang libclang-rt-14-dev
)

# npm: Debian's package, unless the Node.js installed brings its own
command -v npm >/dev/null 2>&1 || packages+=(npm)

stamp=build/.deps-ok

# `install-deps.sh deb` (make deb): only what building the Debian packages
# needs (debian/control's Build-Depends and dpkg-buildpackage);
# `install-deps.sh deb-test` (make deb-test): that and debootstrap, for
# t/packaging/chroot-install.sh. make test never installs these.
case "${1:-}" in
deb|deb-test)
    packages=(
        build-essential dpkg-dev debhelper nginx-dev pkg-config
        libhiredis-dev libjansson-dev libssl-dev libqrencode-dev
        libcurl4-openssl-dev libgcrypt20-dev libcairo2-dev libfreetype-dev
        zlib1g-dev
    )
    if [ "$1" = deb-test ]; then
        packages+=(debootstrap)
    fi
    stamp=build/.deps-$1-ok
    ;;
"")
    ;;
*)
    echo "usage: install-deps.sh [deb | deb-test]" >&2
    exit 2
    ;;
esac
self_hash=$(sha256sum "$0" | cut -d' ' -f1)

missing_packages() {
    local installed

    # one line per known package: "ii name" when installed
    installed=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' \
                    "${packages[@]}" 2>/dev/null | awk '$1 == "ii" { print $2 }' \
                || true)

    local p
    for p in "${packages[@]}"; do
        if ! grep -qxF "$p" <<<"$installed"; then
            echo "$p"
        fi
    done
}

write_stamp() {
    mkdir -p build
    echo "$self_hash" > "$stamp"
}

mapfile -t missing < <(missing_packages)

if [ ${#missing[@]} -eq 0 ]; then
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$self_hash" ]; then
        write_stamp
    fi
    echo "deps: all ${#packages[@]} packages are installed"
    exit 0
fi

install_cmd="apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}"

if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing Debian packages: ${missing[*]}" >&2
    echo "deps: install them as root with:" >&2
    echo "    sudo sh -c '$install_cmd'" >&2
    exit 1
fi

echo "deps: installing ${missing[*]}"

# was a service of these packages running before we installed anything?
service_running() {
    pgrep -x "$1" >/dev/null 2>&1
}

nginx_was_running=0
redis_was_running=0
if command -v pgrep >/dev/null 2>&1; then
    service_running nginx && nginx_was_running=1
    service_running redis-server && redis_was_running=1
fi

apt-get update
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "${missing[@]}" </dev/null

# stop what the packages' maintainer scripts may have started
for p in "${missing[@]}"; do
    case "$p" in
    nginx)
        if [ "$nginx_was_running" = 0 ] && service_running nginx; then
            echo "deps: stopping the nginx service the package started"
            service nginx stop </dev/null || true
            if service_running nginx && [ -s /run/nginx.pid ]; then
                kill -QUIT "$(cat /run/nginx.pid)" || true
            fi
        fi
        ;;
    redis-server)
        if [ "$redis_was_running" = 0 ] && service_running redis-server; then
            echo "deps: stopping the redis-server service the package started"
            service redis-server stop </dev/null || true
            if service_running redis-server; then
                redis-cli -p 6379 shutdown </dev/null || true
            fi
        fi
        ;;
    esac
done

mapfile -t still_missing < <(missing_packages)
if [ ${#still_missing[@]} -ne 0 ]; then
    echo "deps: still missing after apt-get: ${still_missing[*]}" >&2
    exit 1
fi

write_stamp
echo "deps: all ${#packages[@]} packages are installed"
