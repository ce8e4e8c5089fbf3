//! A per-thread meter of bytes and time (rustformations patch, not in upstream MiniJinja).
//!
//! Fuel counts instructions, not what each instruction copies: `"a" * n`, `s ~ s` or
//! `big|upper` in a loop allocate without bound. While a [`Meter`] is installed on the thread,
//! every operation that builds a string or a sequence from others charges the bytes it is
//! about to produce *before* allocating them, and the fuel tracker checks a wall-clock
//! deadline every 1024 instructions. Exceeding either is an [`ErrorKind::OutOfFuel`] error
//! and marks the meter as tripped. Constant folding at compile time charges the same way: a
//! fold over the budget is simply not done (and the meter says it tripped).
//!
//! With no meter installed (the default) nothing is charged and nothing changes.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};

/// What tripped a meter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tripped {
    /// More bytes were about to be produced or copied than the meter allowed.
    Bytes,
    /// The deadline passed.
    Time,
}

/// A budget of bytes and time, installed on the current thread with [`install`].
#[derive(Debug, Clone, Copy)]
pub struct Meter {
    /// Bytes that may still be produced or copied.
    pub bytes_left: u64,
    /// How long the metered work may run, counted from the first clock reading.
    pub time_limit: Duration,
    /// When the clock was first read (lazily: work too small to reach a check never reads it).
    pub started: Option<Instant>,
    /// Bytes charged since the clock was last read.
    pub unclocked: u64,
    /// Set when the budget was exceeded.
    pub tripped: Option<Tripped>,
    /// The lowest stack address the recursive walks over values (printing, serializing,
    /// comparing, hashing) may reach: [`STACK_ALLOWANCE`] below where the meter was installed.
    pub stack_limit: usize,
}

/// Stack the recursive walks over a value may use below the point where the meter was
/// installed. A value nested 100,000 deep (a loop of `ns.v = [ns.v]`) would otherwise overflow
/// the thread's stack, which aborts the process.
pub const STACK_ALLOWANCE: usize = 1024 * 1024;

#[inline(always)]
fn stack_position() -> usize {
    let probe = 0u8;
    std::hint::black_box(std::ptr::addr_of!(probe)) as usize
}

/// Whether a recursive walk over a value must stop here (the stack allowance is used up).
#[inline]
pub fn stack_exhausted() -> bool {
    METER.with(|cell| match cell.get() {
        Some(meter) => stack_position() < meter.stack_limit,
        None => false,
    })
}

/// Bytes charged between two clock readings.
const CLOCK_EVERY_BYTES: u64 = 1 << 20;

impl Meter {
    /// A fresh meter.
    pub fn new(bytes: u64, time_limit: Duration) -> Meter {
        Meter {
            bytes_left: bytes,
            time_limit,
            started: None,
            unclocked: 0,
            tripped: None,
            stack_limit: 0,
        }
    }

    fn check_time(&mut self) -> Result<(), Error> {
        self.unclocked = 0;
        let now = Instant::now();
        let started = *self.started.get_or_insert(now);
        if now.duration_since(started) > self.time_limit {
            return Err(self.trip(Tripped::Time));
        }
        Ok(())
    }

    fn trip(&mut self, why: Tripped) -> Error {
        self.tripped = Some(why);
        let detail = match why {
            Tripped::Bytes => "render budget exceeded: too many bytes produced or copied",
            Tripped::Time => "render budget exceeded: too much time",
        };
        Error::new(ErrorKind::OutOfFuel, detail)
    }
}

thread_local! {
    static METER: Cell<Option<Meter>> = const { Cell::new(None) };
}

/// Installs `meter` on this thread (or removes it with `None`) and returns the previous one.
pub fn install(mut meter: Option<Meter>) -> Option<Meter> {
    if let Some(meter) = &mut meter {
        meter.stack_limit = stack_position().saturating_sub(STACK_ALLOWANCE);
    }
    METER.with(|m| m.replace(meter))
}

/// The meter installed on this thread.
pub fn current() -> Option<Meter> {
    METER.with(|m| m.get())
}

/// Charges `bytes` about to be produced or copied. Fails (and trips the meter) when they do
/// not fit; the caller must then not allocate them.
#[inline]
pub fn charge(bytes: usize) -> Result<(), Error> {
    METER.with(|cell| {
        let Some(mut meter) = cell.get() else {
            return Ok(());
        };
        let bytes = bytes as u64;
        let result = if meter.tripped.is_some() || bytes > meter.bytes_left {
            meter.bytes_left = 0;
            Err(meter.trip(meter.tripped.unwrap_or(Tripped::Bytes)))
        } else {
            meter.bytes_left -= bytes;
            meter.unclocked += bytes;
            if meter.unclocked >= CLOCK_EVERY_BYTES {
                meter.check_time()
            } else {
                Ok(())
            }
        };
        cell.set(Some(meter));
        result
    })
}

/// Charges `count` items of `size` bytes each (saturating).
#[inline]
pub fn charge_items(count: usize, size: usize) -> Result<(), Error> {
    charge(count.saturating_mul(size))
}

/// Checks the deadline (called by the fuel tracker every 1024 instructions).
pub fn tick() -> Result<(), Error> {
    METER.with(|cell| {
        let Some(mut meter) = cell.get() else {
            return Ok(());
        };
        let result = match meter.tripped {
            Some(why) => Err(meter.trip(why)),
            None => meter.check_time(),
        };
        cell.set(Some(meter));
        result
    })
}

/// A `String` that charges the meter before it grows (captured output: `{% set x %}`,
/// macro calls, `caller()`).
#[derive(Default)]
pub(crate) struct MeteredString(pub String);

impl std::fmt::Write for MeteredString {
    #[inline]
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        charge(s.len()).map_err(|_| std::fmt::Error)?;
        self.0.push_str(s);
        Ok(())
    }
}

/// A byte buffer that charges the meter before it grows (`tojson`).
#[derive(Default)]
pub(crate) struct MeteredVec(pub Vec<u8>);

impl std::io::Write for MeteredVec {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        charge(buf.len()).map_err(std::io::Error::other)?;
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Items charged together while a sequence is collected.
const COLLECT_CHUNK: usize = 1024;

/// Collects `iter`, charging the size of every item before it is stored (the items of a lazy
/// sequence, `[x] * n` or `a + b`, cost nothing until they are collected).
pub(crate) fn collect(
    iter: impl Iterator<Item = crate::value::Value>,
) -> Result<Vec<crate::value::Value>, Error> {
    let size = std::mem::size_of::<crate::value::Value>();
    let mut rv = Vec::new();
    for (i, item) in iter.enumerate() {
        if i % COLLECT_CHUNK == 0 {
            charge_items(COLLECT_CHUNK, size)?;
        }
        rv.push(item);
    }
    Ok(rv)
}
