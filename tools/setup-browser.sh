#!/usr/bin/env bash
# Headless Chromium for the dashboard test (Debian's package; no browser download of its own). Idempotent; a machine
# where it cannot be installed still passes `make test`: the dashboard test then says it was skipped.
set -uo pipefail
command -v chromium >/dev/null 2>&1 && exit 0
echo "setup: installing Chromium for the dashboard test"
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null; }; then
  echo "setup: Chromium could not be installed; the dashboard's browser test will be skipped" >&2
  exit 1
fi
