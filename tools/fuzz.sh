#!/usr/bin/env bash
# `make fuzz`: runs every cargo-fuzz target in fuzz/ for FUZZ_SECONDS (default 60) each and prints how many inputs
# each one ran. Installs cargo-fuzz if missing; uses the nightly toolchain when installed, else stable with
# RUSTC_BOOTSTRAP=1. Seed corpora are generated here from the bundled configs and model cards (nothing committed).
# A crash stops the run; its input is in fuzz/artifacts/<target>/ (replay: cargo fuzz run <target> <file>).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-none}"   # the code is safe Rust: panics are the findings; "address" for ASan
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(config manifest model_card preprocess)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    cargo=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    cargo=(cargo fuzz)
fi
# The workspace's dependency versions (cargo adds libfuzzer-sys).
[ -f fuzz/Cargo.lock ] || cp Cargo.lock fuzz/Cargo.lock

# Seeds: the shipped configs and cards, a small manifest and a few frame headers.
for t in "${targets[@]}"; do mkdir -p "fuzz/corpus/$t"; done
[ ! -d fuzz/corpus/config ] || cp configs/*.toml fuzz/corpus/config/
[ ! -d fuzz/corpus/model_card ] || cp models/*.toml fuzz/corpus/model_card/
if [ -d fuzz/corpus/manifest ]; then
    printf '# a study\nsource,patient,site,um_per_px,fps,recorded_at,mode\nvisits/a.mp4,P1,sublingual,1.5,25,2026-03-01T08:00:00Z,replay\ns3://bucket/x/p2.avi,P2,,,,,\n' \
        > fuzz/corpus/manifest/seed.csv
fi
if [ -d fuzz/corpus/preprocess ]; then
    # width, height, stride (u16 LE), format, spec bits, pixel size byte, 7 spare bytes, then pixels.
    printf '\x04\x00\x03\x00\x04\x00\x00\x00\x80\x00\x00\x00\x00\x00\x00\x00%s' 'abcdefghijkl' > fuzz/corpus/preprocess/gray
    printf '\x02\x00\x02\x00\x08\x00\x01\x06\x90\x00\x00\x00\x00\x00\x00\x00%s' 'rgbRGBxxrgbRGB' > fuzz/corpus/preprocess/rgb
fi

"${cargo[@]}" build -s "$sanitizer" --debug-assertions
mkdir -p fuzz/logs
summary=()
for t in "${targets[@]}"; do
    echo "fuzz: $t for ${seconds} s"
    log="fuzz/logs/$t.log"
    if ! "${cargo[@]}" run -s "$sanitizer" --debug-assertions "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 > "$log" 2>&1; then
        tail -n 40 "$log"
        echo "fuzz: $t FAILED; the crashing input is in fuzz/artifacts/$t/ (full log: $log)" >&2
        exit 1
    fi
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo '?')
    summary+=("$(printf '  %-12s %10s runs  %6s coverage points  %5s corpus files' "$t" "$runs" "$cov" "$(ls "fuzz/corpus/$t" | wc -l)")")
done
echo "fuzz: no crash in ${seconds} s per target"
printf '%s\n' "${summary[@]}"
