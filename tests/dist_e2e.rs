//! Data-parallel training under a real `mpirun` (OpenMPI): N ranks give the same checkpoint
//! bytes, metrics and TensorBoard scalars as one process with `--micro-batches N`; a run resumes
//! with another rank count; a failing rank stops every rank with one line naming it.
//!
//! Needs a build with `--features mpi` and `mpirun` on PATH (scripts/ci-mpi.sh installs
//! OpenMPI and runs these). Without `mpirun` the tests skip with a note, except under CI.
//! Without the feature, the one test left checks the one-line refusal.

#![cfg_attr(not(feature = "mpi"), allow(dead_code, unused_imports))]

mod common;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// `mpirun`, or None (skip) when it is not installed. Its absence is a failure in a `--features
/// mpi` build under CI, and wherever `WICK_REQUIRE_MPIRUN` is set (scripts/ci-mpi.sh sets it
/// after installing OpenMPI): the default build's test also runs in the README's test command,
/// on a fresh machine that has no OpenMPI.
fn mpirun() -> Option<String> {
    let found = std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join("mpirun")).find(|f| f.is_file()));
    match found {
        Some(p) => Some(p.to_string_lossy().into_owned()),
        None => {
            let required = std::env::var_os("WICK_REQUIRE_MPIRUN").is_some() || (cfg!(feature = "mpi") && std::env::var_os("CI").is_some());
            if required {
                panic!("mpirun is not on PATH (required under CI here): scripts/ci-mpi.sh installs OpenMPI");
            }
            eprintln!("note: mpirun not found; skipping the data-parallel test (apt-get install openmpi-bin libopenmpi-dev)");
            None
        }
    }
}

/// `mpirun -np n` running `program args…` (as root, oversubscribed when n > 2 cores' worth).
fn mpi_command(mpirun: &str, n: usize, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(mpirun);
    c.args(["--allow-run-as-root", "--oversubscribe", "-np", &n.to_string(), program]);
    c.args(args);
    c.env("WICK_DATA_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/data"));
    c
}

/// Run under mpirun; (exit code, stdout, stderr, seconds).
fn mpi_run(mpirun: &str, n: usize, args: &[&str]) -> (i32, String, String, f64) {
    let t = Instant::now();
    let out = mpi_command(mpirun, n, env!("CARGO_BIN_EXE_wick"), args).output().expect("run mpirun");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        t.elapsed().as_secs_f64(),
    )
}

fn mpi_ok(mpirun: &str, n: usize, args: &[&str]) -> String {
    let (code, out, err, _) = mpi_run(mpirun, n, args);
    assert_eq!(code, 0, "mpirun -np {n} wick {args:?} failed:\nstdout: {out}\nstderr: {err}");
    out
}

fn train_args<'a>(algo: &'a str, extra: &'a [&'a str], dir: &'a Path, name: &'a str, more: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["train", algo];
    a.extend(extra);
    a.extend(["--quiet", "--threads", "1", "--logdir", s(dir), "--run-name", name]);
    a.extend(more);
    a
}

/// Two runs with the same bits: `files` byte for byte, metrics.json and the TensorBoard scalars
/// (timing left out). Returns run `a`'s metrics and scalars for the caller's checks that they
/// are not vacuous.
fn same_bits(a: &Path, b: &Path, files: &[&str], what: &str) -> (serde_json::Value, std::collections::BTreeMap<String, Vec<(u64, f32)>>) {
    for f in files {
        let (x, y) = (std::fs::read(a.join(f)), std::fs::read(b.join(f)));
        let (x, y) = (x.unwrap_or_else(|e| panic!("{what}: {}: {e}", a.join(f).display())), y.unwrap_or_else(|e| panic!("{what}: {}: {e}", b.join(f).display())));
        assert!(x == y, "{what}: {f} differs");
    }
    let m = metrics_sans_timing(a);
    assert_eq!(m, metrics_sans_timing(b), "{what}: metrics.json");
    let sa = scalars_sans_timing(a);
    assert_eq!(sa, scalars_sans_timing(b), "{what}: TensorBoard scalars");
    (m, sa)
}

/// The files a run writes whose bytes must not depend on N: both checkpoints and the config.
fn same_run(a: &Path, b: &Path, what: &str) {
    let (_, sa) = same_bits(a, b, &["checkpoint.safetensors", "best.safetensors", "config.toml"], what);
    assert!(sa.contains_key("eval/valid_nll") && sa.contains_key("eval/test_nll"), "{what}: scalars {:?}", sa.keys());
}

/// Run `algo` with `m` micro-batches to the end (the reference), and again under `first_n`
/// ranks aborted (as abruptly as SIGKILL) after epoch 2's logs, before its checkpoint, then
/// resumed under `then_n` ranks; returns (reference, resumed) run directories.
fn crash_then_resume(mpirun: &str, d: &Path, algo: &str, extra: &[&str], m: usize, first_n: usize, then_n: usize) -> (std::path::PathBuf, std::path::PathBuf) {
    let ms = m.to_string();
    let reference = format!("ref-m{m}");
    run_ok(&train_args(algo, extra, d, &reference, &["--micro-batches", &ms]));
    let name = format!("crash-m{m}");
    let fresh = train_args(algo, extra, d, &name, &["--micro-batches", &ms]);
    let code = if first_n == 1 {
        wick().args(&fresh).env("WICK_FAULT", "after-log:2").stderr(std::process::Stdio::null()).status().unwrap().code().unwrap_or(-1)
    } else {
        mpi_command(mpirun, first_n, env!("CARGO_BIN_EXE_wick"), &fresh).env("WICK_FAULT", "after-log:2").output().unwrap().status.code().unwrap_or(-1)
    };
    assert_ne!(code, 0, "the fault was injected");
    let dir = d.join(&name);
    assert!(!dir.join("metrics.json").exists());
    let resume = ["train", algo, "--quiet", "--threads", "1", "--resume", s(&dir)];
    if then_n == 1 {
        run_ok(&resume);
    } else {
        mpi_ok(mpirun, then_n, &resume);
    }
    (d.join(&reference), dir)
}

/// Density models, small: batch 60 splits into 2, 3 and 4 micro-batches, and the digits train
/// split (1078 rows? any size) ends each epoch with a short batch that exercises uneven shares.
/// FVSBN's training bits are redrawn every epoch (`--binarize dynamic`, keyed by row), which
/// must not depend on N either.
const MODELS: &[(&str, &[&str])] = &[
    ("fvsbn", &["--data", "digits", "--binarize", "dynamic", "--epochs", "3", "--batch", "60", "--log-every", "2"]),
    ("nade", &["--data", "digits", "--epochs", "3", "--hidden", "16", "--batch", "60", "--log-every", "2"]),
    ("made", &["--data", "digits", "--epochs", "3", "--hidden", "32", "--masks", "2", "--order-agnostic", "--direct", "--batch", "60", "--log-every", "2"]),
];

#[cfg(feature = "mpi")]
#[test]
fn n_ranks_give_the_bits_of_one_process_with_n_micro_batches() {
    let Some(mpirun) = mpirun() else { return };
    let d = scratch("dist-equal");
    for (algo, extra) in MODELS {
        let plain = format!("{algo}-plain");
        run_ok(&train_args(algo, extra, &d, &plain, &[]));
        for n in [2usize, 3] {
            let (one, many) = (format!("{algo}-micro{n}"), format!("{algo}-np{n}"));
            let ns = n.to_string();
            run_ok(&train_args(algo, extra, &d, &one, &["--micro-batches", &ns]));
            let out = mpi_ok(&mpirun, n, &train_args(algo, extra, &d, &many, &[]));
            assert_eq!(out.lines().filter(|l| l.contains(": done in ")).count(), 1, "only rank 0 reports: {out}");
            same_run(&d.join(&one), &d.join(&many), &format!("{algo}: mpirun -np {n} vs --micro-batches {n}"));
            let cfg = std::fs::read_to_string(d.join(&many).join("config.toml")).unwrap();
            assert!(cfg.contains(&format!("micro_batches = {n}")), "{cfg}");
            // Only rank 0 wrote: one event file.
            assert_eq!(wick_core::tb::event_files(&d.join(&many)).unwrap().len(), 1);
            if n == 2 {
                // The combine through MPI_Alltoallv instead of the node's shared window and the
                // sharded update (what ranks on several nodes use): the same bits again.
                let via = format!("{algo}-np2-alltoall");
                let args = train_args(algo, extra, &d, &via, &[]);
                let out = mpi_command(&mpirun, 2, env!("CARGO_BIN_EXE_wick"), &args).env("WICK_COMBINE", "alltoall").output().unwrap();
                assert!(out.status.success(), "{algo}: WICK_COMBINE=alltoall: {}", String::from_utf8_lossy(&out.stderr));
                same_run(&d.join(&one), &d.join(&via), &format!("{algo}: mpirun -np 2 with WICK_COMBINE=alltoall vs --micro-batches 2"));
            }
        }
        // Accumulation really changes the arithmetic (so the equality above is not vacuous).
        let a = std::fs::read(d.join(&plain).join("checkpoint.safetensors")).unwrap();
        let b = std::fs::read(d.join(format!("{algo}-micro2")).join("checkpoint.safetensors")).unwrap();
        assert!(a != b, "{algo}: --micro-batches 2 gave the bits of the plain step");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// The window's other way out: with gradient clipping or an optimizer other than Adam/AdamW the
/// ranks sum and gather the whole gradient (`Combined::into_grads`) instead of the sharded
/// update, MADE's gradients still read through its layout: the same bits again.
#[cfg(feature = "mpi")]
#[test]
fn clipping_and_other_optimizers_give_the_bits_of_one_process_too() {
    let Some(mpirun) = mpirun() else { return };
    let d = scratch("dist-whole");
    let base = ["--data", "digits", "--epochs", "2", "--hidden", "32", "--masks", "2", "--order-agnostic", "--direct", "--batch", "60", "--log-every", "2"];
    for (what, more) in [("clip", &["--clip-grad", "1.0"][..]), ("sgd", &["--optimizer", "sgd", "--lr", "0.05"][..]), ("adagrad", &["--optimizer", "adagrad", "--lr", "0.05"][..])] {
        let extra: Vec<&str> = base.iter().chain(more).copied().collect();
        let (one, many) = (format!("made-{what}-micro2"), format!("made-{what}-np2"));
        run_ok(&train_args("made", &extra, &d, &one, &["--micro-batches", "2"]));
        mpi_ok(&mpirun, 2, &train_args("made", &extra, &d, &many, &[]));
        same_run(&d.join(&one), &d.join(&many), &format!("made {more:?}: mpirun -np 2 vs --micro-batches 2"));
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Rank 1 reads a different copy of the data (the same path relative to another working
/// directory): the result changes, so rank 1's share is really computed by rank 1 and used.
#[cfg(feature = "mpi")]
#[test]
fn every_rank_computes_its_own_share() {
    let Some(mpirun) = mpirun() else { return };
    let d = scratch("dist-share");
    let digits = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/digits.csv.gz");
    let text = String::from_utf8(Command::new("gzip").arg("-dc").arg(&digits).output().expect("gzip").stdout).unwrap();
    // The same rows with every pixel inverted about the threshold (the label kept).
    let inverted: String = text
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            let (px, label) = f.split_at(f.len() - 1);
            let px: Vec<&str> = px.iter().map(|v| if v.parse::<f64>().unwrap() >= 8.0 { "0" } else { "16" }).collect();
            format!("{},{}\n", px.join(","), label[0])
        })
        .collect();
    let (same0, same1, other) = (d.join("r0"), d.join("r1"), d.join("r1-inverted"));
    for (dir, t) in [(&same0, &text), (&same1, &text), (&other, &inverted)] {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("digits.csv"), t).unwrap();
    }

    let logdir = d.join("runs");
    let run = |tag: &str, rank1_dir: &Path| {
        let script = format!(
            "if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then cd '{}'; else cd '{}'; fi; exec '{}' \"$@\"",
            rank1_dir.display(),
            same0.display(),
            env!("CARGO_BIN_EXE_wick")
        );
        let args = train_args("nade", &["--data", "digits.csv", "--epochs", "2", "--hidden", "16", "--batch", "60"], &logdir, tag, &[]);
        let mut full = vec!["-c", &script, "sh"];
        full.extend(args.iter().copied());
        let out = mpi_command(&mpirun, 2, "sh", &full).output().unwrap();
        assert!(out.status.success(), "{tag}: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::read(logdir.join(tag).join("checkpoint.safetensors")).unwrap()
    };
    let (a, b, c) = (run("same-a", &same1), run("same-b", &same1), run("other", &other));
    assert!(a == b, "same data on both ranks: same bits");
    assert!(a != c, "rank 1's data changed but the result did not: rank 1's share is not used");
    let _ = std::fs::remove_dir_all(&d);
}

/// Stopped by a crash under 2 ranks, resumed by 1 process; started by 1 process with 4
/// micro-batches, crashed, resumed under 2 ranks: both equal the uninterrupted runs.
#[cfg(feature = "mpi")]
#[test]
fn resume_continues_exactly_with_another_rank_count() {
    let Some(mpirun) = mpirun() else { return };
    let d = scratch("dist-resume");
    let extra: &[&str] = &["--data", "digits", "--epochs", "4", "--hidden", "16", "--batch", "60", "--log-every", "2"];
    for (m, first_n, then_n) in [(2usize, 2usize, 1usize), (4, 1, 2)] {
        let (reference, dir) = crash_then_resume(&mpirun, &d, "nade", extra, m, first_n, then_n);
        same_run(&reference, &dir, &format!("micro-batches {m}: {first_n} rank(s), crash, resume with {then_n}"));
    }
    // A plain run (one micro-batch) resumed under 2 ranks keeps its arithmetic: refused.
    run_ok(&train_args("nade", &["--data", "digits", "--epochs", "1", "--hidden", "16", "--batch", "60"], &d, "plain", &[]));
    let (code, _, err, _) = mpi_run(&mpirun, 2, &["train", "nade", "--quiet", "--resume", s(&d.join("plain"))]);
    assert_ne!(code, 0);
    assert!(err.contains("1 micro-batches, which 2 ranks cannot share"), "{err}");
    // A run of 4 micro-batches cannot be shared by 3 ranks: one line saying which counts can.
    let (code, _, err, _) = mpi_run(&mpirun, 3, &["train", "nade", "--quiet", "--resume", s(&d.join("crash-m4"))]);
    assert_eq!(code, 2.max(code), "{err}");
    assert_ne!(code, 0);
    assert!(err.contains("4 micro-batches, which 3 ranks cannot share") && err.contains("(1, 2, 4)"), "{err}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Ctrl-C under mpirun (which sends the ranks SIGTERM): all ranks stop after the same step,
/// rank 0 saves the checkpoint and prints the resume command once; one process resumes it to the
/// bits of the uninterrupted run.
#[cfg(feature = "mpi")]
#[test]
fn ctrl_c_under_mpirun_checkpoints_and_resumes_exactly() {
    let Some(mpirun) = mpirun() else { return };
    let d = scratch("dist-ctrlc");
    // 600 epochs (about 14,000 steps, 10 s under mpirun here): mpirun passes the SIGINT on to
    // the ranks after up to a few seconds (OpenMPI puts them in process groups of their own, so
    // a terminal's Ctrl-C reaches mpirun only). With 150 epochs (2 s) the run often ended first.
    let extra: &[&str] = &["--data", "digits", "--epochs", "600", "--patience", "0", "--hidden", "16", "--batch", "60", "--log-every", "50"];
    run_ok(&train_args("nade", extra, &d, "reference", &["--micro-batches", "2"]));
    let child = mpi_command(&mpirun, 2, env!("CARGO_BIN_EXE_wick"), &train_args("nade", extra, &d, "int", &[]))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let dir = d.join("int");
    let t = Instant::now();
    while !dir.join("checkpoint.safetensors").exists() && t.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Ctrl-C to the mpirun this test started (by its pid).
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("wick:")).collect();
    assert_eq!(ours.len(), 1, "{err}");
    assert!(ours[0].starts_with("wick: interrupted at step ") && ours[0].ends_with(&format!("Continue with: wick train nade --resume {}", dir.display())), "{err}");
    run_ok(&["train", "nade", "--quiet", "--threads", "1", "--resume", s(&dir)]);
    same_run(&d.join("reference"), &dir, "Ctrl-C under mpirun -np 2, resumed by one process");
    let _ = std::fs::remove_dir_all(&d);
}

/// A rank that fails stops every rank within seconds, with one line naming the rank; the run's
/// last checkpoint stays loadable.
#[cfg(feature = "mpi")]
#[test]
fn a_failing_rank_stops_every_rank_with_one_line() {
    let Some(mpirun) = mpirun() else { return };
    let d = scratch("dist-fail");
    let wick_bin = env!("CARGO_BIN_EXE_wick");

    // Bad input on one host: rank 1's data file is missing.
    let script = format!("if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then cd /; else cd '{}'; fi; exec '{wick_bin}' \"$@\"", Path::new(env!("CARGO_MANIFEST_DIR")).join("data").display());
    let args = train_args("nade", &["--data", "digits.csv.gz", "--epochs", "2", "--hidden", "16", "--batch", "60"], &d, "bad-input", &[]);
    let mut full = vec!["-c", script.as_str(), "sh"];
    full.extend(args.iter().copied());
    let t = Instant::now();
    let out = mpi_command(&mpirun, 3, "sh", &full).output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("wick:")).collect();
    assert_eq!(ours.len(), 1, "one line from wick: {err}");
    assert!(ours[0].starts_with("wick: rank 1 of 3: ") && ours[0].contains("digits.csv.gz"), "{err}");
    assert!(secs < 30.0, "took {secs:.1} s to stop");

    // An error every rank hits alike is reported once, by rank 0.
    let (code, _, err, _) = mpi_run(&mpirun, 3, &train_args("nade", &["--data", "digits", "--batch", "100"], &d, "indivisible", &[]));
    assert_eq!(code, 2.max(code));
    assert_ne!(code, 0);
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("wick:")).collect();
    assert_eq!(ours, ["wick: --batch 100 is not divisible into 3 micro-batches (3 rank(s)): choose a batch that is a multiple of 3"], "{err}");

    // A crash: rank 1 is killed with SIGKILL mid-training.
    let logdir = d.join("runs");
    let script = format!("if [ \"$OMPI_COMM_WORLD_RANK\" = 1 ]; then (sleep 4; kill -9 $$) & fi; exec '{wick_bin}' \"$@\"");
    let args = train_args("nade", &["--data", "digits", "--epochs", "100000", "--patience", "0", "--hidden", "16", "--batch", "60", "--log-every", "0"], &logdir, "killed", &[]);
    let mut full = vec!["-c", script.as_str(), "sh"];
    full.extend(args.iter().copied());
    let t = Instant::now();
    let out = mpi_command(&mpirun, 2, "sh", &full).output().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(secs < 4.0 + 30.0, "took {secs:.1} s to stop after the kill");
    assert!(err.contains("rank 1") && err.contains("signal 9"), "mpirun names the rank: {err}");
    let run = logdir.join("killed");
    let ck = run.join("checkpoint.safetensors");
    assert!(ck.exists(), "some epochs were checkpointed before the kill");
    wick_core::checkpoint::Checkpoint::load(&ck).expect("the last checkpoint loads");
    let evaluated = run_ok(&["eval", s(&run)]);
    assert!(evaluated.contains("test_nll"), "{evaluated}");
    let _ = std::fs::remove_dir_all(&d);
}

/// Trainers that do not run data-parallel say so in one line under N > 1 ranks.
#[cfg(feature = "mpi")]
#[test]
fn single_process_trainers_refuse_more_ranks() {
    let Some(mpirun) = mpirun() else { return };
    let d = scratch("dist-single");
    for (algo, want) in [("mc-es", "runs in one process")] {
        let (code, _, err, _) = mpi_run(&mpirun, 2, &["train", algo, "--quiet", "--logdir", s(&d)]);
        assert_eq!(code, 2.max(code));
        assert_ne!(code, 0);
        let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("wick:")).collect();
        assert_eq!(ours.len(), 1, "{err}");
        assert!(ours[0].contains(want), "{err}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// REINFORCE, small: 6 episodes per update split into 2 and 3 shares.
const REINFORCE: &[&str] = &["--env", "CartPole-v1", "--total-steps", "20000", "--episodes-per-update", "6", "--baseline", "--checkpoint-every", "5", "--log-every", "10"];

/// The files of a REINFORCE run whose bytes must not depend on N.
fn same_rl_run(a: &Path, b: &Path, what: &str) {
    let (m, sa) = same_bits(a, b, &["checkpoint.safetensors", "config.toml"], what);
    assert!(m["episodes"].as_u64().unwrap() > 50 && m["updates"].as_u64().unwrap() > 8, "{what}: {m}");
    assert!(sa.contains_key("charts/episodic_return") && sa.contains_key("losses/value_loss"), "{what}: scalars {:?}", sa.keys());
}

/// REINFORCE: each rank plays its share of an update's episodes (every draw keyed by the
/// episode's index); N ranks give the bits of one process with `--micro-batches N`, and a run
/// crashed under 2 ranks resumes in one process to the same bits.
#[cfg(feature = "mpi")]
#[test]
fn reinforce_n_ranks_give_the_bits_of_one_process_with_n_micro_batches() {
    let Some(mpirun) = mpirun() else { return };
    let d = scratch("dist-reinforce");
    run_ok(&train_args("reinforce", REINFORCE, &d, "plain", &[]));
    for n in [2usize, 3] {
        let (one, many) = (format!("micro{n}"), format!("np{n}"));
        let ns = n.to_string();
        run_ok(&train_args("reinforce", REINFORCE, &d, &one, &["--micro-batches", &ns]));
        let out = mpi_ok(&mpirun, n, &train_args("reinforce", REINFORCE, &d, &many, &[]));
        assert_eq!(out.lines().filter(|l| l.contains(": done in ")).count(), 1, "only rank 0 reports: {out}");
        same_rl_run(&d.join(&one), &d.join(&many), &format!("reinforce: mpirun -np {n} vs --micro-batches {n}"));
        assert!(std::fs::read_to_string(d.join(&many).join("config.toml")).unwrap().contains(&format!("micro_batches = {n}")));
        assert_eq!(wick_core::tb::event_files(&d.join(&many)).unwrap().len(), 1, "only rank 0 wrote");
    }
    // Shares really change the arithmetic (so the equality above is not vacuous)...
    let a = std::fs::read(d.join("plain").join("checkpoint.safetensors")).unwrap();
    let b = std::fs::read(d.join("micro2").join("checkpoint.safetensors")).unwrap();
    assert!(a != b, "--micro-batches 2 gave the bits of the plain update");

    // Crashed under 2 ranks after the 2nd checkpoint's logs, resumed by one process.
    let crash = train_args("reinforce", REINFORCE, &d, "crash", &[]);
    let out = mpi_command(&mpirun, 2, env!("CARGO_BIN_EXE_wick"), &crash).env("WICK_FAULT", "after-log:2").output().unwrap();
    assert!(!out.status.success(), "the fault was injected");
    let dir = d.join("crash");
    assert!(dir.join("checkpoint.safetensors").exists());
    run_ok(&["train", "reinforce", "--quiet", "--threads", "1", "--resume", s(&dir)]);
    same_rl_run(&d.join("micro2"), &dir, "reinforce: crash under 2 ranks, resume in one process");

    // An update's episodes that the ranks cannot share equally: one line, exit 2, no run directory.
    let bad: Vec<&str> = REINFORCE.iter().map(|&a| if a == "6" { "5" } else { a }).collect();
    let (code, _, err, _) = mpi_run(&mpirun, 2, &train_args("reinforce", &bad, &d, "indivisible", &[]));
    assert_eq!(code, 2, "{err}");
    let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("wick:")).collect();
    assert_eq!(ours, ["wick: --episodes-per-update 5 does not split into 2 equal shares (--micro-batches or the number of ranks): choose a multiple of 2"], "{err}");
    assert!(!d.join("indivisible").exists());
    let _ = std::fs::remove_dir_all(&d);
}

/// `--allreduce ring` (MPI_Allreduce in MPI's order) runs and lands close to the ordered combine,
/// without the bit-identity guarantee (NADE on digits, 2 ranks).
#[cfg(feature = "mpi")]
#[test]
fn allreduce_ring_runs_and_is_close_to_the_ordered_combine() {
    let Some(mpirun) = mpirun() else { return };
    let d = scratch("dist-ring");
    let extra: &[&str] = &["--data", "digits", "--epochs", "3", "--hidden", "16", "--batch", "60", "--log-every", "0"];
    mpi_ok(&mpirun, 2, &train_args("nade", extra, &d, "ordered", &[]));
    mpi_ok(&mpirun, 2, &train_args("nade", extra, &d, "ring", &["--allreduce", "ring"]));
    let cfg = std::fs::read_to_string(d.join("ring").join("config.toml")).unwrap();
    assert!(cfg.contains("allreduce = \"ring\""), "{cfg}");
    let (a, b) = (metrics_sans_timing(&d.join("ordered")), metrics_sans_timing(&d.join("ring")));
    for k in ["train_nll", "valid_nll", "test_nll"] {
        let (x, y) = (a[k].as_f64().unwrap(), b[k].as_f64().unwrap());
        assert!((x - y).abs() < 1e-3 * x.abs(), "{k}: ordered {x} vs ring {y}");
    }
    let (sa, sb) = (scalars_sans_timing(&d.join("ordered")), scalars_sans_timing(&d.join("ring")));
    for (p, q) in sa["eval/valid_nll"].iter().zip(&sb["eval/valid_nll"]) {
        assert!(p.0 == q.0 && (p.1 - q.1).abs() < 1e-3 * p.1.abs(), "valid NLL per epoch: {p:?} vs {q:?}");
    }
    // Pretraining takes it too (SimCLR: the gathered loss, then the ring combine of the gradients).
    let (algo, extra) = PRETRAIN[1];
    assert_eq!(algo, "simclr");
    mpi_ok(&mpirun, 2, &train_args(algo, extra, &d, "simclr-ordered", &[]));
    mpi_ok(&mpirun, 2, &train_args(algo, extra, &d, "simclr-ring", &["--allreduce", "ring"]));
    let cfg = std::fs::read_to_string(d.join("simclr-ring").join("config.toml")).unwrap();
    assert!(cfg.contains("allreduce = \"ring\""), "{cfg}");
    let (sa, sb) = (scalars_sans_timing(&d.join("simclr-ordered")), scalars_sans_timing(&d.join("simclr-ring")));
    let (la, lb) = (&sa["losses/nt_xent"], &sb["losses/nt_xent"]);
    assert!(!la.is_empty() && la.len() == lb.len(), "{la:?} vs {lb:?}");
    for (p, q) in la.iter().zip(lb) {
        assert!(p.0 == q.0 && (p.1 - q.1).abs() < 1e-3 * p.1.abs(), "SimCLR train loss: ordered {p:?} vs ring {q:?}");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// Without the `mpi` feature, more than one rank is a one-line error naming the feature.
#[cfg(not(feature = "mpi"))]
#[test]
fn without_the_feature_more_ranks_are_refused_in_one_line() {
    // One `wick:` line naming the feature, and no run directory.
    let refused = |err: &str, d: &Path| {
        let ours: Vec<&str> = err.lines().filter(|l| l.starts_with("wick:")).collect();
        assert_eq!(ours.len(), 1, "{err}");
        assert!(ours[0].contains("without the `mpi` feature") && ours[0].contains("--features mpi"), "{err}");
        assert!(std::fs::read_dir(d).unwrap().next().is_none(), "no run directory was made");
    };
    // The environment OpenMPI's mpirun gives each rank (this needs no OpenMPI installed).
    let d = scratch("dist-nofeature-env");
    let out = wick().args(["train", "nade", "--quiet", "--logdir", s(&d)]).env("OMPI_COMM_WORLD_SIZE", "2").env("OMPI_COMM_WORLD_RANK", "0").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    refused(&err, &d);
    // And under a real mpirun, where one is installed.
    let Some(mpirun) = mpirun() else { return };
    let d = scratch("dist-nofeature");
    let (code, _, err, _) = mpi_run(&mpirun, 2, &["train", "nade", "--quiet", "--logdir", s(&d)]);
    assert_ne!(code, 0, "{err}");
    refused(&err, &d);
}

/// Pretraining, small: batch 48 splits into 2 and 3 micro-batches, and the digits train split
/// ends each epoch with a short batch (uneven shares). Masked prediction with 3×3 patches on
/// 8×8 images hides a different pixel count per image (the shares' normalisers differ).
const PRETRAIN: &[(&str, &[&str])] = &[
    ("masked", &["--data", "digits", "--epochs", "2", "--batch", "48", "--mask-patch", "3", "--probe-every", "1", "--log-every", "2"]),
    ("simclr", &["--data", "digits", "--epochs", "2", "--batch", "48", "--probe-every", "1", "--log-every", "2"]),
    ("vicreg", &["--data", "digits", "--epochs", "2", "--batch", "48", "--probe-every", "1", "--log-every", "2"]),
];

/// A pretraining run's files whose bytes must not depend on N (it writes no best.safetensors).
fn same_pretrain_run(a: &Path, b: &Path, what: &str) {
    let (_, sa) = same_bits(a, b, &["checkpoint.safetensors", "config.toml"], what);
    assert!(sa.contains_key("eval/probe_acc_all") && sa.keys().any(|k| k.starts_with("losses/")), "{what}: scalars {:?}", sa.keys());
}

/// Masked prediction, SimCLR and VICReg: N ranks give the bits of one process with N
/// micro-batches (SimCLR's and VICReg's loss over the whole global batch, projections
/// all-gathered).
#[cfg(feature = "mpi")]
#[test]
fn pretraining_n_ranks_give_the_bits_of_one_process_with_n_micro_batches() {
    let Some(mpirun) = mpirun() else { return };
    let d = scratch("dist-pretrain-equal");
    for (algo, extra) in PRETRAIN {
        let plain = format!("{algo}-plain");
        run_ok(&train_args(algo, extra, &d, &plain, &[]));
        for n in [2usize, 3] {
            let (one, many) = (format!("{algo}-micro{n}"), format!("{algo}-np{n}"));
            let ns = n.to_string();
            run_ok(&train_args(algo, extra, &d, &one, &["--micro-batches", &ns]));
            let out = mpi_ok(&mpirun, n, &train_args(algo, extra, &d, &many, &[]));
            assert_eq!(out.lines().filter(|l| l.contains(": done in ")).count(), 1, "only rank 0 reports: {out}");
            same_pretrain_run(&d.join(&one), &d.join(&many), &format!("{algo}: mpirun -np {n} vs --micro-batches {n}"));
            let cfg = std::fs::read_to_string(d.join(&many).join("config.toml")).unwrap();
            assert!(cfg.contains(&format!("micro_batches = {n}")), "{cfg}");
            assert_eq!(wick_core::tb::event_files(&d.join(&many)).unwrap().len(), 1, "only rank 0 wrote");
            if n == 2 && *algo == "simclr" {
                // Through MPI_Alltoallv instead of the node's window and the sharded update.
                let via = format!("{algo}-np2-alltoall");
                let args = train_args(algo, extra, &d, &via, &[]);
                let out = mpi_command(&mpirun, 2, env!("CARGO_BIN_EXE_wick"), &args).env("WICK_COMBINE", "alltoall").output().unwrap();
                assert!(out.status.success(), "{algo}: WICK_COMBINE=alltoall: {}", String::from_utf8_lossy(&out.stderr));
                same_pretrain_run(&d.join(&one), &d.join(&via), &format!("{algo}: mpirun -np 2 with WICK_COMBINE=alltoall vs --micro-batches 2"));
            }
        }
        // Accumulation really changes the arithmetic (so the equality above is not vacuous).
        let a = std::fs::read(d.join(&plain).join("checkpoint.safetensors")).unwrap();
        let b = std::fs::read(d.join(format!("{algo}-micro2")).join("checkpoint.safetensors")).unwrap();
        assert!(a != b, "{algo}: --micro-batches 2 gave the bits of the plain step");
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// SimCLR stopped by a crash under 2 ranks and resumed by one process; started by one process
/// with 6 micro-batches, crashed, resumed under 3 ranks: both equal the uninterrupted runs.
#[cfg(feature = "mpi")]
#[test]
fn pretraining_resumes_exactly_with_another_rank_count() {
    let Some(mpirun) = mpirun() else { return };
    let d = scratch("dist-pretrain-resume");
    let extra: &[&str] = &["--data", "digits", "--epochs", "3", "--batch", "48", "--probe-every", "2", "--log-every", "2"];
    for (m, first_n, then_n) in [(2usize, 2usize, 1usize), (6, 1, 3)] {
        let (reference, dir) = crash_then_resume(&mpirun, &d, "simclr", extra, m, first_n, then_n);
        same_pretrain_run(&reference, &dir, &format!("simclr, micro-batches {m}: {first_n} rank(s), crash, resume with {then_n}"));
    }
    let _ = std::fs::remove_dir_all(&d);
}
