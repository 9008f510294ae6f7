//! A training run's session: the plumbing every trainer shares, so that its loop holds only
//! the algorithm (CleanRL-style, top to bottom).
//!
//! ```text
//! let mut run = Session::open(rt, cfg)?;          // config.toml (fresh run), a new event file
//! if let Some(ck) = run.checkpoint()? { … }       // --resume: restore parameters, streams, state
//! run.start(label, resume_step, total, position)?; // TB: purge ≥ resume_step, or log the config
//! loop {
//!     …                                           // the algorithm, logging to run.tb
//!     run.save(ck)?;                              // checkpoint.safetensors (+ the config)
//!     if run.interrupted() { return run.interrupt(step); }  // Ctrl-C
//! }
//! run.finish(metrics)                             // metrics.json, Outcome::Finished
//! ```
//!
//! Every file a run writes goes through here ([`Session::save`], [`Session::save_best`],
//! [`Session::write_file`], [`Session::finish`], the [`TbLogger`] it owns): the one place where a
//! data-parallel run lets rank 0 alone write.

use crate::checkpoint::{write_atomic, Checkpoint};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::run::{Outcome, RunDir, Runtime};
use crate::tb::TbLogger;
use candle_core::Device;
use serde::Serialize;

/// An open run directory with its TensorBoard logger and progress line.
pub struct Session {
    dir: RunDir,
    device: Device,
    resume: bool,
    quiet: bool,
    /// The config as checkpoints store it (metadata `config`) and TensorBoard shows it (text `config`).
    config: serde_json::Value,
    config_toml: String,
    /// The run's event file.
    pub tb: TbLogger,
    /// The progress bar (or plain lines off a terminal); set up by [`Session::start`].
    pub progress: Progress,
}

impl Session {
    /// Open the run of `rt` with resolved config `cfg`: a fresh run writes `config.toml`; either
    /// kind opens a new TensorBoard event file.
    pub fn open<C: Serialize>(rt: &Runtime, cfg: &C) -> Result<Session> {
        let config_toml = crate::config::to_toml(cfg)?;
        if !rt.resume {
            rt.dir.write_config(&config_toml)?;
        }
        let tb = TbLogger::create(rt.dir.path())?;
        let config = serde_json::to_value(cfg).map_err(|e| Error::new(format!("serialising config: {e}")))?;
        Ok(Session {
            dir: rt.dir.clone(),
            device: rt.device.clone(),
            resume: rt.resume,
            quiet: rt.quiet,
            config,
            config_toml,
            tb,
            progress: Progress::new("", 0, true),
        })
    }

    /// State `cfg` in the checkpoints and the TensorBoard text instead of the config given to
    /// [`Session::open`] (which `config.toml` keeps): for a trainer that completes its config
    /// from the environment after the run directory exists (MC Basic's batch).
    pub fn describe<C: Serialize>(&mut self, cfg: &C) -> Result<()> {
        self.config_toml = crate::config::to_toml(cfg)?;
        self.config = serde_json::to_value(cfg).map_err(|e| Error::new(format!("serialising config: {e}")))?;
        Ok(())
    }

    pub fn dir(&self) -> &RunDir {
        &self.dir
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether this run continues an earlier one (`--resume`).
    pub fn resuming(&self) -> bool {
        self.resume
    }

    /// The checkpoint to continue from: `Some` for a resumed run that wrote one.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>> {
        let path = self.dir.checkpoint();
        if !(self.resume && path.exists()) {
            return Ok(None);
        }
        Ok(Some(Checkpoint::load(&path)?))
    }

    /// An error in restoring from the checkpoint, said as such.
    pub fn resume_error(&self, e: Error) -> Error {
        e.context(format!("resuming from '{}'", self.dir.checkpoint().display()))
    }

    /// Begin logging: a resumed run drops whatever its interrupted process logged at steps
    /// `resume_step` and later (`None`: nothing to drop); a fresh one (or a resumed one that
    /// drops step 0) logs its config as text at step 0. The progress line counts `total` units,
    /// `position` of them done.
    pub fn start(&mut self, label: &str, resume_step: Option<u64>, total: u64, position: u64) -> Result<()> {
        if self.resume {
            if let Some(step) = resume_step {
                self.tb.resume_at(step)?;
            }
        }
        if !self.resume || resume_step == Some(0) {
            self.tb.text("config", 0, &format!("```toml\n{}\n```", self.config_toml))?;
        }
        self.progress = Progress::new(label, total, self.quiet);
        self.progress.set_position(position);
        Ok(())
    }

    /// Write `ck`, with the config in its metadata, to `checkpoint.safetensors` (atomically).
    pub fn save(&self, ck: Checkpoint) -> Result<()> {
        self.save_as(ck, &self.dir.checkpoint())
    }

    /// Write `ck`, with the config in its metadata, to `best.safetensors` (atomically).
    pub fn save_best(&self, ck: Checkpoint) -> Result<()> {
        self.save_as(ck, &self.dir.best())
    }

    fn save_as(&self, mut ck: Checkpoint, path: &std::path::Path) -> Result<()> {
        ck.set_meta("config", &self.config);
        ck.save(path)
    }

    /// Write another file of the run (e.g. a CSV of curves) atomically.
    pub fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.dir.file(name), bytes)
    }

    /// Whether Ctrl-C (SIGINT/SIGTERM) asked the run to stop.
    pub fn interrupted(&self) -> bool {
        crate::signal::interrupted()
    }

    /// Stop after Ctrl-C, the checkpoint of `step` saved: flush the logs.
    pub fn interrupt(mut self, step: u64) -> Result<Outcome> {
        self.tb.flush()?;
        self.progress.finish();
        Ok(Outcome::Interrupted { step })
    }

    /// End the run: flush the logs and write `metrics.json`.
    pub fn finish(mut self, metrics: serde_json::Value) -> Result<Outcome> {
        self.progress.finish();
        self.tb.flush()?;
        self.dir.write_metrics(&metrics)?;
        Ok(Outcome::Finished(metrics))
    }
}
