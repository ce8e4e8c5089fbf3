//! The template environment every config shares: MiniJinja's builtins, kgateway's functions,
//! ours ([`super::extensions`]) and the hidden operator function, registered once per fuel
//! budget.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, State, UndefinedBehavior};

use crate::functions;

use super::context::{OP_FN, config_state, data};
use super::extensions;

/// One template environment per fuel budget, shared by every config compiled with it: the
/// builtins and our functions are registered once, not once per config (a MiniJinja
/// environment is tens of KiB). Configs keep it alive; the last one dropped frees it.
pub(crate) fn shared_environment(fuel: u64) -> Arc<Environment<'static>> {
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

/// The names the environment defines (builtins and our functions): the same in every
/// environment [`new_environment`] makes, so worked out once.
pub(crate) fn global_names(env: &Environment<'static>) -> &'static HashSet<String> {
    static NAMES: OnceLock<HashSet<String>> = OnceLock::new();
    NAMES.get_or_init(|| env.globals().map(|(k, _)| k.to_owned()).collect())
}
