#!/usr/bin/env bash
# Idempotent setup for `make run`, `make test` and `make bench`: installs only what is missing.
#   - GStreamer 1.22 development files and plugins (apt), ffmpeg (independent encoder for tests), GStreamer's RTSP
#     server with its Python bindings (the live-source tests' peer)
#   - ONNX Runtime's shared library, unpacked from the PyPI wheel into .deps/onnxruntime/ (no prebuilt download by cargo)
#   - a Python virtualenv in .venv/ with the independent readers and the model builder (onnx, numpy, duckdb, pyarrow, polars)
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION="${ORT_VERSION:-1.32.0}"
# fonts-dejavu-core: the text of `capflow report`'s charts (DejaVuSans.ttf, loaded at run time).
APT_PACKAGES=(pkg-config unzip ffmpeg fonts-dejavu-core python3-gi gir1.2-gst-rtsp-server-1.0 libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-tools)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

ORT_DIR=.deps/onnxruntime
ORT_LIB="$ORT_DIR/libonnxruntime.so.$ORT_VERSION"
if [ ! -f "$ORT_LIB" ]; then
  echo "setup: fetching ONNX Runtime $ORT_VERSION from the PyPI wheel"
  mkdir -p "$ORT_DIR/wheel"
  python3 -m pip download -q --no-deps --only-binary=:all: -d "$ORT_DIR/wheel" "onnxruntime==$ORT_VERSION"
  unzip -q -o -j "$ORT_DIR"/wheel/onnxruntime-"$ORT_VERSION"-*.whl "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION" -d "$ORT_DIR"
  rm -rf "$ORT_DIR/wheel"
fi
ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import onnx, numpy, duckdb, pyarrow, polars, onnxruntime, prometheus_client" 2>/dev/null; then
  echo "setup: creating .venv with the Python readers and model tools"
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check -r tools/requirements.txt
fi
