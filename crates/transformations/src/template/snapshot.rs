//! [`HeaderSnapshot`]: the header values a render can see, copied once per side application.

use std::borrow::Cow;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::message::HeaderMap;
use crate::release::KgatewayRelease;

use super::usage::HeaderNeeds;

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

impl HeaderSnapshot {
    /// Copies every value of the headers `needs` asks for (names lowercased; values are made
    /// UTF-8 when read), to be read as `release` reads a repeated header.
    pub fn capture<H: HeaderMap + ?Sized>(
        headers: &H,
        needs: &HeaderNeeds,
        release: KgatewayRelease,
    ) -> HeaderSnapshot {
        if needs.is_empty() {
            return HeaderSnapshot::default();
        }
        if needs.all() {
            let mut data = SnapshotData::with_capacity(release, 16, 1024);
            headers.for_each(&mut |n, v| data.push(n, v));
            return HeaderSnapshot::from_data(data);
        }
        let mut data = SnapshotData::new(release);
        for name in needs.names() {
            headers.with_each(name, &mut |v| data.push(name.as_bytes(), v));
        }
        HeaderSnapshot::from_data(data)
    }
}
