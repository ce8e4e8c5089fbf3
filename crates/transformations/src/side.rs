//! One compiled side of a transformation ([`Side`]): its header, body and metadata values and
//! what they read, as the compiler in [`crate::apply`] leaves them.

use std::sync::OnceLock;

use crate::config::ParseAs;
use crate::template::{Compiled, HeaderNeeds, Usage};

#[derive(Debug)]
pub(crate) struct HeaderOp {
    pub(crate) name: String,
    pub(crate) value: Compiled,
    pub(crate) field: FieldPath,
    /// A literal value with no CR, LF or NUL: sent as it is, without the per-request check.
    pub(crate) checked_literal: bool,
}

#[derive(Debug)]
pub(crate) struct MetadataOp {
    pub(crate) namespace: String,
    pub(crate) key: String,
    pub(crate) value: Compiled,
    pub(crate) field: FieldPath,
}

/// One side (request or response), compiled.
#[derive(Debug, Default)]
pub struct Side {
    pub(crate) set: Vec<HeaderOp>,
    pub(crate) add: Vec<HeaderOp>,
    pub(crate) remove: Vec<String>,
    pub(crate) body: Option<(Compiled, String)>,
    pub(crate) parse_as: ParseAs,
    pub(crate) metadata: Vec<MetadataOp>,
    pub(crate) usage: Usage,
    /// Headers of this side's own message to snapshot before rendering.
    pub(crate) own_needs: HeaderNeeds,
    /// Bit i: the i-th `set` (of the first 64) may be sent as an add: it names a header no
    /// earlier `set` names (so when the header was absent before the side ran, it still is when
    /// that op's turn comes), shorter than 64 bytes (the length mask's range).
    pub(crate) addable_sets: u64,
    /// Bit i: the i-th `set` names a header the body step writes.
    pub(crate) body_header_sets: u64,
    /// Bit n: an addable `set` names a header n bytes long, so a map's other names are passed
    /// over without comparing.
    pub(crate) set_name_lengths: u64,
    /// [`Side::has_work`] and [`Side::needs_body`], worked out at load (asked at every hook).
    pub(crate) work: bool,
    pub(crate) body_needed: bool,
    /// [`Side::compute_prerenders`], worked out at load.
    pub(crate) prerenders: bool,
}

impl Side {
    /// False when there is nothing to do: the side passes through untouched, unbuffered.
    /// `parseAs: AsJson` alone is work: a body that is not JSON is answered with a 400.
    pub fn has_work(&self) -> bool {
        self.work
    }

    pub(crate) fn compute_has_work(&self) -> bool {
        !self.set.is_empty()
            || !self.add.is_empty()
            || !self.remove.is_empty()
            || !self.metadata.is_empty()
            || self.body.is_some()
            || self.parse_as == ParseAs::AsJson
    }

    /// Whether the glue should buffer this side's body (unless the stream is an upgrade or
    /// CONNECT). False with nothing to do or `parseAs: None`; otherwise true when something
    /// reads or replaces the body: a body template, `AsJson`, or `body()`/`context()`.
    pub fn needs_body(&self) -> bool {
        self.body_needed
    }

    pub(crate) fn compute_needs_body(&self) -> bool {
        self.work
            && self.parse_as != ParseAs::None
            && (self.body.is_some() || self.parse_as == ParseAs::AsJson || self.usage.body)
    }

    pub fn parse_as(&self) -> ParseAs {
        self.parse_as
    }

    /// Whether a successful application always leaves header `name` (any case) with exactly
    /// `value`: its last `set` of that name is that literal, and no `add` or `remove` names it.
    /// The glue then skips setting the same header again.
    pub fn always_sets(&self, name: &str, value: &str) -> bool {
        let names = |n: &str| n.eq_ignore_ascii_case(name);
        self.set
            .iter()
            .rev()
            .find(|op| names(&op.name))
            .is_some_and(|op| matches!(&op.value, Compiled::Literal(v) if **v == *value))
            && !self.add.iter().any(|op| names(&op.name))
            && !self.remove.iter().any(|n| names(n))
    }
}

/// The path that names a value in errors and warnings (and its template), e.g.
/// `request.set[0].value`. The paths of the first entries of each list are shared by every
/// config in the process, rather than kept once per route.
pub(crate) type FieldPath = std::sync::Arc<str>;

/// Lists of up to this many entries have their paths shared (a fixed table: 2 sides × 3 lists ×
/// this many).
const SHARED_FIELD_PATHS: usize = 64;

/// The sides and lists whose paths are shared, by their place in the table.
const SIDES: [&str; 2] = ["request", "response"];
const LISTS: [(&str, &str); 3] = [
    ("set", "value"),
    ("add", "value"),
    ("dynamicMetadata", "value.stringValue"),
];

/// [`field_path_text`], shared for the first [`SHARED_FIELD_PATHS`] entries of a list: each path
/// is built once per process, in a table indexed by side, list and entry (no lock, no hashing).
pub(crate) fn field_path(side: &str, list: &str, index: usize, leaf: &str) -> FieldPath {
    type Paths = [[[OnceLock<FieldPath>; SHARED_FIELD_PATHS]; LISTS.len()]; SIDES.len()];
    static SHARED: Paths =
        [const { [const { [const { OnceLock::new() }; SHARED_FIELD_PATHS] }; LISTS.len()] };
            SIDES.len()];
    let side_at = SIDES.iter().position(|s| *s == side);
    let list_at = LISTS.iter().position(|l| *l == (list, leaf));
    match (side_at, list_at) {
        (Some(s), Some(l)) if index < SHARED_FIELD_PATHS => SHARED[s][l][index]
            .get_or_init(|| field_path_text(side, list, index, leaf).into())
            .clone(),
        _ => field_path_text(side, list, index, leaf).into(),
    }
}

/// `side.list[index].leaf`, built by hand: `format!` cost a tenth of compiling a lowered value,
/// on every value of every route.
fn field_path_text(side: &str, list: &str, index: usize, leaf: &str) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = index;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let digits = std::str::from_utf8(&digits[at..]).expect("ASCII digits");
    let mut path = String::with_capacity(side.len() + list.len() + digits.len() + leaf.len() + 4);
    for part in [side, ".", list, "[", digits, "].", leaf] {
        path.push_str(part);
    }
    path
}

#[cfg(test)]
mod field_path_tests {
    use super::field_path;
    use std::sync::Arc;

    #[test]
    fn field_paths_name_the_list_index_and_leaf() {
        assert_eq!(
            &*field_path("request", "set", 0, "value"),
            "request.set[0].value"
        );
        assert_eq!(
            &*field_path("response", "dynamicMetadata", 1207, "value.stringValue"),
            "response.dynamicMetadata[1207].value.stringValue"
        );
        assert_eq!(
            *field_path("request", "add", usize::MAX, "value"),
            format!("request.add[{}].value", usize::MAX)
        );
    }

    #[test]
    fn the_paths_of_first_entries_are_shared_and_later_ones_are_not() {
        let shared = |i| {
            Arc::ptr_eq(
                &field_path("response", "add", i, "value"),
                &field_path("response", "add", i, "value"),
            )
        };
        assert!(shared(0));
        assert!(shared(63));
        assert!(!shared(64));
    }
}
