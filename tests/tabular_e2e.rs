//! Whole runs of the tabular trainers through the CLI: reproducibility (to the bit, for any
//! thread count), resume after a crash, eval, the Example 5.4 error curves and bad input.

mod common;

use common::*;
use std::path::Path;

const ES: [&str; 10] = ["train", "mc-es", "--env", "Blackjack-v1", "--episodes", "200000", "--batch", "1000", "--quiet", "--seed"];

fn es(d: &Path, name: &str, seed: &str, extra: &[&str]) -> std::path::PathBuf {
    let mut args = ES.to_vec();
    args.push(seed);
    args.extend(["--logdir", s(d), "--run-name", name]);
    args.extend(extra);
    run_ok(&args);
    d.join(name)
}

fn bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

/// Twice the same run, and the same run on 1 and 2 threads: identical checkpoints, metrics and
/// TensorBoard scalars (apart from wall-clock figures); another seed differs.
#[test]
fn runs_are_reproducible_for_any_thread_count() {
    let d = scratch("tab-repro");
    let a = es(&d, "a", "1", &["--threads", "1"]);
    let b = es(&d, "b", "1", &["--threads", "1"]);
    let c = es(&d, "c", "1", &["--threads", "2"]);
    let other = es(&d, "other", "2", &["--threads", "2"]);
    for x in [&b, &c] {
        assert_eq!(bytes(&a.join("checkpoint.safetensors")), bytes(&x.join("checkpoint.safetensors")), "{}", x.display());
        assert_eq!(metrics_sans_timing(&a), metrics_sans_timing(x));
        assert_eq!(scalars_sans_timing(&a), scalars_sans_timing(x));
    }
    assert_ne!(bytes(&a.join("checkpoint.safetensors")), bytes(&other.join("checkpoint.safetensors")));
    let m = metrics_sans_timing(&a);
    assert_eq!(m["episodes"], 200_000);
    assert!(m["optimal_action_agreement"].as_f64().unwrap() > 0.9, "{m}");
    let scalars = scalars_sans_timing(&a);
    for tag in ["charts/episodic_return", "policy/changed_states", "values/max_abs_update", "eval/optimal_action_agreement", "eval/value_rmse"] {
        assert_eq!(scalars[tag].len(), 100, "{tag}");
    }
    assert!(a.join("values_and_policy.png").exists());
    // The Q-table and policy are plain safetensors tensors.
    let ck = wick_core::checkpoint::Checkpoint::load(&a.join("checkpoint.safetensors")).unwrap();
    assert_eq!(ck.f64_values("q", &[714, 2]).unwrap().len(), 1428);
    assert_eq!(ck.u64_values("policy", &[714]).unwrap().len(), 714);

    // Python oracles: TensorBoard shows the curves and the picture; safetensors reads the tables.
    if let Some(py) = python() {
        let out = std::process::Command::new(&py).args([&script("tb_read.py"), s(&a)]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["scalars"]["eval/optimal_action_agreement"].as_array().unwrap().len(), 100);
        assert_eq!(v["images"]["blackjack/values_and_policy"].as_array().unwrap().len(), 1);
        let code = "import sys, json; from safetensors.numpy import load_file; d = load_file(sys.argv[1]); \
                    print(json.dumps({k: [str(v.dtype), list(v.shape)] for k, v in d.items()}))";
        let out = std::process::Command::new(&py).args(["-c", code, s(&a.join("checkpoint.safetensors"))]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["q"], serde_json::json!(["float64", [714, 2]]));
        assert_eq!(v["policy"], serde_json::json!(["uint64", [714]]));
    }

    // wick eval: the learned greedy policy's mean return with its standard error.
    let out = run_ok(&["eval", s(&a), "--episodes", "20000"]);
    assert!(out.contains("mean return") && out.contains("±"), "{out}");
    assert_eq!(out, run_ok(&["eval", s(&a), "--episodes", "20000"]));
}

/// A run aborted after logging but before its checkpoint (WICK_FAULT), then resumed, ends with
/// the same checkpoint, metrics and curves as an uninterrupted one.
#[test]
fn resume_after_a_crash_matches_an_uninterrupted_run() {
    let d = scratch("tab-resume");
    let full = es(&d, "full", "3", &[]);
    let mut args = ES.to_vec();
    args.extend(["3", "--logdir", s(&d), "--run-name", "crashed"]);
    let status = wick().args(&args).env("WICK_FAULT", "after-log:37").stderr(std::process::Stdio::null()).status().unwrap();
    assert!(!status.success());
    let run = d.join("crashed");
    assert!(!run.join("metrics.json").exists());
    // The first logging point always checkpoints: the resumed run starts mid-way.
    let ck = wick_core::checkpoint::Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    let st: serde_json::Value = ck.meta("train_state").unwrap();
    assert!(st["episodes"].as_u64().unwrap() > 0, "{st}");
    run_ok(&["train", "mc-es", "--resume", s(&run), "--quiet"]);
    assert_eq!(bytes(&full.join("checkpoint.safetensors")), bytes(&run.join("checkpoint.safetensors")));
    assert_eq!(metrics_sans_timing(&full), metrics_sans_timing(&run));
    assert_eq!(scalars_sans_timing(&full), scalars_sans_timing(&run));
}

/// Example 5.4 through the CLI: the error curves land in mse.csv and TensorBoard.
#[test]
fn off_policy_prediction_writes_error_curves() {
    let d = scratch("tab-ex54");
    run_ok(&["train", "mc-off-policy-prediction", "--runs", "10", "--episodes", "1000", "--quiet", "--logdir", s(&d), "--run-name", "x"]);
    let csv = std::fs::read_to_string(d.join("x/mse.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1001);
    assert!(csv.starts_with("episode,mse_ordinary,mse_weighted\n1,"));
    let m = metrics_sans_timing(&d.join("x"));
    assert!((m["true_value"].as_f64().unwrap() + 0.2772).abs() < 1e-3, "{m}");
    assert_eq!(scalars_sans_timing(&d.join("x"))["eval/mse_weighted"].len(), 1000);
}

/// Bad input: one line on stderr, exit code 2, no run directory left behind.
#[test]
fn bad_input_is_a_one_line_error() {
    let d = scratch("tab-bad");
    let cases: &[(&[&str], &str)] = &[
        (&["train", "mc-epsilon-greedy", "--epsilon", "1.5"], "epsilon"),
        (&["train", "mc-epsilon-greedy", "--epsilon", "linear:1:-0.1:0.5"], "epsilon"),
        (&["train", "mc-epsilon-greedy", "--epsilon", "exp:1:0:1"], "above 0"),
        (&["train", "mc-epsilon-greedy", "--epsilon", "exp:1:0.01:0.9,linear:0.01:0:0.2"], "more than all of it"),
        (&["train", "mc-epsilon-greedy", "--epsilon", "0.1,linear:0.1:0:0.5"], "only the last stage"),
        (&["train", "mc-epsilon-greedy", "--epsilon", "exp:1:0.01:0.9,"], "joined by commas"),
        (&["train", "mc-off-policy-control", "--epsilon", "linear:1:0.1:1"], "one number"),
        (&["train", "mc-es", "--step-size", "0.1"], "does not apply"),
        (&["train", "mc-es", "--forget", "0.001"], "does not apply"),
        (&["train", "mc-epsilon-greedy", "--forget", "1"], "--forget must be in (0, 1)"),
        (&["train", "mc-epsilon-greedy", "--forget", "0.001", "--step-size", "0.1"], "give one"),
        (&["train", "mc-es", "--iterations", "3"], "does not apply"),
        (&["train", "mc-basic", "--runs", "4"], "does not apply"),
        (&["train", "mc-es", "--start-state", "5"], "does not apply"),
        (&["train", "mc-es", "--start", "uniform"], "does not apply"),
        (&["train", "mc-prediction", "--start", "uniform"], "only with --target q"),
        (&["train", "mc-es", "--target", "q"], "does not apply"),
        (&["train", "mc-prediction", "--target", "pi"], "[possible values: v, q]"),
        (&["train", "mc-es", "--gamma", "1.1"], "gamma"),
        (&["train", "mc-es", "--gamma", "-0.5"], "gamma"),
        (&["train", "mc-es", "--env", "NoSuchEnv-v0"], "unknown environment"),
        (&["train", "mc-es", "--env", "CartPole-v1"], "not a tabular environment"),
        (&["train", "mc-es", "--device", "cuda"], "CPU"),
        (&["train", "mc-es", "--episodes", "0"], "episodes"),
        (&["train", "mc-es", "--epsilon", "0.1"], "does not apply"),
        (&["train", "mc-prediction", "--policy", "greedy"], "policy"),
        (&["train", "mc-off-policy-control", "--epsilon", "0"], "soft"),
    ];
    for (args, want) in cases {
        let mut a = args.to_vec();
        a.extend(["--logdir", s(&d), "--quiet"]);
        let (code, _, err) = run(&a);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(std::fs::read_dir(&d).unwrap().next().is_none(), "a failed start left a run directory");
}

/// The policy a Blackjack run saves is complete: MC ES starts only in the 200 decision states, so
/// it never sees hands below 12, and there the argmax of an all-zero row would stick. They hit
/// (S&B Example 5.1's rule), and the saved policy plays as well as the DP optimum (about −0.042;
/// with the hands below 12 sticking it made −0.133).
#[test]
fn blackjack_policy_hits_below_12_and_plays_near_the_optimum() {
    let d = scratch("tab-below12");
    run_ok(&["train", "mc-es", "--episodes", "1000000", "--quiet", "--logdir", s(&d), "--run-name", "a"]);
    let a = d.join("a");
    let ck = wick_core::checkpoint::Checkpoint::load(&a.join("checkpoint.safetensors")).unwrap();
    let pi = ck.u64_values("policy", &[714]).unwrap();
    let n = ck.u64_values("n", &[714, 2]).unwrap();
    for s in 0..704 {
        let sum = s / 22;
        if (4..12).contains(&sum) {
            assert_eq!((n[2 * s], n[2 * s + 1]), (0, 0), "state {s} was visited");
            assert_eq!(pi[s], 1, "state {s} (sum {sum}) does not hit");
        }
    }
    let out = run_ok(&["eval", s(&a), "--episodes", "100000"]);
    let mean: f64 = out.split("mean return ").nth(1).and_then(|t| t.split_whitespace().next()).unwrap().parse().unwrap();
    assert!(mean > -0.06, "{out}");
}

/// MC prediction of q_π (S&B §5.2) with exploring starts: a [714, 2] table, near the exact q_π.
#[test]
fn q_prediction_estimates_every_pair() {
    let d = scratch("tab-q");
    run_ok(&["train", "mc-prediction", "--target", "q", "--episodes", "200000", "--quiet", "--logdir", s(&d), "--run-name", "q"]);
    let ck = wick_core::checkpoint::Checkpoint::load(&d.join("q/checkpoint.safetensors")).unwrap();
    let n = ck.u64_values("n", &[714, 2]).unwrap();
    let m = metrics_sans_timing(&d.join("q"));
    assert!(m["q_value_rmse"].as_f64().unwrap() < 0.05, "{m}");
    assert!(scalars_sans_timing(&d.join("q"))["eval/q_value_rmse"].len() > 10);
    // Every decision state's both actions got returns.
    let bj = wick_envs::blackjack::BlackjackObs::decision_states();
    assert!(bj.iter().all(|&s| n[2 * s] > 0 && n[2 * s + 1] > 0));
}

/// CliffWalking ends only at the goal: episodes are cut at 100 steps by default (a greedy
/// policy of exploring starts loops otherwise) and the starts skip the cliff and the goal; MC
/// ES then finds the optimal path. Without a cut, a looping episode is a one-line error.
#[test]
fn cliff_walking_runs_and_an_endless_episode_is_an_error() {
    let d = scratch("tab-cliff");
    run_ok(&["train", "mc-es", "--env", "CliffWalking-v1", "--episodes", "200000", "--quiet", "--logdir", s(&d), "--run-name", "es"]);
    let m = metrics_sans_timing(&d.join("es"));
    assert_eq!(m["eval_states"], 37, "{m}");
    assert_eq!(m["optimal_action_agreement"], 1.0, "{m}");
    assert_eq!(m["eval_mean_return"], -13.0, "{m}");
    let (code, _, err) = run(&["train", "mc-es", "--env", "FrozenLake-v1", "--env-options", "is_slippery=false,max_episode_steps=none", "--quiet", "--logdir", s(&d)]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("without ending") && err.contains("--episode-length"), "{err}");
}

/// Taxi-v4 (issue 20): MC ES with the defaults (10M episodes from the 400 exploring-start states,
/// looping episodes cut at 20 steps) reaches a greedy policy whose mean return over the 10,000
/// evaluation episodes is within 0.1 of the DP-optimal policy's on the very same episodes (dry
/// Taxi draws only at resets); the exact optimum from the start distribution is 7.93.
#[test]
fn taxi_mc_es_is_within_a_tenth_of_the_dp_optimum() {
    let d = scratch("tab-taxi");
    run_ok(&["train", "mc-es", "--env", "Taxi-v4", "--seed", "0", "--quiet", "--logdir", s(&d), "--run-name", "es"]);
    let m = metrics_sans_timing(&d.join("es"));
    assert_eq!(m["eval_states"], 400, "{m}");
    assert!((m["optimal_start_value"].as_f64().unwrap() - 7.93).abs() < 1e-9, "{m}");
    let (learned, optimal) = (m["eval_mean_return"].as_f64().unwrap(), m["optimal_eval_mean_return"].as_f64().unwrap());
    assert!((learned - optimal).abs() < 0.1, "learned {learned}, DP optimum {optimal} on the same episodes: {m}");
    assert!(m["optimal_action_agreement"].as_f64().unwrap() > 0.97, "{m}");
}

/// Taxi-v4 (issue 20): on-policy MC ε-greedy with the defaults (5M episodes from the env's start
/// distribution, ε linear 1 → 0 over the first half, estimates that forget in the time of their
/// state with β = 2·10⁻⁴) is within 0.1 of the DP-optimal policy on the same evaluation episodes.
#[test]
fn taxi_mc_epsilon_greedy_is_within_a_tenth_of_the_dp_optimum() {
    let d = scratch("tab-taxi-eps");
    run_ok(&["train", "mc-epsilon-greedy", "--env", "Taxi-v4", "--seed", "3", "--quiet", "--logdir", s(&d), "--run-name", "eg"]);
    let m = metrics_sans_timing(&d.join("eg"));
    let (learned, optimal) = (m["eval_mean_return"].as_f64().unwrap(), m["optimal_eval_mean_return"].as_f64().unwrap());
    assert!((learned - optimal).abs() < 0.1, "learned {learned}, DP optimum {optimal} on the same episodes: {m}");
    let cfg = std::fs::read_to_string(d.join("eg/config.toml")).unwrap();
    assert!(cfg.contains("forget = 0.0002") && cfg.contains("episodes = 5000000"), "{cfg}");
}
