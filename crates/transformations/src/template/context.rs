//! What a render reads and how the shared environment's functions find it: the per-side
//! [`RenderData`], the config's own [`ConfigState`], and the [`Root`] context that carries both
//! under keys no template can name, beside the JSON body's keys.

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use minijinja::State;
use minijinja::value::{Object, Value};

use crate::message::{MetadataKey, MetadataSource};
use crate::operators::{Operator, OperatorSource};
use crate::pattern::Patterns;

use super::limits::EnvLookup;
use super::snapshot::HeaderSnapshot;

/// Context key of the per-render data. The dot makes it unreachable as a template variable.
pub(crate) const DATA_KEY: &str = "tx.data";
/// Context key of the config's own state (`env()` lookup, regex patterns), read by the shared
/// environment's functions.
pub(crate) const CONFIG_KEY: &str = "tx.config";
/// Hidden function standing for the operator with the given index.
pub(crate) const OP_FN: &str = "__tx_op";

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
pub(crate) fn shared_config_state(env: EnvLookup, regex_work: u64) -> Arc<ConfigState> {
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

pub(crate) fn data(state: &State) -> Option<Arc<RenderData>> {
    state.lookup(DATA_KEY)?.downcast_object::<RenderData>()
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
        source: MetadataSource,
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
pub(crate) struct Root {
    pub(crate) data: Value,
    pub(crate) config: Value,
    pub(crate) vars: Value,
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
