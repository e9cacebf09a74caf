#!/usr/bin/env bash
# Installs what iom needs on Debian 12 (bookworm): FFmpeg 5.1 development
# libraries, clang (bindgen), pkg-config, the reference tools the benchmarks
# compare against (ffmpeg CLI, oiiotool, exrheader, hyperfine), tclsh, and
# RabbitMQ, and Prometheus (prometheus + promtool, for the observability tests).
# Safe to run again: it installs only what is missing.
#
# Rust comes from rustup (Debian's rustc 1.63 is too old; iom needs >= 1.88):
#   https://rustup.rs — then re-run this script.
set -euo pipefail

need=()
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for p in libavcodec-dev libavformat-dev libavutil-dev libswscale-dev libswresample-dev \
         libavfilter-dev libavdevice-dev clang libclang-dev pkg-config \
         ffmpeg openimageio-tools openexr hyperfine time jq bc tcl rabbitmq-server prometheus; do
  have_pkg "$p" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${need[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found. Install Rust with rustup (https://rustup.rs), then re-run." >&2
  exit 1
fi
ver=$(rustc --version | awk '{print $2}')
major=${ver%%.*}; rest=${ver#*.}; minor=${rest%%.*}
if [ "$major" -lt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -lt 88 ]; }; then
  echo "install-deps: rustc $ver is too old (need >= 1.88); run 'rustup update stable'." >&2
  exit 1
fi
