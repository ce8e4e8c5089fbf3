//! The functions beyond kgateway on hostile input: JSON edits (`json_set`, `json_delete`),
//! query parameters and `regex_extract`. Checks: no panic; a JSON edit either refuses
//! (invalid document, pointer or value) or returns valid JSON; a delete removes one contiguous
//! range and keeps every other byte; a value set through `set_query_param` reads
//! back unchanged through `query_param`; removing a parameter leaves none of that name;
//! `regex_extract` on any pattern and value never panics.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use transformations::json_edit;
use transformations::pattern::{self, Group};
use transformations::query;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    document: &'a str,
    pointer: &'a str,
    value: &'a str,
    path: &'a str,
    name: &'a str,
    group: u8,
    pattern: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    let valid = json_edit::is_valid_json(input.document);
    // Whatever serde_json accepts the scanner accepts (it is more lenient only where serde_json
    // refuses what the grammar allows: lone surrogate escapes, numbers beyond f64).
    if serde_json::from_str::<serde_json::Value>(input.document).is_ok() {
        assert!(valid, "serde_json accepts {:?}", input.document);
    }

    let as_string = serde_json::Value::String(input.value.to_owned()).to_string();
    for value in [as_string.as_str(), input.value] {
        match json_edit::set(input.document, input.pointer, value) {
            Some(out) => {
                assert!(valid);
                assert!(json_edit::is_valid_json(&out), "set made invalid JSON: {out:?}");
            }
            None => assert!(
                !valid
                    || json_edit::parse_pointer(input.pointer).is_none()
                    || !json_edit::is_valid_json(value)
            ),
        }
    }
    if let Some(out) = json_edit::delete(input.document, input.pointer) {
        assert!(json_edit::is_valid_json(&out), "delete made invalid JSON: {out:?}");
        // Only bytes were removed, one contiguous range.
        assert!(out.len() <= input.document.len());
        let keep = input
            .document
            .bytes()
            .zip(out.bytes())
            .take_while(|(a, b)| a == b)
            .count();
        let removed = input.document.len() - out.len();
        assert_eq!(&input.document[..keep], &out[..keep]);
        assert_eq!(&input.document.as_bytes()[keep + removed..], &out.as_bytes()[keep..]);
    }

    if !input.name.is_empty() {
        let set = query::set_query_param(input.path, input.name, input.value);
        if !input.path.contains('#') {
            assert_eq!(query::query_param(&set, input.name), input.value, "{set:?}");
        }
        let removed = query::remove_query_param(&set, input.name);
        assert_eq!(query::query_param(&removed, input.name), "");
    }
    let _ = query::query_param(input.path, input.name);
    let _ = query::remove_query_param(input.path, input.name);

    if let Ok(re) = pattern::compile(input.pattern) {
        let limit = pattern::work_limit(transformations::DEFAULT_RENDER_TIME);
        let _ = pattern::extract(&re, input.value, &Group::Index(input.group as usize), limit);
        let _ = pattern::extract(&re, input.value, &Group::Name(input.name), limit);
    }
});
