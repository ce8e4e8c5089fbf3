//! `regex_extract(value, pattern, group=0)` and the compiled patterns behind it.
//!
//! Patterns use the `regex` crate's syntax, whose matching time is linear in the input
//! whatever the pattern (no backtracking), so a hostile value cannot stall a worker.
//! A pattern written as a string literal in a template is compiled once, when the config is
//! loaded; an invalid one rejects the config with the field path. A pattern computed at
//! render time is compiled on first use and kept in a bounded cache ([`DYNAMIC_CACHE_SIZE`]
//! entries per config); an invalid computed pattern renders empty. Every pattern is limited to
//! [`REGEX_SIZE_LIMIT`] bytes of compiled program.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use regex::{Regex, RegexBuilder};

/// Compiled size limit of one pattern (`RegexBuilder::size_limit`).
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Lazy DFA cache limit of one pattern (`RegexBuilder::dfa_size_limit`).
pub const REGEX_DFA_SIZE_LIMIT: usize = 1024 * 1024;
/// Computed patterns kept per config; when full the cache starts over.
pub const DYNAMIC_CACHE_SIZE: usize = 64;

/// Compiles `pattern` with the project's limits.
pub fn compile(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .build()
}

/// A regex error on one line: a syntax error's own multi-line drawing reduced to its last
/// line (`error: unclosed group`), so a config rejection stays one log line.
pub fn describe(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Which capture group to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Group<'a> {
    Index(usize),
    Name(&'a str),
}

/// The text of `group` in the first match of `re` in `value`, or empty (no match, no such
/// group, or the group did not take part in the match).
pub fn extract(re: &Regex, value: &str, group: &Group<'_>) -> String {
    let Some(caps) = re.captures(value) else {
        return String::new();
    };
    let m = match group {
        Group::Index(i) => caps.get(*i),
        Group::Name(n) => caps.name(n),
    };
    m.map(|m| m.as_str().to_owned()).unwrap_or_default()
}

/// The patterns of one config: the literal ones (filled once at load time) and a bounded
/// cache of computed ones.
#[derive(Debug, Default)]
pub struct Patterns {
    literal: OnceLock<HashMap<String, Regex>>,
    dynamic: Mutex<HashMap<String, Option<Regex>>>,
}

impl Patterns {
    /// Installs the literal patterns compiled at load time (once).
    pub fn set_literal(&self, map: HashMap<String, Regex>) {
        let _ = self.literal.set(map);
    }

    /// Runs `f` with the compiled `pattern`, or returns `None` for an invalid one.
    pub fn with<R>(&self, pattern: &str, f: impl FnOnce(&Regex) -> R) -> Option<R> {
        if let Some(re) = self.literal.get().and_then(|m| m.get(pattern)) {
            return Some(f(re));
        }
        let mut cache = self.dynamic.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.contains_key(pattern) {
            if cache.len() >= DYNAMIC_CACHE_SIZE {
                cache.clear();
            }
            cache.insert(pattern.to_owned(), compile(pattern).ok());
        }
        // Cloning a Regex is cheap (shared program); matching runs outside the lock.
        let re = cache.get(pattern).cloned().flatten();
        drop(cache);
        re.as_ref().map(f)
    }

    /// How many computed patterns are cached (for tests).
    pub fn dynamic_len(&self) -> usize {
        self.dynamic.lock().map(|c| c.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_groups() {
        let re = compile(r"user=(?P<id>[0-9]+)(-(x))?").unwrap();
        assert_eq!(extract(&re, "a user=42 b", &Group::Index(0)), "user=42");
        assert_eq!(extract(&re, "a user=42 b", &Group::Index(1)), "42");
        assert_eq!(extract(&re, "a user=42 b", &Group::Name("id")), "42");
        assert_eq!(
            extract(&re, "user=42", &Group::Index(3)),
            "",
            "did not participate"
        );
        assert_eq!(
            extract(&re, "user=42", &Group::Index(9)),
            "",
            "no such group"
        );
        assert_eq!(extract(&re, "user=42", &Group::Name("nope")), "");
        assert_eq!(extract(&re, "nothing", &Group::Index(0)), "", "no match");
        assert_eq!(
            extract(&re, "user=1 user=2", &Group::Index(1)),
            "1",
            "first match"
        );
    }

    #[test]
    fn size_limit_refuses_huge_programs() {
        assert!(compile("[a-z]{1,100}{1,100}").is_err());
        assert_eq!(describe(&compile("(").unwrap_err()), "unclosed group");
        let big = describe(&compile("[a-z]{1,100}{1,100}").unwrap_err());
        assert!(big.contains("size limit") && !big.contains('\n'), "{big}");
        assert!(compile(r"\w+@\w+").is_ok());
    }

    #[test]
    fn hostile_input_is_linear() {
        // Catastrophic for a backtracking engine, linear here.
        let re = compile("(a+)+$").unwrap();
        let input = format!("{}!", "a".repeat(100_000));
        assert_eq!(extract(&re, &input, &Group::Index(0)), "");
    }

    #[test]
    fn computed_patterns_are_cached_and_bounded() {
        let p = Patterns::default();
        p.set_literal(HashMap::from([("lit".to_owned(), compile("lit").unwrap())]));
        assert_eq!(
            p.with("lit", |r| r.as_str().to_owned()).as_deref(),
            Some("lit")
        );
        assert_eq!(p.dynamic_len(), 0, "literal patterns are not in the cache");
        assert!(p.with("(", |_| ()).is_none(), "invalid computed pattern");
        for i in 0..DYNAMIC_CACHE_SIZE + 10 {
            assert!(p.with(&format!("x{i}"), |_| ()).is_some());
            assert!(p.dynamic_len() <= DYNAMIC_CACHE_SIZE);
        }
    }
}
