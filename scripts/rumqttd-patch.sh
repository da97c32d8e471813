#!/usr/bin/env bash
# Regenerates vendor/rumqttd-prognos.patch: the full diff of vendor/rumqttd against the
# published rumqttd 0.20.0 (fetched into the cargo registry by `cargo fetch`; pass another
# pristine directory as $1). Files the vendored copy leaves out (examples, the binary, its
# config, lock and VCS files) and PROGNOS-PATCH.md are not part of the diff.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
pristine=${1:-$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/rumqttd-0.20.0 2>/dev/null | head -1)}
if [ -z "$pristine" ] || [ ! -f "$pristine/Cargo.toml" ]; then
    echo "pristine rumqttd-0.20.0 not found: run 'cargo fetch' in a crate depending on rumqttd = \"=0.20.0\", or pass its directory" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -a "$pristine" "$work/a"
cp -a "$root/vendor/rumqttd" "$work/b"
cd "$work"
# diff exits 1 when the trees differ, which they do.
diff -ruN -x .cargo_vcs_info.json -x .cargo-ok -x Cargo.lock -x Cargo.toml.orig \
    -x PROGNOS-PATCH.md -x examples -x rumqttd.toml -x main.rs -x target a b \
    | sed -E -e 's/^diff -ruN .* (a\/[^ ]+) (b\/[^ ]+)$/diff -ruN \1 \2/' \
             -e 's/^(---|\+\+\+) ([ab]\/[^\t]+)\t.*$/\1 \2/' \
    > "$root/vendor/rumqttd-prognos.patch" || true
echo "wrote vendor/rumqttd-prognos.patch ($(wc -l < "$root/vendor/rumqttd-prognos.patch") lines)"
