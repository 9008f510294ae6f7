//! Bad input, table-driven: each case gives one line on stderr, exit code 2, no panic trace,
//! and leaves every file that was there as it was.

mod common;
use common::*;
use std::fs;
use std::path::Path;

fn write(p: &Path, bytes: &[u8]) -> String {
    fs::write(p, bytes).unwrap();
    s(p).to_string()
}

fn idx_images(magic: u32, n: u32, rows: u32, cols: u32, pixels: usize) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [magic, n, rows, cols] {
        v.extend(x.to_be_bytes());
    }
    v.extend(std::iter::repeat_n(0u8, pixels));
    v
}

#[test]
fn bad_inputs_give_one_line_exit_2_and_touch_nothing() {
    let d = scratch("bad");
    let logdir = d.join("runs");
    // A finished run to point eval/sample/resume at, and fixtures.
    run_ok(&["train", "fvsbn", "--epochs", "2", "--quiet", "--logdir", s(&logdir), "--run-name", "good"]);
    let good = logdir.join("good");
    let good_s = s(&good).to_string();
    let corrupt_run = logdir.join("corrupt");
    fs::create_dir_all(&corrupt_run).unwrap();
    for f in ["config.toml", "best.safetensors", "metrics.json"] {
        fs::copy(good.join(f), corrupt_run.join(f)).unwrap();
    }
    let ck = fs::read(good.join("checkpoint.safetensors")).unwrap();
    fs::write(corrupt_run.join("checkpoint.safetensors"), &ck[..ck.len() / 3]).unwrap();
    fs::write(corrupt_run.join("best.safetensors"), b"not a safetensors file at all").unwrap();
    // A run of another size: best.safetensors of a 2x2-pixel model under digits' config.
    let small_csv = write(&d.join("small.csv"), b"0,1,1,0,3\n1,0,0,1,4\n0,0,1,1,5\n1,1,0,0,6\n0,1,0,1,7\n1,0,1,0,8\n0,0,0,1,9\n1,1,1,1,1\n0,1,1,1,2\n1,0,0,0,3\n0,1,1,0,3\n1,0,0,1,4\n");
    run_ok(&["train", "fvsbn", "--data", &small_csv, "--epochs", "1", "--quiet", "--logdir", s(&logdir), "--run-name", "small"]);
    let mismatched = logdir.join("mismatched");
    fs::create_dir_all(&mismatched).unwrap();
    fs::copy(good.join("config.toml"), mismatched.join("config.toml")).unwrap();
    fs::copy(logdir.join("small/best.safetensors"), mismatched.join("best.safetensors")).unwrap();

    let truncated = write(&d.join("truncated.csv"), b"1,2,3,4,0\n5,6,7,8,1\n9,10,1");
    let wrong_cols = write(&d.join("cols.csv"), b"1,2,3,4,0\n5,6,7,8,1\n1,2,3,4,5,6\n");
    let non_numeric = write(&d.join("nan.csv"), b"1,2,3,4,0\n5,abc,7,8,1\n");
    let empty = write(&d.join("empty.csv"), b"");
    let not_gzip = write(&d.join("fake.csv.gz"), b"this is not gzip");
    let idx_dir = d.join("idx");
    fs::create_dir_all(&idx_dir).unwrap();
    let idx_size_dir = d.join("idx_size");
    for (dir, bad) in [(&idx_dir, idx_images(0x1234_5678, 2, 2, 2, 8)), (&idx_size_dir, idx_images(0x803, 1000, 28, 28, 100))] {
        fs::create_dir_all(dir).unwrap();
        let mut labels = vec![0, 0, 8, 1, 0, 0, 0, 2];
        labels.extend([3u8, 4]);
        write(&dir.join("train-images-idx3-ubyte"), &bad);
        write(&dir.join("train-labels-idx1-ubyte"), &labels);
        write(&dir.join("t10k-images-idx3-ubyte"), &idx_images(0x803, 2, 2, 2, 8));
        write(&dir.join("t10k-labels-idx1-ubyte"), &labels);
    }
    let amat = write(&d.join("binarized_mnist_train.amat"), b"0 1 0 1\n0 0.5 1 1\n");
    let bad_toml = write(&d.join("bad.toml"), b"epochs = = 3\n");
    let unknown_key = write(&d.join("unknown.toml"), b"epochs = 3\nlearning_rate = 0.1\n");
    let optim_key = write(&d.join("optim.toml"), b"[optim]\nkind = \"adam\"\nlearnrate = 0.1\n");
    let wrong_type = write(&d.join("type.toml"), b"batch = \"ten\"\n");
    let not_a_dir = write(&d.join("plainfile"), b"x");
    let l = s(&logdir).to_string();
    let tr = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = ["train", "fvsbn", "--quiet", "--logdir", &l, "--run-name", "new"].iter().map(|x| x.to_string()).collect();
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let own = |v: &[&str]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };

    // (what, args, a fragment the one-line message must contain)
    let cases: Vec<(&str, Vec<String>, &str)> = vec![
        ("unknown algorithm", own(&["train", "nosuch"]), "nosuch"),
        ("unknown subcommand flag", tr(&["--bogus-flag"]), "--bogus-flag"),
        ("unknown dataset", tr(&["--data", "nosuchdata"]), "unknown dataset 'nosuchdata'"),
        ("missing data file", tr(&["--data", "/nonexistent/x.csv"]), "not found"),
        ("truncated CSV", tr(&["--data", &truncated]), "line 3"),
        ("wrong column count", tr(&["--data", &wrong_cols]), "line 3"),
        ("non-numeric cell", tr(&["--data", &non_numeric]), "'abc' is not a number"),
        ("empty data file", tr(&["--data", &empty]), "empty"),
        ("not gzip", tr(&["--data", &not_gzip]), "gzip"),
        ("bad IDX magic", tr(&["--data", s(&idx_dir)]), "magic"),
        ("IDX size mismatch", tr(&["--data", s(&idx_size_dir)]), "bytes"),
        (".amat non-binary value", tr(&["--data", &amat]), "is not 0 or 1"),
        ("negative learning rate", tr(&["--lr", "-0.1"]), "learning rate"),
        ("NaN learning rate", tr(&["--lr", "NaN"]), "learning rate"),
        ("zero batch size", tr(&["--batch", "0"]), "batch"),
        ("zero epochs", tr(&["--epochs", "0"]), "epochs"),
        ("beta1 out of range", tr(&["--beta1", "1.5"]), "beta1"),
        ("negative weight decay", tr(&["--weight-decay", "-1"]), "weight"),
        ("bad schedule", tr(&["--schedule", "cosine:abc"]), "schedule"),
        ("bad optimizer", tr(&["--optimizer", "rmsprop"]), "rmsprop"),
        ("non-number flag", tr(&["--epochs", "many"]), "many"),
        ("zero threads", tr(&["--threads", "0"]), "threads"),
        ("cuda without the feature", tr(&["--device", "cuda"]), "cuda"),
        ("unknown device", tr(&["--device", "tpu"]), "unknown device"),
        ("malformed TOML", tr(&["--config", &bad_toml]), "not valid TOML"),
        ("unknown config key", tr(&["--config", &unknown_key]), "learning_rate"),
        ("unknown [optim] key", tr(&["--config", &optim_key]), "learnrate"),
        ("wrong config type", tr(&["--config", &wrong_type]), "batch"),
        ("missing config file", tr(&["--config", "/nonexistent/c.toml"]), "not found"),
        ("existing run dir", own(&["train", "fvsbn", "--quiet", "--logdir", &l, "--run-name", "good"]), "already exists"),
        ("unwritable logdir", own(&["train", "fvsbn", "--quiet", "--logdir", &not_a_dir, "--run-name", "x"]), "plainfile"),
        ("resume a missing dir", own(&["train", "fvsbn", "--resume", "/nonexistent/run"]), "not found"),
        ("resume with flags", own(&["train", "fvsbn", "--resume", &good_s, "--lr", "0.1"]), "--resume"),
        ("resume and force", own(&["train", "fvsbn", "--resume", &good_s, "--force"]), "--force"),
        ("corrupt checkpoint", own(&["train", "fvsbn", "--quiet", "--resume", s(&corrupt_run)]), "corrupt"),
        ("corrupt best model", own(&["eval", s(&corrupt_run)]), "corrupt"),
        ("checkpoint of another size", own(&["eval", s(&mismatched)]), "shape"),
        ("eval of a non-run dir", own(&["eval", s(&d)]), "not a wick run directory"),
        ("eval bad split", own(&["eval", &good_s, "--split", "dev"]), "dev"),
        ("sample zero", own(&["sample", &good_s, "--n", "0", "--out", s(&d.join("o.png"))]), "--n"),
        ("sample bad observe", own(&["sample", &good_s, "--complete-from", "digits", "--observe", "middle", "--out", s(&d.join("o.png"))]), "middle"),
        ("NADE too big for memory", own(&["train", "nade", "--data", "digits", "--hidden", "4000000000", "--quiet", "--logdir", &l, "--run-name", "big"]), "smaller --hidden"),
        ("MADE too big for memory", own(&["train", "made", "--data", "mnist5k", "--hidden", "300000000", "--quiet", "--logdir", &l, "--run-name", "big"]), "smaller --hidden"),
        ("pretraining MNIST missing at --data-dir", own(&["train", "simclr", "--data", "mnist", "--data-dir", "/nonexistent/mnist-here", "--quiet", "--logdir", &l, "--run-name", "m"]), "wick data fetch mnist --dir /nonexistent/mnist-here"),
        ("VICReg batch leaving one row", own(&["train", "vicreg", "--data", "digits", "--batch", "1436", "--quiet", "--logdir", &l, "--run-name", "v"]), "leaves 1 row in the last batch"),
        ("REINFORCE too big for memory", own(&["train", "reinforce", "--env", "Blackjack-v1", "--hidden", "99999999999", "--quiet", "--logdir", &l, "--run-name", "big"]), "smaller --hidden"),
    ];
    assert!(cases.len() >= 30);

    for (what, args, fragment) in &cases {
        let before = snapshot(&d);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, _out, err) = run(&args);
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(code, 2, "{what}: exit code {code}, stderr: {err}");
        assert_eq!(lines.len(), 1, "{what}: expected one line, got: {err}");
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{what}: {err}");
        assert!(err.contains(fragment), "{what}: '{fragment}' not in: {err}");
        assert_eq!(before, snapshot(&d), "{what}: files changed");
        if std::env::var_os("WICK_SHOW_ERRORS").is_some() {
            eprintln!("{what:<28} {}", err.trim());
        }
    }
}

#[test]
fn a_diverging_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint() {
    let d = scratch("diverge");
    // A learning rate that overflows the weights at once: no checkpoint yet, nothing kept.
    let (code, _out, err) = run(&["train", "fvsbn", "--quiet", "--logdir", s(&d), "--run-name", "r", "--lr", "1e38", "--epochs", "50"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("diverged") && err.contains("no checkpoint") && err.lines().count() == 1, "{err}");
    // A NaN loss in the 40th batch (epoch 3 of digits at batch 100): the epoch-2 checkpoint stays.
    let out = wick()
        .args(["train", "fvsbn", "--quiet", "--logdir", s(&d), "--run-name", "late", "--epochs", "50"])
        .env("WICK_FAULT", "nan-loss:40")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("diverged at epoch 3") && err.contains("last good checkpoint") && err.lines().count() == 1, "{err}");
    let ck = wick_core::checkpoint::Checkpoint::load(&d.join("late/checkpoint.safetensors")).unwrap();
    let w = ck.f32_values("fvsbn.w", &[64, 64]).unwrap();
    assert!(w.iter().all(|x| x.is_finite()), "the kept checkpoint must be a good one");
    let st: serde_json::Value = ck.meta("train_state").unwrap();
    assert_eq!(st["epoch"], 3, "the checkpoint of the last finished epoch: {st}");
    assert!(!d.join("late/metrics.json").exists());
}

/// `wick list | head -1`: a reader that goes away early is not a wick bug (no "internal error").
#[test]
fn a_closed_stdout_ends_wick_quietly() {
    let mut child = wick().args(["list"]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    drop(child.stdout.take()); // the reader is gone before wick writes a byte
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.is_empty(), "stderr: {err}");
}
