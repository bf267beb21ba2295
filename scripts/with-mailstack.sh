#!/usr/bin/env bash
# with-mailstack.sh CMD...: start the project's real Postfix + Dovecot (scripts/mailstack.sh) in a
# temporary directory, run CMD with MAILSTACK_DIR and MAILSTACK_PORT_BASE set, stop the stack, exit as CMD did.
# MAILSTACK_DIR set by the caller: use that stack as it is (started and stopped by the caller).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [[ -n ${MAILSTACK_DIR:-} ]]; then
  exec "$@"
fi
# The first port base whose ports are all free (10000, 20000, ...), unless the caller chose one.
port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }
udp_free() { ! ss -Hlun "sport = :$1" | grep -q .; }
base_free() {
  local p
  for p in 24 25 53 110 143 443 465 587 993 995; do port_free $(($1 + p)) || return 1; done
  udp_free $(($1 + 53))
}
if [[ -z ${MAILSTACK_PORT_BASE:-} ]]; then
  for base in 10000 20000 30000 40000 50000; do
    if base_free $base; then MAILSTACK_PORT_BASE=$base; break; fi
  done
  [[ -n ${MAILSTACK_PORT_BASE:-} ]] || { echo "with-mailstack: no free port base" >&2; exit 1; }
fi
export MAILSTACK_PORT_BASE
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
