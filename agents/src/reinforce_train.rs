//! The REINFORCE trainer around [`crate::reinforce`]: run directory, TensorBoard, checkpoints,
//! `--resume`, Ctrl-C, `metrics.json`, and the evaluation of a saved policy.
//!
//! Every `checkpoint_every` updates (and at the end, and on Ctrl-C) the full state goes to
//! `checkpoint.safetensors`: the policy (and value) parameters, Adam's moments, the counters
//! and the last 100 returns. Episode k (counted over the whole run) resets its env with
//! [`episode_seed`]`(seed, "train-env", k)` and samples its actions from
//! `Rng::stream_indexed(seed, "policy", k)`, and checkpoints fall between updates (whole
//! episodes), so a resumed run continues bit for bit.
//!
//! Data-parallel (`mpirun -np N`, core's dist.rs): an update's E episodes are cut into M
//! contiguous shares (`micro_batches`, default N; M must divide E), rank r plays shares
//! r·M/N … (r+1)·M/N − 1, the advantages are standardised over all the update's steps
//! (gathered in episode order), and the shares' gradients are summed in share order with
//! weights (their steps)/(all steps): N ranks give the bits of one process with
//! `--micro-batches N`. Since every draw of an episode is keyed by its index, which rank plays
//! it does not matter.
//!
//! TensorBoard (step = env steps so far): `charts/episodic_return`, `charts/episodic_length`
//! (one point per episode), `losses/policy_loss`, `losses/value_loss`, `losses/entropy`,
//! `charts/learning_rate`, `charts/SPS` (one point per update), `params/…` histograms every
//! `log_every` updates and at the end; at the end the image `charts/learning_curve` (also
//! written as `learning_curve.png`).

use crate::reinforce::{episode_seed, make_env, play_episode, standardize, Batch, Reinforce, ReinforceConfig, UpdateStats};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Instant;
use wick_core::checkpoint::Checkpoint;
use wick_core::dist::{self, DataParallel};
use wick_core::rng::Rng;
use wick_core::run::{Outcome, RunDir, Runtime};
use wick_core::session::Session;
use wick_core::tb::TbLogger;
use wick_core::{Error, Result};

/// The episodes "solved" is judged over (Gymnasium's CartPole-v1 criterion: mean of 100 ≥ 475).
pub const WINDOW: usize = 100;

/// Where a run stands; saved in the checkpoint's metadata as `train_state`.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct State {
    updates: u64,
    env_steps: u64,
    episodes: u64,
    /// The last (up to) 100 episodic returns, oldest first.
    recent: VecDeque<f64>,
    /// Env steps at which the mean of the last 100 returns first reached `solve_return`.
    steps_to_solve: Option<u64>,
}

impl State {
    fn mean_recent(&self) -> Option<f64> {
        (!self.recent.is_empty()).then(|| self.recent.iter().sum::<f64>() / self.recent.len() as f64)
    }
}

/// Train (or continue) REINFORCE; see the module docs.
pub fn train(cfg: &ReinforceConfig, rt: &Runtime) -> Result<Outcome> {
    let world = dist::world();
    // Unset in a fresh run: one share per rank. Unset in a saved config: the run had one.
    let m = cfg.micro_batches.unwrap_or(if rt.resume { 1 } else { world.size() });
    let cfg = &ReinforceConfig { micro_batches: (m > 1).then_some(m), ..cfg.clone() };
    cfg.validate()?;
    let dp = DataParallel::new(m, cfg.episodes_per_update, world)?.with_allreduce(cfg.allreduce.unwrap_or_default());
    let mut env = make_env(&cfg.env, &cfg.env_options)?;
    let (obs_dim, num_actions) = (env.obs_dim(), env.num_actions());
    let mut agent = Reinforce::new(cfg, obs_dim, num_actions, &rt.device)?;
    let mut st = State::default();

    let run = Session::open(rt, cfg)?;
    if let Some(ck) = run.checkpoint()? {
        let ctx = |e: Error| run.resume_error(e);
        agent.params.load_from(&ck).map_err(ctx)?;
        agent.opt.load_from(&ck, &agent.params).map_err(ctx)?;
        agent.sync_host()?;
        st = ck.meta("train_state").map_err(ctx)?;
    }
    dist::check_start(&wick_core::config::to_toml(cfg)?, &agent.params)?;
    // A resumed run drops whatever the interrupted process logged after its checkpoint.
    let mut run = run.start("reinforce", Some(st.env_steps + 1), cfg.total_steps, st.env_steps.min(cfg.total_steps))?;
    let t0 = Instant::now();
    let steps_at_start = st.env_steps;
    let e = cfg.episodes_per_update;
    let per = m / world.size();
    let mut shards: Vec<Batch> = (0..per).map(|_| Batch::default()).collect();
    let mut obs = vec![0f32; obs_dim];
    let solved = |st: &State| cfg.stop_on_solve && st.steps_to_solve.is_some();

    while st.env_steps < cfg.total_steps && !solved(&st) {
        let t_update = Instant::now();
        let steps_before = st.env_steps;
        // This rank plays its shares of the update's episodes: share s is episodes
        // [s·E/M, (s+1)·E/M), and episode k draws its reset and its actions from streams keyed
        // by k, so which rank (or which pass of one process) plays it does not matter.
        let mut mine = Vec::with_capacity(2 * per * e / m);
        for (i, b) in shards.iter_mut().enumerate() {
            b.clear();
            let s = world.rank() * per + i;
            for j in s * e / m..(s + 1) * e / m {
                let k = st.episodes + j as u64;
                let mut rng = Rng::stream_indexed(cfg.seed, "policy", k);
                let seed = episode_seed(cfg.seed, "train-env", k);
                let (ret, len) = play_episode(&mut *env, &mut agent, seed, false, &mut rng, &mut obs, Some(b))?;
                mine.extend([ret, len as f64]);
            }
        }
        // Every episode's (return, length), in episode order, on every rank.
        let all = world.all_gather_f64(&mine);
        let mut steps_played = 0u64;
        for ep in all.chunks(2) {
            let (ret, len) = (ep[0], ep[1] as u64);
            st.episodes += 1;
            st.env_steps += len;
            steps_played += len;
            run.tb.scalar("charts/episodic_return", st.env_steps, ret)?;
            run.tb.scalar("charts/episodic_length", st.env_steps, len as f64)?;
            if st.recent.len() == WINDOW {
                st.recent.pop_front();
            }
            st.recent.push_back(ret);
            if st.steps_to_solve.is_none() && st.recent.len() == WINDOW && st.mean_recent().unwrap_or(f64::MIN) >= cfg.solve_return {
                st.steps_to_solve = Some(st.env_steps);
            }
            if solved(&st) {
                break; // keep the policy that solved: no update on these episodes
            }
        }
        run.progress.inc(st.env_steps - steps_before);
        // Under mpirun the ranks agree on Ctrl-C through the update's combine (below).
        let mut interrupted = world.size() == 1 && run.interrupted();
        if !solved(&st) {
            let lr = cfg.schedule.lr(cfg.optim.lr, st.updates);
            let (s, stop) = update(cfg, &dp, &mut agent, &shards, steps_played, lr)?;
            interrupted = stop;
            st.updates += 1;
            let step = st.env_steps;
            run.tb.scalar("losses/policy_loss", step, s.policy_loss)?;
            run.tb.scalar("losses/value_loss", step, s.value_loss)?;
            run.tb.scalar("losses/entropy", step, s.entropy)?;
            run.tb.scalar("charts/learning_rate", step, lr)?;
            run.tb.scalar("charts/SPS", step, (step - steps_before) as f64 / t_update.elapsed().as_secs_f64().max(1e-9))?;
            if cfg.log_every > 0 && st.updates % cfg.log_every == 0 {
                log_weights(&mut run.tb, &agent, step)?;
            }
            if st.updates % 20 == 0 {
                if let Some(m) = st.mean_recent() {
                    run.progress.message(format!("update {} mean_return_last100 {m:.1}", st.updates));
                }
            }
        }
        if st.updates % cfg.checkpoint_every == 0 || interrupted {
            run.tb.flush()?;
            run.fault_after_log();
            run.save(checkpoint(&agent, &st)?)?;
        }
        if interrupted {
            return run.interrupt(st.env_steps);
        }
    }
    run.progress.finish();
    let secs = t0.elapsed().as_secs_f64();
    log_weights(&mut run.tb, &agent, st.env_steps)?;
    run.tb.flush()?;
    log_learning_curve(&mut run, cfg, st.env_steps)?;
    run.tb.flush()?;
    run.save(checkpoint(&agent, &st)?)?;
    let steps_here = st.env_steps - steps_at_start;
    let metrics = serde_json::json!({
        "algo": cfg.algo,
        "env": cfg.env,
        "seed": cfg.seed,
        "baseline": cfg.baseline,
        "params": agent.params.numel(),
        "env_steps": st.env_steps,
        "episodes": st.episodes,
        "updates": st.updates,
        "mean_return_last100": st.mean_recent(),
        "solve_return": cfg.solve_return,
        "steps_to_solve": st.steps_to_solve,
        "train_steps_per_s": if steps_here > 0 { serde_json::json!(steps_here as f64 / secs.max(1e-9)) } else { serde_json::Value::Null },
        "combine_seconds": dp.combine_seconds(),
    });
    run.finish(metrics)
}

/// One gradient step on the update's episodes, this rank's `shards` of them (all the steps of
/// the update, every rank's: `steps`). The advantages are standardised over the whole update
/// (every share's gathered in episode order), each share's loss is the mean over its steps,
/// and the shares are summed with weights (their steps)/`steps` in share order
/// ([`DataParallel::step_weighted`]): the mean over all the update's steps. Returns the
/// figures to log and whether any rank saw Ctrl-C.
fn update(cfg: &ReinforceConfig, dp: &DataParallel, agent: &mut Reinforce, shards: &[Batch], steps: u64, lr: f64) -> Result<(UpdateStats, bool)> {
    let mut raw = Vec::new();
    for b in shards {
        raw.extend(agent.raw_advantages(cfg, b)?);
    }
    let world = dist::world();
    let parts = world.all_gather_var_f64(&raw);
    // This rank's advantages start after those of the ranks before it.
    let mut off: usize = parts[..world.rank()].iter().map(Vec::len).sum();
    let mut adv = parts.concat();
    if cfg.standardize {
        standardize(&mut adv);
    }
    let first = world.rank() * shards.len();
    let mut stats = Vec::with_capacity(4 * shards.len());
    let combined = dp.step_weighted(&agent.params, |i| {
        let b = &shards[i - first];
        let (grads, s) = agent.loss_and_grads_with(cfg, b, &adv[off..off + b.len()])?;
        off += b.len();
        let w = b.len() as f64 / steps as f64;
        stats.extend([w, s.policy_loss, s.value_loss, s.entropy]);
        Ok((w, s.policy_loss - cfg.entropy_coef * s.entropy + cfg.value_coef * s.value_loss, grads))
    })?;
    // The logged figures, combined as the gradients are: Σ_s w_s · figure_s in share order.
    let all = world.all_gather_f64(&stats);
    let mut s = UpdateStats::default();
    for f in all.chunks(4) {
        s.policy_loss += f[0] * f[1];
        s.value_loss += f[0] * f[2];
        s.entropy += f[0] * f[3];
    }
    let interrupted = combined.interrupted;
    Ok((agent.apply(cfg, combined.into_grads(&agent.params)?, s, lr)?, interrupted))
}

/// The full state of a run: parameters, Adam's moments, the counters. (Nothing of the env or
/// the action sampling: every episode's streams are keyed by its index.)
fn checkpoint(agent: &Reinforce, st: &State) -> Result<Checkpoint> {
    let mut ck = Checkpoint::new();
    agent.params.save_to(&mut ck)?;
    agent.opt.save_to(&mut ck, &agent.params)?;
    ck.set_meta("train_state", st);
    Ok(ck)
}

/// The learning curve (every episode's return so far, read back from the event files so that a
/// resumed run draws its whole history) as the image `charts/learning_curve` and
/// `learning_curve.png` in the run directory.
fn log_learning_curve(run: &mut Session, cfg: &ReinforceConfig, step: u64) -> Result<()> {
    let scalars = wick_core::tb::read_scalars(run.dir().path())?;
    let returns: Vec<(f64, f64)> = scalars.get("charts/episodic_return").map(|v| v.iter().map(|&(s, r)| (s as f64, r as f64)).collect()).unwrap_or_default();
    let title = format!("reinforce, {}, seed {}", cfg.env, cfg.seed);
    let im = wick_plot::rgb(&wick_plot::curves::Curves::learning_curve(&title, &returns, WINDOW))?;
    run.tb.image("charts/learning_curve", step, &im.pixels, im.height, im.width, 3)?;
    run.write_file("learning_curve.png", &wick_core::image::encode_png(&im.pixels, im.height, im.width, 3)?)
}

fn log_weights(tb: &mut TbLogger, agent: &Reinforce, step: u64) -> Result<()> {
    for (name, var) in agent.params.names().iter().zip(agent.params.vars()) {
        let v = var.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?;
        tb.histogram(&format!("params/{name}"), step, &v)?;
    }
    Ok(())
}

/// The config of a REINFORCE run directory.
pub fn load_config(dir: &std::path::Path) -> Result<(RunDir, ReinforceConfig)> {
    let run = RunDir::open(dir)?;
    let cfg: ReinforceConfig = run.config()?;
    cfg.validate()?;
    Ok((run, cfg))
}

/// Returns of `episodes` episodes of the saved policy (sampling from it, or `greedy`), with
/// env resets and action draws from the streams `eval-env` and `eval-policy` of `seed`.
pub fn evaluate(dir: &std::path::Path, episodes: u64, greedy: bool, seed: u64, device: &Device) -> Result<Vec<f64>> {
    let (run, cfg) = load_config(dir)?;
    let mut env = make_env(&cfg.env, &cfg.env_options)?;
    let mut agent = Reinforce::new(&cfg, env.obs_dim(), env.num_actions(), device)?;
    let path = run.checkpoint();
    let ck = Checkpoint::load(&path)?;
    agent.params.load_from(&ck).map_err(|e| e.context(format!("'{}'", path.display())))?;
    agent.sync_host()?;
    let mut rng = Rng::stream(seed, "eval-policy");
    let mut obs = vec![0f32; env.obs_dim()];
    (0..episodes)
        .map(|k| Ok(play_episode(&mut *env, &mut agent, episode_seed(seed, "eval-env", k), greedy, &mut rng, &mut obs, None)?.0))
        .collect()
}
