//! Asking the terminal whether its kitty graphics can show images through Unicode placeholders,
//! the only way ratatui-image places kitty images (the `U=1` key, kitty 0.28 and later). Older
//! kittys reject every image and show rows of placeholder glyphs instead.

use std::io::{self, Write};
use std::time::{Duration, Instant};

/// XTVERSION (the terminal's name and version), a kitty graphics query carrying `U=1` (answered
/// only by a parser that knows the key), and a status report that every terminal answers last.
const QUERY: &str = "\x1b[>0q\x1b_Gi=31,s=1,v=1,a=q,t=d,f=24,U=1;AAAA\x1b\\\x1b[5n";

/// The first kitty that knows Unicode placeholders.
const FIRST_WITH_PLACEHOLDERS: (u32, u32) = (0, 28);

/// What the terminal answered.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The XTVERSION reply, as "kitty(0.26.5)".
    pub version: Option<String>,
    /// Whether it accepted the query with the placeholder key.
    pub placeholder_query_ok: bool,
}

impl Answer {
    /// Placeholders work: the query with `U=1` was accepted, and the terminal is no kitty older
    /// than 0.28 (named by XTVERSION).
    pub fn placeholders(&self) -> bool {
        self.placeholder_query_ok && !self.version.as_deref().is_some_and(old_kitty)
    }

    /// The terminal as it names itself, for the log.
    pub fn terminal(&self) -> &str {
        self.version.as_deref().unwrap_or("the terminal")
    }
}

/// Asks the terminal, waiting at most `timeout` for the whole answer. Call in raw mode, before
/// anything else reads the terminal's input.
pub fn ask(timeout: Duration) -> Answer {
    parse(&exchange(QUERY, timeout))
}

/// Reads what the terminal says to the query: the replies in the order given.
pub fn parse(reply: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(reply);
    let version = between(&text, "\x1bP>|", "\x1b\\").map(str::to_string);
    let placeholder_query_ok = between(&text, "\x1b_Gi=31;", "\x1b\\") == Some("OK");
    Answer {
        version,
        placeholder_query_ok,
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

/// "kitty(0.26.5)" or "kitty 0.26.5" older than 0.28.
fn old_kitty(version: &str) -> bool {
    let Some(rest) = version.strip_prefix("kitty") else {
        return false;
    };
    let mut numbers = rest
        .trim_start_matches(['(', ' '])
        .split(|c: char| !c.is_ascii_digit())
        .map(str::parse::<u32>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(major)), Some(Ok(minor))) => (major, minor) < FIRST_WITH_PLACEHOLDERS,
        _ => false,
    }
}

/// Writes `query` and reads the reply until the status report arrives or `timeout` passes. Reads
/// only what is there, so nothing is left waiting on the input afterwards.
fn exchange(query: &str, timeout: Duration) -> Vec<u8> {
    let mut out = io::stdout();
    if out
        .write_all(query.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return Vec::new();
    }
    let deadline = Instant::now() + timeout;
    let mut reply = Vec::new();
    while !status_seen(&reply) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !stdin_readable(left) {
            break;
        }
        let mut chunk = [0u8; 256];
        let n = read_stdin(&mut chunk);
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
    }
    reply
}

/// The device status report's answer ("ok" or "malfunction").
fn status_seen(reply: &[u8]) -> bool {
    reply.windows(4).any(|w| w == b"\x1b[0n" || w == b"\x1b[3n")
}

fn stdin_readable(within: Duration) -> bool {
    let mut fd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(within.as_millis()).unwrap_or(i32::MAX).max(1);
    // SAFETY: one valid pollfd that lives through the call.
    let ready = unsafe { libc::poll(&mut fd, 1, ms) };
    ready > 0 && fd.revents & libc::POLLIN != 0
}

fn read_stdin(buf: &mut [u8]) -> usize {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
    let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
    usize::try_from(n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kitty_0_26_ignores_the_placeholder_query() {
        // What Debian 12's kitty answers.
        let a = parse(b"\x1bP>|kitty(0.26.5)\x1b\\\x1b[0n");
        assert_eq!(a.version.as_deref(), Some("kitty(0.26.5)"));
        assert!(!a.placeholder_query_ok);
        assert!(!a.placeholders());
    }

    #[test]
    fn a_newer_kitty_has_placeholders() {
        let a = parse(b"\x1bP>|kitty(0.35.2)\x1b\\\x1b_Gi=31;OK\x1b\\\x1b[0n");
        assert!(a.placeholders(), "{a:?}");
    }

    #[test]
    fn an_old_kitty_that_says_ok_is_still_old() {
        let a = parse(b"\x1bP>|kitty(0.27.1)\x1b\\\x1b_Gi=31;OK\x1b\\\x1b[0n");
        assert!(!a.placeholders());
    }

    #[test]
    fn other_terminals_go_by_their_answer() {
        assert!(parse(b"\x1bP>|ghostty 1.1.3\x1b\\\x1b_Gi=31;OK\x1b\\\x1b[0n").placeholders());
        assert!(!parse(b"\x1b_Gi=31;EINVAL:bad key\x1b\\\x1b[0n").placeholders());
        assert!(!parse(b"").placeholders());
    }

    #[test]
    fn versions() {
        assert!(old_kitty("kitty(0.26.5)"));
        assert!(old_kitty("kitty 0.9.0"));
        assert!(!old_kitty("kitty(0.28.0)"));
        assert!(!old_kitty("kitty(1.0.0)"));
        assert!(!old_kitty("kitty"));
        assert!(!old_kitty("XTerm(379)"));
    }
}
