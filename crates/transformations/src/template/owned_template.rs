//! One compiled template ([`OwnedTemplate`]): its source, the MiniJinja template that borrows
//! it, and what it reads ([`TemplateReads`]), worked out from the parse tree of its one compile.
//! Live templates are interned, so the same policy on many routes compiles once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use foldhash::quality::RandomState;
use minijinja::machinery::{ast, with_parse_tree_visitor};
use minijinja::{Environment, Template};
use smallvec::SmallVec;

use super::analysis::{self, Analysis};
use super::context::OP_FN;
use super::environment::global_names;
use super::extensions::CallFact;
use super::limits::{Limits, budget_message, metered};
use super::usage::HeaderNeeds;

/// What a compiled template borrows: the shared environment and its own name and source.
pub(crate) struct TemplateSource {
    env: Arc<Environment<'static>>,
    /// The one copy of each: MiniJinja's compiled template points into them.
    name: Box<str>,
    source: Box<str>,
    /// Worked out once, from the parse tree the compile built, and shared by every value that
    /// shares the template.
    reads: OnceLock<TemplateReads>,
}

/// What a template reads, worked out from its parse tree once and shared by every value that
/// shares the template.
#[derive(Debug, Default)]
pub(crate) struct TemplateReads {
    /// Every name its code refers to (functions, JSON keys, its own variables; not the hidden
    /// operator function), sorted.
    pub variables: Box<[String]>,
    /// Those that are neither functions nor set inside the template, sorted.
    pub undeclared: Box<[String]>,
    /// Whether it calls the hidden operator function.
    pub calls_operators: bool,
    /// `include`, `import` or `extends`.
    pub pulls_in_templates: bool,
    /// The headers it reads, then what the calls of our own functions tell (in order): one list,
    /// as a template lives as long as its config, on every route that has it.
    pub reads: Box<[Read]>,
}

/// One thing a template reads beyond its variables.
#[derive(Debug)]
pub(crate) enum Read {
    /// `header("x")`, the name lowercased.
    Header(Box<str>),
    /// `request_header("x")` (or `cookie` for the cookie functions, `:path` for `query_param`).
    RequestHeader(Box<str>),
    /// `header()` with a computed name: every header.
    EveryHeader,
    /// `request_header()` with a computed name: every request header.
    EveryRequestHeader,
    /// A call of one of our functions.
    Call(CallFact),
}

impl Read {
    fn headers(needs: &HeaderNeeds, every: Read, one: fn(Box<str>) -> Read) -> Vec<Read> {
        if needs.all() {
            vec![every]
        } else {
            needs.names().map(|n| one(n.into())).collect()
        }
    }
}

impl TemplateReads {
    /// From the analysis of its parse tree; where there is none (never, for a template that
    /// compiled), from MiniJinja's own `undeclared_variables`, reading every header and the
    /// whole body.
    fn new(template: &OwnedTemplate, analysis: Option<Analysis>) -> TemplateReads {
        let analysis = analysis.unwrap_or_else(|| {
            let undeclared = template.with_dependent(|_, t| t.undeclared_variables(false));
            let mut all = HeaderNeeds::default();
            all.set_all();
            Analysis {
                referenced: undeclared.iter().cloned().collect(),
                undeclared,
                header_fn: all.clone(),
                request_header_fn: all,
                pulls_in_templates: true,
                extension_calls: Vec::new(),
            }
        });
        // What kgateway's module checks before rendering: MiniJinja's undeclared variables. They
        // decide the 400 of a value that reads JSON variables without a parsed JSON body, so
        // they stay exactly kgateway's (a name used only as a slice target is not among them).
        let globals = global_names(&template.borrow_owner().env);
        let mut undeclared: Vec<String> = analysis
            .undeclared
            .iter()
            .filter(|n| *n != OP_FN && !globals.contains(n.as_str()))
            .cloned()
            .collect();
        undeclared.sort();
        let mut reads = Read::headers(&analysis.header_fn, Read::EveryHeader, Read::Header);
        reads.extend(Read::headers(
            &analysis.request_header_fn,
            Read::EveryRequestHeader,
            Read::RequestHeader,
        ));
        reads.extend(analysis.extension_calls.into_iter().map(Read::Call));
        // What the template may read: every name its code refers to, wherever it stands (a
        // slice target too).
        TemplateReads {
            calls_operators: analysis.referenced.contains(OP_FN),
            variables: analysis
                .referenced
                .into_iter()
                .filter(|n| n != OP_FN)
                .collect(),
            undeclared: undeclared.into(),
            pulls_in_templates: analysis.pulls_in_templates,
            reads: reads.into(),
        }
    }
}

type BorrowedTemplate<'a> = Template<'a, 'a>;

self_cell::self_cell!(
    /// One compiled template, owned by the value it belongs to: the shared environment holds no
    /// per-config template, so dropping a config frees its templates.
    pub(crate) struct OwnedTemplate {
        owner: TemplateSource,
        #[not_covariant]
        dependent: BorrowedTemplate,
    }
);

impl fmt::Debug for OwnedTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("OwnedTemplate")
            .field(&self.borrow_owner().name)
            .finish()
    }
}

impl OwnedTemplate {
    /// What the template reads.
    pub(crate) fn reads(&self) -> &TemplateReads {
        let source = self.borrow_owner();
        // Set when it compiled; worked out again only for a tree MiniJinja did not show us.
        source.reads.get_or_init(|| {
            let analysis = analysis::of_source(&source.source);
            TemplateReads::new(self, analysis)
        })
    }

    /// The compiled template for `name` and `source` in `env`: shared with every live config
    /// that compiled the same template (the same policy on many routes compiles it once).
    /// MiniJinja 2.12 reserves room for 128 instructions, line and span entries in every
    /// compiled template (about 9 KiB, never shrunk), so sharing is what keeps 10,000 routes
    /// with one policy small. A template is immutable and reads its config's state from the
    /// render context, so sharing it is invisible; the last config dropped frees it.
    pub(crate) fn compile(
        env: Arc<Environment<'static>>,
        name: String,
        source: String,
        limits: &Limits,
    ) -> Result<Arc<OwnedTemplate>, CompileError> {
        /// The live templates by the hash of (environment, name, source), each bucket checked
        /// against the templates' own name and source (so the table keeps no copy of either),
        /// and the size at which the dead ones are next forgotten.
        struct Interned {
            hasher: RandomState,
            live: HashMap<u64, SmallVec<[Weak<OwnedTemplate>; 1]>>,
            prune_at: usize,
        }
        static INTERNED: Mutex<Option<Interned>> = Mutex::new(None);
        let env_id = Arc::as_ptr(&env) as usize;
        let mut guard = INTERNED.lock().unwrap_or_else(|e| e.into_inner());
        let interned = guard.get_or_insert_with(|| Interned {
            hasher: RandomState::default(),
            live: HashMap::new(),
            prune_at: 64,
        });
        let hash = interned
            .hasher
            .hash_one((env_id, name.as_str(), source.as_str()));
        let same = |t: &OwnedTemplate| {
            let o = t.borrow_owner();
            Arc::as_ptr(&o.env) as usize == env_id && *o.name == *name && *o.source == *source
        };
        if let Some(bucket) = interned.live.get(&hash) {
            for weak in bucket {
                if let Some(template) = weak.upgrade()
                    && same(&template)
                {
                    return Ok(template);
                }
            }
        }
        // MiniJinja folds constant expressions while it compiles (`"a" * 1000000000` is built
        // here): the fold runs under the render budget, and a template whose constant parts
        // do not fit is refused.
        // The compile shows us its parse tree: what the template reads is read from it.
        let seen: Rc<RefCell<Option<Analysis>>> = Rc::default();
        let sink = seen.clone();
        let visitor = Box::new(move |tree: &ast::Stmt<'_>| {
            *sink.borrow_mut() = Some(analysis::of_tree(tree));
        });
        let (template, meter) = metered(limits.meter(), || {
            with_parse_tree_visitor(visitor, || {
                OwnedTemplate::try_new(
                    TemplateSource {
                        env,
                        name: name.into_boxed_str(),
                        source: source.into_boxed_str(),
                        reads: OnceLock::new(),
                    },
                    |o| {
                        let env: &Environment<'_> = &o.env;
                        env.template_from_named_str(&o.name, &o.source)
                    },
                )
            })
        });
        if let Some(why) = meter.tripped {
            return Err(CompileError::Budget(budget_message(why, limits)));
        }
        let template = Arc::new(template.map_err(CompileError::Template)?);
        let reads = TemplateReads::new(&template, seen.take());
        // Nothing else has seen this template yet.
        let _ = template.borrow_owner().reads.set(reads);
        if interned.live.len() >= interned.prune_at {
            // Forget the templates no config holds any more; grow the threshold with the live set.
            interned.live.retain(|_, bucket| {
                bucket.retain(|t| t.strong_count() > 0);
                !bucket.is_empty()
            });
            interned.live.shrink_to_fit();
            interned.prune_at = (interned.live.len() * 2).max(64);
        }
        let bucket = interned.live.entry(hash).or_default();
        bucket.retain(|t| t.strong_count() > 0);
        bucket.push(Arc::downgrade(&template));
        Ok(template)
    }
}

/// Why a template was refused.
pub(crate) enum CompileError {
    Template(minijinja::Error),
    /// Its constant parts blow the render budget (the message says which part).
    Budget(String),
}
