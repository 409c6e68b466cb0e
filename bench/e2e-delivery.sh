#!/usr/bin/env bash
# End-to-end delivery throughput: SMTP accept -> queue -> LMTP -> Maildir, for rpost and for
# the reference Postfix + Dovecot, same load, in one run.
#
#   rpost:     smtpd -> qmgr -> smtp-client (lmtp) -> lmtp-deliver (user from authd) -> Maildir
#   reference: Postfix smtpd -> cleanup -> qmgr -> lmtp -> Dovecot lmtp (user from auth) -> Maildir
#
# smtp-source (from Debian's postfix package) sends N messages of 4 KiB over 20 parallel
# sessions, one message per connection, to one virtual user; the clock stops when the N-th
# file is in the user's Maildir new/. fsync stays on for both (queue files and Maildir files).
# Also printed: the peak memory of each suite (sum of the proportional set size, Pss, of its
# processes, so shared pages count once; sampled every 50 ms while it works). Each stack: the
# median of three runs, its runs alternating with the other stack's.
#
# Usage (as root, on a scratch machine): bench/e2e-delivery.sh [MESSAGES]   (default 5000)
# The reference stack is ../shared/reference-stack.sh (Postfix on 127.0.0.1:2525, Dovecot
# LMTP behind it, mail in /var/vmail/example.test/alice/mail).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}
SESSIONS=20
SIZE=4096
ref=${RPOST_REFERENCE:-../shared/reference-stack.sh}

command -v smtp-source >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null; }
. bench/common.sh
bench_build master smtpd qmgr smtp-client lmtp-deliver authd
bench_instance
trap bench_cleanup_instance EXIT
mkdir -p "$work/vmail"
chown "$owner" "$work/vmail"
cat >> "$work/etc/main.cf" <<CONF
auth_passdb = passwd-file:$work/etc/users
mail_home = $work/vmail/%d/%n
mail_location = maildir:~/mail
mail_uid = $(id -u "$owner")
mail_gid = $(id -g "$owner")
CONF
echo 'alice@example.test:{PLAIN}secret::::::' > "$work/etc/users"
cat > "$work/etc/master.cf" <<CONF
127.0.0.1:2526 inet n - n - - smtpd
qmgr unix n - n 300 1 qmgr
lmtp unix - - n - - smtp-client
lmtp-deliver unix - n n - - lmtp-deliver
auth-userdb unix - - n - 1 authd userdb
CONF
"$bin/rmaster" -c "$work/etc" start >/dev/null

# One timed run: python drives smtp-source, counts Maildir files and samples memory.
# Args: port, maildir new/, regex of the suite's executables. Prints "msg/s peak_rss_mib".
measure() {
  python3 - "$1" "$2" "$3" "$N" "$SESSIONS" "$SIZE" <<'PY'
import os, re, subprocess, sys, time
sys.path.insert(0, 'bench')
from pss import pss_kib  # bench/pss.py
port, new, exe_re, n, sessions, size = sys.argv[1], sys.argv[2], re.compile(sys.argv[3]), *map(int, sys.argv[4:])
def count():
    try:
        return sum(1 for _ in os.scandir(new))
    except FileNotFoundError:
        return 0
def rss_kib():
    return pss_kib(exe_re)[0]
base = count()
subprocess.run(['sync']); time.sleep(1)
start = time.monotonic()
src = subprocess.Popen(['smtp-source', '-s', str(sessions), '-l', str(size), '-m', str(n),
                        '-f', 'bench@example.test', '-t', 'alice@example.test', f'127.0.0.1:{port}'])
peak = 0
deadline = start + 600
while count() - base < n:
    peak = max(peak, rss_kib())
    if time.monotonic() > deadline:
        sys.exit(f'only {count() - base} of {n} delivered after 600 s')
    time.sleep(0.05)
elapsed = time.monotonic() - start
src.wait()
print(f'{n / elapsed:.0f} {peak / 1024:.0f}')
PY
}
# The two stacks' runs alternate (rpost, reference, rpost, ...), each after a warm-up of 200
# messages, so that drift in the machine's state reaches both alike. One example: on ext4
# without a journal, files created within minutes of many deletions nearby are slow to
# allocate (the allocator skips recently freed inodes one by one), so whichever stack ran
# first after an earlier bench's cleanup would pay for it alone.
# summary RESULTS...: "median_rate peak_rss (r1 r2 r3)" from "rate rss" lines.
summary() {
  local med peak
  med=$(printf '%s\n' "$@" | sort -n | sed -n 2p)
  peak=$(printf '%s\n' "$@" | awk '$2 > m { m = $2 } END { print m }')
  echo "${med%% *} $peak (${1%% *} ${2%% *} ${3%% *})"
}
warm() { local saved=$N; N=200; measure "$@" >/dev/null; N=$saved; }

rpost_args=(2526 "$work/vmail/example.test/alice/mail/new" "^$bin/")
ref_args=(2525 /var/vmail/example.test/alice/mail/new '^/usr/(lib/postfix/sbin/|sbin/dovecot|lib/dovecot/)')
with_ref=
if [ "$(id -u)" = 0 ] && [ -x "$ref" ]; then
  with_ref=1
  bash "$ref" start >/dev/null 2>&1
  # Start empty so the count is ours alone, and so Dovecot's uidlist is small as rpost's. The
  # old Maildir is moved aside and deleted only after the runs (see above).
  stale=/var/vmail/example.test/alice/mail.bench-old.$$
  if [ -e /var/vmail/example.test/alice/mail ]; then mv /var/vmail/example.test/alice/mail "$stale"; fi
  postsuper -d ALL >/dev/null 2>&1 || true
fi

warm "${rpost_args[@]}"
[ -n "$with_ref" ] && warm "${ref_args[@]}"
rpost_runs=() ref_runs=()
for _ in 1 2 3; do
  rpost_runs+=("$(measure "${rpost_args[@]}")")
  [ -n "$with_ref" ] && ref_runs+=("$(measure "${ref_args[@]}")")
done

read -r rpost_rate rpost_rss rest <<<"$(summary "${rpost_runs[@]}")"
echo "rpost:   $rpost_rate msg/s delivered to Maildir, median of 3 $rest ($N messages each, $SESSIONS sessions, $SIZE bytes); peak memory (Pss) ${rpost_rss} MiB"
if [ -n "$with_ref" ]; then
  read -r postfix_rate postfix_rss rest <<<"$(summary "${ref_runs[@]}")"
  echo "postfix+dovecot: $postfix_rate msg/s delivered, median of 3 $rest (same load, runs alternating with rpost's); peak memory (Pss) ${postfix_rss} MiB"
  python3 -c "print(f'ratio rpost/reference: {$rpost_rate/$postfix_rate:.2f}x throughput, {$rpost_rss/max($postfix_rss,1):.2f}x memory')"
  rm -rf /var/vmail/example.test/alice/mail "$stale"
else
  echo "postfix+dovecot: skipped (needs root and $ref)"
fi
