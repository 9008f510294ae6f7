//! Whole `wick train fvsbn/nade/made/oanade` runs: files, TensorBoard and safetensors read by the real Python
//! packages, seeded reproducibility, exact resume after SIGKILL.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const SHORT: &[&str] = &["train", "fvsbn", "--data", "digits", "--epochs", "6", "--log-every", "2", "--quiet"];

fn train(logdir: &std::path::Path, name: &str, extra: &[&str]) -> std::path::PathBuf {
    let mut args: Vec<&str> = SHORT.to_vec();
    args.extend(["--logdir", s(logdir), "--run-name", name]);
    args.extend(extra);
    run_ok(&args);
    logdir.join(name)
}

#[test]
fn a_run_writes_config_checkpoints_metrics_and_events() {
    let d = scratch("files");
    let run = train(&d, "r", &[]);
    for f in ["config.toml", "checkpoint.safetensors", "best.safetensors", "metrics.json"] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    let m = metrics_sans_timing(&run);
    let test_nll = m["test_nll"].as_f64().unwrap();
    assert!(test_nll > 5.0 && test_nll < 44.4, "test_nll {test_nll} (uniform model: 64 ln 2 = 44.4)");
    assert_eq!(m["epochs_run"], 6);
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    for key in ["algo = \"fvsbn\"", "epochs = 6", "batch = 100", "threshold = 8.0", "lr = 0.001", "seed = 0"] {
        assert!(cfg.contains(key), "config.toml lacks {key}:\n{cfg}");
    }
    let sc = scalars_sans_timing(&run);
    let valid = &sc["eval/valid_nll"];
    assert_eq!(valid.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
    assert!(valid[5].1 < valid[0].1, "valid NLL should fall: {valid:?}");
    assert!((sc["eval/test_nll"][0].1 as f64 - test_nll).abs() < 1e-4);
}

/// `--eval-every 3` over 7 epochs evaluates after epochs 3, 6 and 7 only; training is untouched
/// (the same train curve and final model as evaluating every epoch), and the figures it does
/// compute are those of the every-epoch run.
#[test]
fn eval_every_evaluates_every_nth_and_the_last_epoch_without_changing_training() {
    let d = scratch("evalevery");
    let args = |name: &'static str, extra: &[&'static str]| {
        let mut a = vec!["train", "fvsbn", "--data", "digits", "--epochs", "7", "--log-every", "0", "--quiet", "--logdir", s(&d), "--run-name", name];
        a.extend(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    run(args("every", &[]));
    run(args("third", &["--eval-every", "3"]));
    let (every, third) = (d.join("every"), d.join("third"));
    let (se, st) = (scalars_sans_timing(&every), scalars_sans_timing(&third));
    assert_eq!(se["losses/train_nll"], st["losses/train_nll"]);
    let at = |v: &[(u64, f32)], steps: &[u64]| v.iter().copied().filter(|p| steps.contains(&p.0)).collect::<Vec<_>>();
    assert_eq!(st["eval/valid_nll"], at(&se["eval/valid_nll"], &[3, 6, 7]));
    assert_eq!(st["eval/valid_nll"].len(), 3);
    let (me, mt) = (metrics_sans_timing(&every), metrics_sans_timing(&third));
    assert_eq!(me["best_epoch"], 7, "digits FVSBN still improves at epoch 7: {me}");
    assert_eq!(mt["best_epoch"], 7);
    assert_eq!(me["test_nll"], mt["test_nll"]);
    // The same tensor bytes (the header differs: it carries the config, with eval_every).
    let body = |run: &std::path::Path| {
        let b = std::fs::read(run.join("best.safetensors")).unwrap();
        let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
        b[8 + n..].to_vec()
    };
    assert!(body(&every) == body(&third), "best.safetensors holds different tensors");
    assert!(std::fs::read_to_string(third.join("config.toml")).unwrap().contains("eval_every = 3"));
    assert!(!std::fs::read_to_string(every.join("config.toml")).unwrap().contains("eval_every"));
    let (code, _, err) = common::run(&args("zero", &["--eval-every", "0"]).iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("eval-every must be at least 1"), "{err}");
}

#[test]
fn python_tensorboard_reads_every_tag() {
    let Some(py) = python() else { return };
    let d = scratch("tbpy");
    let run = train(&d, "r", &[]);
    let out = Command::new(&py).args([&script("tb_read.py"), s(&run)]).output().unwrap();
    assert!(out.status.success(), "tb_read.py: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ours = wick_core::tb::read_scalars(&run).unwrap();
    let theirs = v["scalars"].as_object().unwrap();
    assert_eq!(theirs.len(), ours.len(), "tags: python {:?} wick {:?}", theirs.keys().collect::<Vec<_>>(), ours.keys().collect::<Vec<_>>());
    for (tag, pts) in &ours {
        let py_pts = theirs[tag].as_array().unwrap();
        assert_eq!(py_pts.len(), pts.len(), "{tag}");
        for (p, (step, val)) in py_pts.iter().zip(pts) {
            assert_eq!(p[0].as_u64().unwrap(), *step, "{tag}");
            assert_eq!(p[1].as_f64().unwrap() as f32, *val, "{tag} step {step}");
        }
    }
    for tag in ["losses/train_nll", "eval/valid_nll", "eval/test_nll", "charts/samples_per_s", "charts/learning_rate"] {
        assert!(theirs.contains_key(tag), "TensorBoard lacks {tag}");
    }
    let imgs = v["images"]["samples"].as_array().expect("sample images");
    assert!(!imgs.is_empty());
    assert!(v["histograms"]["params/fvsbn.w"].as_array().is_some_and(|a| !a.is_empty()));
    assert!(v["texts"]["config"].as_array().is_some_and(|a| a[0][1].as_str().unwrap().contains("algo = \"fvsbn\"")));
}

#[test]
fn python_safetensors_reads_the_checkpoint_and_recomputes_log_p() {
    let Some(py) = python() else { return };
    let d = scratch("stpy");
    let run = train(&d, "r", &[]);
    let csv = d.join("per_example.csv");
    run_ok(&["eval", s(&run), "--split", "test", "--per-example", s(&csv)]);
    let out = Command::new(&py)
        .args([&script("check_checkpoint.py"), s(&run), s(&csv), concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check_checkpoint.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn same_seed_same_bits_other_seed_other_bits_any_thread_count() {
    let d = scratch("repro");
    let a = train(&d, "a", &["--seed", "3", "--threads", "1"]);
    let b = train(&d, "b", &["--seed", "3", "--threads", "2"]);
    let c = train(&d, "c", &["--seed", "4"]);
    for f in ["checkpoint.safetensors", "best.safetensors", "config.toml"] {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
    assert_eq!(metrics_sans_timing(&a), metrics_sans_timing(&b));
    assert_eq!(scalars_sans_timing(&a), scalars_sans_timing(&b));
    assert_ne!(std::fs::read(a.join("checkpoint.safetensors")).unwrap(), std::fs::read(c.join("checkpoint.safetensors")).unwrap());
    assert_ne!(metrics_sans_timing(&a)["test_nll"], metrics_sans_timing(&c)["test_nll"]);
}

/// Kill a run with SIGKILL once it has written a checkpoint and some time has passed, resume it,
/// and compare everything with an uninterrupted run.
#[test]
fn resume_after_sigkill_matches_an_uninterrupted_run() {
    let d = scratch("resume");
    let common = ["train", "fvsbn", "--data", "mnist5k", "--epochs", "8", "--log-every", "3", "--quiet", "--seed", "1"];
    let mut full_args = common.to_vec();
    full_args.extend(["--logdir", s(&d), "--run-name", "full"]);
    run_ok(&full_args);
    let full = d.join("full");

    // Kill points: just after the first checkpoint, later at random-ish times, and (through
    // WICK_FAULT) after an epoch's scalars reached the event file but before its checkpoint,
    // and while a checkpoint was being written.
    let plans: [(u64, Option<&str>); 5] =
        [(0, None), (150, None), (400, None), (0, Some("after-log:3")), (0, Some("checkpoint-write:4"))];
    for (k, (extra_ms, fault)) in plans.into_iter().enumerate() {
        let name = format!("killed{k}");
        let run = d.join(&name);
        let mut args = common.to_vec();
        args.extend(["--logdir", s(&d), "--run-name", &name]);
        let mut cmd = wick();
        cmd.args(&args).stderr(std::process::Stdio::null());
        if let Some(f) = fault {
            cmd.env("WICK_FAULT", f);
            let status = cmd.status().unwrap();
            assert!(!status.success(), "WICK_FAULT={f} should have aborted the run");
            assert!(!run.join("metrics.json").exists());
            wick_core::checkpoint::Checkpoint::load(&run.join("checkpoint.safetensors")).expect("a loadable checkpoint survives");
            if f.starts_with("after-log") {
                let logged = wick_core::tb::read_scalars(&run).unwrap();
                assert_eq!(logged["eval/valid_nll"].last().unwrap().0, 3, "epoch 3 was logged before the crash");
            }
            run_ok(&["train", "fvsbn", "--resume", s(&run), "--quiet"]);
            compare(&full, &run, k);
            continue;
        }
        let mut child = cmd.spawn().unwrap();
        let t0 = Instant::now();
        while !run.join("checkpoint.safetensors").exists() && t0.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(extra_ms));
        let finished_before_kill = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if !finished_before_kill {
            assert!(!run.join("metrics.json").exists() || k > 0);
        }
        run_ok(&["train", "fvsbn", "--resume", s(&run), "--quiet"]);
        compare(&full, &run, k);
    }
}

/// Same final checkpoint bytes, metrics and TensorBoard curves (wick's reader and Python's).
fn compare(full: &std::path::Path, run: &std::path::Path, k: usize) {
    for f in ["checkpoint.safetensors", "best.safetensors"] {
        assert_eq!(std::fs::read(full.join(f)).unwrap(), std::fs::read(run.join(f)).unwrap(), "kill {k}: {f} differs");
    }
    assert_eq!(metrics_sans_timing(full), metrics_sans_timing(run), "kill {k}");
    assert_eq!(scalars_sans_timing(full), scalars_sans_timing(run), "kill {k}: scalars differ");
    if let Some(py) = python() {
        let read = |dir: &std::path::Path| -> serde_json::Value {
            let out = Command::new(&py).args([&script("tb_read.py"), s(dir)]).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            v["scalars"].as_object_mut().unwrap().retain(|k, _| !k.ends_with("_per_s"));
            v["scalars"].clone()
        };
        assert_eq!(read(full), read(run), "kill {k}: TensorBoard shows different scalars");
    }
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run() {
    let d = scratch("sigint");
    let common = ["train", "fvsbn", "--data", "mnist5k", "--epochs", "5", "--log-every", "2", "--quiet", "--seed", "2"];
    let mut full_args = common.to_vec();
    full_args.extend(["--logdir", s(&d), "--run-name", "full"]);
    run_ok(&full_args);
    let run = d.join("int");
    let mut args = common.to_vec();
    args.extend(["--logdir", s(&d), "--run-name", "int"]);
    let child = wick().args(&args).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let t0 = Instant::now();
    while !run.join("checkpoint.safetensors").exists() && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(120));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "stderr: {err}");
    assert!(err.contains("checkpoint saved") && err.contains(&format!("--resume {}", run.display())), "{err}");
    let ck = wick_core::checkpoint::Checkpoint::load(&run.join("checkpoint.safetensors")).unwrap();
    let st: serde_json::Value = ck.meta("train_state").unwrap();
    assert!(st["step"].as_u64().unwrap() > 40, "saved at the interruption, not only at epoch ends: {st}");
    run_ok(&["train", "fvsbn", "--resume", s(&run), "--quiet"]);
    compare(&d.join("full"), &run, 99);
}

#[test]
fn nade_and_made_train_eval_and_sample_from_the_cli() {
    let d = scratch("models");
    for (algo, extra) in [("nade", vec!["--hidden", "16"]), ("made", vec!["--hidden", "32", "--masks", "3", "--order-agnostic"])] {
        let mut args = vec!["train", algo, "--epochs", "3", "--quiet", "--logdir", s(&d), "--run-name", algo];
        args.extend(extra);
        run_ok(&args);
        let run = d.join(algo);
        let m = metrics_sans_timing(&run);
        let test_nll = m["test_nll"].as_f64().unwrap();
        assert!(test_nll > 5.0 && test_nll < 44.4, "{algo}: {test_nll}");
        let out = run_ok(&["eval", s(&run)]);
        let printed: f64 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!((printed - test_nll).abs() < 1e-3, "{algo}: eval printed {out}, metrics say {test_nll}");
        assert_eq!(run_ok(&["eval", s(&run), "--threads", "1"]), out, "{algo}: eval on one thread prints the same");
        let png = d.join(format!("{algo}.png"));
        run_ok(&["sample", s(&run), "--n", "16", "--out", s(&png), "--threads", "1"]);
        let completions = d.join(format!("{algo}-c.png"));
        run_ok(&["sample", s(&run), "--n", "8", "--complete-from", "digits", "--out", s(&completions)]);
        for f in [&png, &completions] {
            let bytes = std::fs::read(f).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", f.display());
        }
    }
    // The mixture's K is recorded.
    assert_eq!(metrics_sans_timing(&d.join("made"))["masks"], 3);
    // Options of one model are refused by another.
    let (code, _, err) = run(&["train", "fvsbn", "--hidden", "10", "--logdir", s(&d), "--run-name", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("--hidden does not apply to fvsbn"), "{err}");
}

/// Order-agnostic NADE from the CLI: train (1 and 2 hidden layers), `wick eval` of ensembles of
/// K orderings (K = 1 reproduces the run's test NLL; bigger ensembles differ, stay finite and
/// are recorded), and exact completions for a named region, a seeded random subset and a mask
/// file, which keep the observed pixels.
#[test]
fn oanade_trains_evaluates_ensembles_and_completes_any_observed_set() {
    let d = scratch("oanade");
    for layers in ["1", "2"] {
        let name = format!("oa{layers}");
        run_ok(&["train", "oanade", "--epochs", "3", "--hidden", "24", "--layers", layers, "--quiet", "--logdir", s(&d), "--run-name", &name]);
        let dir = d.join(&name);
        let m = metrics_sans_timing(&dir);
        assert_eq!((m["layers"].as_u64(), m["orderings"].as_u64()), (Some(layers.parse().unwrap()), Some(1)));
        let test_nll = m["test_nll"].as_f64().unwrap();
        assert!(test_nll > 5.0 && test_nll < 44.4, "{layers} layers: {test_nll}");
        // Early stopping: the exact valid NLL with 1 layer, the order-agnostic estimate with 2
        // (under its own tag); the final figures are exact either way.
        let tags = scalars_sans_timing(&dir);
        let (tag, other) = if layers == "1" { ("eval/valid_nll", "eval/valid_nll_estimate") } else { ("eval/valid_nll_estimate", "eval/valid_nll") };
        assert!(tags[tag].len() == 3 && !tags.contains_key(other), "{layers} layers: {:?}", tags.keys().collect::<Vec<_>>());
        let cfg = std::fs::read_to_string(dir.join("config.toml")).unwrap();
        assert!(cfg.contains(if layers == "1" { "valid = \"exact\"" } else { "valid = \"estimate\"" }), "{cfg}");
        // The default schedule decays the rate to zero over the run (3 epochs of 15 batches),
        // and the saved config states it, so a resumed run keeps it.
        assert!(cfg.contains("kind = \"cosine\"\ntotal_steps = 45\n"), "{cfg}");
        let lr: Vec<f32> = tags["charts/learning_rate"].iter().map(|p| p.1).collect();
        assert!(lr.len() >= 3 && lr[0] > 0.9e-3 && *lr.last().unwrap() < 0.3e-3 && lr.windows(2).all(|w| w[1] < w[0]), "{lr:?}");
        let printed = |out: &str| -> f64 { out.split_whitespace().nth(1).unwrap().parse().unwrap() };
        let out = run_ok(&["eval", s(&dir)]);
        assert!((printed(&out) - test_nll).abs() < 1e-3, "eval printed {out}, metrics say {test_nll}");
        let out4 = run_ok(&["eval", s(&dir), "--orderings", "4"]);
        assert!(out4.contains("ensemble of K=4 orderings"), "{out4}");
        let k4 = printed(&out4);
        assert!(k4.is_finite() && (k4 - test_nll).abs() > 1e-6 && (k4 - test_nll).abs() < 5.0, "K=4 {k4} vs K=1 {test_nll}");
    }
    // --schedule overrides that default; other models keep a constant rate by default.
    for (algo, extra) in [("oanade", &["--schedule", "constant"][..]), ("nade", &[][..])] {
        let name = format!("{algo}-const");
        let mut args = vec!["train", algo, "--epochs", "1", "--hidden", "8", "--quiet", "--logdir", s(&d), "--run-name", &name];
        args.extend(extra);
        run_ok(&args);
        let cfg = std::fs::read_to_string(d.join(&name).join("config.toml")).unwrap();
        assert!(cfg.contains("[schedule]\nkind = \"constant\""), "{algo}: {cfg}");
    }
    let oa1 = d.join("oa1");
    let (code, _, err) = run(&["eval", s(&oa1), "--orderings", "0"]);
    assert_eq!(code, 2, "{err}");
    let maskfile = d.join("mask.txt");
    let rows: Vec<String> = (0..8).map(|r| (0..8).map(|c| if (r + c) % 2 == 0 { "1" } else { "0" }).collect::<Vec<_>>().join(" ")).collect();
    std::fs::write(&maskfile, rows.join("\n")).unwrap();
    for (i, observe) in ["left-half", "random:0.4", s(&maskfile)].into_iter().enumerate() {
        let png = d.join(format!("c{i}.png"));
        let out = run_ok(&["sample", s(&oa1), "--n", "8", "--complete-from", "digits", "--observe", observe, "--out", s(&png)]);
        assert!(out.contains("8 completions"), "{out}");
        assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    }
    let (code, _, err) = run(&["sample", s(&oa1), "--complete-from", "digits", "--observe", "random:1.5", "--out", s(&d.join("x.png"))]);
    assert_eq!(code, 2);
    assert!(err.contains("random:1.5") && err.lines().count() == 1, "{err}");
    let (code, _, err) = run(&["train", "nade", "--orderings", "3", "--logdir", s(&d), "--run-name", "y"]);
    assert_eq!(code, 2);
    assert!(err.contains("--orderings does not apply to nade"), "{err}");
}

/// numpy, from `best.safetensors` alone, recomputes the ensemble log-likelihood of a 2-layer
/// order-agnostic NADE with 3 orderings (each conditional from the network run with its mask set
/// explicitly) and agrees with `wick eval --per-example`.
#[test]
fn python_recomputes_the_oanade_ensemble_from_the_checkpoint() {
    let Some(py) = python() else { return };
    let d = scratch("oapy");
    run_ok(&["train", "oanade", "--data", "digits", "--hidden", "20", "--layers", "2", "--orderings", "3", "--epochs", "2", "--quiet", "--logdir", s(&d), "--run-name", "r"]);
    let run = d.join("r");
    let csv = d.join("per_example.csv");
    run_ok(&["eval", s(&run), "--split", "test", "--per-example", s(&csv)]);
    let out = Command::new(&py)
        .args([&script("check_oanade.py"), s(&run), s(&csv), concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz")])
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "check_oanade.py failed:\n{text}");
    assert!(text.contains("ensemble of K=3 orderings, 2 layer(s)"), "{text}");
}

/// numpy, from `best.safetensors` alone and as docs/checkpoints.md's snippet reads it (u8 masks
/// included), recomputes the mixture log-likelihood of MADEs with 3 order-agnostic mask sets (2
/// layers; 1 layer with direct connections), checks every set is autoregressive, and agrees with
/// `wick eval --per-example`.
#[test]
fn python_recomputes_the_made_mixture_from_the_checkpoint() {
    let Some(py) = python() else { return };
    let d = scratch("madepy");
    for (name, layers, extra, says) in [("r", "2", None, "mixture of K=3 mask sets, 2 layer(s), u8"), ("direct", "1", Some("--direct"), "mixture of K=3 mask sets, 1 layer(s), direct connections, u8")] {
        let mut args = vec!["train", "made", "--data", "digits", "--hidden", "24", "--layers", layers, "--masks", "3", "--order-agnostic", "--epochs", "2", "--quiet", "--logdir", s(&d), "--run-name", name];
        args.extend(extra);
        run_ok(&args);
        let run = d.join(name);
        let csv = d.join(format!("{name}.csv"));
        run_ok(&["eval", s(&run), "--split", "test", "--per-example", s(&csv)]);
        let out = Command::new(&py)
            .args([&script("check_made.py"), s(&run), s(&csv), concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz")])
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "check_made.py failed:\n{text}");
        assert!(text.contains(says), "{text}");
    }
    // --direct is MADE's alone.
    let (code, _, err) = run(&["train", "nade", "--direct", "--logdir", s(&d), "--run-name", "x"]);
    assert_eq!(code, 2);
    assert!(err.contains("--direct does not apply to nade (it is for made)"), "{err}");
}
