//! `regex_extract(value, pattern, group=0)` and the compiled patterns behind it.
//!
//! Patterns use the `regex` crate's syntax, whose matching time is linear in the input
//! whatever the pattern (no backtracking). Linear is not cheap: extracting a capture group
//! from a long match can take the capture engine nanoseconds per byte *and* per state of the
//! pattern (a 1 MB match of `(?s)^((?:[a-z]{1,20}){1,20})*$` takes seconds). So the match is
//! first found with the regex's DFAs (fast), group 0 is that match, and another group is
//! extracted only when the match's length times the pattern's weight (its NFA states; 1 when
//! the pattern is one-pass, whose captures cost no more than finding) fits the work allowed
//! per call ([`work_limit`], from the render time budget); otherwise the call is a render
//! budget error.
//! A pattern written as a string literal in a template is compiled once, when the config is
//! loaded; an invalid one rejects the config with the field path. A pattern computed at
//! render time is compiled on first use and kept in a bounded cache ([`DYNAMIC_CACHE_SIZE`]
//! entries per config); an invalid computed pattern renders empty. Every pattern is limited to
//! [`REGEX_SIZE_LIMIT`] bytes of compiled program.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use std::time::Duration;

use regex::{Regex, RegexBuilder};
use regex_automata::dfa::onepass;
use regex_automata::nfa::thompson;

/// Compiled size limit of one pattern (`RegexBuilder::size_limit`).
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Lazy DFA cache limit of one pattern (`RegexBuilder::dfa_size_limit`).
pub const REGEX_DFA_SIZE_LIMIT: usize = 1024 * 1024;
/// Computed patterns kept per config; when full the cache starts over.
pub const DYNAMIC_CACHE_SIZE: usize = 64;

/// Capture work units (match bytes times pattern states) allowed per millisecond of the render
/// time budget: the slowest capture extraction measured runs at about 7 ns per unit.
pub const CAPTURE_UNITS_PER_MS: u64 = 140_000;

/// The capture work one `regex_extract` call may do under a render time budget of `time`.
pub fn work_limit(time: Duration) -> u64 {
    u64::try_from(time.as_millis())
        .unwrap_or(u64::MAX)
        .saturating_mul(CAPTURE_UNITS_PER_MS)
}

/// A compiled pattern and what extracting a capture group costs per byte of the match.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub regex: Regex,
    /// Work units per byte of the match: 1 for a one-pass pattern, else its NFA states.
    pub capture_weight: u64,
}

/// Compiles `pattern` with the project's limits.
pub fn compile(pattern: &str) -> Result<Pattern, regex::Error> {
    let regex = RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_DFA_SIZE_LIMIT)
        .build()?;
    let nfa = thompson::Compiler::new()
        .configure(thompson::Config::new().nfa_size_limit(Some(REGEX_SIZE_LIMIT)))
        .build(pattern);
    let capture_weight = match nfa {
        Ok(nfa) if onepass::DFA::new_from_nfa(nfa.clone()).is_ok() => 1,
        Ok(nfa) => nfa.states().len() as u64,
        // The regex compiled within the same limit, so this does not happen; be expensive.
        Err(_) => REGEX_SIZE_LIMIT as u64,
    };
    Ok(Pattern {
        regex,
        capture_weight,
    })
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

/// A capture extraction that would cost more than the work allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverBudget {
    pub match_len: usize,
    pub units: u64,
    pub limit: u64,
}

/// The text of `group` in the first match of `p` in `value`, or empty (no match, no such
/// group, or the group did not take part in the match); an error when extracting the group
/// would cost more than `limit` units.
pub fn extract(
    p: &Pattern,
    value: &str,
    group: &Group<'_>,
    limit: u64,
) -> Result<String, OverBudget> {
    // The common case, a value whose whole length fits the work: one search, as before.
    if (value.len() as u64).saturating_mul(p.capture_weight) > limit {
        let Some(m) = p.regex.find(value) else {
            return Ok(String::new());
        };
        if *group == Group::Index(0) {
            return Ok(m.as_str().to_owned());
        }
        let units = (m.len() as u64).saturating_mul(p.capture_weight);
        if units > limit {
            return Err(OverBudget {
                match_len: m.len(),
                units,
                limit,
            });
        }
    }
    let Some(caps) = p.regex.captures(value) else {
        return Ok(String::new());
    };
    let m = match group {
        Group::Index(i) => caps.get(*i),
        Group::Name(n) => caps.name(n),
    };
    Ok(m.map(|m| m.as_str().to_owned()).unwrap_or_default())
}

/// The patterns of one config: the literal ones (filled once at load time) and a bounded
/// cache of computed ones.
#[derive(Debug, Default)]
pub struct Patterns {
    literal: OnceLock<HashMap<String, Pattern>>,
    dynamic: Mutex<HashMap<String, Option<Pattern>>>,
}

impl Patterns {
    /// Installs the literal patterns compiled at load time (once).
    pub fn set_literal(&self, map: HashMap<String, Pattern>) {
        let _ = self.literal.set(map);
    }

    /// Runs `f` with the compiled `pattern`, or returns `None` for an invalid one.
    pub fn with<R>(&self, pattern: &str, f: impl FnOnce(&Pattern) -> R) -> Option<R> {
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

    fn extract(p: &Pattern, value: &str, group: &Group<'_>) -> String {
        super::extract(p, value, group, u64::MAX).unwrap()
    }

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
            p.with("lit", |r| r.regex.as_str().to_owned()).as_deref(),
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

#[cfg(test)]
mod capture_budget {
    use super::*;

    #[test]
    fn a_costly_capture_is_refused_and_group_zero_is_the_match() {
        // The issue's pattern: a 1 MB match made the capture engine run for seconds.
        let p = compile(r"(?s)^((?:[a-z]{1,20}){1,20})*$").unwrap();
        assert!(p.capture_weight > 100, "{}", p.capture_weight);
        let body = "a".repeat(1_000_000);
        let limit = work_limit(DEFAULT_TIME);
        let started = std::time::Instant::now();
        let err = extract(&p, &body, &Group::Index(1), limit).unwrap_err();
        assert_eq!(err.match_len, 1_000_000);
        assert!(err.units > limit);
        assert_eq!(
            extract(&p, &body, &Group::Index(0), limit).unwrap().len(),
            1_000_000
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // A short match of the same pattern is extracted.
        assert_eq!(extract(&p, "abc", &Group::Index(1), limit).unwrap(), "abc");
    }

    #[test]
    fn one_pass_patterns_capture_over_long_matches() {
        let p = compile(r"(?s)^(.*)$").unwrap();
        assert_eq!(p.capture_weight, 1);
        let body = "x".repeat(1_000_000);
        let got = extract(&p, &body, &Group::Index(1), work_limit(DEFAULT_TIME)).unwrap();
        assert_eq!(got.len(), 1_000_000);
    }

    const DEFAULT_TIME: std::time::Duration = crate::template::DEFAULT_RENDER_TIME;
}
