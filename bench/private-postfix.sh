# shellcheck shell=bash
# A private Postfix instance on loopback for bench/bench.sh (sourced, not run; needs root).
#
# Everything lives under one directory: its own config_directory, queue_directory (a real
# disk queue: cleanup fsyncs each message before smtpd answers 250), data_directory and log
# file (maillog_file + postlogd, so no syslog is needed). The system's /etc/postfix is only
# read (postfix-files, postfix-script), never written; no daemon of the system is touched.
# Every recipient goes to the discard transport: nothing leaves the machine.
#
# Two smtpd listeners, both on 127.0.0.1:
#   PORT      plain SMTP, no TLS, no AUTH (mynetworks = 127.0.0.0/8 may send);
#   TLS_PORT  STARTTLS required (smtpd_tls_security_level = encrypt), AUTH PLAIN/LOGIN only
#             after STARTTLS, and RCPT refused unless the client authenticated
#             (smtpd_client_restrictions = permit_sasl_authenticated, reject).
# SASL is Dovecot's auth service (smtpd_sasl_type = dovecot), as in Postfix's SASL_README: a
# private Dovecot with no protocols, its own base_dir and log, one passwd-file user, and only
# the auth-client socket, in the same directory. (Cyrus + sasldb was tried first: Debian's
# Postfix reads Cyrus's smtpd.conf from /etc/postfix/sasl only, which this must not write;
# cyrus_sasl_config_path and SASL_CONF_PATH were ignored.)
#
#   pf_start DIR PORT TLS_PORT CERT KEY USER PASSWORD   # starts both, or returns 1
#   pf_stop                                             # stops both; safe to call twice
#   pf_count PATTERN                                    # lines of the mail log matching
#   pf_wait_sent N SECONDS                              # until N status=sent lines (or fail)
#   pf_wait_empty SECONDS                               # until the queue holds nothing
PF_DIR=""
PF_DOVECOT=""

pf_start() {
  local dir=$1 port=$2 tls_port=$3 cert=$4 key=$5 user=$6 pass=$7 p _
  mkdir -p "$dir/etc" "$dir/queue" "$dir/data" "$dir/log" "$dir/dovecot/run" "$dir/dovecot/state"
  : >"$dir/log/maillog"

  # Dovecot, for SASL only.
  printf '%s:{PLAIN}%s\n' "$user" "$pass" >"$dir/dovecot/users"
  chmod 644 "$dir/dovecot/users"
  cat >"$dir/dovecot/dovecot.conf" <<EOF
base_dir = $dir/dovecot/run
state_dir = $dir/dovecot/state
instance_name = envoi-bench
protocols =
listen = 127.0.0.1
log_path = $dir/log/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $dir/dovecot/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}
service auth {
  unix_listener $dir/dovecot/auth-client {
    mode = 0660
    user = postfix
    group = postfix
  }
}
EOF
  chmod 755 "$dir" "$dir/etc" "$dir/dovecot"
  timeout 30 dovecot -c "$dir/dovecot/dovecot.conf" || { cat "$dir/log/dovecot.log" >&2; return 1; }
  PF_DOVECOT=$dir/dovecot/dovecot.conf
  for _ in $(seq 100); do [ -S "$dir/dovecot/auth-client" ] && break; sleep 0.1; done

  cat >"$dir/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $dir/queue
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = bench.example.test
mydomain = example.test
myorigin = \$mydomain
mydestination =
relay_domains =
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
local_recipient_maps =
biff = no
# Nothing leaves: every transport is discard.
default_transport = discard:
relay_transport = discard:
local_transport = discard:
virtual_transport = discard:
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination
smtpd_peername_lookup = no
maillog_file = $dir/log/maillog
maillog_file_prefixes = $dir
smtpd_tls_cert_file = $cert
smtpd_tls_key_file = $key
smtpd_tls_loglevel = 1
smtpd_tls_security_level = none
smtpd_sasl_type = dovecot
smtpd_sasl_path = $dir/dovecot/auth-client
EOF
  cat >"$dir/etc/master.cf" <<EOF
127.0.0.1:$port inet n - n - - smtpd
127.0.0.1:$tls_port inet n - n - - smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_auth_only=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_client_restrictions=permit_sasl_authenticated,reject
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n -  0 cleanup
qmgr      unix  n - n 300 1 qmgr
tlsmgr    unix  - - n 1000? 1 tlsmgr
rewrite   unix  - - n -  - trivial-rewrite
bounce    unix  - - n -  0 bounce
defer     unix  - - n -  0 bounce
trace     unix  - - n -  0 bounce
verify    unix  - - n -  1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -  - proxymap
showq     unix  n - n -  - showq
error     unix  - - n -  - error
retry     unix  - - n -  - error
discard   unix  - - n -  - discard
anvil     unix  - - n -  1 anvil
scache    unix  - - n -  1 scache
postlog   unix-dgram n - n - 1 postlogd
EOF
  chown postfix "$dir/data" # the master's lock and the TLS session cache
  # postfix check creates the queue directories with their owners (from postfix-files).
  timeout 60 /usr/sbin/postfix -c "$dir/etc" check >"$dir/log/check.log" 2>&1 || { cat "$dir/log/check.log" >&2; return 1; }
  PF_DIR=$dir # from here on pf_stop has something to stop
  timeout 60 /usr/sbin/postfix -c "$dir/etc" start >"$dir/log/start.log" 2>&1 || { cat "$dir/log/start.log" "$dir/log/maillog" >&2; return 1; }
  for p in "$port" "$tls_port"; do
    for _ in $(seq 100); do # up to 10 s
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && break
      sleep 0.1
    done
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null ||
      { echo "private Postfix does not listen on $p:" >&2; tail -n 20 "$dir/log/maillog" >&2; return 1; }
  done
}

pf_stop() {
  local pid _
  if [ -n "$PF_DIR" ]; then
    timeout 60 /usr/sbin/postfix -c "$PF_DIR/etc" stop >/dev/null 2>&1 || {
      # the master did not stop in time: end it by its pid file
      pid=$(tr -dc 0-9 <"$PF_DIR/queue/pid/master.pid" 2>/dev/null || true)
      [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    }
    # postfix stop returns before the master has gone: wait for it (up to 10 s).
    for _ in $(seq 100); do
      timeout 10 /usr/sbin/postfix -c "$PF_DIR/etc" status >/dev/null 2>&1 || break
      sleep 0.1
    done
    PF_DIR=""
  fi
  if [ -n "$PF_DOVECOT" ]; then
    timeout 30 doveadm -c "$PF_DOVECOT" stop >/dev/null 2>&1 || {
      pid=$(tr -dc 0-9 <"${PF_DOVECOT%/*}/run/master.pid" 2>/dev/null || true)
      [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    }
    PF_DOVECOT=""
  fi
}

pf_count() { grep -c -e "$1" "$PF_DIR/log/maillog" || true; }

# The discard transport logs one "status=sent" line per recipient it threw away.
pf_wait_sent() {
  local want=$1 deadline=$((SECONDS + $2))
  while [ "$(pf_count ' status=sent ')" -lt "$want" ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
  [ "$(pf_count ' status=sent ')" -ge "$want" ]
}

pf_wait_empty() {
  local deadline=$((SECONDS + $1))
  while [ -n "$(find "$PF_DIR/queue/incoming" "$PF_DIR/queue/active" "$PF_DIR/queue/deferred" "$PF_DIR/queue/hold" -type f 2>/dev/null | head -n 1)" ]; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}
