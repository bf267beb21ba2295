#!/usr/bin/env bash
# with-mailstack.sh CMD...: start the project's real Postfix + Dovecot (scripts/mailstack.sh) in a
# temporary directory, run CMD with MAILSTACK_DIR and MAILSTACK_PORT_BASE set, stop the stack, exit as CMD did.
# MAILSTACK_DIR set by the caller: use that stack as it is (started and stopped by the caller).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [[ -n ${MAILSTACK_DIR:-} ]]; then
  exec "$@"
fi
export MAILSTACK_PORT_BASE=${MAILSTACK_PORT_BASE:-10000}
dir=$(mktemp -d /tmp/mailprobe-stack.XXXXXX)
chmod 755 "$dir"
stop() {
  "$here/mailstack.sh" stop "$dir" >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap stop EXIT
"$here/mailstack.sh" start "$dir" >&2
export MAILSTACK_DIR=$dir
set +e
"$@"
rc=$?
set -e
exit $rc
