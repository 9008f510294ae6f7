//! Run directories: `runs/<algo>__<env-or-data>__s<seed>__<UTC time>` holding the event
//! file(s), `config.toml` (the resolved config), `checkpoint.safetensors` (the latest full
//! state, for `--resume`), `best.safetensors` where the trainer keeps a best model, and
//! `metrics.json` (the final figures).
//!
//! An existing non-empty directory is never reused silently: `--resume` continues it,
//! `--force` replaces it, anything else is an error.

use crate::checkpoint::write_atomic;
use crate::error::{Error, Result};
use std::fs;
use std::path::{Path, PathBuf};

pub const CONFIG_FILE: &str = "config.toml";
pub const CHECKPOINT_FILE: &str = "checkpoint.safetensors";
pub const BEST_FILE: &str = "best.safetensors";
pub const METRICS_FILE: &str = "metrics.json";

#[derive(Clone, Debug)]
pub struct RunDir {
    path: PathBuf,
}

/// `<algo>__<env-or-data>__s<seed>__<YYYYmmddTHHMMSSZ>`; `/` and spaces in the data name become `_`.
pub fn default_run_name(algo: &str, data: &str, seed: u64) -> String {
    let data: String = Path::new(data)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| data.to_string())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' })
        .collect();
    format!("{algo}__{data}__s{seed}__{}", utc_stamp())
}

/// Current UTC time as `YYYYmmddTHHMMSSZ` (no clock crate needed: civil-from-days, H. Hinnant).
pub fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

impl RunDir {
    /// A new run directory `logdir/name`. Fails if it exists and is not empty, unless `force`,
    /// which empties it first.
    pub fn create(logdir: &Path, name: &str, force: bool) -> Result<RunDir> {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(Error::new(format!("bad run name '{name}': use a plain directory name")));
        }
        let path = logdir.join(name);
        if path.exists() {
            if !path.is_dir() {
                return Err(Error::new(format!("run directory '{}' exists and is not a directory", path.display())));
            }
            let non_empty = fs::read_dir(&path).map(|mut d| d.next().is_some()).unwrap_or(true);
            if non_empty {
                if !force {
                    return Err(Error::new(format!(
                        "run directory '{}' already exists: pass --resume {} to continue it, --force to replace it, or choose another --run-name",
                        path.display(),
                        path.display()
                    )));
                }
                fs::remove_dir_all(&path)
                    .map_err(|e| Error::new(format!("--force: cannot remove '{}': {e}", path.display())))?;
            }
        }
        fs::create_dir_all(&path)
            .map_err(|e| Error::new(format!("cannot create run directory '{}': {e}", path.display())))?;
        // Fail now, not at the first checkpoint, if we cannot write here.
        let probe = path.join(".wick-write-test");
        fs::write(&probe, b"")
            .and_then(|_| fs::remove_file(&probe))
            .map_err(|e| Error::new(format!("cannot write in run directory '{}': {e}", path.display())))?;
        Ok(RunDir { path })
    }

    /// An existing run directory to continue: it must hold `config.toml`.
    pub fn open(path: &Path) -> Result<RunDir> {
        if !path.is_dir() {
            return Err(Error::new(format!("run directory '{}' not found", path.display())));
        }
        if !path.join(CONFIG_FILE).is_file() {
            return Err(Error::new(format!(
                "'{}' is not a wick run directory (no {CONFIG_FILE})",
                path.display()
            )));
        }
        // Temporary files of atomic writes that a killed process left behind.
        if let Ok(rd) = fs::read_dir(path) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.contains(".tmp.") {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(RunDir { path: path.to_path_buf() })
    }

    /// The run directory that rank 0 of a data-parallel run creates or opens, as the other
    /// ranks name it: nothing is checked or written (they write no files; see dist.rs).
    pub fn of_root(path: &Path) -> RunDir {
        RunDir { path: path.to_path_buf() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn checkpoint(&self) -> PathBuf {
        self.file(CHECKPOINT_FILE)
    }

    pub fn best(&self) -> PathBuf {
        self.file(BEST_FILE)
    }

    pub fn write_config(&self, toml_text: &str) -> Result<()> {
        write_atomic(&self.file(CONFIG_FILE), toml_text.as_bytes())
    }

    pub fn read_config(&self) -> Result<toml::Table> {
        crate::config::read_toml(&self.file(CONFIG_FILE))
    }

    /// The run's `config.toml` as a trainer's config; an unknown key or value is a one-line
    /// error naming the file.
    pub fn config<C: serde::de::DeserializeOwned>(&self) -> Result<C> {
        toml::Value::Table(self.read_config()?)
            .try_into()
            .map_err(|e: toml::de::Error| Error::new(format!("{}: {CONFIG_FILE}: {}", self.path.display(), e.message().trim())))
    }

    /// `metrics.json`, pretty-printed with sorted keys, written atomically.
    pub fn write_metrics(&self, metrics: &serde_json::Value) -> Result<()> {
        let mut text = serde_json::to_string_pretty(metrics).map_err(|e| Error::new(e.to_string()))?;
        text.push('\n');
        write_atomic(&self.file(METRICS_FILE), text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_to_reuse_a_non_empty_dir_without_force() {
        let logdir = std::env::temp_dir().join(format!("wick-run-{}", std::process::id()));
        let _ = fs::remove_dir_all(&logdir);
        let r = RunDir::create(&logdir, "a", false).unwrap();
        fs::write(r.file("keep.txt"), b"precious").unwrap();
        let e = RunDir::create(&logdir, "a", false).unwrap_err().to_string();
        assert!(e.contains("already exists") && e.contains("--resume"), "{e}");
        assert_eq!(fs::read(r.file("keep.txt")).unwrap(), b"precious");
        let r = RunDir::create(&logdir, "a", true).unwrap();
        assert!(!r.file("keep.txt").exists());
        assert!(RunDir::create(&logdir, "../x", false).is_err());
        assert!(RunDir::open(&logdir.join("a")).unwrap_err().to_string().contains("not a wick run directory"));
    }

    #[test]
    fn names_and_stamps() {
        let s = utc_stamp();
        assert_eq!(s.len(), 16);
        assert!(s.starts_with("20") && s.ends_with('Z'));
        let n = default_run_name("fvsbn", "data/my set.csv", 3);
        assert!(n.starts_with("fvsbn__my_set.csv__s3__"), "{n}");
    }
}

/// What a trainer gets besides its config: where to write, on which device, and whether to continue.
pub struct Runtime {
    pub dir: RunDir,
    pub device: candle_core::Device,
    /// Continue from `dir/checkpoint.safetensors` (if there is one) instead of starting afresh.
    pub resume: bool,
    /// No progress output.
    pub quiet: bool,
}

/// How a training run ended.
#[derive(Debug)]
pub enum Outcome {
    /// Ran to the end; the final figures (also written to `metrics.json`).
    Finished(serde_json::Value),
    /// Stopped by Ctrl-C after saving a checkpoint at the given step.
    Interrupted { step: u64 },
}
