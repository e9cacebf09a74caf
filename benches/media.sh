#!/usr/bin/env bash
# Media benchmark: iom's proxy and review steps against the reference tools, side by
# side in one run on the same plate.
#
# Data: one 48-frame 2048x1152 half-float RGB EXR plate (ZIP, scene-linear, 24 fps),
# written once by the bench driver into the publish layout under $BENCH_DIR.
#
#   H.264      iom review (mp4 only)          vs  ffmpeg -c:v libx264 -preset veryfast -crf 18 -pix_fmt yuv420p
#   ProRes HQ  iom review (mov only, 422 HQ)  vs  ffmpeg -c:v prores_ks -profile:v 3 -pix_fmt yuv422p10le
#   JPEG       iom proxy (full size, q95)     vs  oiiotool --colorconvert linear sRGB, quality 95
#
# Both sides read the EXR files and apply a display curve (iom: the colour table's
# linear -> BT.1886 for movies, sRGB for JPEGs; ffmpeg: -apply_trc bt709 / oiiotool's
# linear -> sRGB). Each command runs RUNS times (default 3) as a whole process under
# /usr/bin/time -v; the script prints the median wall time, the ratio iom/reference,
# the median peak RSS and the median CPU time (user + system, seconds; steadier than
# wall time on a loaded machine), and the load average at the end. "iom step" is the
# median time iom's step took inside its process (what a resident worker spends on the
# task, without the process start-up the whole-process figure includes), and
# "step/ref" that time over the reference's whole-process time.
#
# Usage: benches/media.sh [RUNS]     env: BENCH_DIR (default /var/tmp/iom-media-bench),
#   BENCH_JOBS (iom's media.jobs, frames decoded at once; default: one per core)
#   BENCH_ENCODER_THREADS (iom's media.review.encoder_threads; default 0 = the encoder's)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${1:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/tmp/iom-target}
bench=${BENCH_DIR:-/var/tmp/iom-media-bench}
for tool in ffmpeg oiiotool /usr/bin/time python3; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing (deploy/install-deps.sh installs it)" >&2; exit 1; }
done

exe=$(cargo bench --manifest-path "$here/Cargo.toml" --bench media --no-run 2>&1 \
  | sed -n 's/.*Executable .*(\(.*\)).*/\1/p' | tail -1)
[ -x "$exe" ] || { echo "bench: could not build the media bench driver" >&2; exit 1; }
root="$bench/root"
frames_dir="$root/seq/B/B_0010/plate/org/v001"
if [ ! -e "$frames_dir/B_0010_org_v001.1048.exr" ]; then
  echo "bench: writing the 48-frame 2048x1152 EXR plate" >&2
  "$exe" gen "$root" 2048 1152 48
fi
in="$frames_dir/B_0010_org_v001.%04d.exr"
out="$bench/ref"
mkdir -p "$out"

# name | command
cmds=(
  "iom_h264|$exe h264 $root"
  "ffmpeg_h264|ffmpeg -v error -y -apply_trc bt709 -start_number 1001 -framerate 24 -i $in -c:v libx264 -preset veryfast -crf 18 -pix_fmt yuv420p -color_primaries bt709 -color_trc bt709 -colorspace bt709 -timecode 01:00:00:00 $out/ref.mp4"
  "iom_prores|$exe prores $root"
  "ffmpeg_prores|ffmpeg -v error -y -apply_trc bt709 -start_number 1001 -framerate 24 -i $in -c:v prores_ks -profile:v 3 -pix_fmt yuv422p10le -color_primaries bt709 -color_trc bt709 -colorspace bt709 -timecode 01:00:00:00 $out/ref.mov"
  "iom_jpeg|$exe proxy $root"
  "oiiotool_jpeg|oiiotool --frames 1001-1048 $frames_dir/B_0010_org_v001.#.exr --colorconvert linear sRGB --compression jpeg:95 -o $out/jpg.#.jpg"
)

results="$bench/results.tsv"
: > "$results"
for r in $(seq 1 "$runs"); do
  for c in "${cmds[@]}"; do
    name=${c%%|*}; cmd=${c#*|}
    log="$bench/time.$name.$r"
    # shellcheck disable=SC2086
    /usr/bin/time -v $cmd 2> "$log" >/dev/null || { echo "bench: $name failed:" >&2; cat "$log" >&2; exit 1; }
    wall=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$log")
    rss=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log")
    usr=$(sed -n 's/.*User time (seconds): //p' "$log")
    sys=$(sed -n 's/.*System time (seconds): //p' "$log")
    step=$(sed -n 's/^step seconds: //p' "$log")
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$wall" "$rss" "$(python3 -c "print($usr + $sys)")" "${step:--}" >> "$results"
  done
done

python3 - "$results" "$runs" <<'EOF'
import sys, statistics
rows = [l.split('\t') for l in open(sys.argv[1]).read().splitlines() if l]
def secs(t):
    parts = [float(p) for p in t.split(':')]
    s = 0.0
    for p in parts:
        s = s * 60 + p
    return s
data = {}
for name, wall, rss, cpu, step in rows:
    data.setdefault(name, []).append((secs(wall), int(rss), float(cpu),
                                      None if step == "-" else float(step)))
def med(name):
    v = data[name]
    return (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v) / 1024,
            statistics.median(x[2] for x in v))
def med_step(name):
    v = [x[3] for x in data[name] if x[3] is not None]
    return statistics.median(v) if v else float("nan")
with open("/proc/loadavg") as f:
    load = f.read().split()[0]
print(f"media benchmark: 48 frames 2048x1152 half EXR, median of {sys.argv[2]} runs, load average {load} at the end")
print(f"{'work':<12} {'iom s':>8} {'ref s':>8} {'iom/ref':>8} {'iom MB':>8} {'ref MB':>8} {'iom cpu':>8} {'ref cpu':>8} {'iom step':>8} {'step/ref':>8}  reference")
for work, iom, ref, label in [
    ("H.264", "iom_h264", "ffmpeg_h264", "ffmpeg CLI libx264"),
    ("ProRes HQ", "iom_prores", "ffmpeg_prores", "ffmpeg CLI prores_ks"),
    ("JPEG proxy", "iom_jpeg", "oiiotool_jpeg", "oiiotool"),
]:
    (it, im, ic), (rt, rm, rc) = med(iom), med(ref)
    st = med_step(iom)
    print(f"{work:<12} {it:8.2f} {rt:8.2f} {it / rt:8.2f} {im:8.0f} {rm:8.0f} {ic:8.2f} {rc:8.2f} {st:8.2f} {st / rt:8.2f}  {label}")
EOF
