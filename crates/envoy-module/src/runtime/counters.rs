//! Envoy's counters as the SDK reports them.

use crate::api::CounterId;

/// Envoy's metrics result for `define_counter` (Success=0, Frozen=3, ...) as our result.
pub(crate) fn counter_defined(name: &str, result: u32, id: usize) -> Result<CounterId, String> {
    match result {
        0 => Ok(CounterId(id)),
        3 => Err(format!(
            "counter '{name}': stats are frozen (define counters while the config loads)"
        )),
        other => Err(format!(
            "counter '{name}': Envoy answered metrics result {other}"
        )),
    }
}
