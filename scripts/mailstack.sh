#!/usr/bin/env bash
# mailstack.sh - the real, throwaway, loopback-only Postfix + Dovecot (+ dnsmasq
# for MX tests) that mailprobe_exporter's integration tests, benchmark and local trials run against.
#
#   mailstack.sh start    DIR   install packages if missing, (re)write configs, start
#   mailstack.sh stop     DIR   stop the daemons via their own pid files
#   mailstack.sh status   DIR   show pids and listening ports
#   mailstack.sh selftest DIR   end-to-end check (SMTP submit -> LMTP -> IMAP/POP3, DNS, MX hosts,
#                               OAuth mechanisms offered and unknown tokens refused)
#
# Postfix (separate instance: config_directory, queue_directory, data_directory
# all under DIR) + Dovecot (dovecot -c DIR/dovecot.conf) + dnsmasq (dnsmasq -C
# DIR/dnsmasq.conf, pid DIR/dnsmasq.pid, log DIR/log/dnsmasq.log). Nothing listens
# on anything but loopback (127.0.0.1; the MX hosts also on 127.0.0.2, 127.0.0.3
# and ::1), nothing is written outside DIR except by apt-get (and a debconf
# preseed for Postfix).
# Debian bookworm, run as root, ::1 configured on lo. DIR must not contain
# whitespace and should be short (unix socket paths are limited to 107 bytes).
#
# Ports (127.0.0.1 unless said; MAILSTACK_PORT_BASE=20000 moves them all to 20025...):
#   10025 SMTP (STARTTLS offered, no AUTH, accepts mail for mail.test)
#         the same service as the MX hosts, each greeting (banner and EHLO) with
#         its own name and presenting its own certificate (see TLS):
#           127.0.0.2:10025 and [::1]:10025  mx1.mail.test
#           127.0.0.3:10025                  mx2.mail.test (expired certificate)
#   10587 submission (STARTTLS required, AUTH PLAIN/LOGIN/CRAM-MD5/XOAUTH2/... via Dovecot)
#   10465 submissions (implicit TLS, same AUTH)
#   10143 IMAP (STARTTLS)   10993 IMAPS
#   10110 POP3 (STLS)       10995 POP3S
#   10024 LMTP (Dovecot; Postfix itself delivers over the unix socket)
#   10053 DNS, UDP and TCP (dnsmasq). It answers only from these records, never
#         forwards: every other name, in .test or not, is NXDOMAIN.
#           mail.test      MX 10 mx1.mail.test, MX 20 mx2.mail.test; A 127.0.0.1
#           mx1.mail.test  A 127.0.0.2, AAAA ::1
#           mx2.mail.test  A 127.0.0.3 (no AAAA)
#           fallback.test  A 127.0.0.1, no MX (RFC 5321 implicit MX)
#           nullmx.test    MX 0 "." (RFC 7505 null MX), nothing else
#         (TTL 0; PTR records for the first name of each address come with them)
#   10443 OAuth2 token introspection (RFC 7662), https://127.0.0.1:10443/introspect:
#         NOT served by the stack. Dovecot's oauth2 passdb asks it about every
#         XOAUTH2/OAUTHBEARER token; a test runs the endpoint there (with
#         tls/oauth2.crt, test/servers/token-endpoint.ts). While nothing
#         listens, OAuth logins fail at once (a stalled endpoint: after 2 s),
#         and nothing else is affected.
# Users (Dovecot passwd-file, {PLAIN} so that CRAM-MD5, APOP and SCRAM work):
#   probe@mail.test / probe-secret
#   alice@mail.test / alice-secret
#   spam@mail.test  / spam-secret   (a Sieve rule files mail with
#                                    "X-Spam-Flag: YES" into Junk, for all users)
#   void@mail.test  accepted by Postfix and discarded: mail to it never arrives
#   oauth@mail.test has a mailbox but no password login (random password,
#                   nologin): it logs in by bearer token only, a token whose
#                   introspection answers active=true, username=oauth@mail.test
# SASL mechanisms: PLAIN LOGIN CRAM-MD5 SCRAM-SHA-1 SCRAM-SHA-256 (+ APOP for POP3)
#   checked against the users file, and XOAUTH2 OAUTHBEARER checked only by
#   introspection (Dovecot's oauth2 passdb, DIR/dovecot-oauth2.conf.ext): a
#   token never reaches the users file, a password never the endpoint. All of
#   them on IMAP, POP3 and (Postfix asks Dovecot) submission.
# TLS: DIR/tls/ca.crt is the CA to trust (it signs all four certificates);
#   server.crt  mail.test, localhost and IP 127.0.0.1 (all 127.0.0.1 services)
#   mx1.crt     DNS:mx1.mail.test only, valid for 825 days from start
#   mx2.crt     DNS:mx2.mail.test only, valid 2020-01-01 to 2020-01-02: expired
#   oauth2.crt  IP 127.0.0.1 and localhost, for the introspection endpoint
#               (oauth2.key, oauth2-chain.crt); Dovecot trusts only ca.crt there
# Env (read by "start", remembered in DIR/ports.env):
#   MAILSTACK_PORT_BASE=10000   ports are base + standard port number (443:
#                               introspection; ports.env also names it)
#   MAILSTACK_PROFILE=realistic default-like daemons; "fast" = Dovecot login
#                               high-performance mode + Postfix capped at
#                               TLS 1.2 (see write_dovecot/write_postfix)
#   MAILSTACK_AUTH_PENALTY=1    keep Dovecot's per-IP auth failure penalty
set -euo pipefail

DOMAIN=mail.test
USERS=("probe@$DOMAIN:probe-secret" "alice@$DOMAIN:alice-secret" "spam@$DOMAIN:spam-secret")
# Mail is stored as the Debian 'mail' account (uid/gid 8): no new system user.
MAIL_USER=mail
PACKAGES=(postfix dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd dovecot-sieve
          openssl ca-certificates swaks libnet-ssleay-perl curl iproute2
          dnsmasq-base bind9-dnsutils libio-socket-inet6-perl)
# (dnsmasq-base: the DNS server; bind9-dnsutils: dig for selftest;
#  libio-socket-inet6-perl: swaks' IPv6 support, for selftest against [::1])
# The MX hosts: name = exchange name (MX preference), banner/EHLO name and the
# only SAN of its certificate. Their addresses must be local (see check_loopback).
MX1=mx1.$DOMAIN MX1_ADDRS=(127.0.0.2 ::1)
MX2=mx2.$DOMAIN MX2_ADDRS=(127.0.0.3)
# Logs in by OAuth2 bearer token only (see write_dovecot)
OAUTH_USER=oauth@$DOMAIN

die() { echo "mailstack: $*" >&2; exit 1; }
log() { echo "mailstack: $*" >&2; }

[[ $EUID -eq 0 ]] || die "must run as root"
[[ $# -eq 2 ]] || { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
CMD=$1
[[ $2 =~ [[:space:]] ]] && die "DIR must not contain whitespace"
if [[ $CMD == start ]]; then mkdir -p "$2"; else [[ -d $2 ]] || die "no such directory: $2"; fi
DIR=$(cd "$2" && pwd -P)

DC_CONF=$DIR/dovecot.conf
DC_RUN=$DIR/dovecot/run               # Dovecot base_dir (master.pid, sockets)
DC_PID=$DC_RUN/master.pid
PF_CONF=$DIR/postfix/conf             # Postfix config_directory
PF_QUEUE=$DIR/postfix/queue           # Postfix queue_directory
PF_PID=$PF_QUEUE/pid/master.pid
DNS_CONF=$DIR/dnsmasq.conf
DNS_PID=$DIR/dnsmasq.pid
TLS=$DIR/tls
LOGS=$DIR/log

# Port layout = base + the standard port number. "start" records the base in
# DIR/ports.env so stop/status/selftest reuse it.
if [[ -s $DIR/ports.env ]]; then
  # shellcheck disable=SC1091
  . "$DIR/ports.env"
fi
PORT_BASE=${MAILSTACK_PORT_BASE:-${PORT_BASE:-10000}}
PROFILE=${MAILSTACK_PROFILE:-${PROFILE:-realistic}}
[[ $PROFILE == realistic || $PROFILE == fast ]] || die "MAILSTACK_PROFILE must be realistic or fast"
[[ $PORT_BASE =~ ^[0-9]+$ ]] && (( PORT_BASE + 995 < 65536 )) || die "bad MAILSTACK_PORT_BASE"
SMTP_PORT=$((PORT_BASE + 25)) SUBMISSION_PORT=$((PORT_BASE + 587)) SMTPS_PORT=$((PORT_BASE + 465))
IMAP_PORT=$((PORT_BASE + 143)) IMAPS_PORT=$((PORT_BASE + 993))
POP3_PORT=$((PORT_BASE + 110)) POP3S_PORT=$((PORT_BASE + 995)) LMTP_PORT=$((PORT_BASE + 24))
DNS_PORT=$((PORT_BASE + 53))
# not ours to listen on: the test's introspection endpoint (header)
INTROSPECTION_PORT=$((PORT_BASE + 443))
MAIL_PORTS="$SMTP_PORT $SUBMISSION_PORT $SMTPS_PORT $IMAP_PORT $IMAPS_PORT $POP3_PORT $POP3S_PORT $LMTP_PORT"
ALL_PORTS="$MAIL_PORTS $DNS_PORT"

# ---------------------------------------------------------------- packages
ensure_packages() {
  local missing=() p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing: ${missing[*]}"
  # Keep maintainer scripts from starting the system-wide postfix/dovecot:
  # a policy-rc.d that answers 101 (Docker images usually ship one already).
  local made_policy=
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  # "No configuration": the package must not write /etc/postfix/main.cf.
  printf '%s\n' 'postfix postfix/main_mailer_type select No configuration' \
                'postfix postfix/mailname string mail.test' | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  local rc=0
  # apt-get update only when there are no package lists, or install fails.
  if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then apt-get update; fi
  apt-get install -y --no-install-recommends "${missing[@]}" || {
    apt-get update && apt-get install -y --no-install-recommends "${missing[@]}"
  } || rc=$?
  [[ -n $made_policy ]] && rm -f /usr/sbin/policy-rc.d
  [[ $rc -eq 0 ]] || die "apt-get install failed"
}

# ---------------------------------------------------------------- helpers
pid_alive() {  # pidfile expected-comm-regex -> prints pid if it is that process
  local f=$1 re=$2 pid
  [[ -s $f ]] || return 1
  pid=$(head -n1 "$f" | tr -dc 0-9)
  [[ -n $pid && -d /proc/$pid ]] || return 1
  [[ $(cat "/proc/$pid/comm" 2>/dev/null) =~ $re ]] || return 1
  echo "$pid"
}

wait_ports() {  # port... ; up to 15 s
  local p i
  for p in "$@"; do
    for ((i = 0; i < 150; i++)); do
      ss -Hltn "sport = :$p" | grep -q . && continue 2
      sleep 0.1
    done
    die "port 127.0.0.1:$p did not come up (see $LOGS)"
  done
}

stop_pidfiles() {  # name:pidfile:comm-regex ... ; TERM all, then wait (<= 10 s)
  local spec name f re pid i k pids=() names=()
  for spec in "$@"; do
    IFS=: read -r name f re <<<"$spec"
    if pid=$(pid_alive "$f" "$re"); then
      kill -TERM "$pid"; pids+=("$pid"); names+=("$name")
    else
      log "$name not running"
    fi
  done
  for i in "${!pids[@]}"; do
    for ((k = 0; k < 100; k++)); do
      [[ -d /proc/${pids[i]} ]] || break
      sleep 0.1
    done
    if [[ -d /proc/${pids[i]} ]]; then
      log "${names[i]} (pid ${pids[i]}) ignored TERM, sending KILL"
      kill -KILL "${pids[i]}" 2>/dev/null || true
    else
      log "${names[i]} (pid ${pids[i]}) stopped"
    fi
  done
}

check_traversable() {  # the unprivileged daemons must be able to reach DIR
  local u
  for u in "$MAIL_USER" postfix dovecot; do
    runuser -u "$u" -- test -x "$DIR" ||
      die "user $u cannot enter $DIR; pick a DIR whose parents are world-searchable (e.g. under /tmp or /srv)"
  done
  (( ${#DC_RUN} + 16 < 107 )) || die "DIR path too long for unix sockets"
}

check_loopback() {  # the MX listeners' addresses must be this machine's
  ip -6 addr show dev lo 2>/dev/null | grep -q 'inet6 ::1/128' ||
    die "::1 is not configured on lo (IPv6 disabled?): $MX1 listens on [::1]:$SMTP_PORT"
  local a
  # 127.0.0.0/8 is on lo on Linux: 127.0.0.2 and .3 need no configuration
  for a in "${MX1_ADDRS[@]}" "${MX2_ADDRS[@]}"; do
    ip -o route get "$a" 2>/dev/null | grep -q '^local ' || die "$a is not a local address"
  done
}

port_in_use() {  # port [ss protocol flags, default -t] -> listening on any address?
  ss -Hln "${2:--t}" "sport = :$1" | grep -q .
}

# ---------------------------------------------------------------- TLS
make_tls() {
  mkdir -p "$TLS"
  [[ -s $TLS/server.crt && -s $TLS/server.key && -s $TLS/ca.crt ]] || make_ca_and_server
  # newer than ca.crt = signed by this CA (a new CA re-issues them)
  [[ $TLS/mx1.crt -nt $TLS/ca.crt && -s $TLS/mx1.key ]] || make_cert mx1 "$MX1" "DNS:$MX1" -days 825
  [[ $TLS/mx2.crt -nt $TLS/ca.crt && -s $TLS/mx2.key ]] ||
    make_cert mx2 "$MX2" "DNS:$MX2" -startdate 20200101000000Z -enddate 20200102000000Z
  # the introspection endpoint's: Dovecot's HTTP client checks the IP SAN
  # against the URL's 127.0.0.1
  [[ $TLS/oauth2.crt -nt $TLS/ca.crt && -s $TLS/oauth2.key ]] ||
    make_cert oauth2 localhost "IP:127.0.0.1,DNS:localhost" -days 825
}

make_ca_and_server() {
  log "generating CA and server certificate in $TLS"
  (
    cd "$TLS"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -keyout ca.key -out ca.crt -subj "/O=mailprobe test/CN=mailprobe throwaway CA" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    openssl req -new -newkey rsa:2048 -nodes -sha256 \
      -keyout server.key -out server.csr -subj "/O=mailprobe test/CN=$DOMAIN" 2>/dev/null
    printf '%s\n' "subjectAltName=DNS:$DOMAIN,DNS:localhost,IP:127.0.0.1" \
      "basicConstraints=critical,CA:FALSE" \
      "keyUsage=critical,digitalSignature,keyEncipherment" \
      "extendedKeyUsage=serverAuth" >server.ext
    openssl x509 -req -sha256 -days 825 -in server.csr -CA ca.crt -CAkey ca.key \
      -CAcreateserial -extfile server.ext -out server.crt 2>/dev/null
    cat server.crt ca.crt >server-chain.crt
    chmod 644 ca.crt server.crt server-chain.crt
  )
}

# A leaf certificate signed by the CA: TLS/NAME.{key,crt,-chain.crt}, CN=CN,
# SAN only SAN (an MX host's: DNS:HOST alone). "openssl ca", not "x509
# -req": OpenSSL 3.0's x509 cannot set start/end dates, and mx2's
# certificate must be expired from the start.
make_cert() {  # name cn san openssl-ca-validity-args...
  local name=$1 cn=$2 san=$3 out
  shift 3
  log "generating $name certificate for $san ($*) in $TLS"
  cat >"$TLS/ca.cnf" <<EOF
# generated by mailstack.sh: just enough for "openssl ca"
[ ca ]
default_ca = throwaway
[ throwaway ]
certificate = $TLS/ca.crt
private_key = $TLS/ca.key
database = $TLS/ca-index.txt
new_certs_dir = $TLS/issued
rand_serial = yes
unique_subject = no
default_md = sha256
policy = subject
email_in_dn = no
copy_extensions = none
[ subject ]
organizationName = optional
commonName = supplied
EOF
  printf '%s\n' "subjectAltName=$san" \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" >"$TLS/$name.ext"
  mkdir -p "$TLS/issued"
  touch "$TLS/ca-index.txt"
  out=$(
    cd "$TLS"
    umask 077
    openssl req -new -newkey rsa:2048 -nodes -sha256 \
      -keyout "$name.key" -out "$name.csr" -subj "/O=mailprobe test/CN=$cn" 2>&1 &&
    openssl ca -batch -notext -config ca.cnf -extfile "$name.ext" "$@" \
      -in "$name.csr" -out "$name.crt" 2>&1
  ) || die "cannot issue the $name certificate: $out"
  cat "$TLS/$name.crt" "$TLS/ca.crt" >"$TLS/$name-chain.crt"
  chmod 644 "$TLS/$name.crt" "$TLS/$name-chain.crt"
}

# ---------------------------------------------------------------- Dovecot
write_dovecot() {
  mkdir -p "$DIR/dovecot/state" "$LOGS" "$DIR/mail"
  chown "$MAIL_USER:$MAIL_USER" "$DIR/mail"
  local u name
  : >"$DIR/dovecot/users"
  for u in "${USERS[@]}"; do
    name=${u%%:*}
    # user:{PLAIN}password  (plaintext-retrievable, needed for CRAM-MD5)
    echo "$name:{PLAIN}${u#*:}" >>"$DIR/dovecot/users"
  done
  # The OAuth user: listed, so it has a mailbox and Postfix takes mail for it,
  # but no password works (a random one, and nologin refuses even that).
  echo "$OAUTH_USER:{PLAIN}$(openssl rand -hex 16)::::::nologin" >>"$DIR/dovecot/users"
  chown root:dovecot "$DIR/dovecot/users"; chmod 640 "$DIR/dovecot/users"
  write_dovecot_oauth2
  local uid gid PENALTY_BLOCK="" LOGIN_TUNING=""
  # "realistic": Dovecot's default high-security login mode (a fresh
  # imap-login/pop3-login process, with its own TLS setup, per connection:
  # ~10 ms per connection here). "fast": high-performance mode, a few
  # long-lived login processes (service_count = 0).
  if [[ $PROFILE == fast ]]; then
    LOGIN_TUNING=$'  service_count = 0\n  process_min_avail = '"$(nproc)"
  fi
  uid=$(id -u "$MAIL_USER"); gid=$(id -g "$MAIL_USER")
  # Dovecot's per-IP auth penalty (2..15 s delay on *every* login from an IP
  # after failures) would make one wrong-password test stall all later tests
  # from 127.0.0.1, so it is switched off (the documented way) unless
  # MAILSTACK_AUTH_PENALTY=1. The fixed 2 s auth_failure_delay stays.
  if [[ ${MAILSTACK_AUTH_PENALTY:-0} != 1 ]]; then
    PENALTY_BLOCK=$'# auth penalty off (MAILSTACK_AUTH_PENALTY=1 keeps it)\nservice anvil {\n  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n}'
  fi
  cat >"$DC_CONF" <<EOF
# generated by mailstack.sh - do not edit, rewritten on every start
instance_name = mailprobe-stack
base_dir = $DC_RUN
state_dir = $DIR/dovecot/state
protocols = imap pop3 lmtp
listen = 127.0.0.1
hostname = $DOMAIN
postmaster_address = postmaster@$DOMAIN
login_greeting = mailprobe test Dovecot ready.
verbose_proctitle = yes
log_path = $LOGS/dovecot.log
auth_verbose = yes

ssl = yes
ssl_cert = <$TLS/server-chain.crt
ssl_key = <$TLS/server.key
ssl_min_protocol = TLSv1.2

# test setup: plaintext auth allowed without TLS
disable_plaintext_auth = no
auth_mechanisms = plain login cram-md5 scram-sha-1 scram-sha-256 apop xoauth2 oauthbearer
# Each passdb only for its own mechanisms. Without the first filter a bearer
# token would be compared with the users' passwords (XOAUTH2 hands the token
# to every passdb as the "password"); without the second a password would be
# sent to the introspection endpoint. "none": lookups without a login.
passdb {
  driver = passwd-file
  mechanisms = plain login cram-md5 scram-sha-1 scram-sha-256 apop none
  args = scheme=PLAIN username_format=%u $DIR/dovecot/users
}
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = $DIR/dovecot-oauth2.conf.ext
}
userdb {
  driver = static
  args = uid=$uid gid=$gid home=$DIR/mail/%d/%n
}
first_valid_uid = $uid
first_valid_gid = $gid
mail_location = maildir:~/Maildir
namespace inbox {
  inbox = yes
  separator = /
  mailbox Drafts {
    special_use = \\Drafts
    auto = subscribe
  }
  mailbox Sent {
    special_use = \\Sent
    auto = subscribe
  }
  mailbox Trash {
    special_use = \\Trash
    auto = subscribe
  }
  mailbox Junk {
    special_use = \\Junk
    auto = subscribe
  }
}
# Sieve (LMTP delivery): a global rule files mail flagged as spam into Junk,
# the way a real spam filter would (round-trip junk detection tests)
protocol lmtp {
  mail_plugins = \$mail_plugins sieve
}
plugin {
  sieve_before = $DIR/dovecot/junk.sieve
}
pop3_uidl_format = %08Xu%08Xv

# many concurrent logins of one user from 127.0.0.1 when benchmarking
protocol imap {
  mail_max_userip_connections = 1000
}
protocol pop3 {
  mail_max_userip_connections = 1000
}

service imap-login {
$LOGIN_TUNING
  inet_listener imap {
    address = 127.0.0.1
    port = $IMAP_PORT
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $IMAPS_PORT
    ssl = yes
  }
}
service pop3-login {
$LOGIN_TUNING
  inet_listener pop3 {
    address = 127.0.0.1
    port = $POP3_PORT
  }
  inet_listener pop3s {
    address = 127.0.0.1
    port = $POP3S_PORT
    ssl = yes
  }
}
service lmtp {
  unix_listener lmtp {
    mode = 0660
    user = postfix
    group = postfix
  }
  inet_listener lmtp {
    address = 127.0.0.1
    port = $LMTP_PORT
  }
}
$PENALTY_BLOCK
service auth {
  # Postfix SMTP AUTH (smtpd_sasl_type = dovecot)
  unix_listener auth-postfix {
    mode = 0660
    user = postfix
    group = postfix
  }
}
EOF
  cat >"$DIR/dovecot/junk.sieve" <<'SIEVE'
require ["fileinto"];
if header :is "X-Spam-Flag" "YES" {
  fileinto "Junk";
  stop;
}
SIEVE
  chmod 644 "$DIR/dovecot/junk.sieve"
  doveconf -c "$DC_CONF" -n >/dev/null || die "dovecot config invalid"
}

# The oauth2 passdb: every XOAUTH2/OAUTHBEARER token is checked by an RFC 7662
# POST to the test's endpoint (no tokeninfo_url: introspection alone decides).
# The endpoint answers {"active":true,"username":...,"email":...}; the user
# the client names must equal "username". No auth cache (Dovecot's default),
# so a revoked token fails at once. The low timeout bounds a stalled
# endpoint; the auth process waits for it asynchronously, so other logins
# go on meanwhile, and a closed port fails at once.
write_dovecot_oauth2() {
  cat >"$DIR/dovecot-oauth2.conf.ext" <<EOF
# generated by mailstack.sh - do not edit, rewritten on every start
introspection_mode = post
introspection_url = https://127.0.0.1:$INTROSPECTION_PORT/introspect
username_attribute = username
active_attribute = active
active_value = true
# the stack's CA only (tls/oauth2.crt is what the endpoint should serve)
tls_ca_cert_file = $TLS/ca.crt
timeout_msecs = 2000
# (debug = yes logs each step of Dovecot's HTTP client)
debug = no
EOF
  chown root:dovecot "$DIR/dovecot-oauth2.conf.ext"; chmod 640 "$DIR/dovecot-oauth2.conf.ext"
}

# ---------------------------------------------------------------- Postfix
write_postfix() {
  mkdir -p "$PF_CONF" "$PF_QUEUE" "$DIR/postfix/data" "$LOGS"
  chown root:root "$DIR/postfix" "$PF_CONF" "$PF_QUEUE"
  chown postfix:postfix "$DIR/postfix/data"
  local u PF_TLS_PROTOCOLS=">=TLSv1.2"
  # Postfix + TLS 1.3 on loopback: the post-handshake NewSessionTicket is an
  # unacknowledged small segment when the client's first command arrives, so
  # Nagle holds smtpd's reply until the client's delayed ACK (~40 ms on
  # Linux); implicit TLS (10465) stalls the same way on the banner, with
  # TLS 1.2 too. The "fast" profile caps Postfix at TLS 1.2, which removes
  # the STARTTLS stall (no post-handshake ticket).
  [[ $PROFILE == fast ]] && PF_TLS_PROTOCOLS=">=TLSv1.2, <=TLSv1.2"
  : >"$PF_CONF/vmailbox"
  for u in "${USERS[@]}"; do echo "${u%%:*} OK" >>"$PF_CONF/vmailbox"; done
  echo "$OAUTH_USER OK" >>"$PF_CONF/vmailbox"
  echo "void@$DOMAIN OK" >>"$PF_CONF/vmailbox"
  echo "void@$DOMAIN discard:mail to void is dropped" >"$PF_CONF/transport"
  cat >"$PF_CONF/main.cf" <<EOF
# generated by mailstack.sh - do not edit, rewritten on every start
compatibility_level = 3.6
config_directory = $PF_CONF
queue_directory = $PF_QUEUE
data_directory = $DIR/postfix/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-mailprobe
maillog_file = $LOGS/postfix.log
maillog_file_prefixes = $LOGS
inet_interfaces = 127.0.0.1
# ipv6 for mx1's [::1] listener (master.cf entries name their address, so
# inet_interfaces stays 127.0.0.1)
inet_protocols = ipv4, ipv6
myhostname = $DOMAIN
mydomain = $DOMAIN
myorigin = $DOMAIN
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
biff = no
append_dot_mydomain = no
smtpd_banner = \$myhostname ESMTP mailprobe test
# 127.0.0.0/8 only to exempt the load generator from anvil rate limits;
# it does NOT grant relaying (see smtpd_relay_restrictions)
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination
# mail.test -> Dovecot LMTP; anything else bounces at once (no internet)
virtual_mailbox_domains = $DOMAIN
virtual_mailbox_maps = texthash:$PF_CONF/vmailbox
virtual_transport = lmtp:unix:$DC_RUN/lmtp
transport_maps = texthash:$PF_CONF/transport
default_transport = error:this test stack delivers only to $DOMAIN
relay_transport = error:this test stack delivers only to $DOMAIN
smtpd_tls_cert_file = $TLS/server-chain.crt
smtpd_tls_key_file = $TLS/server.key
smtpd_tls_security_level = may
smtpd_tls_mandatory_protocols = $PF_TLS_PROTOCOLS
smtpd_tls_protocols = $PF_TLS_PROTOCOLS
smtpd_sasl_type = dovecot
smtpd_sasl_path = $DC_RUN/auth-postfix
smtpd_sasl_auth_enable = no
smtpd_sasl_authenticated_header = yes
default_process_limit = 200
EOF
  cat >"$PF_CONF/master.cf" <<EOF
# generated by mailstack.sh - nothing chrooted, nothing on non-loopback
# service               type  private unpriv chroot wakeup maxproc command
127.0.0.1:$SMTP_PORT    inet  n       -      n      -      -       smtpd
127.0.0.1:$SUBMISSION_PORT inet n     -      n      -      -       smtpd
  -o syslog_name=postfix-mailprobe/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
127.0.0.1:$SMTPS_PORT   inet  n       -      n      -      -       smtpd
  -o syslog_name=postfix-mailprobe/submissions
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
$(mx_listeners mx1 "$MX1" "${MX1_ADDRS[@]}")
$(mx_listeners mx2 "$MX2" "${MX2_ADDRS[@]}")
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
}

# The MX hosts' SMTP services: the port-$SMTP_PORT service (same main.cf
# settings) on each MX address, with the host's name (banner "NAME ESMTP
# mailprobe test", EHLO, Received) and certificate, so a test can tell which
# host answered.
mx_listeners() {  # name host address...
  local name=$1 host=$2 addr
  shift 2
  for addr; do
    [[ $addr == *:* ]] && addr="[$addr]"
    printf '%s\n' "$addr:$SMTP_PORT inet n - n - - smtpd" \
      "  -o syslog_name=postfix-mailprobe/$name" \
      "  -o myhostname=$host" \
      "  -o smtpd_tls_cert_file=$TLS/$name-chain.crt" \
      "  -o smtpd_tls_key_file=$TLS/$name.key"
  done
}

# ---------------------------------------------------------------- dnsmasq
write_dnsmasq() {
  mkdir -p "$LOGS"
  cat >"$DNS_CONF" <<EOF
# generated by mailstack.sh - do not edit, rewritten on every start
port=$DNS_PORT
listen-address=127.0.0.1
# bind 127.0.0.1:$DNS_PORT itself, not the wildcard address
bind-interfaces
# no upstream, no /etc/hosts, no resolv.conf: only the records below exist
no-resolv
no-hosts
no-poll
# every name without a record here is answered NXDOMAIN (without this,
# names outside .test would be REFUSED: there is no server to forward to)
local=/#/
user=nobody
pid-file=$DNS_PID
log-facility=$LOGS/dnsmasq.log
log-queries
host-record=$DOMAIN,127.0.0.1
mx-host=$DOMAIN,$MX1,10
mx-host=$DOMAIN,$MX2,20
host-record=$MX1,$(IFS=,; echo "${MX1_ADDRS[*]}")
host-record=$MX2,$(IFS=,; echo "${MX2_ADDRS[*]}")
# RFC 5321 implicit MX: an address and no MX record
host-record=fallback.test,127.0.0.1
# RFC 7505 null MX: dnsmasq encodes the target "." as the root name
mx-host=nullmx.test,.,0
EOF
  dnsmasq --test -C "$DNS_CONF" >/dev/null 2>&1 || die "dnsmasq config invalid: $(dnsmasq --test -C "$DNS_CONF" 2>&1)"
}

# ---------------------------------------------------------------- commands
do_start() {
  ensure_packages
  chmod 755 "$DIR"
  check_traversable
  check_loopback
  local pid p
  if ! pid_alive "$DC_PID" '^dovecot$' >/dev/null && ! pid_alive "$PF_PID" '^master$' >/dev/null; then
    for p in $MAIL_PORTS; do
      port_in_use "$p" && die "127.0.0.1:$p is already in use by another process; set MAILSTACK_PORT_BASE"
    done
  fi
  if ! pid_alive "$DNS_PID" '^dnsmasq$' >/dev/null; then
    port_in_use "$DNS_PORT" -tu &&
      die "port $DNS_PORT (DNS, UDP or TCP) is already in use by another process; set MAILSTACK_PORT_BASE"
  fi
  # INTROSPECTION_PORT is derived from PORT_BASE again on reading; it is
  # written for whoever else reads the file
  printf 'PORT_BASE=%s\nPROFILE=%s\nINTROSPECTION_PORT=%s\n' "$PORT_BASE" "$PROFILE" \
    "$INTROSPECTION_PORT" >"$DIR/ports.env"
  if pid=$(pid_alive "$DC_PID" '^dovecot$'); then
    log "dovecot already running (pid $pid)"
  else
    make_tls
    write_dovecot
    # stale sockets of a previous run: a leftover anvil-auth-penalty socket
    # (listener disabled, file still there) costs every new auth process a
    # 5 s connect-retry loop
    [[ -d $DC_RUN ]] && find "$DC_RUN" -maxdepth 1 -type s -delete
    # daemons keep stderr open: never hand them the caller's terminal/pipe
    dovecot -c "$DC_CONF" </dev/null >>"$LOGS/start.log" 2>&1 ||
      { tail -n 5 "$LOGS/start.log" >&2; die "dovecot failed to start (see $LOGS)"; }
  fi
  if pid=$(pid_alive "$PF_PID" '^master$'); then
    log "postfix already running (pid $pid)"
  else
    make_tls
    write_postfix
    # as root, "postfix -c" needs no alternate_config_directories entry
    postfix -c "$PF_CONF" check </dev/null >>"$LOGS/start.log" 2>&1 &&
    postfix -c "$PF_CONF" start </dev/null >>"$LOGS/start.log" 2>&1 ||
      { tail -n 5 "$LOGS/postfix.log" >&2; die "postfix failed to start (see $LOGS)"; }
  fi
  if pid=$(pid_alive "$DNS_PID" '^dnsmasq$'); then
    log "dnsmasq already running (pid $pid)"
  else
    write_dnsmasq
    # dnsmasq daemonises itself once its sockets are bound: a port clash or
    # bad record fails here, with its exit code
    dnsmasq -C "$DNS_CONF" </dev/null >>"$LOGS/start.log" 2>&1 ||
      { tail -n 5 "$LOGS/start.log" >&2; die "dnsmasq failed to start (see $LOGS)"; }
  fi
  wait_ports $ALL_PORTS
  do_status
}

do_stop() {
  # Postfix master's pid file: queue_directory/pid/master.pid (this is what
  # "postfix stop" uses too); Dovecot's: base_dir/master.pid; dnsmasq's:
  # DIR/dnsmasq.pid (its pid-file=, written before it drops to nobody).
  # Dovecot's master takes ~3 s to wind down its children, so all get TERM
  # at once and are then waited for.
  stop_pidfiles "postfix:$PF_PID:^master\$" "dovecot:$DC_PID:^dovecot\$" "dnsmasq:$DNS_PID:^dnsmasq\$"
}

do_status() {
  local pid rc=0
  echo "profile: $PROFILE, port base: $PORT_BASE"
  if pid=$(pid_alive "$DC_PID" '^dovecot$'); then echo "dovecot: running, pid $pid"
  else echo "dovecot: stopped"; rc=3; fi
  if pid=$(pid_alive "$PF_PID" '^master$'); then echo "postfix: running, pid $pid"
  else echo "postfix: stopped"; rc=3; fi
  if pid=$(pid_alive "$DNS_PID" '^dnsmasq$'); then echo "dnsmasq: running, pid $pid"
  else echo "dnsmasq: stopped"; rc=3; fi
  local filter="" p
  for p in $ALL_PORTS; do filter+="${filter:+ or }sport = :$p"; done
  echo "listening:"
  # TCP listeners, plus DNS over UDP; sorted by port (after the last ':')
  { ss -Hltnp "( $filter )"; ss -Hlunp "sport = :$DNS_PORT" | sed 's/$/ (udp)/'; } |
    awk '{ sub(/users:\(\("/, "", $6); sub(/".*/, "", $6); port = $4; sub(/.*:/, "", port)
           printf "%s\t  %-20s %s%s\n", port, $4, $6, ($7 == "" ? "" : " " $7) }' |
    sort -t$'\t' -k1,1n -k2 | cut -f2-
  return $rc
}

dns_answer() {  # [dig options] name type -> "STATUS answer..." on one line, answers sorted
  local out status answers
  out=$(dig +norecurse +time=2 +tries=1 -p "$DNS_PORT" @127.0.0.1 +noall +comments +answer "$@") || return 1
  status=$(sed -n 's/.*status: \([A-Z]*\),.*/\1/p' <<<"$out")
  answers=$(awk '!/^;/ && NF >= 5 { $1 = $2 = $3 = $4 = ""; sub(/^ +/, ""); print }' <<<"$out" | sort | paste -sd' ')
  echo "$status${answers:+ $answers}"
}

smtp_greets() {  # address name -> the SMTP_PORT service there greets as name and accepts alice@DOMAIN
  local out
  out=$(swaks --server "$1" --port "$SMTP_PORT" --from probe@example.org --to "alice@$DOMAIN" \
        --quit-after RCPT 2>&1) || return 1
  grep -q "^<-  220 $2 ESMTP mailprobe test" <<<"$out"
}

oauth_refused() {  # curl-args... -> curl logs in by an unknown bearer token and is denied (rc 67)
  local rc=0
  timeout 15 curl -s --cacert "$TLS/ca.crt" -u "$OAUTH_USER:" --oauth2-bearer selftest-unknown-token \
    "$@" >/dev/null 2>&1 || rc=$?
  [[ $rc -eq 67 ]]
}

# End-to-end check. Every command here is plain swaks/curl/dig/openssl and
# can be copied to a shell (CA=DIR/tls/ca.crt).
do_selftest() {
  do_status >/dev/null || die "stack not running"
  local CA=$TLS/ca.crt tag="mailprobe-selftest-$$-$RANDOM" u=probe@$DOMAIN pw=probe-secret
  local SW=(swaks --silent 2 --server 127.0.0.1 --tls-verify --tls-ca-path "$CA")
  local ok=0 fail=0
  t() { local name=$1; shift; if "$@" >/dev/null 2>&1; then echo "ok   $name"; ok=$((ok+1)); else echo "FAIL $name"; fail=$((fail+1)); fi; }

  # submission 10587: STARTTLS + AUTH PLAIN, the message used for the read-back
  t "smtp $SUBMISSION_PORT starttls auth plain send" "${SW[@]}" --port $SUBMISSION_PORT --tls \
      --auth PLAIN --auth-user $u --auth-password $pw \
      --from $u --to $u --header "Subject: $tag" --body "body of $tag"
  t "smtp $SUBMISSION_PORT starttls auth login" "${SW[@]}" --port $SUBMISSION_PORT --tls \
      --auth LOGIN --auth-user $u --auth-password $pw --quit-after AUTH
  t "smtp $SUBMISSION_PORT starttls auth cram-md5" "${SW[@]}" --port $SUBMISSION_PORT --tls \
      --auth CRAM-MD5 --auth-user $u --auth-password $pw --quit-after AUTH
  t "smtp $SUBMISSION_PORT rejects wrong password" bash -c "! ${SW[*]} --port $SUBMISSION_PORT --tls --auth PLAIN --auth-user $u --auth-password wrong --quit-after AUTH"
  t "smtp $SMTPS_PORT implicit tls auth plain" "${SW[@]}" --port $SMTPS_PORT --tls-on-connect \
      --auth PLAIN --auth-user $u --auth-password $pw --quit-after AUTH
  t "smtp $SMTP_PORT starttls, unauthenticated delivery to alice" "${SW[@]}" --port $SMTP_PORT --tls \
      --from probe@example.org --to alice@$DOMAIN --header "Subject: $tag"
  t "smtp $SMTP_PORT rejects relaying" bash -c "! ${SW[*]} --port $SMTP_PORT --from a@example.org --to b@example.org --quit-after RCPT"

  # delivery via LMTP should be near-instant; poll IMAP SEARCH for up to 5 s
  local i uid=""
  for ((i = 0; i < 50; i++)); do
    uid=$(curl -s --ssl-reqd --cacert "$CA" -u "$u:$pw" "imap://127.0.0.1:$IMAP_PORT/INBOX" \
          -X "UID SEARCH SUBJECT $tag" | tr -d '\r' | awk '/^\* SEARCH/ {print $3}')
    [[ -n $uid ]] && break
    sleep 0.1
  done
  t "imap $IMAP_PORT starttls: message delivered (after $((i*100)) ms)" test -n "$uid"
  t "imap $IMAP_PORT starttls auth plain fetch" bash -c "curl -sf --ssl-reqd --cacert '$CA' -u '$u:$pw' --login-options AUTH=PLAIN 'imap://127.0.0.1:$IMAP_PORT/INBOX;UID=$uid' | grep -q 'body of $tag'"
  t "imap $IMAP_PORT starttls auth login" curl -sf --ssl-reqd --cacert "$CA" -u "$u:$pw" --login-options AUTH=LOGIN "imap://127.0.0.1:$IMAP_PORT/INBOX" -X NOOP
  t "imap $IMAP_PORT starttls auth cram-md5" curl -sf --ssl-reqd --cacert "$CA" -u "$u:$pw" --login-options AUTH=CRAM-MD5 "imap://127.0.0.1:$IMAP_PORT/INBOX" -X NOOP
  t "imap $IMAP_PORT plaintext login (no tls)" curl -sf -u "$u:$pw" "imap://127.0.0.1:$IMAP_PORT/INBOX" -X NOOP
  t "imaps $IMAPS_PORT fetch via mail.test name" bash -c "curl -sf --cacert '$CA' --resolve mail.test:$IMAPS_PORT:127.0.0.1 -u '$u:$pw' 'imaps://mail.test:$IMAPS_PORT/INBOX;UID=$uid' | grep -q 'body of $tag'"
  t "imap rejects wrong password" bash -c "! curl -sf --ssl-reqd --cacert '$CA' -u '$u:wrong' 'imap://127.0.0.1:$IMAP_PORT/INBOX' -X NOOP"

  # POP3: find the message number by its Subject, read it, delete it
  local n="" list
  list=$(curl -sf --ssl-reqd --cacert "$CA" -u "$u:$pw" "pop3://127.0.0.1:$POP3_PORT/" | tr -d '\r' | awk '{print $1}')
  for i in $list; do
    if curl -sf --ssl-reqd --cacert "$CA" -u "$u:$pw" "pop3://127.0.0.1:$POP3_PORT/$i" | grep -q "^Subject: $tag"; then n=$i; fi
  done
  t "pop3 $POP3_PORT stls retr" test -n "$n"
  t "pop3s $POP3S_PORT retr" bash -c "curl -sf --cacert '$CA' -u '$u:$pw' 'pop3s://127.0.0.1:$POP3S_PORT/$n' | grep -q 'body of $tag'"
  t "pop3 $POP3_PORT stls dele" curl -sf --ssl-reqd --cacert "$CA" -u "$u:$pw" "pop3://127.0.0.1:$POP3_PORT/$n" -X DELE -I
  t "imap: message gone after pop3 DELE" bash -c "curl -s --ssl-reqd --cacert '$CA' -u '$u:$pw' 'imap://127.0.0.1:$IMAP_PORT/INBOX' -X 'UID SEARCH SUBJECT $tag' | tr -d '\r' | grep -qx '\* SEARCH'"
  # clean alice's copy through IMAP (flag + expunge)
  local auid
  auid=$(curl -s --ssl-reqd --cacert "$CA" -u "alice@$DOMAIN:alice-secret" "imap://127.0.0.1:$IMAP_PORT/INBOX" \
         -X "UID SEARCH SUBJECT $tag" | tr -d '\r' | awk '/^\* SEARCH/ {print $3}')
  t "imap: alice got the port-$SMTP_PORT message" test -n "$auid"
  t "imap: delete via UID STORE +FLAGS \\Deleted" curl -sf --ssl-reqd --cacert "$CA" -u "alice@$DOMAIN:alice-secret" "imap://127.0.0.1:$IMAP_PORT/INBOX" -X "UID STORE $auid +FLAGS (\\Deleted)"
  t "imap: expunge" curl -sf --ssl-reqd --cacert "$CA" -u "alice@$DOMAIN:alice-secret" "imap://127.0.0.1:$IMAP_PORT/INBOX" -X EXPUNGE

  # OAuth2: the mechanisms are offered everywhere (Postfix: after TLS). The
  # introspection endpoint is a test's, so a login can only be checked to be
  # refused: an unknown token is denied (curl 67, not a timeout) whether an
  # endpoint runs (inactive token) or not (connection refused).
  local mechs="XOAUTH2 OAUTHBEARER" ehlo=(swaks --server 127.0.0.1 --tls-verify --tls-ca-path "$CA" --quit-after HELO)
  t "imaps $IMAPS_PORT offers AUTH=XOAUTH2 AUTH=OAUTHBEARER" bash -c "curl -sv --cacert '$CA' -u '$u:$pw' 'imaps://127.0.0.1:$IMAPS_PORT/INBOX' -X NOOP 2>&1 | grep -q '^< \* CAPABILITY .*AUTH=XOAUTH2 AUTH=OAUTHBEARER'"
  t "pop3s $POP3S_PORT offers SASL $mechs" bash -c "curl -sv --cacert '$CA' -u '$u:$pw' 'pop3s://127.0.0.1:$POP3S_PORT/' -X NOOP -I 2>&1 | grep -q '^< SASL .*$mechs'"
  t "smtp $SUBMISSION_PORT offers AUTH $mechs after starttls" bash -c "${ehlo[*]} --port $SUBMISSION_PORT --tls | grep -q '250-AUTH .*$mechs'"
  t "smtp $SMTPS_PORT offers AUTH $mechs" bash -c "${ehlo[*]} --port $SMTPS_PORT --tls-on-connect | grep -q '250-AUTH .*$mechs'"
  t "imaps $IMAPS_PORT refuses an unknown bearer token" oauth_refused "imaps://127.0.0.1:$IMAPS_PORT/INBOX" -X NOOP
  t "pop3s $POP3S_PORT refuses an unknown bearer token" oauth_refused "pop3s://127.0.0.1:$POP3S_PORT/" -X NOOP -I
  t "smtp $SUBMISSION_PORT refuses an unknown bearer token" oauth_refused --ssl-reqd "smtp://127.0.0.1:$SUBMISSION_PORT" \
      --mail-from "$OAUTH_USER" --mail-rcpt "$u" -T /dev/null

  # DNS: every record of the header, over UDP and TCP, and nothing else
  t "dns $DNS_PORT udp: $DOMAIN MX 10 $MX1, 20 $MX2" test "$(dns_answer $DOMAIN MX)" = "NOERROR 10 $MX1. 20 $MX2."
  t "dns $DNS_PORT tcp: $DOMAIN MX 10 $MX1, 20 $MX2" test "$(dns_answer +tcp $DOMAIN MX)" = "NOERROR 10 $MX1. 20 $MX2."
  t "dns: $DOMAIN A 127.0.0.1" test "$(dns_answer $DOMAIN A)" = "NOERROR 127.0.0.1"
  t "dns: $MX1 A ${MX1_ADDRS[0]}" test "$(dns_answer $MX1 A)" = "NOERROR ${MX1_ADDRS[0]}"
  t "dns: $MX1 AAAA ${MX1_ADDRS[1]}" test "$(dns_answer $MX1 AAAA)" = "NOERROR ${MX1_ADDRS[1]}"
  t "dns: $MX2 A ${MX2_ADDRS[0]}" test "$(dns_answer $MX2 A)" = "NOERROR ${MX2_ADDRS[0]}"
  t "dns: $MX2 no AAAA" test "$(dns_answer $MX2 AAAA)" = "NOERROR"
  t "dns: fallback.test no MX" test "$(dns_answer fallback.test MX)" = "NOERROR"
  t "dns: fallback.test A 127.0.0.1" test "$(dns_answer fallback.test A)" = "NOERROR 127.0.0.1"
  t "dns: nullmx.test MX 0 . (null MX)" test "$(dns_answer nullmx.test MX)" = "NOERROR 0 ."
  t "dns: unknown name in .test is NXDOMAIN" test "$(dns_answer nope.test A)" = "NXDOMAIN"
  t "dns: example.org is NXDOMAIN (never forwarded)" test "$(dns_answer example.org MX)" = "NXDOMAIN"

  # MX hosts: banner with the host's name, mail for mail.test accepted (no
  # DATA: nothing to clean up), and the host's certificate after STARTTLS
  t "smtp 127.0.0.1:$SMTP_PORT still greets as $DOMAIN" smtp_greets 127.0.0.1 "$DOMAIN"
  local a h hp sc
  for a in "${MX1_ADDRS[@]}" "${MX2_ADDRS[@]}"; do
    if [[ " ${MX1_ADDRS[*]} " == *" $a "* ]]; then h=$MX1; else h=$MX2; fi
    if [[ $a == *:* ]]; then hp="[$a]:$SMTP_PORT"; else hp="$a:$SMTP_PORT"; fi
    t "smtp $hp greets as $h, accepts mail for $DOMAIN" smtp_greets "$a" "$h"
    sc=(openssl s_client -starttls smtp -connect "$hp" -servername "$h" -CAfile "$CA" -verify_return_error)
    if [[ $h == "$MX1" ]]; then
      t "smtp $hp starttls: certificate verifies for $h" "${sc[@]}" -verify_hostname "$h" </dev/null
      t "smtp $hp starttls: certificate is not for $DOMAIN" \
        bash -c '! "$@" </dev/null' _ "${sc[@]}" -verify_hostname "$DOMAIN"
    else
      t "smtp $hp starttls: certificate has expired" \
        bash -c '"$@" </dev/null 2>&1 | grep -q "certificate has expired"' _ "${sc[@]}" -verify_hostname "$h"
      t "smtp $hp starttls: certificate verifies for $h if time is not checked" \
        "${sc[@]}" -verify_hostname "$h" -no_check_time </dev/null
    fi
  done
  echo "selftest: $ok ok, $fail failed"
  [[ $fail -eq 0 ]]
}

case $CMD in
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  selftest) do_selftest ;;
  *) die "unknown command '$CMD' (start|stop|status|selftest)" ;;
esac
