#!/usr/bin/env bash
# Installs what building and testing sqlraft needs on a fresh Debian machine; with
# `build`, only what building needs (the demo's set-up).
# Safe to run again: it installs only what is missing.
set -euo pipefail
only_build=false
[ "${1:-}" = build ] && only_build=true

need_apt=()
command -v protoc >/dev/null 2>&1 || need_apt+=(protobuf-compiler)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
# jemalloc (the binary's allocator) is built with make.
command -v make >/dev/null 2>&1 || need_apt+=(make)
if ! $only_build; then
  # The module-cycle check and the client tests run Python.
  command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
  # deploy/install.sh puts ansible-core into a virtualenv (the deploy end-to-end test runs it).
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
  # The rqlite client libraries test runs rqlite-js (npm) and Python clients (a venv).
  command -v npm >/dev/null 2>&1 || need_apt+=(npm)
  command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
  # The web interface test drives a real headless browser through chromedriver.
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
  # The fault campaign: network namespaces and their rules, and a fake clock per node.
  command -v ip >/dev/null 2>&1 || need_apt+=(iproute2)
  command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
  [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] || need_apt+=(libfaketime)
fi

if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
