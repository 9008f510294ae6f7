//! Sutton & Barto Example 5.4 / Figure 5.3: the mean squared error of ordinary and weighted
//! importance sampling ([`crate::mc_off_policy_prediction`]) at one state, by episode, averaged
//! over independent runs: `wick train mc-off-policy-prediction` with a start state (Blackjack's
//! default: player sum 13, usable ace, dealer 2; true value −0.27726).

use crate::parallel::Collector;
use crate::tabular_train::TabularConfig;
use crate::*;
use std::time::Instant;
use wick_core::checkpoint::Checkpoint;
use wick_core::run::Outcome;
use wick_core::session::Opening;
use wick_core::{bail, ensure, Result};

/// Example 5.4 / Figure 5.3: error curves of ordinary and weighted IS at one state, averaged
/// over `runs` runs; TensorBoard `eval/mse_ordinary` and `eval/mse_weighted` by episode, and
/// `mse.csv` (episode, mse_ordinary, mse_weighted), the figure `mse.png` (tag `eval/mse_curves`).
/// Checkpointed after every run.
pub fn error_curves(
    cfg: &TabularConfig,
    run: Opening,
    envs: Vec<DynTabular>,
    target: &Policy,
    behaviour: &Policy,
    c: &OffPolicyPredictionConfig,
    state: usize,
) -> Result<Outcome> {
    let env = &envs[0];
    ensure!(state < env.n_states(), "--start-state {state} is outside 0..{}", env.n_states());
    let Some(model) = env.exact_model() else { bail!("--start-state needs an env with an exact model (the error curves compare with DP)") };
    let truth = model.evaluate(&target.greedy_actions(), c.gamma, 1e-14)[state];
    let runs = cfg.runs.unwrap_or(1);
    let n = c.episodes as usize;
    let (mut ord, mut wei) = (vec![0.0; n], vec![0.0; n]);
    let mut done = 0u64;
    if let Some(ck) = run.checkpoint()? {
        ord = ck.f64_values("mse_sum_ordinary", &[n])?;
        wei = ck.f64_values("mse_sum_weighted", &[n])?;
        done = ck.meta("runs_done")?;
    }
    // The curves are logged once, at the end: nothing to drop on resume.
    let mut run = run.start(cfg.algo.name(), None, runs, done)?;
    let t0 = Instant::now();
    let mut col = Collector::new(envs, c.seed, "mc-off-policy-prediction")?;
    let checkpoint = |ord: &[f64], wei: &[f64], done: u64| {
        let mut ck = Checkpoint::new();
        ck.put_f64("mse_sum_ordinary", &[n], ord);
        ck.put_f64("mse_sum_weighted", &[n], wei);
        ck.set_meta("runs_done", &done);
        ck
    };
    let mut last_agent = None;
    while done < runs {
        let (o, w) = mse_curves_one(&mut col, target, behaviour, c, state, truth, done)?;
        for i in 0..n {
            ord[i] += o.0[i];
            wei[i] += w[i];
        }
        last_agent = Some(o.1);
        done += 1;
        run.progress.inc(1);
        run.save(checkpoint(&ord, &wei, done))?;
        if run.interrupted() && done < runs {
            return run.interrupt(done);
        }
    }
    run.progress.finish();
    let secs = t0.elapsed().as_secs_f64();
    let r = runs as f64;
    let mut csv = String::from("episode,mse_ordinary,mse_weighted\n");
    for i in 0..n {
        csv.push_str(&format!("{},{},{}\n", i + 1, ord[i] / r, wei[i] / r));
        run.tb.scalar("eval/mse_ordinary", i as u64 + 1, ord[i] / r)?;
        run.tb.scalar("eval/mse_weighted", i as u64 + 1, wei[i] / r)?;
    }
    run.write_file("mse.csv", csv.as_bytes())?;
    let rows: Vec<_> = (0..n).map(|i| ((i + 1) as f64, ord[i] / r, wei[i] / r)).collect();
    let dir = run.dir().path().to_path_buf();
    crate::tabular_images::log_error_curves(&mut run.tb, cfg, &rows, n as u64, &dir)?;
    let at = |v: &[f64], k: usize| v.get(k - 1).map(|x| x / r);
    let mean10 = |v: &[f64]| v.iter().take(10).sum::<f64>() / r / n.min(10) as f64;
    let mut metrics = serde_json::json!({
        "algo": cfg.algo,
        "env": cfg.env_id(),
        "seed": cfg.seed,
        "runs": runs,
        "episodes": c.episodes,
        "state": state,
        "true_value": truth,
        "mse_ordinary_first10": mean10(&ord),
        "mse_weighted_first10": mean10(&wei),
        "mse_ordinary_final": ord[n - 1] / r,
        "mse_weighted_final": wei[n - 1] / r,
        "episodes_per_s": if secs > 0.0 { serde_json::json!(((runs * c.episodes) as f64) / secs) } else { serde_json::Value::Null },
    });
    for k in [1usize, 10, 100, 1000, 10_000] {
        if let (Some(a), Some(b)) = (at(&ord, k), at(&wei, k)) {
            metrics[format!("mse_ordinary_at_{k}")] = a.into();
            metrics[format!("mse_weighted_at_{k}")] = b.into();
        }
    }
    if let Some((vo, vw)) = last_agent {
        metrics["last_run_ordinary_estimate"] = vo.into();
        metrics["last_run_weighted_estimate"] = vw.into();
    }
    run.finish(metrics)
}

type Curve = (Vec<f64>, (f64, f64));

/// One run of the Example 5.4 experiment: squared errors after each episode.
fn mse_curves_one(
    col: &mut Collector<DynTabular>,
    target: &Policy,
    behaviour: &Policy,
    c: &OffPolicyPredictionConfig,
    state: usize,
    truth: f64,
    run: u64,
) -> Result<(Curve, Vec<f64>)> {
    let n = c.episodes as usize;
    let (mut ord, mut wei) = (vec![0.0; n], vec![0.0; n]);
    let mut agent = OffPolicyPredictionAgent::new(col.env(), target, behaviour, c)?;
    col.set_stream(&format!("mc-off-policy-prediction/run{run}"));
    let mut k = 0;
    while k < c.episodes {
        let b = c.batch.max(1).min(c.episodes - k);
        col.batch_observed(&mut agent, k, b, |a, k, _| {
            ord[k as usize] = (a.v_ordinary.q[state] - truth).powi(2);
            wei[k as usize] = (a.v_weighted.v[state] - truth).powi(2);
        })?;
        k += b;
    }
    Ok(((ord, (agent.v_ordinary.q[state], agent.v_weighted.v[state])), wei))
}

