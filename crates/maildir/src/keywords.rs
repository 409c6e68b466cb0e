//! `dovecot-keywords`: the IMAP keywords behind the letters `a`..`z` of Maildir file names.
//!
//! ```text
//! 0 $Junk
//! 1 $NonJunk
//! ```
//! Index 0 is letter `a`, 1 is `b`, and so on; at most 26 keywords fit in file names.

use std::io::{self, Read};

use crate::MaildirError;
use crate::dir::Dir;

pub const KEYWORDS_NAME: &str = "dovecot-keywords";
const MAX_KEYWORDS: usize = 26;

/// The keyword table of one mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keywords {
    /// Index = letter - 'a'; `None` for unused slots.
    names: Vec<Option<String>>,
}

impl Keywords {
    /// Parses the file; lines that do not fit (bad index, empty or duplicate name) are
    /// skipped, as Dovecot skips them.
    pub fn parse(text: &str) -> Keywords {
        let mut k = Keywords::default();
        for line in text.lines() {
            let Some((idx, name)) = line.split_once(' ') else { continue };
            let Ok(idx) = idx.parse::<usize>() else { continue };
            if idx >= MAX_KEYWORDS || name.is_empty() || k.letter(name).is_some() {
                continue;
            }
            if k.names.len() <= idx {
                k.names.resize(idx + 1, None);
            }
            k.names[idx] = Some(name.to_string());
        }
        k
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.names.iter().enumerate() {
            if let Some(n) = n {
                out.push_str(&format!("{i} {n}\n"));
            }
        }
        out
    }

    /// The letter of a keyword (IMAP keywords are case-insensitive).
    pub fn letter(&self, keyword: &str) -> Option<char> {
        self.names
            .iter()
            .position(|n| n.as_deref().is_some_and(|n| n.eq_ignore_ascii_case(keyword)))
            .map(|i| (b'a' + i as u8) as char)
    }

    /// The keyword of a letter.
    pub fn keyword(&self, letter: char) -> Option<&str> {
        let i = (letter as u32).checked_sub('a' as u32)? as usize;
        self.names.get(i)?.as_deref()
    }

    /// The letter of `keyword`, adding it in the first free slot; `None` when all 26 are taken
    /// (Dovecot then keeps the keyword in its index only).
    pub fn add(&mut self, keyword: &str) -> Option<char> {
        if let Some(l) = self.letter(keyword) {
            return Some(l);
        }
        if keyword.is_empty() || keyword.chars().any(|c| c.is_control() || c == ' ') {
            return None;
        }
        let i = match self.names.iter().position(Option::is_none) {
            Some(i) => i,
            None if self.names.len() < MAX_KEYWORDS => {
                self.names.push(None);
                self.names.len() - 1
            }
            None => return None,
        };
        self.names[i] = Some(keyword.to_string());
        Some((b'a' + i as u8) as char)
    }
}

pub(crate) fn read(mbox: &Dir) -> Result<Keywords, MaildirError> {
    let path = mbox.path().join(KEYWORDS_NAME);
    match mbox.open_read(KEYWORDS_NAME) {
        Ok(f) => {
            let mut text = String::new();
            f.take(1 << 20).read_to_string(&mut text).map_err(|e| MaildirError::io(path, e))?;
            Ok(Keywords::parse(&text))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Keywords::default()),
        Err(e) => Err(MaildirError::io(path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_file() {
        let k = Keywords::parse("0 $Junk\n1 $NonJunk\n3 $Label1\nx bad\n30 $TooFar\n4 $junk\n");
        assert_eq!(k.letter("$Junk"), Some('a'));
        assert_eq!(k.letter("$nonjunk"), Some('b'));
        assert_eq!(k.keyword('d'), Some("$Label1"));
        assert_eq!(k.keyword('c'), None);
        assert_eq!(k.letter("$TooFar"), None);
        assert_eq!(k.to_text(), "0 $Junk\n1 $NonJunk\n3 $Label1\n");
        let mut k = k;
        assert_eq!(k.add("$Label2"), Some('c'));
        assert_eq!(k.add("$Label3"), Some('e'));
        assert_eq!(k.add("$JUNK"), Some('a'));
        assert_eq!(k.add("bad name"), None);
        for i in 0..30 {
            k.add(&format!("k{i}"));
        }
        assert_eq!(k.letter("k20"), Some('z'));
        assert_eq!(k.add("one-too-many"), None);
    }
}
