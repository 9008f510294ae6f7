//! Runs `scripts/gym_parity.py` (Gymnasium and wick side by side, same injected randomness)
//! with the Python named by `WICK_PYTHON`, which must have `gymnasium` installed. Without
//! `WICK_PYTHON` the test prints a note and skips; under CI (`CI` set) that is a failure.

use std::path::PathBuf;
use std::process::Command;

fn python() -> Option<String> {
    wick_core::oracle::python("gymnasium").map(|p| p.display().to_string())
}

#[test]
fn gymnasium_parity() {
    let Some(py) = python() else { return };
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = [manifest.join("../scripts/gym_parity.py"), manifest.join("scripts/gym_parity.py")]
        .into_iter()
        .find(|p| p.exists())
        .expect("scripts/gym_parity.py");
    let mut cmd = Command::new(&py);
    cmd.arg(&script);
    // The script builds and runs the `parity` example with cargo (same CARGO_TARGET_DIR).
    let out = cmd.output().expect("run the parity script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "Gymnasium parity failed (exit {:?}):\n{stdout}\n{stderr}", out.status.code());
    assert!(stdout.contains("all environments agree"), "{stdout}");
}
