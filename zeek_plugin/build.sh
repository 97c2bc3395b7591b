#!/bin/sh
# Builds the optional Multa::Collector plugin into build/ at the repository
# root (zkg's default plugin_dir). Where it cannot be built (no zeek-config,
# CMake or C++ compiler, or Zeek without its development files), it says so
# and exits 0 without a build/: zkg then installs the scripts alone, and they
# collect with Zeek's packet thresholds instead. MULTA_PLUGIN=require makes
# a failed build an error; MULTA_PLUGIN=off skips it.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
build="$root/build"
mode=${MULTA_PLUGIN:-auto}

skip() {
    echo "multa: C++ collector plugin not built ($1); the scripts collect with packet thresholds" >&2
    # No half-built plugin for zkg to install (only a build of ours is removed).
    [ -f "$build/CMakeCache.txt" ] && rm -rf "$build"
    [ "$mode" = require ] && exit 1
    exit 0
}

[ "$mode" = off ] && skip "MULTA_PLUGIN=off"
command -v zeek-config >/dev/null 2>&1 || skip "no zeek-config on PATH"
command -v cmake >/dev/null 2>&1 || skip "no cmake on PATH"
cmake_dir=$(zeek-config --cmake_dir) || skip "zeek-config --cmake_dir failed"
[ -f "$cmake_dir/ZeekPlugin.cmake" ] || skip "Zeek's plugin CMake files are missing from $cmake_dir"

generator=""
command -v ninja >/dev/null 2>&1 && generator="-G Ninja"
# shellcheck disable=SC2086
cmake -S "$root/zeek_plugin" -B "$build" $generator -DCMAKE_MODULE_PATH="$cmake_dir" \
    -DCMAKE_BUILD_TYPE=Release >"$root/zeek_plugin/build.log" 2>&1 \
    || skip "cmake failed; see zeek_plugin/build.log"
cmake --build "$build" >>"$root/zeek_plugin/build.log" 2>&1 \
    || skip "compiling failed; see zeek_plugin/build.log"
echo "multa: built the C++ collector plugin in $build" >&2
