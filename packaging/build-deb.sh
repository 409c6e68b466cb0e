#!/usr/bin/env bash
# Builds the rpost Debian package with plain dpkg-deb (no debhelper, no cargo-deb):
#   packaging/build-deb.sh [OUTDIR]      -> OUTDIR/rpost_VERSION_ARCH.deb (default: target dir)
# Reproducible: release binaries built with remapped source paths and stripped, every file's
# mtime clamped to SOURCE_DATE_EPOCH (default: the last commit), owners root:root, sorted
# tar members (dpkg-deb does that), gzip -n man pages, xz compression.
# Ships every binary the workspace defines: rmaster in /usr/sbin, sendmail in /usr/sbin (plus
# the /usr/lib/sendmail link), mailq and newaliases in /usr/bin, every daemon in /usr/lib/rpost
# (daemon_directory's default), main.cf/master.cf as conffiles, the systemd unit, man pages
# (rmaster(8) and its commands, rpost(5) from the parameter registry) and bash/zsh completions.
#
# What is built: the committed tree (HEAD, or RPOST_DEB_COMMIT), exported with git archive, so
# work in progress in the checkout never reaches a package; RPOST_DEB_FROM_TREE=1 builds the
# checkout as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
commit=$(git rev-parse --verify "${RPOST_DEB_COMMIT:-HEAD}^{commit}")
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct "$commit")}"
export LC_ALL=C TZ=UTC
umask 022
out=${1:-}
[ -z "$out" ] || { mkdir -p "$out"; out=$(cd "$out" && pwd); }

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
if [ "${RPOST_DEB_FROM_TREE:-0}" != 1 ]; then
  # One fixed path, updated in place (content compare, no times): cargo then rebuilds only
  # what changed since the last package.
  export_dir="$target_dir/deb-src"
  fresh=$(mktemp -d "${TMPDIR:-/tmp}/rpost-src.XXXXXX")
  git archive --format=tar "$commit" | tar -x -C "$fresh"
  mkdir -p "$export_dir"
  rsync -rlpc --delete --exclude=/target "$fresh/" "$export_dir/"
  rm -rf "$fresh"
  cd "$export_dir"
fi
src=$PWD

meta=$(cargo metadata --format-version 1 --no-deps --locked)
version=$(python3 -c 'import json,sys; d=json.load(sys.stdin); print(next(p["version"] for p in d["packages"] if p["name"]=="master"))' <<<"$meta")
# Every binary of the workspace, "package bin" per line.
mapfile -t bins < <(python3 -c 'import json,sys
d=json.load(sys.stdin)
for p in d["packages"]:
    for t in p["targets"]:
        if "bin" in t["kind"]: print(t["name"])' <<<"$meta" | sort)
arch=$(dpkg --print-architecture)
out=${out:-$target_dir}

# A target directory of its own: the remapped paths change every crate's fingerprint, and
# sharing target/release with dev/run would rebuild everything each time either runs.
deb_target="${RPOST_DEB_TARGET_DIR:-$target_dir/deb}"
export RUSTFLAGS="--remap-path-prefix=$src=/usr/src/rpost --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/usr/src/cargo"
CARGO_TARGET_DIR="$deb_target" cargo build --release --locked --workspace --bins
rel="$deb_target/release"

stage=$(mktemp -d "${TMPDIR:-/tmp}/rpost-deb.XXXXXX")
trap 'rm -rf "$stage"' EXIT
root="$stage/root"
install -d "$root/DEBIAN" "$root/usr/sbin" "$root/usr/bin" "$root/usr/lib/rpost" "$root/etc/rpost" \
  "$root/lib/systemd/system" "$root/usr/share/man/man8" "$root/usr/share/man/man5" \
  "$root/usr/share/bash-completion/completions" "$root/usr/share/zsh/vendor-completions" \
  "$root/usr/share/doc/rpost" "$root/usr/share/rpost"

for b in "${bins[@]}"; do
  case $b in
    rmaster | sendmail) dest=usr/sbin ;;
    mailq | newaliases) dest=usr/bin ;;
    *) dest=usr/lib/rpost ;;
  esac
  install -m 0755 "$rel/$b" "$root/$dest/$b"
  strip --strip-all --enable-deterministic-archives "$root/$dest/$b"
done
ln -s ../sbin/sendmail "$root/usr/lib/sendmail"

install -m 0644 packaging/main.cf packaging/master.cf "$root/etc/rpost/"
# Pristine copies: what `rmaster setup` and an admin can diff against.
install -m 0644 packaging/main.cf packaging/master.cf "$root/usr/share/rpost/"
install -m 0644 packaging/rpost.service "$root/lib/systemd/system/rpost.service"

"$rel/rmaster" gen-man "$stage/man"
for page in "$stage"/man/*.8; do gzip -9n -c "$page" > "$root/usr/share/man/man8/$(basename "$page").gz"; done
gzip -9n -c "$stage/man/rpost.5" > "$root/usr/share/man/man5/rpost.5.gz"
"$rel/rmaster" gen-completions "$stage/comp"
install -m 0644 "$stage/comp/rmaster.bash" "$root/usr/share/bash-completion/completions/rmaster"
install -m 0644 "$stage/comp/_rmaster" "$root/usr/share/zsh/vendor-completions/_rmaster"

{
  echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: rpost"
  echo
  echo "Files: *"
  echo "License: MIT or Apache-2.0"
  echo
  sed 's/^$/./; s/^/ /' LICENSE-MIT
} > "$root/usr/share/doc/rpost/copyright"
install -m 0644 README.md "$root/usr/share/doc/rpost/README.md"

for s in postinst prerm postrm; do install -m 0755 "packaging/debian/$s" "$root/DEBIAN/$s"; done
printf '/etc/rpost/main.cf\n/etc/rpost/master.cf\n' > "$root/DEBIAN/conffiles"

# The newest glibc symbol version the binaries need (what dpkg-shlibdeps would compute).
glibc=$(objdump -T "$root"/usr/sbin/rmaster "$root"/usr/lib/rpost/* 2>/dev/null | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat > "$root/DEBIAN/control" <<CONTROL
Package: rpost
Version: $version
Architecture: $arch
Maintainer: rpost developers <postmaster@localhost>
Installed-Size: $size
Depends: libc6 (>= ${glibc:-2.34}), libgcc-s1, adduser
Recommends: swaks
Provides: mail-transport-agent
Conflicts: mail-transport-agent
Replaces: mail-transport-agent
Section: mail
Priority: optional
Homepage: https://github.com/rpost/rpost
Description: mail server suite: SMTP, submission, LMTP/Maildir delivery, IMAP (Postfix + Dovecot compatible)
 rpost is a privilege-separated mail system in Rust that reads Postfix main.cf and
 master.cf, keeps Postfix's queue and Dovecot's Maildir layout and speaks the same
 protocols: smtpd with STARTTLS and SASL for submission, a queue manager with retries and
 bounces, SMTP/LMTP clients, local and virtual Maildir delivery, and authd (Dovecot auth).
 .
 Quick start: rmaster setup example.com --user you@example.com
CONTROL
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | sort | xargs md5sum) > "$root/DEBIAN/md5sums"

find "$root" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
deb="$out/rpost_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
