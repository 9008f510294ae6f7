//! The reproducibility and resume suite, one table row per trainer: for each, the same seed gives
//! the same bits on 1 and 2 threads, another seed gives other bits, and a run killed with SIGKILL
//! (at several points, and while writing a checkpoint) or stopped with Ctrl-C resumes to exactly
//! the uninterrupted result.
//! FVSBN's rows live in density_e2e.rs, next to its Python-oracle checks.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// (algo, the arguments of a short run after `wick train <algo>`).
const TRAINERS: &[(&str, &[&str])] = &[
    ("nade", &["--data", "digits", "--epochs", "12", "--hidden", "32", "--log-every", "2"]),
    ("made", &["--data", "digits", "--epochs", "12", "--hidden", "64", "--masks", "3", "--order-agnostic", "--log-every", "2"]),
    ("oanade", &["--data", "digits", "--epochs", "12", "--hidden", "32", "--layers", "2", "--orderings", "2", "--log-every", "2"]),
    ("simclr", &["--data", "digits", "--epochs", "8", "--batch", "128", "--probe-every", "4", "--log-every", "4"]),
    ("masked", &["--data", "digits", "--encoder", "cnn", "--epochs", "6", "--probe-every", "3", "--log-every", "3"]),
    ("mc-es", &["--env", "Blackjack-v1", "--episodes", "25000000"]),
    ("mc-prediction", &["--env", "Blackjack-v1", "--episodes", "10000000"]),
    ("mc-off-policy-control", &["--env", "Blackjack-v1", "--episodes", "6000000"]),
    ("mc-epsilon-greedy", &["--env", "FrozenLake-v1"]),
    ("reinforce", &["--env", "CartPole-v1", "--total-steps", "60000", "--baseline", "--checkpoint-every", "20", "--stop-on-solve", "false"]),
    ("mc-es", &["--env", "Taxi-v4", "--episodes", "2000000"]),
    ("mc-epsilon-greedy", &["--env", "Taxi-v4", "--env-options", "is_rainy=true,fickle_passenger=true", "--episodes", "300000"]),
    ("reinforce", &["--env", "Acrobot-v1", "--total-steps", "60000", "--baseline", "--checkpoint-every", "10", "--stop-on-solve", "false"]),
    ("reinforce", &["--env", "MountainCar-v0", "--total-steps", "60000", "--entropy-coef", "0.01", "--checkpoint-every", "20"]),
];

/// A row's name in run directories and messages: the algorithm and its env (rows share algorithms).
fn label(algo: &str, extra: &[&str]) -> String {
    match extra.iter().position(|a| *a == "--env") {
        Some(i) => format!("{algo}-{}", extra[i + 1]),
        None => algo.to_string(),
    }
}

fn args<'a>(algo: &'a str, extra: &'a [&'a str], dir: &'a Path, name: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["train", algo];
    a.extend(extra);
    a.extend(["--quiet", "--logdir", s(dir), "--run-name", name]);
    a.extend(more);
    a
}

/// Every `.safetensors` file at the top of a run directory, by name.
fn checkpoints(run: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(run)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&p).unwrap()))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "{}: no checkpoint", run.display());
    v
}

fn same_run(a: &Path, b: &Path, what: &str) {
    let (ca, cb) = (checkpoints(a), checkpoints(b));
    assert_eq!(ca.iter().map(|c| &c.0).collect::<Vec<_>>(), cb.iter().map(|c| &c.0).collect::<Vec<_>>(), "{what}: checkpoint files");
    for ((name, x), (_, y)) in ca.iter().zip(&cb) {
        assert!(x == y, "{what}: {name} differs");
    }
    assert_eq!(metrics_sans_timing(a), metrics_sans_timing(b), "{what}: metrics.json");
    assert_eq!(scalars_sans_timing(a), scalars_sans_timing(b), "{what}: TensorBoard scalars");
}

#[test]
fn same_seed_same_bits_on_any_thread_count_and_another_seed_differs() {
    let d = scratch("repro-seeds");
    for (algo, extra) in TRAINERS {
        let label = label(algo, extra);
        let name = |t: &str| format!("{label}-{t}");
        let (a, b, c) = (name("a"), name("b"), name("c"));
        run_ok(&args(algo, extra, &d, &a, &["--seed", "7", "--threads", "1"]));
        run_ok(&args(algo, extra, &d, &b, &["--seed", "7", "--threads", "2"]));
        run_ok(&args(algo, extra, &d, &c, &["--seed", "8", "--threads", "2"]));
        same_run(&d.join(&a), &d.join(&b), &format!("{label}: threads 1 vs 2"));
        assert_ne!(checkpoints(&d.join(&a)), checkpoints(&d.join(&c)), "{label}: seeds 7 and 8 gave the same checkpoint");
        assert_ne!(metrics_sans_timing(&d.join(&a)), metrics_sans_timing(&d.join(&c)), "{label}: seeds 7 and 8 gave the same metrics");
    }
}

/// SIGKILL at several moments after the first checkpoint, then `--resume`: the same result as never stopping.
#[test]
fn sigkill_at_several_points_then_resume_equals_the_uninterrupted_run() {
    let d = scratch("repro-kill");
    for (algo, extra) in TRAINERS {
        let label = label(algo, extra);
        let full = format!("{label}-full");
        run_ok(&args(algo, extra, &d, &full, &["--seed", "1"]));
        let mut interrupted = 0;
        for (k, wait_ms) in [0u64, 40, 150, 400].into_iter().enumerate() {
            let name = format!("{label}-kill{k}");
            let run: PathBuf = d.join(&name);
            let mut child = wick()
                .args(args(algo, extra, &d, &name, &["--seed", "1"]))
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let t0 = Instant::now();
            while !run.join("checkpoint.safetensors").exists() && t0.elapsed() < Duration::from_secs(120) {
                std::thread::sleep(Duration::from_millis(2));
            }
            std::thread::sleep(Duration::from_millis(wait_ms));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            interrupted += usize::from(!run.join("metrics.json").exists());
            run_ok(&["train", algo, "--resume", s(&run), "--quiet"]);
            same_run(&d.join(&full), &run, &format!("{label}: killed after {wait_ms} ms"));
        }
        assert!(interrupted >= 2, "{label}: only {interrupted} of 4 kills hit a running run; lengthen its row's run");
    }
}

/// A crash in the middle of writing the n-th checkpoint (temp file written, not yet renamed),
/// for many n: a loadable checkpoint is always there, and resuming gives the uninterrupted result.
#[test]
fn crash_while_writing_a_checkpoint_leaves_a_loadable_one() {
    let d = scratch("repro-ckwrite");
    let (algo, extra) = TRAINERS[0];
    let full = format!("{algo}-full");
    run_ok(&args(algo, extra, &d, &full, &["--seed", "2"]));
    let mut before_first_checkpoint = true;
    for n in 1..=7 {
        let name = format!("{algo}-crash{n}");
        let run = d.join(&name);
        let status = wick()
            .args(args(algo, extra, &d, &name, &["--seed", "2"]))
            .env("WICK_FAULT", format!("checkpoint-write:{n}"))
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        if status.success() {
            // The run wrote fewer than n checkpoints: nothing to test at this n.
            continue;
        }
        if !run.join("config.toml").exists() {
            // The crash hit the run's first write, its config: the run never started.
            continue;
        }
        // Until the first checkpoint.safetensors is in place there is nothing to lose; from
        // then on, one must always load (the old one or the new one).
        let ck = run.join("checkpoint.safetensors");
        if ck.exists() || !before_first_checkpoint {
            before_first_checkpoint = false;
            wick_core::checkpoint::Checkpoint::load(&ck)
                .unwrap_or_else(|e| panic!("crash at checkpoint write {n}: no loadable checkpoint: {e}"));
        }
        run_ok(&["train", algo, "--resume", s(&run), "--quiet"]);
        same_run(&d.join(&full), &run, &format!("{algo}: crash in checkpoint write {n}"));
    }
}

/// Ctrl-C (SIGINT) once the first checkpoint exists: exit 130, a checkpoint, and a message with
/// the `--resume` command; resuming then ends where the uninterrupted run ends.
#[test]
fn ctrl_c_saves_a_checkpoint_says_how_to_resume_and_resume_completes_the_run() {
    let d = scratch("repro-sigint");
    let mut interrupted = Vec::new();
    for (algo, extra) in TRAINERS {
        let label = label(algo, extra);
        let full = format!("{label}-full");
        run_ok(&args(algo, extra, &d, &full, &["--seed", "3"]));
        let name = format!("{label}-int");
        let run = d.join(&name);
        let child = wick()
            .args(args(algo, extra, &d, &name, &["--seed", "3"]))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while !run.join("checkpoint.safetensors").exists() && t0.elapsed() < Duration::from_secs(120) {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(20));
        let sent = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
        assert!(sent.success());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(0) {
            // The run finished before the signal landed: nothing to resume.
            assert!(run.join("metrics.json").exists());
        } else {
            assert_eq!(out.status.code(), Some(130), "{algo}: stderr: {err}");
            let resume = format!("wick train {algo} --resume {}", run.display());
            assert!(err.contains("checkpoint saved") && err.contains(&resume), "{algo}: {err}");
            assert!(!run.join("metrics.json").exists(), "{algo}: an interrupted run has no final metrics");
            wick_core::checkpoint::Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
            run_ok(&["train", algo, "--resume", s(&run), "--quiet"]);
            interrupted.push(*algo);
        }
        same_run(&d.join(&full), &run, &format!("{label}: Ctrl-C then resume"));
    }
    eprintln!("interrupted mid-run: {interrupted:?}");
    assert!(interrupted.len() * 2 >= TRAINERS.len(), "only {interrupted:?} were still running at the signal");
}
