//! Ctrl-C (SIGINT; also SIGTERM and SIGHUP, which mpirun/srun send the ranks): trainers poll [`interrupted`] between batches, save a checkpoint,
//! flush their logs and exit with a message saying how to resume.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Install the handler (idempotent). A second Ctrl-C while a run is saving exits at once.
pub fn install() {
    INSTALL.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!("interrupted twice: exiting without saving");
                std::process::exit(130);
            }
        });
    });
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Die quietly when stdout is closed early (`wick list | head`), as Unix tools do, instead of
/// Rust's default of ignoring SIGPIPE and panicking on the failed write.
pub fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
