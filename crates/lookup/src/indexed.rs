//! `hash:`/`btree:` (our indexed `.db` file, format in the crate docs),
//! `texthash:`, and [`build_indexed`] (postmap / postalias).

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::source::{self, Source};
use crate::{FileStamp, LookupError, Table, check_key, fold, read_file};

const MAGIC: &[u8; 8] = b"RPOSTDB1";
const FLAG_FOLD: u32 = 1;
const FLAG_ALIASES: u32 = 2;
/// magic + flags + mtime s + mtime ns + size + count.
const HEADER_LEN: usize = 8 + 4 + 8 + 4 + 8 + 4;
const CHECKSUM_LEN: usize = 8;

/// The indexed file for a source: `source` with `.db` appended.
pub fn db_path(source: &Path) -> PathBuf {
    let mut name = source.as_os_str().to_owned();
    name.push(".db");
    PathBuf::from(name)
}

/// How to build an indexed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// The source is in aliases(5) format (postalias) rather than postmap input.
    pub aliases: bool,
    /// Fold keys to lower case (the default; postmap `-f` turns it off).
    /// Recorded in the file, so lookups fold the same way.
    pub fold_case: bool,
}

impl Default for BuildOptions {
    fn default() -> BuildOptions {
        BuildOptions { aliases: false, fold_case: true }
    }
}

/// What [`build_indexed`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildReport {
    /// Entries written.
    pub entries: usize,
    /// Skipped lines and duplicates, each `file:line: message`.
    pub warnings: Vec<String>,
}

/// Builds `source.db` from `source` (postmap, or postalias when `aliases`),
/// folding keys to lower case.
pub fn build_indexed(source: &Path, aliases: bool) -> Result<BuildReport, LookupError> {
    build_indexed_with(source, &BuildOptions { aliases, ..BuildOptions::default() })
}

/// `rmaster map build` argument handling: accepts `hash:/path`,
/// `btree:/path` or a bare `/path` (postmap's default type), and refuses
/// types that have nothing to build.
pub fn build_spec(spec: &str, aliases: bool) -> Result<BuildReport, LookupError> {
    let path = match spec.split_once(':') {
        Some(("hash" | "btree", path)) => path,
        Some(("texthash" | "regexp" | "pcre" | "cidr" | "inline" | "static" | "passwd-file" | "proxy", _)) => {
            return Err(LookupError::open(spec, "this table type is read as it is; there is nothing to build"));
        }
        Some((kind, _)) if !kind.contains('/') => return Err(LookupError::UnsupportedType(kind.to_string())),
        _ => spec,
    };
    if path.is_empty() {
        return Err(LookupError::open(spec, "empty table name"));
    }
    build_indexed(Path::new(path), aliases)
}

/// [`build_indexed`] with all options.
pub fn build_indexed_with(source: &Path, opts: &BuildOptions) -> Result<BuildReport, LookupError> {
    // Stat before reading: if the source changes while we read it, the
    // recorded mtime is older and the table reports itself stale.
    let meta = std::fs::metadata(source).map_err(|e| LookupError::io(source, e))?;
    let data = read_file(source)?;
    let Source { mut entries, warnings } =
        source::parse(&source.display().to_string(), &data, opts.aliases, opts.fold_case)?;
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    if entries.len() > u32::MAX as usize {
        return Err(LookupError::io(source, std::io::Error::other("too many entries")));
    }

    let mut flags = 0;
    if opts.fold_case {
        flags |= FLAG_FOLD;
    }
    if opts.aliases {
        flags |= FLAG_ALIASES;
    }
    let mut out = Vec::with_capacity(data.len() + HEADER_LEN + CHECKSUM_LEN + entries.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&meta.mtime().to_le_bytes());
    out.extend_from_slice(&(meta.mtime_nsec() as u32).to_le_bytes());
    out.extend_from_slice(&meta.size().to_le_bytes());
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (key, value) in &entries {
        // Logical lines are at most 1 MiB, so lengths always fit in u32.
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    let sum = fnv1a(&out);
    out.extend_from_slice(&sum.to_le_bytes());

    write_atomically(&db_path(source), &out, &meta)?;
    Ok(BuildReport { entries: entries.len(), warnings })
}

/// Writes `data` to a temporary file next to `path`, fsyncs it, renames it
/// over `path` and fsyncs the directory. The new file gets the source's
/// permission bits and, where allowed, its owner.
fn write_atomically(path: &Path, data: &[u8], source: &std::fs::Metadata) -> Result<(), LookupError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    let mode = source.mode() & 0o666;
    let result = (|| {
        // A leftover from a crashed build by a process with our pid.
        let _ = std::fs::remove_file(&tmp);
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        // Ownership first (it may clear mode bits), then the exact mode,
        // which the umask may have narrowed at create time. Changing the
        // owner fails unless we are root: then the file stays ours.
        let _ = std::os::unix::fs::fchown(&file, Some(source.uid()), Some(source.gid()));
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        LookupError::io(path, e)
    })
}

fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Recognises databases written by real Postfix.
fn foreign_format(data: &[u8]) -> Option<&'static str> {
    let word = |off: usize| -> Option<[u32; 2]> {
        let b: [u8; 4] = data.get(off..off + 4)?.try_into().ok()?;
        Some([u32::from_le_bytes(b), u32::from_be_bytes(b)])
    };
    // Berkeley DB 1.x keeps the magic at offset 0, 2.x and later at 12.
    for off in [0, 12] {
        if let Some(w) = word(off) {
            if w.contains(&0x0006_1561) {
                return Some("a Berkeley DB hash file");
            }
            if w.contains(&0x0005_3162) {
                return Some("a Berkeley DB btree file");
            }
        }
    }
    if word(16).is_some_and(|w| w.contains(&0xBEEF_C0DE)) {
        return Some("an LMDB file");
    }
    None
}

/// A validated `.db` image: entries are `(key start, key end, value start,
/// value end)` offsets into `data`, sorted by key.
#[derive(Debug)]
pub(crate) struct Indexed {
    spec: String,
    source: PathBuf,
    db: PathBuf,
    stamp: Option<FileStamp>,
    fold: bool,
    source_mtime: (i64, u32),
    source_size: u64,
    data: Vec<u8>,
    index: Vec<[usize; 4]>,
}

impl Indexed {
    pub(crate) fn open(spec: &str, source: &Path) -> Result<Box<dyn Table>, LookupError> {
        let db = db_path(source);
        let hint = format!("run \"rmaster map build {}\" (with --aliases for an aliases(5) file)", source.display());
        let stamp = FileStamp::of(&db);
        let mut data = match read_file(&db) {
            Ok(data) => data,
            Err(LookupError::Io { source: e, .. }) => {
                return Err(LookupError::open(spec, format!("open database {}: {e}; {hint}", db.display())));
            }
            Err(e) => return Err(e),
        };
        let bad = |what: &str| LookupError::open(spec, format!("{}: {what}; {hint}", db.display()));
        if !data.starts_with(MAGIC) {
            return Err(match foreign_format(&data) {
                Some(kind) => bad(&format!("{kind} made by Postfix postmap/postalias, not an rpost table")),
                None => bad("not an rpost indexed table (bad magic)"),
            });
        }
        if data.len() < HEADER_LEN + CHECKSUM_LEN {
            return Err(bad("truncated file"));
        }
        let (body, sum) = data.split_at(data.len() - CHECKSUM_LEN);
        if fnv1a(body).to_le_bytes() != sum {
            return Err(bad("checksum mismatch (damaged file)"));
        }
        let mut r = Reader { data: body, pos: MAGIC.len() };
        let corrupt = || bad("corrupt file");
        let flags = r.u32().ok_or_else(corrupt)?;
        let mtime = r.u64().ok_or_else(corrupt)? as i64;
        let mtime_ns = r.u32().ok_or_else(corrupt)?;
        let size = r.u64().ok_or_else(corrupt)?;
        let count = r.u32().ok_or_else(corrupt)? as usize;
        // Each entry takes at least 8 bytes: refuse counts the file cannot hold
        // before allocating for them.
        if count > body.len() / 8 {
            return Err(corrupt());
        }
        let mut index = Vec::with_capacity(count);
        for _ in 0..count {
            let key = r.slice().ok_or_else(corrupt)?;
            let value = r.slice().ok_or_else(corrupt)?;
            if std::str::from_utf8(&body[key[0]..key[1]]).is_err()
                || std::str::from_utf8(&body[value[0]..value[1]]).is_err()
            {
                return Err(bad("invalid UTF-8 in entry"));
            }
            if let Some(prev) = index.last().map(|e: &[usize; 4]| &body[e[0]..e[1]])
                && prev >= &body[key[0]..key[1]]
            {
                return Err(bad("keys out of order"));
            }
            index.push([key[0], key[1], value[0], value[1]]);
        }
        let body_len = body.len();
        if r.pos != body_len {
            return Err(bad("trailing garbage"));
        }
        data.truncate(body_len);
        Ok(Box::new(Indexed {
            spec: spec.to_string(),
            source: source.to_path_buf(),
            db,
            stamp,
            fold: flags & FLAG_FOLD != 0,
            source_mtime: (mtime, mtime_ns),
            source_size: size,
            data,
            index,
        }))
    }

    fn text(&self, start: usize, end: usize) -> String {
        // Validated as UTF-8 at open; lossy conversion never replaces anything.
        String::from_utf8_lossy(&self.data[start..end]).into_owned()
    }
}

impl Table for Indexed {
    fn lookup(&self, key: &str) -> Result<Option<String>, LookupError> {
        check_key(&self.spec, key)?;
        let folded;
        let key = if self.fold {
            folded = fold(key);
            folded.as_str()
        } else {
            key
        };
        let found = self.index.binary_search_by(|e| self.data[e[0]..e[1]].cmp(key.as_bytes()));
        Ok(found.ok().map(|i| {
            let e = self.index[i];
            self.text(e[2], e[3])
        }))
    }

    fn spec(&self) -> &str {
        &self.spec
    }

    fn stale(&self) -> Option<String> {
        let meta = std::fs::metadata(&self.source).ok()?;
        let now = ((meta.mtime(), meta.mtime_nsec() as u32), meta.size());
        (now != (self.source_mtime, self.source_size))
            .then(|| format!("database {} is older than source file {}", self.db.display(), self.source.display()))
    }

    fn changed(&self) -> bool {
        self.stamp.is_none_or(|s| s.changed(&self.db))
    }
}

/// Bounds-checked little-endian reader over the `.db` body.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let out = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    /// A length-prefixed byte string, as `[start, end]` offsets.
    fn slice(&mut self) -> Option<[usize; 2]> {
        let len = self.u32()? as usize;
        let start = self.pos;
        self.take(len)?;
        Some([start, self.pos])
    }
}

/// `texthash:/path`: postmap input read into memory at open. Like
/// Postfix, it does not notice later edits by itself; [`Table::changed`]
/// tells the caller.
#[derive(Debug)]
pub(crate) struct TextHash {
    spec: String,
    path: PathBuf,
    stamp: Option<FileStamp>,
    map: HashMap<String, String>,
    warnings: Vec<String>,
}

impl TextHash {
    pub(crate) fn open(spec: &str, path: &Path) -> Result<Box<dyn Table>, LookupError> {
        let stamp = FileStamp::of(path);
        let data = read_file(path)?;
        let src = source::parse(&path.display().to_string(), &data, false, true)?;
        Ok(Box::new(TextHash {
            spec: spec.to_string(),
            path: path.to_path_buf(),
            stamp,
            map: src.entries.into_iter().collect(),
            warnings: src.warnings,
        }))
    }
}

impl Table for TextHash {
    fn lookup(&self, key: &str) -> Result<Option<String>, LookupError> {
        check_key(&self.spec, key)?;
        Ok(self.map.get(&fold(key)).cloned())
    }

    fn spec(&self) -> &str {
        &self.spec
    }

    fn changed(&self) -> bool {
        self.stamp.is_none_or(|s| s.changed(&self.path))
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open;
    use crate::testutil::Dir;

    const VIRTUAL: &str = "# virtual(5)\n\
                           Info@Example.com   alice@example.com, bob@example.com\n\
                           @example.org       catchall@example.com\n\
                           postmaster         root\n\
                           info@example.com   ignored duplicate\n\
                           caf\u{c9}@example.com  unicode\n\
                           junk\n";

    #[test]
    fn build_open_lookup_round_trip() {
        let dir = Dir::new();
        let src = dir.write("virtual", VIRTUAL);
        let report = build_indexed(&src, false).unwrap();
        assert_eq!(report.entries, 4);
        assert_eq!(report.warnings.len(), 2, "{:?}", report.warnings);
        assert!(report.warnings[0].contains(":5: duplicate entry: \"info@example.com\" (line 2 kept)"));
        assert!(report.warnings[1].ends_with(":7: expected format: key whitespace value; entry skipped"));
        for kind in ["hash", "btree", "texthash"] {
            let spec = format!("{kind}:{}", src.display());
            let t = open(&spec).unwrap();
            assert_eq!(t.spec(), spec);
            let cases = [
                ("info@example.com", Some("alice@example.com, bob@example.com")),
                ("INFO@EXAMPLE.COM", Some("alice@example.com, bob@example.com")),
                ("@example.org", Some("catchall@example.com")),
                ("Postmaster", Some("root")),
                ("caf\u{e9}@example.com", Some("unicode")),
                ("nobody", None),
                ("", None),
                ("junk", None),
            ];
            for (key, want) in cases {
                assert_eq!(t.lookup(key).unwrap().as_deref(), want, "{kind} {key}");
            }
            assert_eq!(t.stale(), None);
            assert!(!t.changed());
        }
    }

    #[test]
    fn aliases_and_no_fold() {
        let dir = Dir::new();
        let src = dir.write("aliases", "Root: admin,\n  \"|/bin/prog\"\n\"Two Words\": x\n");
        assert_eq!(build_indexed(&src, true).unwrap().entries, 2);
        let t = open(&format!("hash:{}", src.display())).unwrap();
        assert_eq!(t.lookup("ROOT").unwrap().as_deref(), Some("admin, \"|/bin/prog\""));
        assert_eq!(t.lookup("two words").unwrap().as_deref(), Some("x"));

        let src = dir.write("map", "MiXed value\n");
        build_indexed_with(&src, &BuildOptions { aliases: false, fold_case: false }).unwrap();
        let t = open(&format!("hash:{}", src.display())).unwrap();
        assert_eq!(t.lookup("MiXed").unwrap().as_deref(), Some("value"));
        assert_eq!(t.lookup("mixed").unwrap(), None);
    }

    #[test]
    fn empty_source() {
        let dir = Dir::new();
        let src = dir.write("empty", "# nothing\n");
        assert_eq!(build_indexed(&src, false).unwrap(), BuildReport::default());
        let t = open(&format!("hash:{}", src.display())).unwrap();
        assert_eq!(t.lookup("x").unwrap(), None);
    }

    #[test]
    fn stale_and_changed() {
        let dir = Dir::new();
        let src = dir.write("access", "a OK\n");
        build_indexed(&src, false).unwrap();
        let t = open(&format!("hash:{}", src.display())).unwrap();
        assert_eq!(t.stale(), None);
        // Same mtime granularity issues do not matter: the size differs.
        std::fs::write(&src, "a OK\nb REJECT\n").unwrap();
        let want = format!("database {}.db is older than source file {}", src.display(), src.display());
        assert_eq!(t.stale().as_deref(), Some(want.as_str()));
        assert_eq!(t.warnings(), vec![want]);
        assert!(!t.changed());
        build_indexed(&src, false).unwrap();
        assert!(t.changed(), "rename replaced the .db");
        let t = open(&format!("hash:{}", src.display())).unwrap();
        assert_eq!(t.stale(), None);
        assert_eq!(t.lookup("b").unwrap().as_deref(), Some("REJECT"));
        // A missing source is not "stale": Postfix allows shipping only the .db.
        std::fs::remove_file(&src).unwrap();
        assert_eq!(t.stale(), None);

        let th = dir.write("th", "k v\n");
        let t = open(&format!("texthash:{}", th.display())).unwrap();
        assert!(!t.changed());
        std::fs::write(&th, "k v2\n").unwrap();
        assert!(t.changed());
        assert_eq!(t.lookup("k").unwrap().as_deref(), Some("v"), "texthash keeps what it read");
    }

    #[test]
    fn db_gets_source_mode() {
        let dir = Dir::new();
        let src = dir.write("sasl_passwd", "[smtp.example.com]:587 user:secret\n");
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o600)).unwrap();
        build_indexed(&src, false).unwrap();
        let mode = std::fs::metadata(db_path(&src)).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.0.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    }

    #[test]
    fn foreign_and_damaged_files() {
        let dir = Dir::new();
        let src = dir.path("aliases");
        let spec = format!("hash:{}", src.display());
        let db = db_path(&src);
        // Berkeley DB 2+ hash metadata page: magic at offset 12, host (little-endian) order.
        let mut bdb = vec![0u8; 4096];
        bdb[12..16].copy_from_slice(&0x0006_1561u32.to_le_bytes());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (bdb, "a Berkeley DB hash file made by Postfix postmap/postalias"),
            ([vec![0u8; 12], 0x0005_3162u32.to_be_bytes().to_vec()].concat(), "Berkeley DB btree"),
            (0x0006_1561u32.to_be_bytes().to_vec(), "Berkeley DB hash"),
            ([vec![0u8; 16], 0xBEEF_C0DEu32.to_le_bytes().to_vec()].concat(), "an LMDB file"),
            (b"garbage".to_vec(), "bad magic"),
            (b"RPOSTDB1".to_vec(), "truncated"),
        ];
        for (bytes, want) in cases {
            std::fs::write(&db, &bytes).unwrap();
            let e = open(&spec).unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
            assert!(e.contains(&format!("rmaster map build {}", src.display())), "{e}");
        }

        // Flip each byte of a good file: always detected, never a panic.
        std::fs::write(&src, "alpha one\nbeta two\n").unwrap();
        build_indexed(&src, false).unwrap();
        let good = std::fs::read(&db).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x41;
            std::fs::write(&db, &bad).unwrap();
            assert!(open(&spec).is_err(), "byte {i}");
        }
        // Truncation at every length.
        for len in 0..good.len() {
            std::fs::write(&db, &good[..len]).unwrap();
            assert!(open(&spec).is_err(), "len {len}");
        }
    }

    #[test]
    fn checksummed_but_inconsistent_files_are_refused() {
        let seal = |body: Vec<u8>| {
            let mut v = body;
            let sum = fnv1a(&v);
            v.extend_from_slice(&sum.to_le_bytes());
            v
        };
        let header = |count: u32| {
            let mut v = MAGIC.to_vec();
            v.extend_from_slice(&FLAG_FOLD.to_le_bytes());
            v.extend_from_slice(&[0; 20]);
            v.extend_from_slice(&count.to_le_bytes());
            v
        };
        let entry = |k: &[u8], v: &[u8]| {
            let mut out = (k.len() as u32).to_le_bytes().to_vec();
            out.extend_from_slice(k);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
            out
        };
        let dir = Dir::new();
        let src = dir.path("t");
        let spec = format!("hash:{}", src.display());
        let cases = [
            (seal([header(2), entry(b"b", b"1"), entry(b"a", b"2")].concat()), "keys out of order"),
            (seal([header(2), entry(b"a", b"1"), entry(b"a", b"2")].concat()), "keys out of order"),
            (seal([header(1), entry(b"\xff", b"1")].concat()), "invalid UTF-8"),
            (seal([header(u32::MAX), entry(b"a", b"1")].concat()), "corrupt file"),
            (seal([header(1), entry(b"a", b"1"), vec![0]].concat()), "trailing garbage"),
        ];
        for (bytes, want) in cases {
            std::fs::write(db_path(&src), bytes).unwrap();
            let e = open(&spec).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
        }
        std::fs::write(db_path(&src), seal([header(2), entry(b"a", b"1"), entry(b"b", b"")].concat())).unwrap();
        let t = open(&spec).unwrap();
        assert_eq!(t.lookup("B").unwrap().as_deref(), Some(""));
    }

    #[test]
    fn build_spec_forms() {
        let dir = Dir::new();
        let src = dir.write("transport", "example.com smtp:[relay.example.com]\n");
        for spec in [src.display().to_string(), format!("hash:{}", src.display()), format!("btree:{}", src.display())] {
            assert_eq!(build_spec(&spec, false).unwrap().entries, 1, "{spec}");
        }
        let e = build_spec(&format!("regexp:{}", src.display()), false).unwrap_err().to_string();
        assert!(e.contains("nothing to build"), "{e}");
        assert_eq!(build_spec("lmdb:/x", false).unwrap_err().to_string(), "unsupported dictionary type: lmdb");
        assert!(build_spec("hash:", false).is_err());
    }

    #[test]
    fn build_errors() {
        let dir = Dir::new();
        let e = build_indexed(&dir.path("missing"), false).unwrap_err().to_string();
        assert!(e.contains("missing") && e.contains("No such file"), "{e}");
        let src = dir.write("bad", "ok line\n\u{1}x\n  \n");
        std::fs::write(&src, b"a b\n\xfe\n").unwrap();
        let e = build_indexed(&src, false).unwrap_err().to_string();
        assert!(e.ends_with(":2: invalid UTF-8"), "{e}");
        assert!(!db_path(&src).exists());
    }
}
