//! `regexp:` and `pcre:` tables (regexp_table(5), pcre_table(5)), both
//! run by the regex crate.
//!
//! ```text
//! /pattern/flags result        first matching rule wins; $1 ${2} $$ in result
//! !/pattern/flags result       matches when the pattern does not
//! if /pattern/flags            rules up to the matching endif apply only
//! ...                          when the pattern matches (if !/.../: when not)
//! endif
//! ```
//!
//! Any non-alphanumeric character may delimit the pattern. Flags toggle
//! their default, as in Postfix. `regexp:`: `i` (case-insensitive, on by
//! default), `m` (REG_NEWLINE: `^`/`$` at line breaks, `.` stops at
//! newline); `x` would select POSIX basic syntax, which we do not have,
//! so it is an error. `pcre:`: `i` (on), `m` (multi-line), `s` (dot matches
//! newline), `x` (verbose), `U` (ungreedy), `A` (anchored), and `E`, `X`,
//! which need nothing with this engine.
//!
//! Postfix warns and skips a bad rule; we refuse the whole table with
//! `file:line:`, since a silently skipped reject rule is a hole.

use std::path::{Path, PathBuf};

use regex::{Regex, RegexBuilder};

use crate::{FileStamp, LookupError, Table, check_key, logical_lines, read_file};

/// Compiled size limit per pattern: ample for word lists of a few thousand
/// entries, small enough that a table of them stays within reason.
const SIZE_LIMIT: usize = 2 << 20;
/// Lazy DFA cache per pattern.
const DFA_SIZE_LIMIT: usize = 2 << 20;
/// Nesting depth of groups and repetitions.
const NEST_LIMIT: u32 = 100;

/// Which Postfix table type the file is for; they differ only in flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Regexp,
    Pcre,
}

/// One piece of a result template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Group(usize),
}

#[derive(Debug)]
enum Rule {
    Match {
        re: Regex,
        negate: bool,
        result: Vec<Piece>,
    },
    /// `endif` is the index of the matching `endif` rule.
    If {
        re: Regex,
        negate: bool,
        endif: usize,
    },
    EndIf,
}

#[derive(Debug)]
pub(crate) struct RegexpTable {
    spec: String,
    path: PathBuf,
    stamp: Option<FileStamp>,
    rules: Vec<Rule>,
}

impl RegexpTable {
    pub(crate) fn open(spec: &str, path: &Path, dialect: Dialect) -> Result<Box<dyn Table>, LookupError> {
        let stamp = FileStamp::of(path);
        let data = read_file(path)?;
        let rules = parse(&path.display().to_string(), &data, dialect)?;
        Ok(Box::new(RegexpTable { spec: spec.to_string(), path: path.to_path_buf(), stamp, rules }))
    }
}

/// Parses a whole pattern file.
fn parse(file: &str, data: &[u8], dialect: Dialect) -> Result<Vec<Rule>, LookupError> {
    let mut rules = Vec::new();
    // Indexes (into rules) and lines of the open `if`s.
    let mut open_ifs: Vec<(usize, usize)> = Vec::new();
    for ll in logical_lines(file, data)? {
        let line = ll.line;
        let err = |m: String| LookupError::syntax(file, line, m);
        let text = ll.text.as_str();
        if text.starts_with(|c: char| c.is_alphanumeric()) {
            let word_end = text.find(|c: char| !c.is_alphanumeric()).unwrap_or(text.len());
            let (word, rest) = text.split_at(word_end);
            if word.eq_ignore_ascii_case("if") {
                let pat = pattern(rest, dialect).map_err(err)?;
                if !pat.rest.is_empty() {
                    return Err(err(format!("text after IF pattern: \"{}\"", pat.rest)));
                }
                open_ifs.push((rules.len(), line));
                rules.push(Rule::If { re: pat.re, negate: pat.negate, endif: 0 });
            } else if word.eq_ignore_ascii_case("endif") {
                if !rest.trim().is_empty() {
                    return Err(err(format!("text after ENDIF: \"{}\"", rest.trim())));
                }
                let Some((at, _)) = open_ifs.pop() else { return Err(err("ENDIF without IF".to_string())) };
                let here = rules.len();
                if let Rule::If { endif, .. } = &mut rules[at] {
                    *endif = here;
                }
                rules.push(Rule::EndIf);
            } else {
                return Err(err(format!("unknown command \"{word}\" (expected /pattern/, IF or ENDIF)")));
            }
            continue;
        }
        let pat = pattern(text, dialect).map_err(err)?;
        if pat.rest.is_empty() {
            return Err(err("no result after pattern".to_string()));
        }
        let result = template(pat.rest, pat.re.captures_len()).map_err(err)?;
        if pat.negate && result.iter().any(|p| matches!(p, Piece::Group(_))) {
            return Err(err("$number in the result of a negated pattern".to_string()));
        }
        rules.push(Rule::Match { re: pat.re, negate: pat.negate, result });
    }
    if let Some((_, line)) = open_ifs.pop() {
        return Err(LookupError::syntax(file, line, "IF has no matching ENDIF"));
    }
    Ok(rules)
}

struct Pattern<'a> {
    re: Regex,
    negate: bool,
    /// Text after the flags, trimmed: the result.
    rest: &'a str,
}

/// Parses `[!...]<delim>regex<delim>flags` and compiles it.
fn pattern(text: &str, dialect: Dialect) -> Result<Pattern<'_>, String> {
    let mut negate = false;
    let mut s = text.trim_start();
    while let Some(r) = s.strip_prefix('!') {
        negate = !negate;
        s = r.trim_start();
    }
    let mut chars = s.char_indices();
    let Some((_, delim)) = chars.next() else { return Err("missing pattern".to_string()) };
    if delim.is_alphanumeric() || delim == '\\' {
        return Err(format!("bad pattern delimiter \"{delim}\""));
    }
    let start = delim.len_utf8();
    let mut end = None;
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            chars.next();
        } else if c == delim {
            end = Some(i);
            break;
        }
    }
    let Some(end) = end else { return Err(format!("no closing pattern delimiter \"{delim}\"")) };
    let body = &s[start..end];
    let after = &s[end + delim.len_utf8()..];
    let flags_end = after.find(|c: char| c.is_whitespace()).unwrap_or(after.len());
    let (flags, rest) = after.split_at(flags_end);

    let (mut icase, mut multi, mut dotall, mut verbose, mut ungreedy, mut anchored) =
        (true, false, dialect == Dialect::Regexp, false, false, false);
    for f in flags.chars() {
        match (dialect, f) {
            (_, 'i') => icase = !icase,
            (Dialect::Regexp, 'm') => {
                // REG_NEWLINE changes both anchors and dot.
                multi = !multi;
                dotall = !dotall;
            }
            (Dialect::Regexp, 'x') => {
                return Err("flag \"x\" (POSIX basic regular expressions) is not supported".into());
            }
            (Dialect::Pcre, 'm') => multi = !multi,
            (Dialect::Pcre, 's') => dotall = !dotall,
            (Dialect::Pcre, 'x') => verbose = !verbose,
            (Dialect::Pcre, 'U') => ungreedy = !ungreedy,
            (Dialect::Pcre, 'A') => anchored = !anchored,
            (Dialect::Pcre, 'E' | 'X') => {}
            (_, other) => return Err(format!("unknown pattern flag \"{other}\"")),
        }
    }
    // The newline ends a verbose-mode comment before our closing paren.
    let source = if anchored { format!(r"\A(?:{body}{})", if verbose { "\n" } else { "" }) } else { body.to_string() };
    let re = RegexBuilder::new(&source)
        .case_insensitive(icase)
        .multi_line(multi)
        .dot_matches_new_line(dotall)
        .ignore_whitespace(verbose)
        .swap_greed(ungreedy)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT)
        .nest_limit(NEST_LIMIT)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => format!("pattern too big (compiled size over {limit} bytes)"),
            // The parser's message spans several lines with a caret drawing.
            e => format!("bad pattern: {}", e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")),
        })?;
    Ok(Pattern { re, negate, rest: rest.trim() })
}

/// Parses a result: `$n`, `${n}`, `$(n)` are capture groups, `$$` is `$`.
/// Like Postfix, any other `$` is an error, so `$5` in "costs $5" must be
/// written `$$5`.
fn template(text: &str, captures_len: usize) -> Result<Vec<Piece>, String> {
    let mut out = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        lit.push_str(&rest[..pos]);
        rest = &rest[pos + 1..];
        let (name, after) = if let Some(r) = rest.strip_prefix('$') {
            lit.push('$');
            rest = r;
            continue;
        } else if let Some(close) = rest.strip_prefix('{').map(|_| '}').or(rest.strip_prefix('(').map(|_| ')')) {
            let Some(end) = rest.find(close) else { return Err(format!("missing \"{close}\" in \"{text}\"")) };
            (&rest[1..end], &rest[end + 1..])
        } else {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            rest.split_at(end)
        };
        let n: usize = match name.parse() {
            Ok(n) if name.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("bad replacement \"${name}\" in \"{text}\" (write $$ for a literal $)")),
        };
        if n >= captures_len {
            return Err(format!("replacement index ${n} out of range (the pattern has {} groups)", captures_len - 1));
        }
        if !lit.is_empty() {
            out.push(Piece::Text(std::mem::take(&mut lit)));
        }
        out.push(Piece::Group(n));
        rest = after;
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        out.push(Piece::Text(lit));
    }
    Ok(out)
}

fn literal(result: &[Piece]) -> String {
    result.iter().map(|p| if let Piece::Text(t) = p { t.as_str() } else { "" }).collect()
}

impl Table for RegexpTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, LookupError> {
        check_key(&self.spec, key)?;
        let mut i = 0;
        while i < self.rules.len() {
            match &self.rules[i] {
                Rule::If { re, negate, endif } => {
                    if re.is_match(key) == *negate {
                        i = *endif;
                    }
                }
                Rule::EndIf => {}
                Rule::Match { re, negate: true, result } => {
                    if !re.is_match(key) {
                        return Ok(Some(literal(result)));
                    }
                }
                Rule::Match { re, negate: false, result } => {
                    if !result.iter().any(|p| matches!(p, Piece::Group(_))) {
                        if re.is_match(key) {
                            return Ok(Some(literal(result)));
                        }
                    } else if let Some(caps) = re.captures(key) {
                        let mut out = String::new();
                        for piece in result {
                            match piece {
                                Piece::Text(t) => out.push_str(t),
                                Piece::Group(n) => out.push_str(caps.get(*n).map_or("", |m| m.as_str())),
                            }
                        }
                        return Ok(Some(out));
                    }
                }
            }
            i += 1;
        }
        Ok(None)
    }

    fn spec(&self) -> &str {
        &self.spec
    }

    fn address_keys(&self) -> bool {
        false
    }

    fn changed(&self) -> bool {
        self.stamp.is_none_or(|s| s.changed(&self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open;
    use crate::testutil::Dir;

    fn table(kind: &str, text: &str) -> Box<dyn Table> {
        let dir = Dir::new();
        let path = dir.write("map", text);
        open(&format!("{kind}:{}", path.display())).unwrap()
    }

    fn error(kind: &str, text: &str) -> String {
        let dir = Dir::new();
        let path = dir.write("map", text);
        let e = open(&format!("{kind}:{}", path.display())).unwrap_err().to_string();
        e.strip_prefix(&path.display().to_string()).map(str::to_string).unwrap_or(e)
    }

    const HEADER_CHECKS: &str = r#"# header_checks style
/^Subject:.*viagra/        REJECT spam
/^Subject: (.*) \[SPAM\]/ PREPEND X-Was: $1 ${1}$$
!/^From:/                  WARN not a From header
"#;

    #[test]
    fn matching_and_substitution() {
        for kind in ["regexp", "pcre"] {
            let t = table(kind, HEADER_CHECKS);
            assert!(!t.address_keys());
            let cases = [
                ("Subject: cheap VIAGRA now", Some("REJECT spam")),
                ("subject: hello [spam]", Some("PREPEND X-Was: hello hello$")),
                ("Received: x", Some("WARN not a From header")),
                ("From: me", None),
            ];
            for (key, want) in cases {
                assert_eq!(t.lookup(key).unwrap().as_deref(), want, "{kind}: {key}");
            }
        }
    }

    #[test]
    fn flags() {
        let t = table("regexp", "/^abc$/i exact-case\n/^ABC$/ any-case\n/a.b/ dot\n/^two$/m lines\n");
        assert_eq!(t.lookup("abc").unwrap().as_deref(), Some("exact-case"));
        assert_eq!(t.lookup("aBc").unwrap().as_deref(), Some("any-case"));
        assert_eq!(t.lookup("a\nb").unwrap().as_deref(), Some("dot"), "POSIX . matches newline");
        assert_eq!(t.lookup("one\ntwo").unwrap().as_deref(), Some("lines"));
        let t = table("regexp", "/^(a\n  b)$/ joined\n");
        assert_eq!(t.lookup("a b").unwrap().as_deref(), Some("joined"), "continuation joins with a space");

        let t = table("pcre", "/a.b/ dot\n/c.d/s dotall\n/^x$/m multi\n/ e f /x verbose\n/^g+/U lazy-$0\n");
        assert_eq!(t.lookup("a\nb").unwrap(), None, "PCRE . stops at newline");
        assert_eq!(t.lookup("c\nd").unwrap().as_deref(), Some("dotall"));
        assert_eq!(t.lookup("w\nx").unwrap().as_deref(), Some("multi"));
        assert_eq!(t.lookup("EF").unwrap().as_deref(), Some("verbose"));
        assert_eq!(t.lookup("ggg").unwrap().as_deref(), Some("lazy-g"));
        let t = table("pcre", "/b/A anchored\n/b/ floating\n");
        assert_eq!(t.lookup("bc").unwrap().as_deref(), Some("anchored"));
        assert_eq!(t.lookup("ab").unwrap().as_deref(), Some("floating"));
        // A verbose-mode comment must not swallow the anchoring group's ")".
        let t = table("pcre", "/b #c/Ax av\n/b/ floating\n");
        assert_eq!(t.lookup("bc").unwrap().as_deref(), Some("av"));
        assert_eq!(t.lookup("ab").unwrap().as_deref(), Some("floating"));
    }

    #[test]
    fn delimiters_and_negation() {
        let t = table("regexp", "%^/usr/% path\n/a\\/b/ slash\n! ! /x/ double-negation\n!/^$/ nonempty\n");
        assert_eq!(t.lookup("/usr/bin").unwrap().as_deref(), Some("path"));
        assert_eq!(t.lookup("a/b").unwrap().as_deref(), Some("slash"));
        assert_eq!(t.lookup("x").unwrap().as_deref(), Some("double-negation"));
        assert_eq!(t.lookup("y").unwrap().as_deref(), Some("nonempty"));
        assert_eq!(t.lookup("").unwrap(), None);
    }

    #[test]
    fn if_endif() {
        let text = "if /@example\\.com$/\n\
                    /^postmaster@/ OK\n\
                    IF !/^admin/\n\
                    /./ REJECT not admin\n\
                    endif\n\
                    /^admin/ DUNNO admin\n\
                    endif\n\
                    /^postmaster@/ REJECT other domain\n";
        let t = table("regexp", text);
        let cases = [
            ("postmaster@example.com", Some("OK")),
            ("user@example.com", Some("REJECT not admin")),
            ("admin@example.com", Some("DUNNO admin")),
            ("postmaster@example.org", Some("REJECT other domain")),
            ("user@example.org", None),
        ];
        for (key, want) in cases {
            assert_eq!(t.lookup(key).unwrap().as_deref(), want, "{key}");
        }
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("regexp", "/ok/ x\n/unclosed x\n", ":2: no closing pattern delimiter \"/\""),
            ("regexp", "/a/\n", ":1: no result after pattern"),
            ("regexp", "/(a)/ $2\n", ":1: replacement index $2 out of range (the pattern has 1 groups)"),
            ("regexp", "/a/ costs $5\n", ":1: replacement index $5 out of range"),
            ("regexp", "/(a)/ $1x\n", ":1: bad replacement \"$1x\""),
            ("regexp", "/(a)/ ${1\n", ":1: missing \"}\""),
            ("regexp", "!/(a)/ $1\n", ":1: $number in the result of a negated pattern"),
            ("regexp", "/a/q x\n", ":1: unknown pattern flag \"q\""),
            ("regexp", "/a/x x\n", ":1: flag \"x\" (POSIX basic regular expressions) is not supported"),
            ("pcre", "/a/m x\n/(?=look)/ x\n", ":2: bad pattern: regex parse error:"),
            ("pcre", "/(a)\\1/ x\n", ":1: bad pattern:"),
            ("regexp", "/a{1000}{1000}/ x\n", ":1: pattern too big"),
            ("regexp", "if /a/\n/b/ x\n", ":1: IF has no matching ENDIF"),
            ("regexp", "/b/ x\nendif\n", ":2: ENDIF without IF"),
            ("regexp", "if /a/ x\nendif\n", ":1: text after IF pattern"),
            ("regexp", "foo /a/ x\n", ":1: unknown command \"foo\""),
            ("regexp", "abc/ x\n", ":1: unknown command \"abc\""),
            ("regexp", "  /a/ x\n", ":1: line starts with whitespace"),
            ("regexp", "!\n", ":1: missing pattern"),
        ];
        for (kind, text, want) in cases {
            let e = error(kind, text);
            assert!(e.starts_with(want), "{text:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn empty_groups_and_dollars() {
        let t = table("pcre", "/^(a)?(b)$/ [$1][$2][$$]\n");
        assert_eq!(t.lookup("b").unwrap().as_deref(), Some("[][b][$]"));
        assert_eq!(t.lookup("ab").unwrap().as_deref(), Some("[a][b][$]"));
        assert_eq!(
            template("x$(1)y", 2).unwrap(),
            vec![Piece::Text("x".into()), Piece::Group(1), Piece::Text("y".into())]
        );
    }
}
