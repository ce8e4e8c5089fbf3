//! The transformation config parser and template compiler on arbitrary bytes: any input is
//! either a compiled transformation or an error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use transformations::{Options, Transformation, smart_header_transformation};

fuzz_target!(|data: &[u8]| {
    let options = Options::default();
    if let Ok(t) = Transformation::from_json_with(data, &options) {
        // A config that loads has sides the glue can query.
        let _ = (t.request().has_work(), t.response().needs_body());
    }
    let _ = smart_header_transformation(data, &options);
});
