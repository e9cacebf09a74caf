#!/usr/bin/env bash
# Scan benchmark: iom against the original IO-Manager's method, same data, same run.
#
# Data: 100 sequences x 48 frames of 2048x1152 half-float RGBA EXR (ZIP), plus 3 ProRes
# MOVs with EDLs (generated once by `iom sample`, cached under $BENCH_DIR).
#
# Original method, serially per sequence (original-app.md §3, §8):
#   exrheader <first>; exrheader <last>;
#   oiiotool <first> --colorconvert linear sRGB --resize 960x540 -o thumb.jpg
#
# Also: one thumbnail, whole process, iom vs oiiotool.
# Output: medians (hyperfine), ratios, peak RSS (GNU time, median of 3).
#
# Usage: benches/scan.sh [RUNS]      env: BENCH_DIR (default /var/tmp/iom-bench)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/iom-target}
bench=${BENCH_DIR:-/var/tmp/iom-bench}
seqs=${BENCH_SEQUENCES:-100}
frames=${BENCH_FRAMES:-48}
for tool in hyperfine oiiotool exrheader /usr/bin/time jq; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (deploy/install-deps.sh installs it)" >&2; exit 1; }
done

cargo build --release --manifest-path "$here/Cargo.toml" --bin iom >&2
iom="$CARGO_TARGET_DIR/release/iom"
delivery="$bench/delivery"
echo "bench: generating $seqs x $frames frames in $delivery (cached)" >&2
"$iom" sample "$delivery" --sequences "$seqs" --frames "$frames" --width 2048 --height 1152 --movies 3 >/dev/null
frame=$(ls "$delivery"/A001C001_bench/*.exr | head -1)

cat > "$bench/original.sh" <<'EOF'
#!/usr/bin/env bash
# The original's per-sequence method, serially.
set -eu
delivery=$1; out=$2
mkdir -p "$out"
for d in "$delivery"/*/; do
  files=("$d"*.exr)
  [ -e "${files[0]}" ] || continue
  first=${files[0]}; last=${files[${#files[@]}-1]}
  exrheader "$first" >/dev/null
  exrheader "$last" >/dev/null
  oiiotool "$first" --colorconvert linear sRGB --resize 960x540 -o "$out/$(basename "$d").jpg"
done
# Movies: ffprobe, then one ffmpeg per movie selecting the event start frames.
for m in "$delivery"/*.mov; do
  [ -e "$m" ] || continue
  ffprobe -v error -show_streams -of json "$m" >/dev/null
  ffmpeg -v error -y -i "$m" -vf "select='eq(n\,0)+eq(n\,24)'" -vsync 0 -s 960x540 "$out/$(basename "$m" .mov).%04d.jpg"
done
EOF
chmod +x "$bench/original.sh"

clean="rm -rf $delivery/.thumbnail $delivery/scanlist_*.xlsx $bench/orig-thumbs"
hyperfine --style basic --runs "$runs" --warmup 1 --prepare "$clean" \
  --export-json "$bench/scan.json" \
  -n iom "$iom scan $delivery --colorspace linear" \
  -n original "$bench/original.sh $delivery $bench/orig-thumbs" >&2

hyperfine --style basic --runs $((runs * 5)) --warmup 2 \
  --export-json "$bench/thumb.json" \
  -n iom-thumbnail "$iom thumbnail $frame --colorspace linear -o $bench/t-iom.jpg" \
  -n oiiotool-thumbnail "oiiotool $frame --colorconvert linear sRGB --resize 960x540 -o $bench/t-oiio.jpg" >&2

peak() { # median peak RSS (MB) of 3 runs of a command
  for _ in 1 2 3; do
    eval "$clean"
    /usr/bin/time -f %M "$@" 2>&1 >/dev/null | tail -1
  done | sort -n | sed -n 2p | awk '{printf "%.0f", $1/1024}'
}
rss_iom=$(peak "$iom" scan "$delivery" --colorspace linear)
rss_orig_thumb=$(peak oiiotool "$frame" --colorconvert linear sRGB --resize 960x540 -o "$bench/t-oiio.jpg")
rss_iom_thumb=$(peak "$iom" thumbnail "$frame" --colorspace linear -o "$bench/t-iom.jpg")

med() { jq -r ".results[] | select(.command==\"$2\") | .median" "$1"; }
a=$(med "$bench/scan.json" iom); b=$(med "$bench/scan.json" original)
c=$(med "$bench/thumb.json" iom-thumbnail); d=$(med "$bench/thumb.json" oiiotool-thumbnail)
printf '\n| work | iom median | anchor median | speed-up | iom peak RSS |\n|---|---|---|---|---|\n'
printf '| scan %s seq x %s frames 2K EXR + 3 MOV | %.2f s | %.2f s (exrheader+oiiotool, serial) | %.1fx | %s MB |\n' \
  "$seqs" "$frames" "$a" "$b" "$(echo "$b / $a" | bc -l)" "$rss_iom"
printf '| one 960x540 thumbnail, whole process | %.3f s | %.3f s (oiiotool) | %.1fx | %s MB (oiiotool %s MB) |\n' \
  "$c" "$d" "$(echo "$d / $c" | bc -l)" "$rss_iom_thumb" "$rss_orig_thumb"
