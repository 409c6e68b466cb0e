//! rpost(5): every main.cf parameter the registry knows, with its default and description,
//! rendered as a roff man page (the postconf(5) of rpost). Generated at package build time by
//! `rmaster gen-man DIR`, so the page cannot drift from `rmaster conf -d`.

use std::fmt::Write as _;

use rpost_config::registry::PARAMS;

/// Escapes text for roff: backslashes, hyphens, and a leading `.` or `'` (control lines).
pub fn roff_escape(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => s.push_str("\\e"),
            '-' => s.push_str("\\-"),
            '\n' | '\r' => s.push(' '),
            c => s.push(c),
        }
    }
    if s.starts_with(['.', '\'']) {
        s.insert_str(0, "\\&");
    }
    s
}

/// The rpost(5) page. `version` goes into the title line (no date: reproducible builds).
pub fn rpost_5(version: &str) -> String {
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(w, ".TH RPOST 5 \"\" \"rpost {}\" \"File Formats Manual\"", roff_escape(version));
    let _ = writeln!(w, ".SH NAME\nrpost \\- rpost main.cf configuration parameters");
    let _ = writeln!(
        w,
        ".SH SYNOPSIS\n.B rmaster conf \\-d\n.br\n.B rmaster conf \\-n\n.br\n.B rmaster conf \\-e \"name = value\""
    );
    let _ = writeln!(
        w,
        ".SH DESCRIPTION\n\
The file /etc/rpost/main.cf holds rpost's parameters in Postfix main.cf syntax: one\n\
.I name = value\n\
per line, continued on lines that start with white space, with\n\
.B #\n\
comments. A value may name other parameters as $name, ${{name}} or $(name); they are\n\
expanded when the value is used. Mailbox\\-side settings use Dovecot's names in the same file.\n\
.PP\n\
After editing, run\n\
.B rmaster check\n\
and\n\
.BR \"rmaster reload\" .\n\
.PP\n\
This page lists every parameter rpost knows ({} of them), with its built\\-in default as\n\
.B rmaster conf \\-d\n\
prints it. Descriptions marked Dovecot: are mailbox\\-side settings; rpost: marks parameters\n\
of rpost's own.",
        PARAMS.len()
    );
    let _ = writeln!(w, ".SH PARAMETERS");
    for p in PARAMS {
        let _ = writeln!(w, ".TP\n.B {}", roff_escape(p.name));
        let default = if p.default.is_empty() { "(empty)".to_string() } else { p.default.to_string() };
        let _ = writeln!(w, "{}\n.br", roff_escape(p.doc));
        let _ = writeln!(w, "Type: {}. Default: \\fB{}\\fR", roff_escape(&p.ty.to_string()), roff_escape(&default));
    }
    let _ = writeln!(w, ".SH FILES\n/etc/rpost/main.cf, /etc/rpost/master.cf");
    let _ = writeln!(w, ".SH SEE ALSO\n.BR rmaster (8),\n.BR postconf (5)");
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_is_documented() {
        let page = rpost_5("0.1.0");
        for p in PARAMS {
            assert!(page.contains(&format!(".B {}\n", roff_escape(p.name))), "{} missing", p.name);
        }
        // No line a roff reader would take as a control line by accident.
        for l in page.lines() {
            assert!(!l.starts_with('\''), "{l}");
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(roff_escape(".x-y\\z"), "\\&.x\\-y\\ez");
        assert_eq!(roff_escape("'a"), "\\&'a");
    }
}
