//! Ctrl-C (SIGINT/SIGTERM): trainers poll [`interrupted`] between batches, save a checkpoint,
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
