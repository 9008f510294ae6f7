//! Too big for the machine is bad input too: a trainer estimates what a configuration needs
//! before it allocates, and refuses with one line instead of aborting with "memory allocation of
//! … bytes failed" and a backtrace.
//!
//! The estimate is deliberately rough and on the high side: `f32` parameters held five times
//! (the values, their gradients, Adam's two moments, the best or checkpointed copy) plus the
//! activations of one batch, four bytes each. It is compared with what the machine can give: the
//! kernel's `MemAvailable`, or the cgroup's limit when that is lower. Where neither can be read
//! only absurd sizes (over 2^50 bytes) are refused.

use crate::{bail, Result};

/// Bytes needed by `params` parameters trained with Adam plus `activations` floats of one batch.
pub fn training_bytes(params: u128, activations: u128) -> u128 {
    params.saturating_mul(5).saturating_add(activations).saturating_mul(4)
}

/// Products of sizes without overflow (`u128`, saturating).
pub fn product(sizes: &[usize]) -> u128 {
    sizes.iter().fold(1u128, |a, &s| a.saturating_mul(s as u128))
}

/// Bytes this process can allocate, as far as the OS says.
pub fn available_bytes() -> Option<u128> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| {
        t.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| {
            l.split_whitespace().nth(1).and_then(|kb| kb.parse::<u128>().ok()).map(|kb| kb * 1024)
        })
    });
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max").ok().and_then(|t| t.trim().parse::<u128>().ok());
    match (meminfo, cgroup) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// `1.2 GB`, `4.1 TB`.
pub fn human(bytes: u128) -> String {
    let units = ["bytes", "KB", "MB", "GB", "TB", "PB", "EB"];
    let mut x = bytes as f64;
    let mut u = 0;
    while x >= 1000.0 && u + 1 < units.len() {
        x /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} bytes") } else if x >= 1e4 { format!("{x:.3e} {}", units[u]) } else { format!("{x:.1} {}", units[u]) }
}

/// One-line refusal when `needed` bytes exceed what the machine has; `what` names the
/// configuration and `fix` says what to change (e.g. "use a smaller --hidden").
pub fn ensure_fits(what: &str, needed: u128, fix: &str) -> Result<()> {
    check(what, needed, available_bytes(), fix)
}

fn check(what: &str, needed: u128, available: Option<u128>, fix: &str) -> Result<()> {
    let limit = available.unwrap_or(1u128 << 50);
    if needed > limit {
        let has = match available {
            Some(a) => format!("this machine has {} available", human(a)),
            None => "more than any machine has".to_string(),
        };
        bail!("{what} needs about {} of memory (parameters, optimizer state, one batch's activations); {has}: {fix}", human(needed));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configuration_too_big_is_one_line_naming_the_need_and_the_fix() {
        let need = training_bytes(product(&[2, 64, 4_000_000_000]), product(&[100, 64, 4_000_000_000]));
        let e = check("nade with --hidden 4000000000", need, Some(24_000_000_000), "use a smaller --hidden").unwrap_err().to_string();
        assert!(e.contains("needs about") && e.contains("TB") && e.contains("24.0 GB available") && e.contains("smaller --hidden"), "{e}");
        assert!(!e.contains('\n'));
        assert!(check("x", 1 << 30, Some(24_000_000_000), "").is_ok());
        assert!(check("x", u128::MAX, None, "").is_err());
        assert_eq!(product(&[usize::MAX, usize::MAX, usize::MAX]), u128::MAX);
    }

    #[test]
    fn this_machine_reports_its_memory() {
        if cfg!(target_os = "linux") {
            let a = available_bytes().expect("/proc/meminfo");
            assert!(a > 1 << 20, "{a}");
        }
        assert_eq!(human(999), "999 bytes");
        assert_eq!(human(24_000_000_000), "24.0 GB");
    }
}
