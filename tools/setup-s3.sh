#!/usr/bin/env bash
# Idempotent: installs the s3s-fs test server (a real S3-compatible server backed by a folder) into .deps/s3s/.
# The S3 round-trip tests in sinks/ start it; without it they are skipped (or fail if CAPFLOW_REQUIRE_S3=1).
#   s3s-fs --host 127.0.0.1 --port PORT --access-key K --secret-key S ROOT   (a bucket is a folder under ROOT)
# s3s-fs 0.14.1 is the newest release that builds with rustc 1.95; newer ones need rustc 1.96.
set -euo pipefail
cd "$(dirname "$0")/.."

S3S_VERSION="${S3S_VERSION:-0.14.1}"
S3S_ROOT=.deps/s3s
if [ ! -x "$S3S_ROOT/bin/s3s-fs" ]; then
  echo "setup-s3: installing s3s-fs $S3S_VERSION into $S3S_ROOT (takes ~1.5-3 min)"
  mkdir -p "$S3S_ROOT"
  cargo install "s3s-fs@$S3S_VERSION" --features binary --locked --root "$S3S_ROOT"
fi
echo "setup-s3: $S3S_ROOT/bin/s3s-fs is ready"
