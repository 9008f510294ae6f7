//! Fault injection for crash-consistency tests.
//!
//! With `WICK_FAULT=<point>:<n>` in the environment, the process aborts (no destructors, no
//! flushing: as abrupt as SIGKILL) the `n`-th time it reaches `point`. Points:
//! - `after-log`: a trainer has logged and flushed an epoch's scalars but not yet saved its checkpoint;
//! - `checkpoint-write`: a checkpoint's temporary file is written but not yet renamed into place.
//!
//! [`poisoned`] is the non-aborting kind: with `WICK_FAULT=nan-loss:<n>` a trainer's `n`-th
//! training loss reads as NaN, which tests the divergence path (stop with a message, keep the
//! last good checkpoint) without depending on how a given learning rate blows up.
//!
//! Without the variable this is one environment lookup per call, at epoch or checkpoint granularity.

use std::sync::atomic::{AtomicU64, Ordering};

static HITS: AtomicU64 = AtomicU64::new(0);

/// True the `n`-th time this is asked about `name` when `WICK_FAULT=<name>:<n>`.
fn hit(name: &str) -> Option<String> {
    let spec = std::env::var("WICK_FAULT").ok()?;
    let (p, n) = spec.split_once(':')?;
    if p != name {
        return None;
    }
    let hit = HITS.fetch_add(1, Ordering::SeqCst) + 1;
    n.parse::<u64>().is_ok_and(|n| n == hit).then_some(spec)
}

/// True when `WICK_FAULT` is set (any point): callers that write in the background settle
/// their writes before a fault point, so the crash lands where its name says.
pub fn armed() -> bool {
    std::env::var_os("WICK_FAULT").is_some()
}

/// Abort here if `WICK_FAULT` names this point and this is the chosen hit.
pub fn point(name: &str) {
    if let Some(spec) = hit(name) {
        eprintln!("wick: WICK_FAULT={spec}: aborting on purpose");
        std::process::abort();
    }
}

/// True the `n`-th time a trainer asks about `name` when `WICK_FAULT=<name>:<n>` (and never
/// otherwise): the trainer then treats its value as corrupted (e.g. a NaN loss).
pub fn poisoned(name: &str) -> bool {
    hit(name).is_some()
}
