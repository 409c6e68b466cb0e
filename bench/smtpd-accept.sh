#!/usr/bin/env bash
# Messages accepted per second by rpost's smtpd and by the reference Postfix, same load:
# smtp-source (from Debian's postfix package), 20 parallel sessions, 4 KiB messages, one
# message per connection, every message fsync'd before its 250 on both sides.
#
# Usage (as root, on a scratch machine): bench/smtpd-accept.sh [MESSAGES]   (default 5000)
# The reference stack is ../shared/reference-stack.sh (Postfix on 127.0.0.1:2525). For the
# duration of the run Postfix puts accepted mail on hold (smtpd_end_of_data_restrictions =
# check_client_access static:HOLD) and rpost runs without qmgr, so both sides measure
# acceptance alone. The Postfix setting is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
SESSIONS=20
SIZE=4096
ref=${RPOST_REFERENCE:-../shared/reference-stack.sh}

command -v smtp-source >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null; }
. bench/common.sh
bench_build master smtpd
bench_instance
cleanup() {
  bench_cleanup_instance
  if [ -n "${postfix_held:-}" ]; then
    postconf -X smtpd_end_of_data_restrictions
    postsuper -d ALL hold >/dev/null 2>&1 || true
    postfix reload >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT
# No qmgr: like the held Postfix mail, accepted messages stay in incoming/.
cat > "$work/etc/master.cf" <<CONF
127.0.0.1:2526 inet n - n - - smtpd
CONF
"$bin/rmaster" -c "$work/etc" start >/dev/null

# One measured run: settle the disk first (writeback of earlier runs skews fsync latency),
# then time N messages.
once() { # port -> msg/s
  sync; sleep 1
  local start end
  start=$(date +%s.%N)
  smtp-source -s $SESSIONS -l $SIZE -m "$N" -f bench@example.test -t alice@example.test "127.0.0.1:$1"
  end=$(date +%s.%N)
  python3 -c "print(f'{$N/($end-$start):.0f}')"
}
# Median of three runs, after a warm-up.
run() { # port -> "median (run1 run2 run3)"
  smtp-source -s $SESSIONS -l $SIZE -m 200 -f bench@example.test -t alice@example.test "127.0.0.1:$1"
  local a b c
  a=$(once "$1"); b=$(once "$1"); c=$(once "$1")
  echo "$(printf '%s\n' "$a" "$b" "$c" | sort -n | sed -n 2p) ($a $b $c)"
}

rpost=$(run 2526)
rpost_rate=${rpost%% *}
queued=$(find "$work/spool/incoming" -type f | wc -l)
echo "rpost:   $rpost msg/s accepted, median of 3 ($N messages each, $SESSIONS sessions, $SIZE bytes; $queued files in incoming/)"

if [ "$(id -u)" = 0 ] && [ -x "$ref" ]; then
  bash "$ref" start >/dev/null 2>&1
  postfix_held=1
  postconf -e 'smtpd_end_of_data_restrictions = check_client_access static:HOLD'
  postfix reload >/dev/null 2>&1; sleep 2
  postfix=$(run 2525)
  postfix_rate=${postfix%% *}
  echo "postfix: $postfix msg/s accepted, median of 3 (same load)"
  python3 -c "print(f'ratio rpost/postfix: {$rpost_rate/$postfix_rate:.2f}x')"
else
  echo "postfix: skipped (needs root and $ref)"
fi
