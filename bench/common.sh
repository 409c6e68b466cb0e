# Shared by the bench scripts (sourced): the release binaries and a scratch rpost instance.
#   bench_build PKG...      builds the packages in release mode, sets $bin
#   bench_instance          makes $work (under $BENCH_DIR, default /var/tmp) (removed on exit unless KEEP=1) with etc/main.cf for
#                           the bench's domain example.test; the caller writes etc/master.cf
#                           and appends what else its main.cf needs
# BENCH_PREBUILT=1 skips the build and measures the binaries already in target/release (when
# the tree does not build at the moment, e.g. during someone's rework).
bench_build() {
  local args=()
  for p in "$@"; do args+=(-p "$p"); done
  if [ -n "${BENCH_PREBUILT:-}" ]; then
    echo "note: BENCH_PREBUILT set: measuring the binaries already in target/release, not a fresh build"
  else
    cargo build --release -q "${args[@]}"
  fi
  bin=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release
}

bench_instance() {
  work=$(mktemp -d "${BENCH_DIR:-/var/tmp}/rpost-bench.XXXXXX")
  chmod 755 "$work"   # mail_owner must reach the spool below it
  mkdir -p "$work/etc"
  owner=$(id -u -n nobody 2>/dev/null || id -u -n)
  cat > "$work/etc/main.cf" <<CONF
queue_directory = $work/spool
daemon_directory = $bin
maillog_file = $work/maillog
myhostname = mail.example.test
mydestination = \$myhostname, localhost
virtual_mailbox_domains = example.test
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mail_owner = $owner
CONF
}

# Stops the instance and removes it (KEEP=1 keeps it, for a look at the maillog).
bench_cleanup_instance() {
  "$bin/rmaster" -c "$work/etc" stop >/dev/null 2>&1 || true
  if [ -n "${KEEP:-}" ]; then
    echo "kept $work"
  else
    # A daemon still finishing its exit may write below $work while rm runs: try again.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      rm -rf "$work" 2>/dev/null && return 0
      sleep 1
    done
    rm -rf "$work"
  fi
}
