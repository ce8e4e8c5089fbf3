//! Values compiled once for every config that holds them.
//!
//! Routes with distinct policies still share most of their values: a policy copied to 100,000
//! routes with the route's name inside one template has every other value in common. A value's
//! compiled form and what it reads depend only on its text, its field path (its template's name)
//! and the compiler's mode, so the compiler looks a value up here before compiling it. The
//! cache is bounded (it forgets everything when full) and keeps no template alive: a compiled
//! template is held weakly and compiled again once no config holds it.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::error::Error;

use super::compiled::Compiled;
use super::compiler::{Compiler, CompilerMode};
use super::extensions::CallFact;
use super::owned_template::{OwnedTemplate, Read};
use super::usage::Usage;

/// Entries kept before the cache forgets them all.
const CAPACITY: usize = 1024;

/// Longer values are compiled every time: the cache keeps each value's text, so this bounds it
/// (with [`CAPACITY`]) to a few MiB, and a value this long is rarely copied onto many routes.
const MAX_VALUE_BYTES: usize = 4096;

/// A compiled value, without holding a template alive.
enum Held {
    Complete(Compiled),
    Template(Weak<OwnedTemplate>),
}

/// A value compiled in one mode, with everything its compile depended on.
struct Entry {
    mode: CompilerMode,
    field: Box<str>,
    value: Box<str>,
    compiled: Held,
    /// What the value reads, merged into its side's usage.
    usage: Usage,
}

/// Entries by the hash of their mode, field and value; a lookup borrows its key.
type Table = HashMap<u64, Vec<Entry>>;

static CACHE: Mutex<Option<Table>> = Mutex::new(None);

fn hash(mode: &CompilerMode, field: &str, value: &str) -> u64 {
    static HASHER: OnceLock<foldhash::quality::RandomState> = OnceLock::new();
    HASHER
        .get_or_init(Default::default)
        .hash_one((mode, field, value))
}

/// Whether compiling this value leaves state in its config beyond the value itself: a literal
/// `regex_extract` pattern compiled at load, or a `metadata()` key read per request. Another
/// config taking the value from the cache would miss them, so such values are compiled every
/// time.
fn leaves_config_state(compiled: &Compiled) -> bool {
    let Compiled::Template { template } = compiled else {
        return false;
    };
    template.reads().reads.iter().any(|read| {
        matches!(
            read,
            Read::Call(CallFact::LiteralPattern(_) | CallFact::Metadata(_))
        )
    })
}

/// [`Compiler::compile`], through the cache.
pub(crate) fn compile(
    compiler: &mut Compiler,
    value: &str,
    field: &str,
    usage: &mut Usage,
) -> Result<Compiled, Error> {
    if value.len() > MAX_VALUE_BYTES {
        return compiler.compile(value, field, usage);
    }
    let mode = compiler.mode();
    let hash = hash(&mode, field, value);
    if let Some(compiled) = lookup(hash, &mode, field, value, usage) {
        return Ok(compiled);
    }
    let operators_before = compiler.operator_count();
    let mut used = Usage::default();
    let compiled = compiler.compile(value, field, &mut used)?;
    usage.merge(&used);
    // A value with command operators inside a template refers to them by their index in this
    // config's table: it belongs to this config alone.
    if compiler.operator_count() == operators_before && !leaves_config_state(&compiled) {
        let held = match &compiled {
            Compiled::Template { template } => Held::Template(Arc::downgrade(template)),
            other => Held::Complete(other.clone()),
        };
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        let table = cache.get_or_insert_with(Table::default);
        if table.len() >= CAPACITY {
            table.clear();
        }
        let bucket = table.entry(hash).or_default();
        bucket.retain(|e| !(e.mode == mode && *e.field == *field && *e.value == *value));
        bucket.push(Entry {
            mode,
            field: field.into(),
            value: value.into(),
            compiled: held,
            usage: used,
        });
    }
    Ok(compiled)
}

/// The cached value, its usage merged into `usage`.
fn lookup(
    hash: u64,
    mode: &CompilerMode,
    field: &str,
    value: &str,
    usage: &mut Usage,
) -> Option<Compiled> {
    let cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    let entry = cache
        .as_ref()?
        .get(&hash)?
        .iter()
        .find(|e| e.mode == *mode && *e.field == *field && *e.value == *value)?;
    let compiled = match &entry.compiled {
        Held::Complete(compiled) => compiled.clone(),
        Held::Template(template) => Compiled::Template {
            template: template.upgrade()?,
        },
    };
    usage.merge(&entry.usage);
    Some(compiled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::Options;

    fn compile_in(compiler: &mut Compiler, value: &str) -> Compiled {
        compile(
            compiler,
            value,
            "request.set[7].value",
            &mut Usage::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_cached_template_is_shared_while_a_config_holds_it_and_compiled_again_after() {
        let value = "{{ 'held weakly' ~ header('x-weak-probe') }}";
        let options = Options::default();
        let mut compiler = Compiler::new(&options);
        let first = compile_in(&mut compiler, value);
        let Compiled::Template { template } = &first else {
            panic!("a template")
        };
        let again = compile_in(&mut Compiler::new(&options), value);
        let Compiled::Template { template: shared } = &again else {
            panic!("a template")
        };
        assert!(Arc::ptr_eq(template, shared));
        let weak = Arc::downgrade(template);
        drop((first, again));
        assert!(
            weak.upgrade().is_none(),
            "the cache keeps no template alive"
        );
        assert!(matches!(
            compile_in(&mut Compiler::new(&options), value),
            Compiled::Template { .. }
        ));
    }

    /// Whether `value`, just compiled, was kept in the cache.
    fn cached(value: &str) -> bool {
        let options = Options::default();
        // Held while looking: the cache keeps templates only while a config holds them.
        let _held = compile_in(&mut Compiler::new(&options), value);
        let mode = Compiler::new(&options).mode();
        let field = "request.set[7].value";
        lookup(
            hash(&mode, field, value),
            &mode,
            field,
            value,
            &mut Usage::default(),
        )
        .is_some()
    }

    #[test]
    fn long_values_and_values_leaving_config_state_are_not_cached() {
        assert!(cached("{{ header('x-cache-probe') ~ 'kept' }}"));
        assert!(!cached(&format!(
            "{{{{ 'x' }}}}{}",
            "y".repeat(MAX_VALUE_BYTES)
        )));
        assert!(!cached("{{ regex_extract(header('x'), 'a(b)', 1) }}"));
        assert!(!cached("{{ metadata('ns', 'cache-probe') }}"));
        // Only a literal pattern is config state; a computed one is not.
        assert!(cached("{{ regex_extract(header('x'), header('p'), 1) }}"));
    }
}
