//! Compiling values (once, at config time) and rendering them (per request).
//!
//! A value is one of:
//! - empty;
//! - a literal (no Jinja markup, no operator): kept as text and never rendered;
//! - operators and literal text only: concatenated per request, no template engine involved;
//! - a MiniJinja template: every operator in its *text* parts is rewritten at config time into
//!   a call of a hidden function, so the template is still compiled exactly once. Operators
//!   inside `{{ }}` / `{% %}` (e.g. in a string literal) are left to Jinja untouched: use
//!   `request_header()` there.

use foldhash::quality::RandomState;
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;

use smallvec::SmallVec;
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use minijinja::budget::{self, Meter, Tripped};

use minijinja::machinery::{ast, with_parse_tree_visitor};
use minijinja::value::{Object, Value};
use minijinja::{AutoEscape, Environment, State, Template, UndefinedBehavior};

use crate::error::{Error, ErrorKind, WarningKind};
use crate::extensions::{self, MetadataKey};
use crate::functions;
use crate::operators::{self, Operator, OperatorKind, OperatorSource, Segment};
use crate::pattern::Patterns;
use crate::release::KgatewayRelease;

/// Default MiniJinja fuel per rendered value (roughly instructions; data costs about one unit
/// per 64 bytes). Far above what a sane transformation uses, low enough to stop a runaway loop.
pub const DEFAULT_FUEL: u64 = 1_000_000;
/// Default cap on one rendered header or dynamic-metadata value.
pub const MAX_HEADER_VALUE_BYTES: usize = 64 * 1024;
/// Default cap on one rendered body.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Default bytes the templates of one request side (or one value compiled at load time) may
/// produce or copy: strings built by `*`, `~`, `+`, filters, captured output, our functions.
pub const DEFAULT_RENDER_BYTES: u64 = 64 * 1024 * 1024;
/// Default time the templates of one request side (or one value compiled at load time) may run.
pub const DEFAULT_RENDER_TIME: Duration = Duration::from_millis(50);
/// Environment variable setting [`Limits::render_bytes`] (a byte count).
pub const RENDER_BYTES_ENV: &str = "RUSTFORMATION_RENDER_MAX_BYTES";
/// Environment variable setting [`Limits::render_time`] (milliseconds).
pub const RENDER_TIME_ENV: &str = "RUSTFORMATION_RENDER_MAX_MS";

/// The render budget. Exceeding any part of it is a render error for that value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limits {
    pub fuel: u64,
    pub max_header_value_bytes: usize,
    pub max_body_bytes: usize,
    /// Bytes produced or copied per request side by templates (checked before allocating).
    pub render_bytes: u64,
    /// Time per request side spent in templates (checked every 1024 instructions and every
    /// MiB charged, and bounding `regex_extract`).
    pub render_time: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            fuel: DEFAULT_FUEL,
            max_header_value_bytes: MAX_HEADER_VALUE_BYTES,
            max_body_bytes: MAX_BODY_BYTES,
            render_bytes: DEFAULT_RENDER_BYTES,
            render_time: DEFAULT_RENDER_TIME,
        }
    }
}

impl Limits {
    /// The defaults with [`RENDER_BYTES_ENV`] and [`RENDER_TIME_ENV`] applied, read from the
    /// process environment once; an unusable setting is an error naming the variable.
    pub fn from_env() -> Result<Limits, String> {
        static FROM_ENV: OnceLock<Result<Limits, String>> = OnceLock::new();
        FROM_ENV
            .get_or_init(|| Limits::from_lookup(&|n| std::env::var(n).ok()))
            .clone()
    }

    /// The defaults with the two settings read through `lookup`.
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Limits, String> {
        let mut limits = Limits::default();
        let read = |name: &str| -> Result<Option<u64>, String> {
            match lookup(name) {
                None => Ok(None),
                Some(v) if v.trim().is_empty() => Ok(None),
                Some(v) => match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(format!("{name}={v:?} is not a positive integer")),
                },
            }
        };
        if let Some(bytes) = read(RENDER_BYTES_ENV)? {
            limits.render_bytes = bytes;
        }
        if let Some(ms) = read(RENDER_TIME_ENV)? {
            limits.render_time = Duration::from_millis(ms);
        }
        Ok(limits)
    }

    fn meter(&self) -> Meter {
        Meter::new(self.render_bytes, self.render_time)
    }
}

/// How `env(name)` reads the environment.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Compile options.
#[derive(Clone)]
pub struct Options {
    pub limits: Limits,
    /// Defaults to the process environment (Envoy's, when loaded as a module).
    pub env: EnvLookup,
    /// The kgateway release whose semantics the transformation follows (default v2.3).
    pub release: KgatewayRelease,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            limits: Limits::from_env().unwrap_or_default(),
            env: process_env(),
            release: KgatewayRelease::default(),
        }
    }
}

/// The lookup of the process environment: one for the process, so configs compiled with the
/// default options can share their state ([`shared_config_state`]).
fn process_env() -> EnvLookup {
    static PROCESS_ENV: OnceLock<EnvLookup> = OnceLock::new();
    PROCESS_ENV
        .get_or_init(|| Arc::new(|name| std::env::var(name).ok()))
        .clone()
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("limits", &self.limits)
            .field("release", &self.release)
            .finish_non_exhaustive()
    }
}

/// Context key of the per-render data. The dot makes it unreachable as a template variable.
const DATA_KEY: &str = "tx.data";
/// Context key of the config's own state (`env()` lookup, regex patterns), read by the shared
/// environment's functions.
const CONFIG_KEY: &str = "tx.config";
/// Hidden function standing for the operator with the given index.
const OP_FN: &str = "__tx_op";

/// Which headers some values read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderNeeds {
    all: bool,
    /// Sorted and unique; a list rather than a set because it is scanned per request.
    names: Vec<String>,
}

impl HeaderNeeds {
    /// Every header is needed (a header function was called with a computed name).
    pub fn all(&self) -> bool {
        self.all
    }

    /// Lowercased names needed (meaningless when [`all`](Self::all) is true).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        !self.all && self.names.is_empty()
    }

    /// How many names are needed (a capacity hint; 0 when [`all`](Self::all) is true).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub(crate) fn add(&mut self, name: &str) {
        if !self.all {
            let name = name.to_ascii_lowercase();
            if let Err(at) = self.names.binary_search(&name) {
                self.names.insert(at, name);
            }
        }
    }

    /// Gives back the room the list grew into (a config keeps it for its life).
    pub(crate) fn shrink(&mut self) {
        self.names.shrink_to_fit();
    }

    pub(crate) fn set_all(&mut self) {
        self.all = true;
        self.names.clear();
    }

    pub(crate) fn merge(&mut self, other: &HeaderNeeds) {
        if other.all {
            self.set_all();
        } else if !self.all {
            // The other list is lowercased already: copy only the names this one lacks.
            for n in &other.names {
                if let Err(at) = self.names.binary_search(n) {
                    self.names.insert(at, n.clone());
                }
            }
        }
    }
}

/// What a set of values reads at render time.
#[derive(Debug, Clone, Default)]
pub(crate) struct Usage {
    /// `header(name)`.
    pub header_fn: HeaderNeeds,
    /// `request_header(name)`.
    pub request_header_fn: HeaderNeeds,
    /// `%REQ(name)%`.
    pub req_op: HeaderNeeds,
    /// `%RESP(name)%`.
    pub resp_op: HeaderNeeds,
    /// `body()` or `context()`.
    pub body: bool,
    /// Whether something may read the JSON body as a whole (`context()`, `debug()`, another
    /// template pulled in): then the whole body is converted, not only the named keys.
    pub whole_json: bool,
    /// Every top-level name the templates look up: the only JSON keys they can read.
    pub json_names: BTreeSet<String>,
    pub protocol: bool,
    pub start_time: bool,
    pub remote_address: bool,
    /// `metadata(...)` calls: indices into the config's metadata table.
    pub metadata: BTreeSet<usize>,
}

impl Usage {
    /// Drops what this side cannot use and the spare room of what it keeps: a compiled side
    /// lives as long as its config, on every route that has it.
    pub(crate) fn shrink(&mut self, parses_json: bool) {
        if !parses_json {
            // Read only to parse a JSON body (`parseAs: AsJson`).
            self.json_names = BTreeSet::new();
        }
        for needs in [
            &mut self.header_fn,
            &mut self.request_header_fn,
            &mut self.req_op,
            &mut self.resp_op,
        ] {
            needs.shrink();
        }
    }

    /// Adds what `other` reads.
    pub(crate) fn merge(&mut self, other: &Usage) {
        self.header_fn.merge(&other.header_fn);
        self.request_header_fn.merge(&other.request_header_fn);
        self.req_op.merge(&other.req_op);
        self.resp_op.merge(&other.resp_op);
        self.body |= other.body;
        self.whole_json |= other.whole_json;
        for name in &other.json_names {
            if !self.json_names.contains(name) {
                self.json_names.insert(name.clone());
            }
        }
        self.protocol |= other.protocol;
        self.start_time |= other.start_time;
        self.remote_address |= other.remote_address;
        self.metadata.extend(other.metadata.iter().copied());
    }

    fn record_op(&mut self, op: &Operator) {
        match &op.kind {
            OperatorKind::Req { name, alt } => {
                self.req_op.add(name);
                if let Some(a) = alt {
                    self.req_op.add(a);
                }
            }
            OperatorKind::Resp { name, alt } => {
                self.resp_op.add(name);
                if let Some(a) = alt {
                    self.resp_op.add(a);
                }
            }
            OperatorKind::Protocol => self.protocol = true,
            OperatorKind::StartTime => self.start_time = true,
            OperatorKind::DownstreamRemoteAddress
            | OperatorKind::DownstreamRemoteAddressWithoutPort => self.remote_address = true,
        }
    }
}

/// A compiled value.
#[derive(Debug, Clone)]
pub(crate) enum Compiled {
    Empty,
    Literal(Box<str>),
    /// Text and command operators; `capacity` sizes the output buffer (the text plus a typical
    /// value per operator), so a render allocates once.
    Ops {
        segments: Box<[Segment]>,
        capacity: usize,
    },
    Template {
        /// The compiled template (named after its field path), shared by every live value
        /// with the same field and source; it also holds the names it looks up.
        template: Arc<OwnedTemplate>,
    },
}

impl Compiled {
    fn ops(mut segments: Vec<Segment>, usage: &mut Usage) -> Compiled {
        for s in &segments {
            if let Segment::Op(op) = s {
                usage.record_op(op);
            }
        }
        // Jinja drops one trailing newline; a value behaves the same whichever form it has.
        if let Some(Segment::Literal(last)) = segments.last_mut() {
            let kept = strip_trailing_newline(last).len();
            last.truncate(kept);
            if last.is_empty() {
                segments.pop();
            }
        }
        let capacity = segments
            .iter()
            .map(|s| match s {
                Segment::Literal(l) => l.len(),
                Segment::Op(_) => 32,
            })
            .sum();
        Compiled::Ops {
            segments: segments.into(),
            capacity,
        }
    }

    pub fn literal(&self) -> Option<&str> {
        match self {
            Compiled::Literal(s) => Some(s),
            _ => None,
        }
    }

    /// Variables of a template that are neither functions nor set inside it: they can only come
    /// from a JSON body.
    pub fn undeclared(&self) -> &[String] {
        match self {
            Compiled::Template { template } => &template.names().undeclared,
            _ => &[],
        }
    }

    /// Every name a template's code refers to (functions, JSON keys, its own variables), sorted
    /// (empty for other values).
    pub fn variables(&self) -> &[String] {
        match self {
            Compiled::Template { template } => &template.names().variables,
            _ => &[],
        }
    }

    /// The command operators of a value made of text and operators.
    pub fn operators(&self) -> impl Iterator<Item = &Operator> {
        let segments: &[Segment] = match self {
            Compiled::Ops { segments, .. } => segments,
            _ => &[],
        };
        segments.iter().filter_map(|s| match s {
            Segment::Op(op) => Some(op),
            Segment::Literal(_) => None,
        })
    }
}

/// The position of a syntax error in `value` as the user wrote it. Operators in text parts
/// are plain text to the template engine, so the value compiles to the same error at the same
/// place without the rewriting the real compile does.
fn template_error_position(value: &str, limits: &Limits) -> Option<crate::error::TemplatePosition> {
    let env = Environment::new();
    let (result, _) = metered(limits.meter(), || env.template_from_str(value).err());
    let err = result?;
    let line = err.line()?;
    let column = match err.range() {
        Some(range) if range.start <= value.len() && value.is_char_boundary(range.start) => {
            let before = &value[..range.start];
            let line_start = before.rfind('\n').map_or(0, |i| i + 1);
            before[line_start..].chars().count() + 1
        }
        _ => 1,
    };
    Some(crate::error::TemplatePosition { line, column })
}

/// What a compiled template borrows: the shared environment and its own name and source.
pub(crate) struct TemplateSource {
    env: Arc<Environment<'static>>,
    /// The one copy of each: MiniJinja's compiled template points into them.
    name: Box<str>,
    source: Box<str>,
    /// Worked out once, right after the template compiled (MiniJinja parses the source again
    /// to find them), and shared by every value that shares the template.
    names: OnceLock<TemplateNames>,
}

/// The top-level names a template looks up.
#[derive(Debug, Default)]
pub(crate) struct TemplateNames {
    /// Every name its code refers to (functions, JSON keys, its own variables; not the hidden
    /// operator function), sorted.
    variables: Box<[String]>,
    /// Those that are neither functions nor set inside the template, sorted.
    undeclared: Box<[String]>,
    /// Whether it calls the hidden operator function.
    calls_operators: bool,
}

impl TemplateNames {
    /// From the names of its parse tree (MiniJinja's own `undeclared_variables` where there are
    /// none).
    fn new(template: &OwnedTemplate, names: Option<crate::names::Names>) -> TemplateNames {
        // What kgateway's module checks before rendering: MiniJinja's undeclared variables. They
        // decide the 400 of a value that reads JSON variables without a parsed JSON body, so
        // they stay exactly kgateway's (a name used only as a slice target is not among them).
        let (all, referenced) = match names {
            Some(names) => (names.undeclared, Some(names.referenced)),
            None => (
                template.with_dependent(|_, t| t.undeclared_variables(false)),
                None,
            ),
        };
        let globals = global_names(&template.borrow_owner().env);
        let mut undeclared: Vec<String> = all
            .iter()
            .filter(|n| *n != OP_FN && !globals.contains(n.as_str()))
            .cloned()
            .collect();
        undeclared.sort();
        // What the template may read: every name its code refers to, wherever it stands (a
        // slice target too), from the parse tree; MiniJinja's list where there is none.
        let referenced = referenced.unwrap_or_else(|| all.iter().cloned().collect());
        TemplateNames {
            calls_operators: referenced.contains(OP_FN),
            variables: referenced.into_iter().filter(|n| n != OP_FN).collect(),
            undeclared: undeclared.into(),
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
    /// The names the template looks up.
    fn names(&self) -> &TemplateNames {
        let source = self.borrow_owner();
        // Set when it compiled; worked out again only for a tree MiniJinja did not show us.
        source.names.get_or_init(|| {
            let names = crate::names::analyse(&source.source);
            TemplateNames::new(self, names)
        })
    }

    /// The compiled template for `name` and `source` in `env`: shared with every live config
    /// that compiled the same template (the same policy on many routes compiles it once).
    /// MiniJinja 2.12 reserves room for 128 instructions, line and span entries in every
    /// compiled template (about 9 KiB, never shrunk), so sharing is what keeps 10,000 routes
    /// with one policy small. A template is immutable and reads its config's state from the
    /// render context, so sharing it is invisible; the last config dropped frees it.
    fn compile(
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
        let seen: Rc<RefCell<Option<crate::names::Names>>> = Rc::default();
        let sink = seen.clone();
        let visitor = Box::new(move |tree: &ast::Stmt<'_>| {
            *sink.borrow_mut() = Some(crate::names::of_tree(tree));
        });
        let (template, meter) = metered(limits.meter(), || {
            with_parse_tree_visitor(visitor, || {
                OwnedTemplate::try_new(
                    TemplateSource {
                        env,
                        name: name.into_boxed_str(),
                        source: source.into_boxed_str(),
                        names: OnceLock::new(),
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
        let names = TemplateNames::new(&template, seen.take());
        // Nothing else has seen this template yet.
        let _ = template.borrow_owner().names.set(names);
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

/// The names the environment defines (builtins and our functions): the same in every
/// environment [`new_environment`] makes, so worked out once.
fn global_names(env: &Environment<'static>) -> &'static HashSet<String> {
    static NAMES: OnceLock<HashSet<String>> = OnceLock::new();
    NAMES.get_or_init(|| env.globals().map(|(k, _)| k.to_owned()).collect())
}

/// Why a template was refused.
pub(crate) enum CompileError {
    Template(minijinja::Error),
    /// Its constant parts blow the render budget (the message says which part).
    Budget(String),
}

/// Runs `f` with `meter` installed on this thread; returns its result and the meter after it.
fn metered<R>(meter: Meter, f: impl FnOnce() -> R) -> (R, Meter) {
    /// Puts the previous meter back, also when `f` panics.
    struct Restore(Option<Option<Meter>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(previous) = self.0.take() {
                budget::install(previous);
            }
        }
    }
    let mut restore = Restore(Some(budget::install(Some(meter))));
    let result = f();
    let previous = restore.0.take().flatten();
    let after = budget::install(previous).unwrap_or(meter);
    (result, after)
}

/// What a user reads when the render budget trips (after "render budget exceeded: ").
pub(crate) fn budget_message(why: Tripped, limits: &Limits) -> String {
    match why {
        Tripped::Bytes => format!(
            "more than {} bytes produced or copied ({RENDER_BYTES_ENV})",
            limits.render_bytes
        ),
        Tripped::Time => format!(
            "more than {} ms of template work ({RENDER_TIME_ENV})",
            limits.render_time.as_millis()
        ),
    }
}

/// One template environment per fuel budget, shared by every config compiled with it: the
/// builtins and our functions are registered once, not once per config (a MiniJinja
/// environment is tens of KiB). Configs keep it alive; the last one dropped frees it.
fn shared_environment(fuel: u64) -> Arc<Environment<'static>> {
    static SHARED: Mutex<Vec<(u64, Weak<Environment<'static>>)>> = Mutex::new(Vec::new());
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = shared
        .iter()
        .find(|(f, _)| *f == fuel)
        .and_then(|(_, env)| env.upgrade())
    {
        return env;
    }
    shared.retain(|(_, env)| env.strong_count() > 0);
    let env = Arc::new(new_environment(fuel));
    shared.push((fuel, Arc::downgrade(&env)));
    env
}

/// A config's own state that the shared environment's functions read while rendering.
pub(crate) struct ConfigState {
    pub env: EnvLookup,
    pub patterns: Arc<Patterns>,
    /// Capture work one `regex_extract` call may do ([`crate::pattern::work_limit`]).
    pub regex_work: u64,
}

impl fmt::Debug for ConfigState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigState").finish_non_exhaustive()
    }
}

impl Object for ConfigState {}

/// The state of a config without literal `regex_extract` patterns: one per `env()` lookup and
/// regex work limit, shared by every such config (most configs; a distinct policy on each of
/// 100,000 routes would otherwise keep 100,000 equal states). Computed patterns are then cached
/// for them together, still bounded ([`crate::pattern::DYNAMIC_CACHE_SIZE`]).
fn shared_config_state(env: EnvLookup, regex_work: u64) -> Arc<ConfigState> {
    type Shared = Vec<(usize, u64, Weak<ConfigState>)>;
    static SHARED: Mutex<Shared> = Mutex::new(Vec::new());
    // The state holds its lookup, so a live entry's address is not reused by another lookup.
    let env_id = Arc::as_ptr(&env) as *const () as usize;
    let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(state) = shared
        .iter()
        .find(|(e, w, _)| *e == env_id && *w == regex_work)
        .and_then(|(_, _, state)| state.upgrade())
    {
        return state;
    }
    shared.retain(|(_, _, state)| state.strong_count() > 0);
    let state = Arc::new(ConfigState {
        env,
        patterns: Arc::default(),
        regex_work,
    });
    shared.push((env_id, regex_work, Arc::downgrade(&state)));
    state
}

pub(crate) fn config_state(state: &State) -> Option<Arc<ConfigState>> {
    state.lookup(CONFIG_KEY)?.downcast_object::<ConfigState>()
}

/// Builds the template environment while values are compiled.
pub(crate) struct Compiler {
    env: Arc<Environment<'static>>,
    env_lookup: EnvLookup,
    ops: Vec<Operator>,
    limits: Limits,
    collected: extensions::Collected,
    /// `Some(response_phase)` where a value made only of text and `{{ header("x") }}` /
    /// `{{ request_header("x") }}` may be compiled to header operators instead of a template:
    /// the same output without running the template engine per request. `None` where JSON
    /// body keys could shadow those functions (`parseAs: AsJson`).
    pub lower_header_calls: Option<bool>,
}

/// What, besides a value's text and field, decides how the compiler compiles it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CompilerMode {
    /// The fuel picks the shared environment; the rest bounds constant folding.
    limits: Limits,
    lower_header_calls: Option<bool>,
}

impl Compiler {
    pub(crate) fn mode(&self) -> CompilerMode {
        CompilerMode {
            limits: self.limits,
            lower_header_calls: self.lower_header_calls,
        }
    }

    /// How many command operators the config's templates call so far.
    pub(crate) fn operator_count(&self) -> usize {
        self.ops.len()
    }

    pub fn new(options: &Options) -> Compiler {
        let env = shared_environment(options.limits.fuel);
        Compiler {
            env,
            env_lookup: options.env.clone(),
            ops: Vec::new(),
            limits: options.limits,
            collected: extensions::Collected::default(),
            lower_header_calls: None,
        }
    }

    /// Compiles `value`; `field` (e.g. `response.set[1].value`) names it in errors and is its
    /// template name, so it must be unique.
    pub fn compile(
        &mut self,
        value: &str,
        field: &str,
        usage: &mut Usage,
    ) -> Result<Compiled, Error> {
        if value.is_empty() {
            return Ok(Compiled::Empty);
        }
        let regions = split_regions(value);
        let op_err = |msg: String| Error::new(ErrorKind::Operator, msg).at(field);
        if !regions.iter().any(|r| matches!(r, Region::Jinja { .. })) {
            let segments = operators::parse(value).map_err(op_err)?;
            if !segments.iter().any(|s| matches!(s, Segment::Op(_))) {
                let text: String = segments
                    .into_iter()
                    .map(|s| match s {
                        Segment::Literal(l) => l,
                        Segment::Op(_) => String::new(),
                    })
                    .collect();
                return Ok(Compiled::Literal(strip_trailing_newline(&text).into()));
            }
            return Ok(Compiled::ops(segments, usage));
        }

        if let Some(response_phase) = self.lower_header_calls
            && let Some(segments) = lower_header_calls(&regions, response_phase)
        {
            return Ok(Compiled::ops(segments.map_err(op_err)?, usage));
        }

        let mut source = String::with_capacity(value.len() + 16);
        let mut tokens = Vec::new();
        for region in &regions {
            match region {
                Region::Text(text) => {
                    for seg in operators::parse(text).map_err(op_err)? {
                        match seg {
                            Segment::Literal(l) => source.push_str(&l),
                            Segment::Op(op) => {
                                usage.record_op(&op);
                                source.push_str(&format!("{{{{ {OP_FN}({}) }}}}", self.ops.len()));
                                self.ops.push(op);
                            }
                        }
                    }
                }
                Region::Jinja { src, scan } => {
                    source.push_str(src);
                    if *scan {
                        tokenize(src, &mut tokens);
                        tokens.push(Tok::Punct('\n'));
                    }
                }
            }
        }
        source.shrink_to_fit();
        let template =
            OwnedTemplate::compile(self.env.clone(), field.to_owned(), source, &self.limits)
                .map_err(|e| match e {
                    CompileError::Template(e) => Error::new(ErrorKind::Template, e.to_string())
                        .at(field)
                        .with_position(template_error_position(value, &self.limits)),
                    CompileError::Budget(message) => Error::new(
                        ErrorKind::Template,
                        format!("a constant expression exceeds the render budget: {message}"),
                    )
                    .at(field),
                })?;
        let names = template.names();
        let has = |n: &str| {
            names
                .variables
                .binary_search_by(|v| v.as_str().cmp(n))
                .is_ok()
        };
        if has("body") || has("context") {
            usage.body = true;
        }
        if has("context")
            || has("debug")
            || ["include", "import", "extends"]
                .iter()
                .any(|k| value.contains(k))
        {
            usage.whole_json = true;
        }
        usage.json_names.extend(names.variables.iter().cloned());
        if names.calls_operators {
            usage.json_names.insert(OP_FN.to_owned());
        }

        // An unknown function is an undeclared name like a JSON variable: kgateway loads such a
        // template and answers its requests as it does for a missing JSON variable.
        analyse_calls(&tokens, usage);
        extensions::analyse(
            &tokens,
            &call_positions(&tokens),
            field,
            usage,
            &mut self.collected,
        )?;
        Ok(Compiled::Template { template })
    }

    pub fn finish(self) -> Engine {
        let regex_work = crate::pattern::work_limit(self.limits.render_time);
        let config = if self.collected.literal_patterns.is_empty() {
            shared_config_state(self.env_lookup, regex_work)
        } else {
            let patterns = Patterns::default();
            patterns.set_literal(self.collected.literal_patterns);
            Arc::new(ConfigState {
                env: self.env_lookup,
                patterns: Arc::new(patterns),
                regex_work,
            })
        };
        Engine {
            config,
            ops: self.ops.into(),
            limits: self.limits,
            metadata: self.collected.metadata.into(),
        }
    }
}

/// MiniJinja drops a single trailing newline unless told otherwise (`keep_trailing_newline`).
fn strip_trailing_newline(s: &str) -> &str {
    s.strip_suffix("\r\n")
        .or_else(|| s.strip_suffix('\n'))
        .unwrap_or(s)
}

fn new_environment(fuel: u64) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_fuel(Some(fuel));
    // Values are HTTP headers and bodies, not HTML.
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Lenient (the default, as kgateway): a JSON key missing from the body renders empty.
    env.set_undefined_behavior(UndefinedBehavior::Lenient);

    env.add_function("header", |state: &State, name: &str| -> String {
        data(state)
            .and_then(|d| d.headers.get(name).map(Cow::into_owned))
            .unwrap_or_default()
    });
    env.add_function("request_header", |state: &State, name: &str| -> String {
        data(state)
            .and_then(|d| d.request_headers.get(name).map(Cow::into_owned))
            .unwrap_or_default()
    });
    env.add_function("body", |state: &State| -> Value {
        data(state)
            .map(|d| d.body.clone())
            .unwrap_or_else(|| Value::from(""))
    });
    env.add_function("context", |state: &State| -> Value {
        data(state).map(|d| d.context.clone()).unwrap_or_default()
    });
    env.add_function("env", |state: &State, name: &str| -> String {
        config_state(state)
            .and_then(|c| (c.env)(name))
            .unwrap_or_default()
    });
    env.add_function("get_cookie", |state: &State, name: &str| -> String {
        data(state)
            .map(|d| functions::cookie(d.request_headers.values("cookie"), name, false))
            .unwrap_or_default()
    });
    env.add_function("get_cookie_i", |state: &State, name: &str| -> String {
        data(state)
            .map(|d| functions::cookie(d.request_headers.values("cookie"), name, true))
            .unwrap_or_default()
    });
    env.add_function("substring", functions::substring);
    env.add_function("base64_encode", functions::base64_encode);
    env.add_function("base64url_encode", functions::base64url_encode);
    env.add_function("base64_decode", functions::base64_decode);
    env.add_function("base64url_decode", functions::base64url_decode);
    env.add_function("replace_with_random", functions::replace_with_random);
    env.add_function("replace_with_string", functions::replace_with_string);
    env.add_function("raw_string", functions::raw_string);
    extensions::register(&mut env);
    env.add_function(OP_FN, |state: &State, index: usize| -> String {
        let mut out = String::new();
        if let Some(d) = data(state)
            && let Some(op) = d.ops.get(index)
        {
            op.eval(&*d, &mut out);
        }
        out
    });
    env
}

pub(crate) fn data(state: &State) -> Option<Arc<RenderData>> {
    state.lookup(DATA_KEY)?.downcast_object::<RenderData>()
}

/// Header values a render can see: lowercased names, lossy UTF-8 values, every value of a
/// repeated name kept in order; a read gives the last one, or all of them joined with `", "`
/// when the snapshot was taken for kgateway v2.4 ([`KgatewayRelease::joins_repeated_headers`]).
/// Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct HeaderSnapshot {
    /// None when nothing was captured: the empty snapshot costs nothing to make, copy or drop.
    data: Option<Arc<SnapshotData>>,
}

/// Bytes of names and values a snapshot keeps inside its one allocation; longer text moves to a
/// second one. A policy's few request headers (`:method`, `:path`, a host) fit.
const SNAPSHOT_INLINE_TEXT: usize = 192;

/// Every captured name and value back to back in one buffer, as received (values are made UTF-8
/// when read). The few entries and the text a policy names stay inline: a snapshot is then one
/// allocation, the `Arc` that shares it.
#[derive(Debug, Default)]
pub(crate) struct SnapshotData {
    text: SmallVec<[u8; SNAPSHOT_INLINE_TEXT]>,
    /// Per entry, in capture order: where its name starts, where its value starts and ends.
    spans: SmallVec<[(u32, u32, u32); 4]>,
    /// A repeated name reads as its values joined with `", "` (kgateway v2.4), not the last.
    join: bool,
}

impl SnapshotData {
    pub(crate) fn new(release: KgatewayRelease) -> SnapshotData {
        SnapshotData {
            join: release.joins_repeated_headers(),
            ..SnapshotData::default()
        }
    }

    pub(crate) fn with_capacity(
        release: KgatewayRelease,
        entries: usize,
        text: usize,
    ) -> SnapshotData {
        SnapshotData {
            text: SmallVec::with_capacity(text),
            spans: SmallVec::with_capacity(entries),
            join: release.joins_repeated_headers(),
        }
    }

    /// Adds one entry, its name lowercased. A snapshot past 4 GiB of text keeps what fit.
    pub(crate) fn push(&mut self, name: &[u8], value: &[u8]) {
        let start = self.text.len();
        self.text.extend_from_slice(name);
        self.text[start..].make_ascii_lowercase();
        let value_start = self.text.len();
        self.text.extend_from_slice(value);
        if let (Ok(start), Ok(value_start), Ok(end)) = (
            u32::try_from(start),
            u32::try_from(value_start),
            u32::try_from(self.text.len()),
        ) {
            self.spans.push((start, value_start, end));
        } else {
            self.text.truncate(start);
        }
    }

    fn is_named(&self, (start, value_start, _): (u32, u32, u32), name: &[u8]) -> bool {
        // Stored names are lowercase, as are the operators' names: compare bytes first.
        let stored = &self.text[start as usize..value_start as usize];
        stored.len() == name.len() && (stored == name || stored.eq_ignore_ascii_case(name))
    }

    fn value(&self, (_, value_start, end): (u32, u32, u32)) -> Cow<'_, str> {
        let value = &self.text[value_start as usize..end as usize];
        // `from_utf8` has the fast path for the usual ASCII value.
        match std::str::from_utf8(value) {
            Ok(value) => Cow::Borrowed(value),
            Err(_) => String::from_utf8_lossy(value),
        }
    }
}

impl HeaderSnapshot {
    pub(crate) fn from_data(data: SnapshotData) -> HeaderSnapshot {
        HeaderSnapshot {
            data: (!data.spans.is_empty()).then(|| Arc::new(data)),
        }
    }

    /// The value of `name` (case-insensitive), as UTF-8 (invalid sequences replaced): the last
    /// one of a repeated name, or all of them joined with `", "` (kgateway v2.4).
    pub fn get(&self, name: &str) -> Option<Cow<'_, str>> {
        let data = self.data.as_deref()?;
        if data.join {
            let mut values = self.values(name);
            let first = values.next()?;
            return Some(match values.next() {
                None => first,
                Some(second) => {
                    let mut joined = first.into_owned();
                    for value in std::iter::once(second).chain(values) {
                        joined.push_str(", ");
                        joined.push_str(&value);
                    }
                    Cow::Owned(joined)
                }
            });
        }
        data.spans
            .iter()
            .rev()
            .find(|&&span| data.is_named(span, name.as_bytes()))
            .map(|&span| data.value(span))
    }

    /// Every value of `name` (case-insensitive) in the order received, as UTF-8.
    pub fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = Cow<'a, str>> + 'n
    where
        'a: 'n,
    {
        let data = self.data.as_deref();
        data.into_iter().flat_map(move |data| {
            data.spans
                .iter()
                .filter(move |&&span| data.is_named(span, name.as_bytes()))
                .map(move |&span| data.value(span))
        })
    }

    pub fn len(&self) -> usize {
        self.data.as_ref().map_or(0, |d| d.spans.len())
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_none()
    }
}

/// Everything one side's renders read; built once per side application.
#[derive(Debug, Clone)]
pub(crate) struct RenderData {
    pub headers: HeaderSnapshot,
    pub request_headers: HeaderSnapshot,
    pub response_phase: bool,
    pub protocol: Option<String>,
    pub start_time: Option<String>,
    pub remote_address: Option<SocketAddr>,
    /// `body()`: the body as a string, or empty.
    pub body: Value,
    /// `context()`: the parsed JSON body, or undefined.
    pub context: Value,
    pub ops: Arc<[Operator]>,
    /// The metadata this side's values read, read once per side application: indices into
    /// `metadata_keys`, with the value (absent values are not listed).
    pub metadata: Vec<(usize, String)>,
    pub metadata_keys: Arc<[MetadataKey]>,
}

impl RenderData {
    /// A metadata value read for this application, if it was present.
    pub fn metadata_value(
        &self,
        source: crate::apply::MetadataSource,
        namespace: &str,
        key: &str,
    ) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(i, _)| {
                self.metadata_keys
                    .get(*i)
                    .is_some_and(|m| m.source == source && m.namespace == namespace && m.key == key)
            })
            .map(|(_, v)| v.as_str())
    }
}

impl Object for RenderData {}

impl OperatorSource for RenderData {
    fn request_header(&self, name: &str) -> Option<Cow<'_, str>> {
        self.request_headers.get(name)
    }
    fn response_header(&self, name: &str) -> Option<Cow<'_, str>> {
        if self.response_phase {
            self.headers.get(name)
        } else {
            None
        }
    }
    fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }
    fn start_time(&self) -> Option<&str> {
        self.start_time.as_deref()
    }
    fn downstream_remote_address(&self) -> Option<SocketAddr> {
        self.remote_address
    }
}

/// The render context: JSON object keys as variables, plus the hidden render data.
#[derive(Debug)]
struct Root {
    data: Value,
    config: Value,
    vars: Value,
}

impl Object for Root {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        let key = key.as_str()?;
        if key == DATA_KEY {
            return Some(self.data.clone());
        }
        if key == CONFIG_KEY {
            return Some(self.config.clone());
        }
        if key.starts_with("__tx_") {
            // The hidden function must not be shadowed by a JSON key.
            return None;
        }
        let v = self.vars.get_attr(key).ok()?;
        (!v.is_undefined()).then_some(v)
    }
}

/// The compiled environment plus the operator table.
pub(crate) struct Engine {
    config: Arc<ConfigState>,
    ops: Arc<[Operator]>,
    limits: Limits,
    metadata: Arc<[MetadataKey]>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("operators", &self.ops.len())
            .field("limits", &self.limits)
            .finish()
    }
}

/// A failed render: the kind says whether the budget was the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RenderError {
    pub kind: WarningKind,
    pub message: String,
}

/// Per-render state shared by all values of one side.
pub(crate) struct Scope {
    data: RenderData,
    vars: Option<Value>,
    /// MiniJinja's context, built on the first template render: values made only of text and
    /// command operators never need it (nor the shared copy of the render data it holds).
    ctx: std::cell::OnceCell<Value>,
    /// What is left of the side's render budget (bytes and time), carried from value to value.
    meter: std::cell::Cell<Meter>,
}

impl Scope {
    fn ctx(&self, config: &Arc<ConfigState>) -> &Value {
        self.ctx.get_or_init(|| {
            Value::from_object(Root {
                data: Value::from_object(self.data.clone()),
                config: Value::from_dyn_object(config.clone()),
                vars: self.vars.clone().unwrap_or_default(),
            })
        })
    }
}

impl Engine {
    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn ops(&self) -> Arc<[Operator]> {
        self.ops.clone()
    }

    /// Every metadata value some template of the config reads.
    pub fn metadata_keys(&self) -> &Arc<[MetadataKey]> {
        &self.metadata
    }

    pub fn scope(&self, data: RenderData, json: Option<&Value>) -> Scope {
        Scope {
            data,
            vars: json.cloned(),
            ctx: std::cell::OnceCell::new(),
            meter: std::cell::Cell::new(self.limits.meter()),
        }
    }

    /// Renders one value into `out` (reused between values, so a side's renders allocate
    /// once). Literals are borrowed, not copied.
    pub fn render<'a>(
        &self,
        value: &'a Compiled,
        scope: &Scope,
        cap: usize,
        out: &'a mut String,
    ) -> Result<&'a str, RenderError> {
        match value {
            Compiled::Empty => Ok(""),
            Compiled::Literal(s) => Ok(s),
            Compiled::Ops { segments, capacity } => {
                out.clear();
                out.reserve((*capacity).min(cap));
                for s in segments.iter() {
                    match s {
                        Segment::Literal(l) => out.push_str(l),
                        Segment::Op(op) => op.eval(&scope.data, out),
                    }
                    if out.len() > cap {
                        return Err(too_large(cap));
                    }
                }
                Ok(out)
            }
            Compiled::Template { template, .. } => {
                let mut buf = std::mem::take(out).into_bytes();
                buf.clear();
                let mut w = CappedWriter {
                    buf,
                    cap,
                    overflow: false,
                };
                // MiniJinja 2.12 panics on a few inputs (ordering a 128-bit integer against a
                // float, say). The render touches nothing shared, so such a panic is one
                // failed value, not a failed request.
                let before = scope.meter.get();
                let (result, after) = metered(before, || {
                    panic::catch_unwind(AssertUnwindSafe(|| {
                        template.with_dependent(|_, t| {
                            t.render_to_write(scope.ctx(&self.config), &mut w)
                                .map(|_| ())
                        })
                    }))
                });
                scope.meter.set(after);
                let result = result.map_err(|_| RenderError {
                    kind: WarningKind::Render,
                    message: "the template engine panicked while rendering this value".to_owned(),
                })?;
                if w.overflow {
                    return Err(too_large(cap));
                }
                if let (Err(_), Some(why)) = (&result, after.tripped) {
                    return Err(RenderError {
                        kind: WarningKind::Budget,
                        message: format!(
                            "render budget exceeded: {}",
                            budget_message(why, &self.limits)
                        ),
                    });
                }
                result.map_err(render_error)?;
                *out = lossy_string(Cow::Owned(w.buf));
                Ok(out)
            }
        }
    }
}

/// The value as UTF-8 (invalid sequences replaced), reusing an owned buffer when it is valid.
pub(crate) fn lossy_string(value: Cow<'_, [u8]>) -> String {
    match value {
        Cow::Owned(bytes) => String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        Cow::Borrowed(bytes) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

pub(crate) fn too_large(cap: usize) -> RenderError {
    RenderError {
        kind: WarningKind::Budget,
        message: format!("rendered value exceeds {cap} bytes"),
    }
}

fn render_error(e: minijinja::Error) -> RenderError {
    let kind = if e.kind() == minijinja::ErrorKind::OutOfFuel {
        WarningKind::Budget
    } else {
        WarningKind::Render
    };
    RenderError {
        kind,
        message: format!("{e:#}"),
    }
}

/// Stops a render as soon as its output passes the cap, instead of after building it.
struct CappedWriter {
    buf: Vec<u8>,
    cap: usize,
    overflow: bool,
}

impl io::Write for CappedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            self.overflow = true;
            return Err(io::Error::other("output size cap exceeded"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Converts a parsed JSON body into a template value. serde_json's recursion limit (128)
/// bounds the depth, so this recursion is bounded too.
/// Parses a JSON body for rendering; `None` for `null`. Unless `whole`, only the top-level
/// keys in `names` (the only ones a template can look up) are converted: the rest is checked
/// by the parser (syntax, the 128-level nesting limit) and skipped without allocating, which
/// is most of the cost of a large body.
pub(crate) fn parse_json_body(
    body: &[u8],
    names: &BTreeSet<String>,
    whole: bool,
) -> Result<Option<Value>, serde_json::Error> {
    if whole {
        let parsed: serde_json::Value = serde_json::from_slice(body)?;
        return Ok((!parsed.is_null()).then(|| json_to_value(&parsed)));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde::de::DeserializeSeed::deserialize(TopLevel { names }, &mut de)?;
    de.end()?;
    Ok(value)
}

/// The top level of a JSON body, keeping only the named keys of an object.
struct TopLevel<'a> {
    names: &'a BTreeSet<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for TopLevel<'_> {
    type Value = Option<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<Value>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TopLevel<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some(key) = map.next_key_seed(KeyFilter { names: self.names })? {
            match key {
                Some(key) => {
                    let v: serde_json::Value = map.next_value()?;
                    // A repeated key: the last one wins, as in a full parse.
                    out.insert(key, json_to_value(&v));
                }
                None => map.next_value::<Skip>().map(drop)?,
            }
        }
        Ok(Some(Value::from(out)))
    }

    // Not an object: there are no variables, and nothing reads the value as a whole.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Some(Value::from(Vec::<Value>::new())))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Value::from(v)))
    }
}

/// An object key: `Some(key)` when a template names it, without allocating for the others.
struct KeyFilter<'a> {
    names: &'a BTreeSet<String>,
}

impl<'de> serde::de::DeserializeSeed<'de> for KeyFilter<'_> {
    type Value = Option<String>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeyFilter<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.names.contains(v).then(|| v.to_owned()))
    }
}

/// Any JSON value, checked and dropped. Unlike `IgnoredAny` it goes through the parser's
/// nesting limit, so a body too deep for a full parse is refused here too.
struct Skip;

impl<'de> serde::Deserialize<'de> for Skip {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(Skip)
    }
}

impl<'de> serde::de::Visitor<'de> for Skip {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_entry::<Skip, Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_unit<E>(self) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Skip, E> {
        Ok(Skip)
    }

    fn visit_str<E>(self, _: &str) -> Result<Skip, E> {
        Ok(Skip)
    }
}

pub(crate) fn json_to_value(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::from(()),
        serde_json::Value::Bool(b) => Value::from(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        serde_json::Value::String(s) => Value::from(s.as_str()),
        serde_json::Value::Array(a) => Value::from(a.iter().map(json_to_value).collect::<Vec<_>>()),
        serde_json::Value::Object(m) => Value::from(
            m.iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect::<BTreeMap<String, Value>>(),
        ),
    }
}

/// A piece of a value: text (where operators live) or Jinja markup.
#[derive(Debug, PartialEq, Eq)]
enum Region<'a> {
    Text(&'a str),
    /// `scan`: false for comments and `{% raw %}` blocks (no calls to find there).
    Jinja {
        src: &'a str,
        scan: bool,
    },
}

/// The value as operator segments when every Jinja region is a plain `{{ header("x") }}` or
/// `{{ request_header("x") }}` (what both functions read is what `%REQ(x)%` and, for
/// `header()` in the response phase, `%RESP(x)%` read); `None` for anything else.
fn lower_header_calls(
    regions: &[Region<'_>],
    response_phase: bool,
) -> Option<Result<Vec<Segment>, String>> {
    let mut calls = Vec::new();
    for region in regions {
        if let Region::Jinja { src, .. } = region {
            calls.push(header_call(src)?);
        }
    }
    let mut calls = calls.into_iter();
    let mut out: Vec<Segment> = Vec::new();
    let push = |seg: Segment, out: &mut Vec<Segment>| match (out.last_mut(), seg) {
        (Some(Segment::Literal(prev)), Segment::Literal(l)) => prev.push_str(&l),
        (_, seg) => out.push(seg),
    };
    for region in regions {
        match region {
            Region::Text(text) => match operators::parse(text) {
                Ok(segments) => segments.into_iter().for_each(|seg| push(seg, &mut out)),
                Err(e) => return Some(Err(e)),
            },
            Region::Jinja { .. } => {
                let (function, name) = calls.next()?;
                let name = name.to_ascii_lowercase();
                let kind = if function == "header" && response_phase {
                    OperatorKind::Resp { name, alt: None }
                } else {
                    OperatorKind::Req { name, alt: None }
                };
                push(
                    Segment::Op(Operator {
                        kind,
                        max_len: None,
                    }),
                    &mut out,
                );
            }
        }
    }
    Some(Ok(out))
}

/// `{{ header("x") }}` or `{{ request_header('x') }}` (no whitespace control, no filter, a
/// plain string literal) as (function, header name).
fn header_call(src: &str) -> Option<(&'static str, &str)> {
    let inner = src.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.starts_with(['-', '+']) || inner.ends_with(['-', '+']) {
        return None;
    }
    let inner = inner.trim_matches(|c: char| c.is_ascii_whitespace());
    let (function, rest) = inner.split_once('(')?;
    let function = match function.trim_end_matches(|c: char| c.is_ascii_whitespace()) {
        "header" => "header",
        "request_header" => "request_header",
        _ => return None,
    };
    let arg = rest
        .strip_suffix(')')?
        .trim_matches(|c: char| c.is_ascii_whitespace());
    let quote = arg.chars().next().filter(|q| matches!(q, '"' | '\''))?;
    let name = arg.strip_prefix(quote)?.strip_suffix(quote)?;
    if name.is_empty() || name.contains(['\\', '"', '\'']) {
        return None;
    }
    Some((function, name))
}

fn split_regions(s: &str) -> Vec<Region<'_>> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut text_start = 0;
    while i + 1 < bytes.len() {
        if bytes[i] != b'{' || !matches!(bytes[i + 1], b'{' | b'%' | b'#') {
            i += 1;
            continue;
        }
        if text_start < i {
            out.push(Region::Text(&s[text_start..i]));
        }
        let kind = bytes[i + 1];
        let mut end = find_end(s, i, kind);
        let mut scan = kind != b'#';
        if kind == b'%' && is_raw_open(tag_inner(s, i, end)) {
            end = find_endraw(s, end);
            scan = false;
        }
        out.push(Region::Jinja {
            src: &s[i..end],
            scan,
        });
        i = end;
        text_start = end;
    }
    if text_start < s.len() {
        out.push(Region::Text(&s[text_start..]));
    }
    out
}

/// Index just past the closing marker of the tag opened at `start`, or the end of `s`.
fn find_end(s: &str, start: usize, kind: u8) -> usize {
    let bytes = s.as_bytes();
    let close = match kind {
        b'{' => b'}',
        b'%' => b'%',
        _ => b'#',
    };
    let mut j = start + 2;
    let mut quote: Option<u8> = None;
    while j < bytes.len() {
        let c = bytes[j];
        match quote {
            Some(q) => {
                if c == b'\\' {
                    j += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => {
                if kind != b'#' && (c == b'"' || c == b'\'') {
                    quote = Some(c);
                } else if c == close && bytes.get(j + 1) == Some(&b'}') {
                    return j + 2;
                }
            }
        }
        j += 1;
    }
    s.len()
}

/// The text between `{%` and `%}` of the tag at `open..end`; an unclosed tag runs to the end
/// of `s`. Slicing by byte offsets near the end would split a multi-byte character there.
fn tag_inner(s: &str, open: usize, end: usize) -> &str {
    let inner = &s[open + 2..end];
    inner.strip_suffix("%}").unwrap_or(inner)
}

fn is_raw_open(inner: &str) -> bool {
    inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace()) == "raw"
}

/// Index just past `{% endraw %}` at or after `from`, or the end of `s`.
fn find_endraw(s: &str, from: usize) -> usize {
    let mut i = from;
    while let Some(off) = s[i..].find("{%") {
        let open = i + off;
        let end = find_end(s, open, b'%');
        let inner = tag_inner(s, open, end);
        if inner.trim_matches(|c: char| c == '-' || c == '+' || c.is_whitespace()) == "endraw" {
            return end;
        }
        i = open + 2;
    }
    s.len()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok<'a> {
    Ident(&'a str),
    /// A string literal without escapes (its content), or `None` when it has escapes.
    Str(Option<&'a str>),
    /// A string literal with escapes, as written between its quotes.
    EscStr(&'a str),
    Punct(char),
}

/// A rough lexer, enough to find calls and their literal arguments.
pub(crate) fn tokenize<'a>(src: &'a str, out: &mut Vec<Tok<'a>>) {
    let bytes = src.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            out.push(Tok::Ident(&src[start..i]));
        } else if c.is_ascii_digit() {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.' || bytes[i] == b'_')
            {
                i += 1;
            }
            out.push(Tok::Punct('0'));
        } else if c == b'"' || c == b'\'' {
            let start = i + 1;
            let mut j = start;
            let mut escaped = false;
            while j < bytes.len() && bytes[j] != c {
                if bytes[j] == b'\\' {
                    escaped = true;
                    j += 1;
                }
                j += 1;
            }
            let end = j.min(bytes.len());
            let content = &src[start..end];
            out.push(if escaped {
                Tok::EscStr(content)
            } else {
                Tok::Str(Some(content))
            });
            i = j + 1;
        } else {
            let ch = src[i..].chars().next().unwrap_or('?');
            out.push(Tok::Punct(ch));
            i += ch.len_utf8();
        }
    }
}

/// Indices (into `tokens`) of the names called as plain functions: not methods, filters,
/// tests, macro or filter-block names.
fn call_positions(tokens: &[Tok<'_>]) -> Vec<usize> {
    let mut out = Vec::new();
    for (i, tok) in tokens.iter().enumerate() {
        let Tok::Ident(_) = tok else { continue };
        if tokens.get(i + 1) != Some(&Tok::Punct('(')) {
            continue;
        }
        let prev = i.checked_sub(1).map(|p| &tokens[p]);
        let prev2 = i.checked_sub(2).map(|p| &tokens[p]);
        let not_a_function = match prev {
            // method, filter, test, `{% filter name(...) %}` / `{% macro name(...) %}`
            Some(Tok::Punct('.' | '|')) => true,
            Some(Tok::Ident("is" | "filter" | "macro" | "call")) => true,
            Some(Tok::Ident("not")) => prev2 == Some(&Tok::Ident("is")),
            _ => false,
        };
        if !not_a_function {
            out.push(i);
        }
    }
    out
}

/// Returns the names called as plain functions, and records which headers `header()` and
/// `request_header()` read (all of them when the argument is not a string literal).
fn analyse_calls(tokens: &[Tok<'_>], usage: &mut Usage) -> BTreeSet<String> {
    let mut calls = BTreeSet::new();
    for i in call_positions(tokens) {
        let Tok::Ident(name) = tokens[i] else {
            continue;
        };
        calls.insert(name.to_owned());
        let needs = match name {
            "header" => &mut usage.header_fn,
            "request_header" => &mut usage.request_header_fn,
            "get_cookie" | "get_cookie_i" => {
                usage.request_header_fn.add("cookie");
                continue;
            }
            _ => continue,
        };
        match (tokens.get(i + 2), tokens.get(i + 3)) {
            (Some(Tok::Str(Some(h))), Some(Tok::Punct(')'))) => needs.add(h),
            _ => needs.set_all(),
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions() {
        assert_eq!(split_regions("plain"), vec![Region::Text("plain")]);
        assert_eq!(
            split_regions("a{{ b }}c{% if x %}d{% endif %}{# c #}"),
            vec![
                Region::Text("a"),
                Region::Jinja {
                    src: "{{ b }}",
                    scan: true
                },
                Region::Text("c"),
                Region::Jinja {
                    src: "{% if x %}",
                    scan: true
                },
                Region::Text("d"),
                Region::Jinja {
                    src: "{% endif %}",
                    scan: true
                },
                Region::Jinja {
                    src: "{# c #}",
                    scan: false
                },
            ]
        );
        assert_eq!(
            split_regions(r#"{{ "}}" }}x"#),
            vec![
                Region::Jinja {
                    src: r#"{{ "}}" }}"#,
                    scan: true
                },
                Region::Text("x")
            ]
        );
        assert_eq!(
            split_regions("{% raw %}%REQ(x)% {{ y }}{% endraw %}z"),
            vec![
                Region::Jinja {
                    src: "{% raw %}%REQ(x)% {{ y }}{% endraw %}",
                    scan: false
                },
                Region::Text("z")
            ]
        );
        assert_eq!(split_regions("{"), vec![Region::Text("{")]);
        assert_eq!(
            split_regions("{{ open"),
            vec![Region::Jinja {
                src: "{{ open",
                scan: true
            }]
        );
    }

    #[test]
    fn call_analysis() {
        let mut toks = Vec::new();
        tokenize(
            r#"{{ header("X-A") ~ request_header('b') ~ x.header(1) ~ y|foo(2) ~ z is bar(3) ~ f() }}"#,
            &mut toks,
        );
        let mut usage = Usage::default();
        let calls = analyse_calls(&toks, &mut usage);
        assert_eq!(
            calls.into_iter().collect::<Vec<_>>(),
            vec!["f", "header", "request_header"]
        );
        assert_eq!(usage.header_fn.names().collect::<Vec<_>>(), vec!["x-a"]);
        assert_eq!(
            usage.request_header_fn.names().collect::<Vec<_>>(),
            vec!["b"]
        );

        let mut toks = Vec::new();
        tokenize(
            r#"{{ header(name) }}{{ request_header("a" ~ b) }}"#,
            &mut toks,
        );
        let mut usage = Usage::default();
        analyse_calls(&toks, &mut usage);
        assert!(usage.header_fn.all());
        assert!(usage.request_header_fn.all());
    }

    #[test]
    fn literal_matches_jinja_trailing_newline_rule() {
        let env = Environment::new();
        for s in ["a\n", "a\r\n", "a\n\n", "a", "\n", ""] {
            let jinja = env.render_str(s, ()).unwrap();
            assert_eq!(strip_trailing_newline(s), jinja, "{s:?}");
        }
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn partial_json_parse_keeps_only_named_keys_and_matches_a_full_parse() {
        let body = br#"{"user":"a","skip":{"deep":[1,2,{"x":"\u00e9"}]},"n":3,"user":"b","m":[1]}"#;
        let want = names(&["user", "n", "m", "absent"]);
        let partial = parse_json_body(body, &want, false).unwrap().unwrap();
        let whole = parse_json_body(body, &want, true).unwrap().unwrap();
        for key in ["user", "n", "m"] {
            assert_eq!(
                partial.get_attr(key).unwrap(),
                whole.get_attr(key).unwrap(),
                "{key}"
            );
        }
        assert_eq!(
            partial.get_attr("user").unwrap().as_str(),
            Some("b"),
            "last key wins"
        );
        assert!(partial.get_attr("skip").unwrap().is_undefined());
        assert!(!whole.get_attr("skip").unwrap().is_undefined());
        assert_eq!(parse_json_body(b"null", &want, false).unwrap(), None);
        assert!(parse_json_body(b"[1,{}]", &want, false).unwrap().is_some());
    }

    #[test]
    fn partial_json_parse_still_rejects_what_a_full_parse_rejects() {
        let want = names(&["a"]);
        let deep = format!(r#"{{"a":1,"b":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        let bad: [&[u8]; 4] = [
            b"{\"a\":1,\"b\":[1,}",
            deep.as_bytes(),
            b"{\"a\":1} x",
            b"{\"b\":tru}",
        ];
        for body in bad {
            assert!(parse_json_body(body, &want, true).is_err());
            assert!(
                parse_json_body(body, &want, false).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn plain_header_calls_compile_to_operators() {
        let lowered = |v: &str, response| lower_header_calls(&split_regions(v), response);
        let ops = lowered(
            r#"m={{ request_header(":method") }}&h={{header('X-A')}}%%"#,
            true,
        )
        .unwrap()
        .unwrap();
        let req = |n: &str| OperatorKind::Req {
            name: n.into(),
            alt: None,
        };
        let resp = |n: &str| OperatorKind::Resp {
            name: n.into(),
            alt: None,
        };
        let kinds: Vec<_> = ops
            .iter()
            .map(|s| match s {
                Segment::Op(op) => Ok(op.kind.clone()),
                Segment::Literal(l) => Err(l.clone()),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                Err("m=".into()),
                Ok(req(":method")),
                Err("&h=".into()),
                Ok(resp("x-a")),
                Err("%".into())
            ]
        );
        let in_request = lowered("{{ header('x-a') }}", false).unwrap().unwrap();
        assert!(matches!(&in_request[..], [Segment::Op(op)] if op.kind == req("x-a")));
        for other in [
            "{{- header('a') }}",
            "{{ header('a') | upper }}",
            "{{ header(name) }}",
            "{{ header('a' ~ 'b') }}",
            "{{ header('a\\'b') }}",
            "{{ env('a') }}",
            "{% if 1 %}{{ header('a') }}{% endif %}",
            "{# c #}",
        ] {
            assert!(lowered(other, true).is_none(), "{other}");
        }
    }

    #[test]
    fn lowered_header_calls_render_as_the_template_engine_does() {
        use crate::memory::{MemoryMessage, MemoryStreamInfo};
        use crate::{BodyMode, Transformation};
        // `{{-` is never lowered; with nothing to strip it renders the same through Jinja.
        let values = [
            "m={{ request_header(\":METHOD\") }} h={{ header('x-a') }} n={{ header('none') }} %REQ(x-a)%\n",
            "{{ request_header('x-a') }}",
            "{{ header(\":status\") }}",
        ];
        for side in ["request", "response"] {
            for v in values {
                let config = |v: &str| {
                    let set = serde_json::json!([{"name": "x-out", "value": v}]);
                    Transformation::from_json(
                        serde_json::json!({ side: {"set": set} })
                            .to_string()
                            .as_bytes(),
                    )
                    .unwrap()
                };
                let outputs: Vec<_> = [v.to_owned(), v.replace("{{", "{{-")]
                    .iter()
                    .map(|v| {
                        let t = config(v);
                        let mut request = MemoryMessage::new(
                            &[
                                (":method", "POST"),
                                (":status", "q"),
                                ("x-a", "1"),
                                ("X-A", "2"),
                            ],
                            "",
                        );
                        let mut info = MemoryStreamInfo::default();
                        let snapshot = t.capture_request_headers(&request);
                        t.apply_request(&mut request, BodyMode::HeadersOnly, &mut info)
                            .unwrap();
                        let mut response =
                            MemoryMessage::new(&[(":status", "201"), ("x-a", "r")], "");
                        t.apply_response(
                            &mut response,
                            &snapshot,
                            BodyMode::HeadersOnly,
                            &mut info,
                        )
                        .unwrap();
                        (request.header("x-out"), response.header("x-out"))
                    })
                    .collect();
                assert_eq!(outputs[0], outputs[1], "{side}: {v:?}");
                assert!(outputs[0].0.is_some() || outputs[0].1.is_some(), "{v:?}");
            }
        }
    }
}
