//! Sharing compiled configs by their bytes.
//!
//! Envoy hands a module one config per route (and per listener filter). One policy often lands
//! on thousands of routes, so the same bytes arrive thousands of times. An [`Interner`] maps
//! the bytes to the one live compiled value: the first config compiles, every later one with
//! the same bytes shares it. The table holds no strong reference: the value (and its table
//! entry) is freed as soon as the last holder drops it, whichever thread that is (Envoy creates
//! and destroys configs on its main thread, while a worker may still hold one for a request in
//! flight and drop it last).
//!
//! The table keys a value by a 128-bit digest of its bytes (SipHash-1-3 under a key drawn from
//! the OS at first use), not by a copy of the bytes: a copy would cost each distinct policy its
//! whole size again (hundreds of bytes a route). Two different configs share a digest with a
//! chance of about n²/2¹²⁹ for n live configs (about 10⁻²⁷ for a million), and a policy author
//! cannot aim at a collision without the process's key.
//!
//! Only values that are a pure function of the bytes may be interned: a compiled
//! [`Transformation`](crate::Transformation) is immutable and reads nothing but its own state and
//! the process-wide environment.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hasher;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use siphasher::sip128::{Hasher128, SipHasher13};

/// What the table knows of a value's bytes.
type Digest = u128;

type Table<T> = HashMap<Digest, Weak<Entry<T>>, foldhash::quality::RandomState>;

/// The digest of `bytes` under this process's key.
fn digest(bytes: &[u8]) -> Digest {
    static KEY: OnceLock<[u8; 16]> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut key = [0; 16];
        if getrandom::fill(&mut key).is_err() {
            // The standard library's per-process hash keys, seeded its own way.
            use std::hash::BuildHasher;
            let state = std::hash::RandomState::new();
            key[..8].copy_from_slice(&state.hash_one(1u8).to_le_bytes());
            key[8..].copy_from_slice(&state.hash_one(2u8).to_le_bytes());
        }
        key
    });
    let mut hasher = SipHasher13::new_with_key(key);
    hasher.write(bytes);
    hasher.finish128().as_u128()
}

/// A table of live values keyed by the bytes they were made from. Meant to be a `static`
/// (its entries point back to it to remove themselves).
pub struct Interner<T: 'static> {
    table: Mutex<Option<Table<T>>>,
}

/// One shared value. Cloning it is an `Arc` clone; the value is dropped, and its entry removed
/// from the table, when the last clone is.
pub struct Interned<T: 'static>(Arc<Entry<T>>);

struct Entry<T: 'static> {
    value: T,
    /// The digest of the bytes it was made from and the table it is listed in (none for an
    /// unshared value).
    listed: Option<(Digest, &'static Interner<T>)>,
}

impl<T: 'static> Interner<T> {
    pub const fn new() -> Interner<T> {
        Interner {
            table: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Table<T>>> {
        // A panic elsewhere while holding the lock leaves the table consistent (every change
        // is one map operation), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live value made from `key`, or a new one made by `make` (outside the lock, so a
    /// worker dropping the last holder of another value never waits for a compile) and listed.
    /// An error of `make` is returned and nothing is listed.
    pub fn get_or_try_insert_with<E>(
        &'static self,
        key: &[u8],
        make: impl FnOnce() -> Result<T, E>,
    ) -> Result<Interned<T>, E> {
        let key = digest(key);
        if let Some(live) = self.get_by_digest(key) {
            return Ok(live);
        }
        let value = make()?;
        let mut guard = self.lock();
        let table = guard.get_or_insert_with(HashMap::default);
        // Another thread may have listed the same bytes meanwhile: share theirs (ours is
        // dropped after the lock is released).
        if let Some(live) = table.get(&key).and_then(Weak::upgrade) {
            drop(guard);
            drop(value);
            return Ok(Interned(live));
        }
        let entry = Arc::new(Entry {
            value,
            listed: Some((key, self)),
        });
        // Replaces a dead entry of the same bytes, if one is still waiting to remove itself:
        // it then finds it is no longer the one listed and leaves ours alone.
        table.insert(key, Arc::downgrade(&entry));
        Ok(Interned(entry))
    }

    /// The live value made from `key`, if there is one.
    pub fn get(&self, key: &[u8]) -> Option<Interned<T>> {
        self.get_by_digest(digest(key))
    }

    fn get_by_digest(&self, key: Digest) -> Option<Interned<T>> {
        self.lock()
            .as_ref()?
            .get(&key)
            .and_then(Weak::upgrade)
            .map(Interned)
    }

    /// How many values are listed (live, or being dropped right now).
    pub fn len(&self) -> usize {
        self.lock().as_ref().map_or(0, HashMap::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&self, key: Digest, entry: *const Entry<T>) {
        let mut guard = self.lock();
        let Some(table) = guard.as_mut() else { return };
        if table
            .get(&key)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), entry))
        {
            table.remove(&key);
            // After a route update replaced most routes, give the slots back.
            if table.capacity() > 64 && table.len() * 4 < table.capacity() {
                table.shrink_to(table.len() * 2);
            }
        }
    }
}

impl<T: 'static> Default for Interner<T> {
    fn default() -> Interner<T> {
        Interner::new()
    }
}

impl<T: 'static> Interned<T> {
    /// A value listed nowhere (not shared with anything by its bytes).
    pub fn unshared(value: T) -> Interned<T> {
        Interned(Arc::new(Entry {
            value,
            listed: None,
        }))
    }

    /// Whether two handles share one value.
    pub fn ptr_eq(a: &Interned<T>, b: &Interned<T>) -> bool {
        Arc::ptr_eq(&a.0, &b.0)
    }

    /// How many handles share this value.
    pub fn holders(this: &Interned<T>) -> usize {
        Arc::strong_count(&this.0)
    }
}

impl<T: 'static> Clone for Interned<T> {
    fn clone(&self) -> Interned<T> {
        Interned(self.0.clone())
    }
}

impl<T: 'static> Deref for Interned<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0.value
    }
}

impl<T: fmt::Debug + 'static> fmt::Debug for Interned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.value.fmt(f)
    }
}

impl<T: 'static> Drop for Entry<T> {
    fn drop(&mut self) {
        // The last holder is gone: unlist (only if the table still lists this very entry).
        // The value itself is dropped after this returns, outside the lock.
        if let Some((key, table)) = &self.listed {
            table.remove(*key, self as *const Entry<T>);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Interned, Interner};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts how many values were made and how many are alive.
    struct Counted {
        text: String,
        alive: &'static AtomicUsize,
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.alive.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn make(
        key: &[u8],
        made: &AtomicUsize,
        alive: &'static AtomicUsize,
    ) -> Result<Counted, String> {
        if key == b"bad" {
            return Err("bad config".into());
        }
        made.fetch_add(1, Ordering::SeqCst);
        alive.fetch_add(1, Ordering::SeqCst);
        Ok(Counted {
            text: String::from_utf8_lossy(key).into_owned(),
            alive,
        })
    }

    #[test]
    fn identical_bytes_share_one_value_and_different_bytes_do_not() {
        static TABLE: Interner<Counted> = Interner::new();
        static ALIVE: AtomicUsize = AtomicUsize::new(0);
        let made = AtomicUsize::new(0);
        let get = |k: &[u8]| TABLE.get_or_try_insert_with(k, || make(k, &made, &ALIVE));
        let a = get(b"{\"a\":1}").unwrap();
        let b = get(b"{\"a\":1}").unwrap();
        let c = get(b"{\"a\": 1}").unwrap();
        assert!(Interned::ptr_eq(&a, &b));
        assert!(!Interned::ptr_eq(&a, &c));
        assert_eq!(made.load(Ordering::SeqCst), 2);
        assert_eq!(a.text, "{\"a\":1}");
        assert_eq!(c.text, "{\"a\": 1}");
        assert_eq!(Interned::holders(&a), 2);
        assert_eq!(TABLE.len(), 2);
        // A failed make lists nothing.
        assert_eq!(get(b"bad").err().as_deref(), Some("bad config"));
        assert_eq!(TABLE.len(), 2);
    }

    #[test]
    fn the_value_and_its_entry_are_freed_with_the_last_holder() {
        static TABLE: Interner<Counted> = Interner::new();
        static ALIVE: AtomicUsize = AtomicUsize::new(0);
        let made = AtomicUsize::new(0);
        let get = |k: &[u8]| TABLE.get_or_try_insert_with(k, || make(k, &made, &ALIVE));
        let a = get(b"x").unwrap();
        let b = a.clone();
        let c = get(b"x").unwrap();
        drop(a);
        drop(b);
        assert_eq!(ALIVE.load(Ordering::SeqCst), 1);
        assert_eq!(TABLE.len(), 1);
        drop(c);
        assert_eq!(ALIVE.load(Ordering::SeqCst), 0);
        assert_eq!(TABLE.len(), 0);
        assert!(TABLE.get(b"x").is_none());
        // The same bytes again compile afresh.
        let d = get(b"x").unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 2);
        assert_eq!(TABLE.len(), 1);
        drop(d);
        assert!(TABLE.is_empty());
        // An unshared value is listed nowhere.
        let u = Interned::unshared(make(b"x", &made, &ALIVE).unwrap());
        assert!(TABLE.is_empty());
        drop(u);
        assert_eq!(ALIVE.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_table_gives_its_slots_back_after_a_mass_replacement() {
        static TABLE: Interner<Counted> = Interner::new();
        static ALIVE: AtomicUsize = AtomicUsize::new(0);
        let made = AtomicUsize::new(0);
        let held: Vec<_> = (0..10_000)
            .map(|i| {
                let k = format!("route {i}");
                TABLE
                    .get_or_try_insert_with(k.as_bytes(), || make(k.as_bytes(), &made, &ALIVE))
                    .unwrap()
            })
            .collect();
        let full = TABLE.lock().as_ref().unwrap().capacity();
        drop(held);
        assert_eq!(ALIVE.load(Ordering::SeqCst), 0);
        assert!(TABLE.is_empty());
        assert!(TABLE.lock().as_ref().unwrap().capacity() < full / 10);
    }

    /// Main thread and workers at once: threads create, share and drop values of a few keys in
    /// a loop (some as the last holder, while others look the same bytes up). Every handle a
    /// thread gets holds the value of its own bytes, all live handles of one key share one
    /// value, and everything is freed at the end.
    #[test]
    fn concurrent_use_from_threads() {
        static TABLE: Interner<Counted> = Interner::new();
        static ALIVE: AtomicUsize = AtomicUsize::new(0);
        let made = Arc::new(AtomicUsize::new(0));
        let keys: Vec<String> = (0..4).map(|i| format!("policy {i}")).collect();
        let long_lived: Vec<_> = keys
            .iter()
            .take(2)
            .map(|k| {
                TABLE
                    .get_or_try_insert_with(k.as_bytes(), || make(k.as_bytes(), &made, &ALIVE))
                    .unwrap()
            })
            .collect();
        std::thread::scope(|s| {
            for t in 0..4 {
                let keys = &keys;
                let made = made.clone();
                let long_lived = &long_lived;
                s.spawn(move || {
                    for round in 0..2_000 {
                        let k = &keys[(round + t) % keys.len()];
                        let h = TABLE
                            .get_or_try_insert_with(k.as_bytes(), || {
                                make(k.as_bytes(), &made, &ALIVE)
                            })
                            .unwrap();
                        assert_eq!(&h.text, k);
                        if let Some(l) = long_lived.iter().find(|l| &l.text == k) {
                            assert!(Interned::ptr_eq(l, &h));
                        }
                        let again = TABLE.get(k.as_bytes()).expect("listed while held");
                        assert!(Interned::ptr_eq(&again, &h));
                        drop(again);
                        drop(h);
                    }
                });
            }
        });
        // The two long-lived values were made once each; the others as often as they died.
        assert!(made.load(Ordering::SeqCst) >= 4);
        assert_eq!(ALIVE.load(Ordering::SeqCst), 2);
        assert_eq!(TABLE.len(), 2);
        drop(long_lived);
        assert_eq!(ALIVE.load(Ordering::SeqCst), 0);
        assert!(TABLE.is_empty());
    }
}
