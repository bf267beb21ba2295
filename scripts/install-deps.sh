#!/usr/bin/env bash
# install-deps.sh: the Debian packages the test suite needs (idempotent; installs only what is missing).
#   postfix, dovecot-*      the real mail stack of the integration tests (scripts/mailstack.sh)
#   dnsmasq-base            the stack's DNS server (MX records for mx: targets); bind9-dnsutils (dig) and
#                           libio-socket-inet6-perl (swaks over IPv6) for its selftest
#   prometheus              promtool (rule tests) and the server of the end-to-end test
#   prometheus-alertmanager amtool (config check)
#   prometheus-blackbox-exporter  the comparison in the benchmark (npm run bench)
#   chromium                the landing page test (playwright-core drives Debian's chromium)
#   docker-compose          validates docker-compose.yml without a Docker engine
# Package maintainer scripts must not start system-wide daemons: a policy-rc.d answers 101 meanwhile.
set -euo pipefail
PACKAGES=(postfix dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-sieve
  openssl ca-certificates iproute2 swaks curl libnet-ssleay-perl
  dnsmasq-base bind9-dnsutils libio-socket-inet6-perl
  prometheus prometheus-alertmanager prometheus-blackbox-exporter chromium docker-compose)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $EUID -ne 0 ]]; then
  echo "install-deps: missing Debian packages: ${missing[*]}" >&2
  echo "install-deps: run as root: sudo bash scripts/install-deps.sh" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
made_policy=
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  made_policy=1
fi
trap '[[ -n $made_policy ]] && rm -f /usr/sbin/policy-rc.d' EXIT
# Postfix: "No configuration", so the package writes no /etc/postfix/main.cf of its own.
printf '%s\n' 'postfix postfix/main_mailer_type select No configuration' \
  'postfix postfix/mailname string mail.test' | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
