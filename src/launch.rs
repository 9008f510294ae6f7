//! Starting and ending a training run from the command line: flags → config → run directory
//! ([`configure`]), and the run's outcome → a message and an exit code ([`finish`]).

use crate::flags::CommonFlags;
use std::process::ExitCode;
use wick_core::run::{default_run_name, Outcome, RunDir, Runtime};
use wick_agents::reinforce::PolicyGradientAlgo;
use wick_agents::tabular_train::TabularAlgo;
use wick_core::{bail, Result};
use wick_generative::train::DensityAlgo;
use wick_pretrain::train::Objective;

/// The `algo` a run directory's config.toml names.
pub fn saved_algo(run: &RunDir) -> Result<String> {
    match run.read_config()?.get("algo").and_then(|v| v.as_str()) {
        Some(a) => Ok(a.to_string()),
        None => bail!("{}: config.toml names no algo; is this a wick run directory?", run.path().display()),
    }
}

/// Whether `name` is an algorithm of some trainer.
fn known_algo(name: &str) -> bool {
    name.parse::<DensityAlgo>().is_ok() || name.parse::<PolicyGradientAlgo>().is_ok() || name.parse::<TabularAlgo>().is_ok() || name.parse::<Objective>().is_ok()
}

/// `--threads 0` is refused; a positive count was pinned by `main` before the thread pool
/// started (RAYON_NUM_THREADS, which Candle reads too).
fn check_threads(threads: Option<usize>) -> Result<()> {
    if threads == Some(0) {
        bail!("--threads must be at least 1");
    }
    Ok(())
}

/// Fresh run or `--resume`: the run directory and the config table to use.
pub struct Prepared {
    pub runtime: Runtime,
    /// The saved config (resume) or None (fresh: the caller resolves flags).
    pub saved: Option<toml::Table>,
    created: bool,
}

/// Open the run directory for a trainer. `overrides_given` tells whether any flag or file
/// would change the config, which `--resume` does not allow.
pub fn prepare(algo: &str, common: &CommonFlags, data_name: &str, seed: u64, overrides_given: bool) -> Result<Prepared> {
    check_threads(common.threads)?;
    let device = wick_core::device::parse_device(&common.device)?;
    wick_core::signal::install();
    if let Some(dir) = &common.resume {
        if common.force {
            bail!("--resume and --force cannot be used together: --resume continues a run, --force replaces it");
        }
        if overrides_given || common.config.is_some() || common.seed.is_some() {
            bail!("--resume continues a run with its saved config.toml: drop the hyperparameter flags (and --config/--seed), or start a new run");
        }
        // Rank 0 opens the directory and reads its config; the other ranks get the text from it.
        let world = wick_core::dist::world();
        let (run, mut text) = if world.is_root() {
            let run = RunDir::open(dir)?;
            let text = std::fs::read(run.file(wick_core::run::CONFIG_FILE))?;
            (run, text)
        } else {
            (RunDir::of_root(dir), Vec::new())
        };
        world.broadcast_bytes(&mut text);
        let table = wick_core::config::parse_toml(&String::from_utf8_lossy(&text), &run.file(wick_core::run::CONFIG_FILE))?;
        let saved_algo = table.get("algo").and_then(|v| v.as_str()).unwrap_or("?").to_string();
        if saved_algo != algo && !known_algo(&saved_algo) {
            bail!("'{}': its config.toml names algo '{saved_algo}', which is no wick algorithm (see `wick list`)", dir.display());
        }
        if saved_algo != algo {
            bail!("'{}' is a {saved_algo} run, not {algo}: resume it with `wick train {saved_algo} --resume {}`", dir.display(), dir.display());
        }
        return Ok(Prepared { runtime: Runtime { dir: run, device, resume: true, quiet: common.quiet }, saved: Some(table), created: false });
    }
    let world = wick_core::dist::world();
    // The default name has the time in it: the other ranks take rank 0's, and only rank 0 creates it.
    let mut name = common.run_name.clone().unwrap_or_else(|| default_run_name(algo, data_name, seed)).into_bytes();
    world.broadcast_bytes(&mut name);
    let name = String::from_utf8_lossy(&name).into_owned();
    let existed = common.logdir.join(&name).exists();
    let dir = if world.is_root() { RunDir::create(&common.logdir, &name, common.force)? } else { RunDir::of_root(&common.logdir.join(&name)) };
    Ok(Prepared { runtime: Runtime { dir, device, resume: false, quiet: common.quiet }, saved: None, created: !existed })
}

/// The hyperparameters a flags struct (fields `Option`s, serialised with
/// `skip_serializing_if = "Option::is_none"`) says the user gave; an empty `[optim]` table counts
/// as none.
pub fn flags_table<F: serde::Serialize>(flags: &F) -> Result<toml::Table> {
    let mut t = match toml::Value::try_from(flags).map_err(|e| wick_core::Error::new(e.to_string()))? {
        toml::Value::Table(t) => t,
        _ => toml::Table::new(),
    };
    if t.get("optim").and_then(|o| o.as_table()).is_some_and(|o| o.is_empty()) {
        t.remove("optim");
    }
    Ok(t)
}

/// A trainer's config and run directory. `given` holds the hyperparameters the user gave on the
/// command line (see [`flags_table`]). With `--resume` the
/// run's saved config.toml is used and any hyperparameter flag is refused; otherwise the config
/// is defaults ← `--config` file ← flags, and `fresh` checks (and may complete) it before the run
/// directory exists, returning the name part (data or env) and the seed of the default run name.
pub fn configure<C>(algo: &str, mut t: toml::Table, common: &CommonFlags, fresh: impl FnOnce(C) -> Result<(C, String, u64)>) -> Result<(C, Prepared)>
where
    C: serde::Serialize + serde::de::DeserializeOwned + Default,
{
    let given = !t.is_empty();
    if common.resume.is_some() {
        let p = prepare(algo, common, "", 0, given)?;
        let table = p.saved.clone().expect("resume has a saved config");
        let cfg: C = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| wick_core::Error::new(format!("saved config.toml: {}", e.message().trim())))?;
        return Ok((cfg, p));
    }
    t.insert("algo".into(), toml::Value::String(algo.into()));
    if let Some(s) = common.seed {
        t.insert("seed".into(), toml::Value::Integer(s as i64));
    }
    let cfg: C = wick_core::config::resolve(common.config.as_deref(), &t)?;
    let (cfg, name, seed) = fresh(cfg)?;
    let p = prepare(algo, common, &name, seed, given)?;
    Ok((cfg, p))
}

/// Run a trainer and turn its outcome into an exit code; on failure of a fresh run that left
/// its directory empty, remove the directory so a corrected retry can use the same name.
pub fn finish(p: &Prepared, algo: &str, out: Result<Outcome>) -> Result<ExitCode> {
    let dir = p.runtime.dir.path();
    if !wick_core::dist::world().is_root() {
        // Rank 0 reports for the whole data-parallel run; the others print only their errors.
        return out.map(|o| if matches!(o, Outcome::Interrupted { .. }) { ExitCode::from(130) } else { ExitCode::SUCCESS });
    }
    match out {
        Ok(Outcome::Finished(metrics)) => {
            // The headline figures each kind of run reports, in this order, where present.
            const SHOWN: &[&str] = &[
                "test_nll", "best_epoch", "train_samples_per_s", "mean_return_last100", "steps_to_solve",
                "eval_mean_return", "optimal_action_agreement", "value_rmse", "episodes_per_s", "train_steps_per_s",
                "probe_acc_all", "probe_acc_100",
            ];
            let shown: String = SHOWN.iter().filter_map(|k| metrics.get(*k).map(|v| format!(" {k} {}", for_people(k, v)))).collect();
            println!("{algo}: done in {}:{shown}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Ok(Outcome::Interrupted { step }) => {
            eprintln!(
                "wick: interrupted at step {step}; checkpoint saved. Continue with: wick train {algo} --resume {}",
                dir.display()
            );
            Ok(ExitCode::from(130))
        }
        Err(e) => {
            if p.created && std::fs::read_dir(dir).map(|mut d| d.next().is_none()).unwrap_or(false) {
                let _ = std::fs::remove_dir(dir);
            }
            Err(e)
        }
    }
}

/// A figure as a person reads it: rates to whole units, other fractions to four decimals, trailing
/// zeros dropped (`metrics.json` keeps full precision).
fn for_people(key: &str, v: &serde_json::Value) -> String {
    match v.as_f64() {
        Some(x) if v.is_f64() => {
            let text = if key.ends_with("_per_s") { format!("{x:.0}") } else { format!("{x:.4}") };
            if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text }
        }
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::for_people;
    use serde_json::json;

    #[test]
    fn figures_for_people_are_rounded() {
        assert_eq!(for_people("test_nll", &json!(18.103904570473563)), "18.1039");
        assert_eq!(for_people("train_samples_per_s", &json!(630734.3729054254)), "630734");
        assert_eq!(for_people("best_epoch", &json!(499)), "499");
        assert_eq!(for_people("optimal_action_agreement", &json!(1.0)), "1");
        assert_eq!(for_people("value_rmse", &json!(0.0330)), "0.033");
        assert_eq!(for_people("eval_mean_return", &json!(-0.04241)), "-0.0424");
    }
}
