#!/usr/bin/env bash
# Usage: .ci/llvm-standin.sh DIR
#
# burn's CUDA backend compiles its kernels through cubecl-llvm, whose build downloads a
# prebuilt LLVM bundle from GitHub (tracel-llvm-bundler) into $XDG_DATA_HOME/tracel. CI reaches
# only package registries, so this lays out Debian's LLVM 22 (apt: llvm-22-dev,
# libpolly-22-dev) in that bundle's place under DIR; build with XDG_DATA_HOME=DIR.
#
# The bundle is LLVM 23.1 and this is 22.1: the build compiles papertune's and burn's CUDA code
# and links it, which is what CI checks. A binary meant to run on a GPU is built with the real
# bundle (a machine with network access) and checked there with `cargo xtask gpu-check`.
set -euo pipefail
dir="$1"
llvm=/usr/lib/llvm-22
[ -x "$llvm/bin/llvm-config" ] || { echo "llvm-standin: $llvm/bin/llvm-config not found (apt-get install llvm-22-dev libpolly-22-dev)" >&2; exit 1; }
cd "$(dirname "$0")/.."
# The bundle version the locked tracel-llvm-bundler expects, e.g. 23.1.0-4.
version=$(awk '/^name = "tracel-llvm-bundler"/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)
[ -n "$version" ] || { echo "llvm-standin: tracel-llvm-bundler is not in Cargo.lock" >&2; exit 1; }
prefix="$dir/tracel/tracel-llvm-$version"
# Made once: the bundler's build script reruns (and everything above it rebuilds) when the
# marker's time changes.
if [ -e "$prefix/.tracel-llvm-installed" ]; then
  echo "$prefix"
  exit 0
fi
rm -rf "$prefix"
mkdir -p "$prefix/bin"
ln -s "$llvm/lib" "$prefix/lib"
ln -s "$llvm/include" "$prefix/include"
for tool in "$llvm"/bin/*; do
  ln -s "$tool" "$prefix/bin/"
done
# Debian's llvm-config names libz3 by its path, which the bundler turns into `-llibz3`.
rm "$prefix/bin/llvm-config"
cat > "$prefix/bin/llvm-config" <<EOF
#!/bin/sh
"$llvm/bin/llvm-config" "\$@" | sed 's#/usr/lib/[^ ]*/libz3\.so#-lz3#'
EOF
chmod +x "$prefix/bin/llvm-config"
# The bundler skips its download when this marker exists.
touch "$prefix/.tracel-llvm-installed"
echo "$prefix"
