//! Helpers for the end-to-end tests: run the `wick` binary, make scratch directories, find Python.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn wick() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wick"));
    c.env("WICK_DATA_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/data"));
    c
}

/// Run wick with `args`; returns (exit code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let out: Output = wick().args(args).output().expect("run wick");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Run wick and require success.
pub fn run_ok(args: &[&str]) -> String {
    let (code, out, err) = run(args);
    assert_eq!(code, 0, "wick {args:?} failed:\nstdout: {out}\nstderr: {err}");
    out
}

/// A fresh scratch directory for one test, removed when the test passes (a failing test keeps
/// it for a look: its path is in the temporary directory, `wick-e2e-<tag>-<pid>`).
pub fn scratch(tag: &str) -> Scratch {
    let d = std::env::temp_dir().join(format!("wick-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Scratch(d)
}

/// See [`scratch`]: derefs to its path.
pub struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The Python with tensorboard/safetensors/numpy: `$WICK_PYTHON` (see `wick_core::oracle`).
/// Without it the oracle tests skip with a note, except under CI (`CI` set).
pub fn python() -> Option<String> {
    wick_core::oracle::python("tensorboard, safetensors and numpy").map(|p| p.display().to_string())
}

pub fn script(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// metrics.json without its wall-clock figures (keys ending in `_per_s` or `_seconds`).
pub fn metrics_sans_timing(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("metrics.json")).expect("metrics.json");
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    if let Some(o) = v.as_object_mut() {
        o.retain(|k, _| !k.ends_with("_per_s") && !k.ends_with("_seconds"));
    }
    v
}

/// Scalars as TensorBoard shows them (purging after a resume), without wall-clock tags.
pub fn scalars_sans_timing(dir: &Path) -> std::collections::BTreeMap<String, Vec<(u64, f32)>> {
    let mut m = wick_core::tb::read_scalars(dir).expect("read event files");
    m.retain(|k, _| !k.ends_with("_per_s") && k != "charts/SPS");
    m
}

/// Every file in `dir` (recursively) with its bytes.
pub fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut m = std::collections::BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                m.extend(snapshot(&p));
            } else {
                m.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    m
}
