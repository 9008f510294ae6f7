//! The Python oracle the tests check wick against (`tensorboard`, `safetensors`, `numpy`,
//! `gymnasium`): the interpreter named by `WICK_PYTHON`.
//!
//! `scripts/test.sh` sets it up (a `.venv` at the workspace root with
//! `scripts/requirements-test.txt`) and exports an absolute path. Set by hand, a relative
//! `WICK_PYTHON` is read from the workspace root, not from the folder cargo runs a crate's tests
//! in, so `WICK_PYTHON=.venv/bin/python` means the same file for every crate. Unset or empty, the
//! oracle tests print a note and skip — except under CI (`CI` set), where a missing oracle fails.
//! Set to a file that does not exist, it is a one-line failure naming the fix, not a
//! "No such file or directory" deep inside a test.

use std::path::{Path, PathBuf};

/// The workspace root (the folder of the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    // This crate lives in `<root>/core`.
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("core/ has a parent").to_path_buf()
}

/// Resolves a `WICK_PYTHON` value: absolute as given, relative against the workspace root.
pub fn resolve(value: &str) -> PathBuf {
    let p = Path::new(value);
    if p.is_absolute() {
        p.to_path_buf()
    } else if !value.contains('/') {
        // A bare command name (`python3`) is looked up on PATH by the OS, as a shell would.
        p.to_path_buf()
    } else {
        workspace_root().join(p)
    }
}

/// What to do about `WICK_PYTHON`: `Ok(Some(path))` to run the oracle, `Ok(None)` to skip (with
/// a note on stderr), `Err(line)` when the setting cannot work.
pub fn lookup(value: Option<&str>, ci: bool, needs: &str) -> Result<Option<PathBuf>, String> {
    match value {
        Some(v) if !v.is_empty() => {
            let p = resolve(v);
            if v.contains('/') && !p.is_file() {
                return Err(format!(
                    "WICK_PYTHON={v} does not exist (looked at {}); run scripts/test.sh, which creates .venv, or point WICK_PYTHON at a Python with {needs}",
                    p.display()
                ));
            }
            Ok(Some(p))
        }
        _ if ci => Err(format!(
            "CI is set but WICK_PYTHON is not: the oracle check needs a Python with {needs} (scripts/test.sh sets it up)"
        )),
        _ => {
            eprintln!("note: WICK_PYTHON not set; skipping the oracle check that needs {needs} (scripts/test.sh sets it up)");
            Ok(None)
        }
    }
}

/// The oracle Python for a test, or `None` to skip it. Panics with one line when `WICK_PYTHON`
/// names a file that does not exist, or under CI when it is unset.
pub fn python(needs: &str) -> Option<PathBuf> {
    let value = std::env::var("WICK_PYTHON").ok();
    match lookup(value.as_deref(), std::env::var_os("CI").is_some(), needs) {
        Ok(p) => p,
        Err(line) => panic!("{line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_read_from_the_workspace_root() {
        let root = workspace_root();
        assert!(root.join("Cargo.toml").is_file() && root.join("core").is_dir());
        assert_eq!(resolve(".venv/bin/python"), root.join(".venv/bin/python"));
        assert_eq!(resolve("/usr/bin/python3"), PathBuf::from("/usr/bin/python3"));
        assert_eq!(resolve("python3"), PathBuf::from("python3"));
    }

    #[test]
    fn a_missing_python_is_one_line_naming_the_fix() {
        let e = lookup(Some("no/such/python"), false, "numpy").unwrap_err();
        assert!(e.starts_with("WICK_PYTHON=no/such/python does not exist"), "{e}");
        assert!(e.contains("scripts/test.sh") && !e.contains('\n'), "{e}");
        // Unset: skip outside CI, fail under CI.
        assert_eq!(lookup(None, false, "numpy"), Ok(None));
        assert_eq!(lookup(Some(""), false, "numpy"), Ok(None));
        assert!(lookup(None, true, "numpy").unwrap_err().contains("CI is set"));
        // A file that exists is taken, relative or not.
        assert_eq!(lookup(Some("core/Cargo.toml"), false, "x"), Ok(Some(workspace_root().join("core/Cargo.toml"))));
    }
}
