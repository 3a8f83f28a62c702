#!/usr/bin/env bash
# Obtain a real eKuiper `kuiperd` binary for the real-host tests and print its absolute path on the last stdout line.
#
#   KUIPERD=/path/to/kuiperd   use that binary as is (must be executable)
#   EKUIPER_VERSION=vX.Y.Z     eKuiper module version to build (default below)
#
# Cache: <repo>/.cache/ekuiper/<version>/{kuiperd,etc/}. `etc/` is the module's own config folder, needed to create
# host roots. On a cache miss the module is fetched with `go mod download` (Go module proxy) and built with CGO off.
# `go install …/cmd/kuiperd@…` does not work for eKuiper (its go.mod has replace directives), hence the download.
# The version is stamped into the binary as eKuiper's release builds do (`-X …/cmd.Version`), so `GET /` on the REST
# API reports it; binaries cached before that stamp was added report "unknown" (delete the folder to rebuild).
# Of eKuiper, the Go module proxy serves only v2.4.0 and v2.4.2 (403 for v2.0-v2.3, v2.4.1, v2.5 and every 1.x, and
# for the version list); both are tested (README, "Compatibility").
set -euo pipefail

EKUIPER_VERSION=${EKUIPER_VERSION:-v2.4.2}
MODULE=github.com/lf-edge/ekuiper/v2

log() { printf 'get-ekuiper: %s\n' "$*" >&2; }

if [[ -n "${KUIPERD:-}" ]]; then
    if [[ -x "$KUIPERD" && ! -d "$KUIPERD" ]]; then
        printf '%s/%s\n' "$(cd "$(dirname "$KUIPERD")" && pwd -P)" "$(basename "$KUIPERD")"
        exit 0
    fi
    log "KUIPERD is set to '$KUIPERD' but that is not an executable file"
    exit 1
fi

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cache_dir="$repo_root/.cache/ekuiper/$EKUIPER_VERSION"
bin="$cache_dir/kuiperd"

if [[ -x "$bin" && -f "$cache_dir/etc/kuiper.yaml" ]]; then
    printf '%s\n' "$bin"
    exit 0
fi

go_bin=$(command -v go || true)
if [[ -z "$go_bin" && -x /usr/local/go/bin/go ]]; then
    go_bin=/usr/local/go/bin/go
fi
if [[ -z "$go_bin" ]]; then
    log "no kuiperd cached in $cache_dir and no 'go' toolchain found to build eKuiper $EKUIPER_VERSION."
    log "Install Go (eKuiper $EKUIPER_VERSION needs Go >= 1.25) or set KUIPERD=/path/to/kuiperd."
    exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
    log "python3 is needed to read 'go mod download -json' output"
    exit 1
fi

start=$(date +%s)

log "downloading $MODULE@$EKUIPER_VERSION (Go module proxy)"
# Run outside any Go module/workspace so the download is not affected by the caller's cwd.
dl_json=$(cd / && GOWORK=off "$go_bin" mod download -json "$MODULE@$EKUIPER_VERSION") || {
    log "go mod download failed:"
    printf '%s\n' "$dl_json" >&2
    exit 1
}
src_dir=$(printf '%s' "$dl_json" | python3 -c '
import json, sys
info = json.load(sys.stdin)
if info.get("Error"):
    sys.exit("go mod download: " + info["Error"])
print(info["Dir"])
')
if [[ ! -f "$src_dir/cmd/kuiperd/main.go" || ! -f "$src_dir/etc/kuiper.yaml" ]]; then
    log "unexpected module layout in $src_dir (no cmd/kuiperd/main.go or etc/kuiper.yaml)"
    exit 1
fi

log "building kuiperd from $src_dir with $("$go_bin" version) (this takes minutes on a cold Go build cache)"
mkdir -p "$cache_dir"
build_start=$(date +%s)
tmp_bin="$cache_dir/kuiperd.tmp.$$"
trap 'rm -f "$tmp_bin"; rm -rf "$cache_dir/etc.tmp.$$"' EXIT
# GOWORK=off is required: the module's go.work names a folder that is not part of the module zip.
(cd "$src_dir" && GOWORK=off CGO_ENABLED=0 GOFLAGS=-buildvcs=false "$go_bin" build \
    -ldflags "-X $MODULE/cmd.Version=$EKUIPER_VERSION" -o "$tmp_bin" ./cmd/kuiperd)
log "go build took $(( $(date +%s) - build_start ))s"

# Copy etc/ first and move the binary last: the binary's presence is what marks the cache as complete.
rm -rf "$cache_dir/etc.tmp.$$"
cp -R "$src_dir/etc" "$cache_dir/etc.tmp.$$"
chmod -R u+w "$cache_dir/etc.tmp.$$"  # module cache files are read-only
rm -rf "$cache_dir/etc"
mv "$cache_dir/etc.tmp.$$" "$cache_dir/etc"
mv -f "$tmp_bin" "$bin"

log "kuiperd $EKUIPER_VERSION ready in $(( $(date +%s) - start ))s"
printf '%s\n' "$bin"
