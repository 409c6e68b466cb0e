#!/usr/bin/env bash
# IMAP: commands/s and latency of a command mix for rpost's imapd and the reference Dovecot in
# one run, and the memory of N idle (IDLE) sessions.
#
#   mix:  bench/imap-load's `mix` at 10 and at 50 clients, SECONDS each run, median of 3 (by
#         commands/s, runs alternating between the servers) after a short warm-up: per session connect, LOGIN, SELECT bench-<n>,
#         FETCH 1:* (FLAGS UID), UID FETCH (BODY.PEEK[]), FETCH (ENVELOPE BODYSTRUCTURE),
#         STORE \Seen, APPEND 4 KiB, STORE \Deleted + EXPUNGE, NOOP, LOGOUT. Any NO/BAD fails
#         the run. Targets (issue 6): rpost at least 2x Dovecot's commands/s at 10 and 50.
#   idle: IDLE sessions (default 10000) logged in, INBOX selected, in IDLE; the total Pss of the
#         suite's processes once all are idling (target: 10,000 under 300 MiB), then one
#         message delivered over LMTP and the number of sessions that saw its EXISTS.
#
# Both servers: user alice@example.test / secret (the same SHA512-CRYPT hash when the reference
# stack is there), Maildir under the user's home, mail_max_userip_connections left at 10 (the
# load spreads its clients over source addresses 127.0.0.x instead), plaintext LOGIN on
# loopback, no TLS. The load generator shares the 2 cores with the server it measures.
#
# Usage (as root, on a scratch machine): [IDLE=N] [RUNS=3] [CLIENTS="10 50"] bench/imap.sh [SECONDS]
# (default 20 s per run; CLIENTS=0 skips the mix, IDLE=0 the idle part; VERBOSE=1 prints
# every run's latency per command type). IDLE_MEM_FLOOR_MIB
# (default 4096): the IDLE ramp stops when the machine has less memory available, and what was
# reached is reported. The reference stack is ../shared/reference-stack.sh (Dovecot IMAP on
# 127.0.0.1:1143, mail in /var/vmail/example.test/alice/mail, emptied before and after).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-20}
IDLE=${IDLE:-10000}
RUNS=${RUNS:-3}
CLIENTS=${CLIENTS:-10 50}
ref=${RPOST_REFERENCE:-../shared/reference-stack.sh}
user=alice@example.test
pass=secret
echo "load before: $(uptime)"

# Before anything starts, so that rmaster, its imapd and imap-load inherit it.
if ! ulimit -n 200000 2>/dev/null; then
  ulimit -n "$(ulimit -Hn)"
  echo "note: could not raise open files to 200000; the limit is $(ulimit -n)"
fi

have_ref=
if [ "$(id -u)" = 0 ] && [ -f "$ref" ]; then
  bash "$ref" start >/dev/null 2>&1 && have_ref=1
fi
if [ -n "$have_ref" ]; then
  # Start empty, and give rpost the reference's password hash so LOGIN costs the same.
  rm -rf /var/vmail/example.test/alice/mail
  hash="{SHA512-CRYPT}$(awk -F: '$1 == "alice@example.test" { print $2 }' /etc/dovecot/users.db)"
else
  hash="{PLAIN}$pass"
fi

. bench/common.sh
bench_build master imapd authd lmtp-deliver imap-load
bench_instance
cleanup() {
  [ -n "${idle_pid:-}" ] && kill "$idle_pid" 2>/dev/null
  bench_cleanup_instance
  [ -n "$have_ref" ] && rm -rf /var/vmail/example.test/alice/mail
  return 0
}
trap cleanup EXIT
mkdir -p "$work/vmail"
chown "$owner" "$work/vmail"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >> "$work/etc/main.cf" <<CONF
auth_passdb = passwd-file:$work/etc/users
auth_mechanisms = plain login
mail_home = $work/vmail/%d/%n
mail_location = maildir:~/mail
mail_uid = $(id -u "$owner")
mail_gid = $(id -g "$owner")
ssl = no
CONF
echo "alice@example.test:$hash::::::" > "$work/etc/users"
# imapd serves one client per process today: room for every IDLE session and the mix.
maxproc=$((IDLE + 200))
cat > "$work/etc/master.cf" <<CONF
127.0.0.1:$port inet n n n - $maxproc imapd
auth unix - - n - 1 authd
auth-userdb unix - - n - 1 authd userdb
lmtp-deliver unix - n n - - lmtp-deliver
CONF
"$bin/rmaster" -c "$work/etc" start >/dev/null
python3 - "$port" <<'PY'
import socket, sys, time
deadline = time.monotonic() + 30
while True:
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5) as s:
            if s.recv(100).startswith(b"* OK"):
                break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit("rpost imapd did not greet within 30 s")
    time.sleep(0.2)
PY

# field NAME < "a=1 b=2" -> the value of NAME
field() { awk -v k="$1" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) { print kv[2]; exit } } }'; }

# One mix run; prints imap-load's line, or "cmd_per_s=0 ... FAILED" with its error output.
mix_once() { # addr clients seconds
  local out
  if out=$(RUST_LIB_BACKTRACE=0 "$bin/imap-load" mix --addr "$1" --user "$user" --pass "$pass" --clients "$2" \
      --duration "${3}s" --sources 127.0.0.1-127.0.0.254 2>"$work/mix.err"); then
    echo "$out"
    # VERBOSE=1: each run's latency per command type too.
    if [ -n "${VERBOSE:-}" ]; then { echo "    $1 $out"; sed 's/^/  /' "$work/mix.err"; } >&2; fi
  else
    echo "imap-load mix against $1 at $2 clients failed: ${out:-no result}" >&2
    out=${out:-clients=$2 commands=0 cmd_per_s=0 p50_ms=0 p99_ms=0 errors=1}
    sed 's/^/    /' "$work/mix.err" >&2
    echo "$out FAILED"
  fi
}

# "cmd_per_s p50_ms p99_ms errors (run1 run2 ...)" of the median (by commands/s) of the runs
# whose imap-load lines are in the file.
median_of() { # file
  local l errors
  l=$(while read -r x; do echo "$(field cmd_per_s <<<"$x") $x"; done <"$1" | sort -n | sed -n "$((($(wc -l <"$1") + 1) / 2))p")
  errors=$(while read -r x; do field errors <<<"$x"; done <"$1" | awk '{ s += $1 } END { print s + 0 }')
  echo "$(field cmd_per_s <<<"$l") $(field p50_ms <<<"$l") $(field p99_ms <<<"$l") $errors ($(while read -r x; do field cmd_per_s <<<"$x"; done <"$1" | paste -sd' '))"
}

echo "mix: ${SECS} s per run, median of $RUNS; rpost imapd on 127.0.0.1:$port, Dovecot on 127.0.0.1:1143"
for n in $CLIENTS; do
  [ "$n" = 0 ] && continue # CLIENTS=0: no mix
  # A short warm-up each, then the runs alternate between the servers, so that a change in
  # the machine's background load falls on both alike.
  : >"$work/mix-rpost" && : >"$work/mix-dovecot"
  mix_once "127.0.0.1:$port" "$n" 2 >/dev/null
  [ -n "$have_ref" ] && mix_once 127.0.0.1:1143 "$n" 2 >/dev/null
  for _ in $(seq "$RUNS"); do
    mix_once "127.0.0.1:$port" "$n" "$SECS" >>"$work/mix-rpost"
    if [ -n "$have_ref" ]; then mix_once 127.0.0.1:1143 "$n" "$SECS" >>"$work/mix-dovecot"; fi
  done
  read -r r_rate r_p50 r_p99 r_err r_runs <<<"$(median_of "$work/mix-rpost")"
  echo "  clients=$n rpost:   $r_rate cmd/s  p50 $r_p50 ms  p99 $r_p99 ms  errors=$r_err  runs $r_runs"
  if [ -n "$have_ref" ]; then
    read -r d_rate d_p50 d_p99 d_err d_runs <<<"$(median_of "$work/mix-dovecot")"
    echo "  clients=$n dovecot: $d_rate cmd/s  p50 $d_p50 ms  p99 $d_p99 ms  errors=$d_err  runs $d_runs"
    python3 -c "r, d = $r_rate, $d_rate; print(f'  clients=$n ratio rpost/dovecot: {r / d if d else float(\"nan\"):.2f}x commands/s (target >= 2x)')"
  else
    echo "  clients=$n dovecot: skipped (needs root and $ref)"
  fi
done

# Sum of Pss (KiB) of the processes whose executable matches a regex: shared pages count once.
pss_mib() { # exe_regex
  python3 bench/pss.py "$1"
}

# One message to alice over LMTP (unix socket).
lmtp_one() { # socket
  python3 - "$1" <<'PY'
import smtplib, sys
msg = b"From: <bench@example.org>\r\nTo: <alice@example.test>\r\nSubject: wake up\r\n\r\nOne message for the idle sessions.\r\n"
with smtplib.LMTP(sys.argv[1]) as l:
    l.sendmail("bench@example.org", ["alice@example.test"], msg)
PY
}

# IDLE sessions against one server; prints what it reached, the memory and the EXISTS count.
idle_measure() { # name addr exe_regex lmtp_socket
  local name=$1 fifo="$work/idle.fifo" out="$work/idle-$1.out" err="$work/idle-$1.err"
  rm -f "$fifo" && mkfifo "$fifo"
  local base
  base=$(pss_mib "$3")
  RUST_LIB_BACKTRACE=0 "$bin/imap-load" idle --addr "$2" --user "$user" --pass "$pass" --connections "$IDLE" \
    --sources 127.0.0.1-127.0.255.254 --ramp-timeout 600s <"$fifo" >"$out" 2>"$err" &
  idle_pid=$!
  exec 9>"$fifo" # its stdin: closing it ends the hold
  # imap-load bounds its own ramp (600 s plus one set-up timeout), so this ends.
  # Memory guard: the machine is shared; below IDLE_MEM_FLOOR_MIB available the ramp stops
  # (SIGUSR1) and what was reached is measured.
  local floor=${IDLE_MEM_FLOOR_MIB:-4096} guarded=
  until grep -q ' ready' "$out" || ! kill -0 "$idle_pid" 2>/dev/null; do
    if [ -z "$guarded" ] && [ "$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)" -lt $((floor * 1024)) ]; then
      echo "  $name: memory guard: less than $floor MiB available, ramp stopped"
      kill -USR1 "$idle_pid" 2>/dev/null || true
      guarded=1
    fi
    sleep 1
  done
  local line reached mem
  line=$(grep ' ready' "$out" || echo "idle=0 ready (imap-load ended: $(tail -n 3 "$err" | tr '\n' ' '))")
  reached=$(field idle <<<"$line")
  sleep 2
  mem=$(pss_mib "$3")
  echo "  $name: $line"
  if [ "$reached" = "$IDLE" ]; then
    echo "  $name: all $IDLE sessions idling; total Pss ${mem% *} MiB over ${mem#* } processes (target for 10,000: < 300 MiB)"
  else
    echo "  $name: FAILED to reach $IDLE idle sessions: $reached idling; total Pss ${mem% *} MiB over ${mem#* } processes at that point"
  fi
  if [ "${reached:-0}" -gt 0 ]; then
    # Not a measurement of 10,000: what the growth per session seen here would make of it.
    python3 -c "b, m, k = ${base% *}, ${mem% *}, $reached; per = (m - b) / k; print(f'  $name: {per * 1024:.0f} KiB per idle session over the {b} MiB before the ramp; linear extrapolation to 10,000: {b + per * 10000:.0f} MiB')"
  fi
  if [ "${reached:-0}" -gt 0 ] && lmtp_one "$4"; then
    # imap-load ends by itself once every idling session saw EXISTS (or was dropped).
    for _ in $(seq 120); do kill -0 "$idle_pid" 2>/dev/null || break; sleep 1; done
  fi
  exec 9>&-
  wait "$idle_pid" || true
  idle_pid=
  line=$(grep exists_seen "$out" || echo "no exists_seen line")
  echo "  $name: after one LMTP delivery: $line (EXISTS seen by $(field exists_seen <<<"$line") of $reached)"
}

if [ "$IDLE" = 0 ]; then
  echo "load after: $(uptime)"
  exit 0
fi
echo "idle: $IDLE sessions (LOGIN, SELECT INBOX, IDLE), 10 per source address"
idle_measure rpost "127.0.0.1:$port" "^$bin/(?!imap-load)" "$work/spool/private/lmtp-deliver"
if [ -n "$have_ref" ]; then
  # The reference configuration allows one imap process per session up to service imap's
  # process_limit, and its log/anvil services take default_client_limit connections.
  imap_limit=$(doveconf -a 2>/dev/null | awk '/^service imap \{/ { p = 1 } p && $1 == "process_limit" { print $3; exit }')
  client_limit=$(doveconf -h default_client_limit 2>/dev/null || echo 1000)
  lim=$((${imap_limit:-1024} < client_limit ? ${imap_limit:-1024} : client_limit))
  if [ "$((IDLE + 50))" -le "$lim" ]; then
    idle_measure dovecot 127.0.0.1:1143 '^/usr/(sbin/dovecot|lib/dovecot/)' /var/spool/postfix/private/dovecot-lmtp
  else
    echo "  dovecot: not measured: $IDLE sessions exceed the reference configuration (service imap process_limit=${imap_limit:-?}, default_client_limit=$client_limit, one imap process per session), and the reference stack's configuration is not ours to edit"
  fi
fi
echo "load after: $(uptime)"
