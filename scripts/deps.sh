#!/bin/sh
# Installs the Debian packages gatewayd builds and tests with, when they are missing.
# Called by make once per build tree. Only apt-get is used; nothing else is downloaded.
set -u
BUILD_PKGS="pkg-config libevent-dev libssl-dev libcjson-dev libnng-dev libcmocka-dev clang libsqlite3-dev libcrypt-dev libmaxminddb-dev libcurl4-openssl-dev"
TEST_PKGS="python3 openssl curl mandoc"
# gatetop: wide-character curses; its tests run it inside tmux
BUILD_PKGS="$BUILD_PKGS libncurses-dev"
TEST_PKGS="$TEST_PKGS tmux"
# PostgreSQL store: libpq; its tests start a throwaway server, the deploy tests read YAML
BUILD_PKGS="$BUILD_PKGS libpq-dev"
TEST_PKGS="$TEST_PKGS postgresql python3-yaml"
# redis: hiredis (async, libevent adapter); the e2e tests start a redis-server
BUILD_PKGS="$BUILD_PKGS libhiredis-dev"
TEST_PKGS="$TEST_PKGS redis-server"
missing=""
for p in $BUILD_PKGS $TEST_PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "deps: missing packages:$missing (run as root on Debian, or install them)" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends $missing >/dev/null || {
	echo "deps: apt-get install failed for:$missing" >&2
	exit 1
}
