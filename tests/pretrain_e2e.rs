//! Whole `wick train masked|simclr` runs, `wick probe` and `wick embed`: files, TensorBoard tags,
//! seeded reproducibility, exact resume, bad input.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

fn train(logdir: &std::path::Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let mut a: Vec<&str> = vec!["train"];
    a.extend(args);
    a.extend(["--quiet", "--logdir", s(logdir), "--run-name", name]);
    run_ok(&a);
    logdir.join(name)
}

const MASKED: &[&str] = &["masked", "--data", "digits", "--epochs", "3", "--probe-every", "2", "--log-every", "2", "--batch", "128"];
const SIMCLR: &[&str] = &["simclr", "--data", "digits", "--encoder", "cnn", "--epochs", "3", "--probe-every", "2", "--log-every", "2", "--batch", "128"];
const VICREG: &[&str] = &["vicreg", "--data", "digits", "--epochs", "3", "--probe-every", "2", "--log-every", "2", "--batch", "128"];

#[test]
fn a_run_writes_config_checkpoint_metrics_events_and_probes() {
    let d = scratch("pt-files");
    for (algo, args, loss_tag, image_tag) in [("masked", MASKED, "losses/masked_bce", "masked_inputs"), ("simclr", SIMCLR, "losses/nt_xent", "view_pairs"), ("vicreg", VICREG, "losses/vicreg", "view_pairs")] {
        let run = train(&d, algo, args);
        for f in ["config.toml", "checkpoint.safetensors", "metrics.json"] {
            assert!(run.join(f).is_file(), "{algo}: missing {f}");
        }
        let m = metrics_sans_timing(&run);
        for k in ["probe_acc_all", "probe_acc_100", "raw_probe_acc_all", "raw_probe_acc_100", "random_probe_acc_all", "random_probe_acc_100"] {
            let v = m[k].as_f64().unwrap_or_else(|| panic!("{algo}: metrics.json lacks {k}: {m}"));
            assert!(v > 0.3 && v <= 1.0, "{algo}: {k} = {v} (chance is 0.1)");
        }
        assert_eq!(m["epochs_run"], 3);
        let sc = scalars_sans_timing(&run);
        assert_eq!(sc[loss_tag].iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2, 3], "{algo}");
        assert_eq!(sc["eval/probe_acc_all"].iter().map(|p| p.0).collect::<Vec<_>>(), vec![2, 3], "{algo}: probes at 2 and at the end");
        assert_eq!(sc["eval/raw_probe_acc_all"].len(), 1, "{algo}: baselines once");
        assert!((sc["eval/probe_acc_100"][1].1 as f64 - m["probe_acc_100"].as_f64().unwrap()).abs() < 1e-6);
        assert!(sc[loss_tag][2].1 < sc[loss_tag][0].1, "{algo}: the loss falls: {:?}", sc[loss_tag]);
        let images = wick_core::tb::event_files(&run).unwrap().iter().flat_map(|f| wick_core::tb::read_event_file(f).unwrap()).filter(|e| {
            e.has_summary() && e.get_summary().get_value().iter().any(|v| v.get_tag() == image_tag && v.has_image())
        }).count();
        assert_eq!(images, 2, "{algo}: {image_tag} images at epochs 2 and 3");

        // wick probe gives the run's final figures; --raw the baseline.
        let out = run_ok(&["probe", s(&run)]);
        assert!(out.contains(&format!("probe_acc_all {:.4}", m["probe_acc_all"].as_f64().unwrap())), "{out}\n{m}");
        assert!(out.contains(&format!("probe_acc_100 {:.4}", m["probe_acc_100"].as_f64().unwrap())), "{out}\n{m}");
        let out = run_ok(&["probe", s(&run), "--labels", "100"]);
        assert!(!out.contains("probe_acc_all") && out.contains("probe_acc_100"), "{out}");
    }
    let out = run_ok(&["probe", "--raw", "--data", "digits", "--labels", "all"]);
    let m = metrics_sans_timing(&d.join("masked"));
    assert!(out.contains(&format!("probe_acc_all {:.4}", m["raw_probe_acc_all"].as_f64().unwrap())), "{out}");

    // wick embed: one row per example, split and label first.
    let csv = d.join("features.csv");
    run_ok(&["embed", s(&d.join("simclr")), "--data", "digits", "--out", s(&csv)]);
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1 + 1797);
    assert!(lines[0].starts_with("split,label,f0,f1"));
    let first: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(first.len(), 2 + 256);
    assert_eq!(first[0], "test", "row 0 is test in the standard split");
    assert!(first[2..].iter().all(|v| v.parse::<f32>().is_ok_and(|x| x >= 0.0)), "ReLU features");
    assert_eq!(lines[2].split(',').next(), Some("valid"));
}

/// `--mask order-agnostic` is recorded in config.toml, trains (the loss falls), reproduces to the
/// bit, and is a different objective from the fixed ratio's.
#[test]
fn order_agnostic_masks_train_and_reproduce() {
    let d = scratch("pt-oa");
    let args = &["masked", "--data", "digits", "--epochs", "2", "--probe-every", "0", "--log-every", "0", "--batch", "128"];
    let oa = [&args[..], &["--mask", "order-agnostic"]].concat();
    let a = train(&d, "oa-a", &oa);
    let b = train(&d, "oa-b", &oa);
    let r = train(&d, "ratio", args);
    assert!(std::fs::read_to_string(a.join("config.toml")).unwrap().contains("mask = \"order-agnostic\""));
    assert!(std::fs::read_to_string(r.join("config.toml")).unwrap().contains("mask = \"ratio\""));
    let bytes = |run: &std::path::Path| std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    assert_eq!(bytes(&a), bytes(&b), "same seed, same bits");
    assert_ne!(bytes(&a), bytes(&r), "order-agnostic and ratio masks train differently");
    assert_eq!(metrics_sans_timing(&a), metrics_sans_timing(&b));
    let sc = scalars_sans_timing(&a);
    assert!(sc["losses/masked_bce"][1].1 < sc["losses/masked_bce"][0].1, "{:?}", sc["losses/masked_bce"]);
}

#[test]
fn same_seed_same_bits_other_seed_other_bits() {
    let d = scratch("pt-repro");
    for (algo, args) in [("masked", MASKED), ("simclr", SIMCLR), ("vicreg", VICREG)] {
        let a = train(&d, &format!("{algo}-a"), &[args, &["--seed", "3", "--threads", "1"]].concat());
        let b = train(&d, &format!("{algo}-b"), &[args, &["--seed", "3", "--threads", "2"]].concat());
        let c = train(&d, &format!("{algo}-c"), &[args, &["--seed", "4"]].concat());
        for f in ["checkpoint.safetensors", "config.toml"] {
            assert!(std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(), "{algo}: {f} differs");
        }
        let (ma, mb) = (metrics_sans_timing(&a), metrics_sans_timing(&b));
        let strip = |mut m: serde_json::Value| {
            m.as_object_mut().unwrap().remove("train_seconds");
            m
        };
        assert_eq!(strip(ma.clone()), strip(mb));
        assert_eq!(scalars_sans_timing(&a), scalars_sans_timing(&b), "{algo}");
        assert!(std::fs::read(a.join("checkpoint.safetensors")).unwrap() != std::fs::read(c.join("checkpoint.safetensors")).unwrap(), "{algo}");
        assert_ne!(strip(ma), strip(metrics_sans_timing(&c)), "{algo}");
    }
}

/// Same final checkpoint bytes, metrics and TensorBoard curves as the uninterrupted run.
fn compare(full: &std::path::Path, run: &std::path::Path, what: &str) {
    assert!(std::fs::read(full.join("checkpoint.safetensors")).unwrap() == std::fs::read(run.join("checkpoint.safetensors")).unwrap(), "{what}: checkpoint differs");
    let strip = |p: &std::path::Path| {
        let mut m = metrics_sans_timing(p);
        m.as_object_mut().unwrap().remove("train_seconds");
        m
    };
    assert_eq!(strip(full), strip(run), "{what}");
    assert_eq!(scalars_sans_timing(full), scalars_sans_timing(run), "{what}: scalars differ");
}

#[test]
fn resume_after_a_crash_or_ctrl_c_matches_an_uninterrupted_run() {
    let d = scratch("pt-resume");
    let args: Vec<&str> = vec!["simclr", "--data", "digits", "--encoder", "cnn", "--epochs", "3", "--probe-every", "2", "--log-every", "2", "--batch", "64", "--seed", "1"];
    let full = train(&d, "full", &args);

    // A crash after epoch 2's scalars reached the event file but before its checkpoint.
    let crashed = d.join("crashed");
    let mut a: Vec<&str> = vec!["train"];
    a.extend(&args);
    a.extend(["--quiet", "--logdir", s(&d), "--run-name", "crashed"]);
    let status = wick().args(&a).env("WICK_FAULT", "after-log:2").stderr(std::process::Stdio::null()).status().unwrap();
    assert!(!status.success(), "WICK_FAULT should abort the run");
    assert!(!crashed.join("metrics.json").exists());
    run_ok(&["train", "simclr", "--resume", s(&crashed), "--quiet"]);
    compare(&full, &crashed, "crash");

    // Ctrl-C in the middle of an epoch.
    let int = d.join("int");
    let mut a: Vec<&str> = vec!["train"];
    a.extend(&args);
    a.extend(["--quiet", "--logdir", s(&d), "--run-name", "int"]);
    let child = wick().args(&a).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let t0 = Instant::now();
    while !int.join("checkpoint.safetensors").exists() && t0.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(150));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(130) {
        assert!(err.contains("checkpoint saved") && err.contains(&format!("--resume {}", int.display())), "{err}");
        run_ok(&["train", "simclr", "--resume", s(&int), "--quiet"]);
    } else {
        assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    }
    compare(&full, &int, "ctrl-c");
}

#[test]
fn bad_pretraining_inputs_give_one_line_and_exit_2() {
    let d = scratch("pt-bad");
    let l = s(&d).to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["train", "masked", "--mask-ratio", "0"], "mask ratio"),
        (vec!["train", "masked", "--mask-ratio", "1.5"], "mask ratio"),
        (vec!["train", "masked", "--mask-ratio", "-0.2"], "mask ratio"),
        (vec!["train", "masked", "--mask-patch", "0"], "mask patch"),
        (vec!["train", "masked", "--mask-patch", "9"], "mask patch"),
        (vec!["train", "masked", "--mask", "random"], "'random' for '--mask <MASK>' [possible values: ratio, order-agnostic]"),
        (vec!["train", "simclr", "--temperature", "0"], "temperature"),
        (vec!["train", "simclr", "--temperature", "-1"], "temperature"),
        (vec!["train", "simclr", "--encoder", "resnet"], "resnet"),
        (vec!["train", "simclr", "--batch", "1"], "batch"),
        (vec!["train", "simclr", "--data", "nosuchdata"], "unknown dataset"),
        (vec!["probe"], "run directory"),
        (vec!["probe", "--raw"], "--data"),
        (vec!["probe", "--raw", "--data", "digits", "--labels", "7"], "--labels"),
        (vec!["probe", "/nonexistent/run"], "not found"),
        (vec!["embed", "/nonexistent/run", "--out", "x.csv"], "not found"),
    ];
    for (args, fragment) in cases {
        let mut a = args.clone();
        a.extend(["--quiet", "--logdir", &l]);
        if a[0] != "train" {
            a.retain(|x| *x != "--quiet" && *x != "--logdir" && *x != l.as_str());
        }
        let (code, out, err) = run(&a);
        assert_eq!(code, 2, "{args:?}: exit {code}\nstdout {out}\nstderr {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line expected:\n{err}");
        assert!(err.contains(fragment), "{args:?}: '{fragment}' not in: {err}");
        assert!(!err.contains("panicked") && !err.contains("internal error"), "{args:?}: {err}");
    }
    assert!(std::fs::read_dir(&d).unwrap().next().is_none(), "no run directory was left behind");
}

/// `--micro-batches` in one process (the default build; gradient accumulation, and what N ranks
/// under mpirun reproduce: tests/dist_e2e.rs): SimCLR's loss stays the whole batch's NT-Xent
/// (its curve follows the plain run's closely), the bits do not depend on the thread count or
/// on a crash and resume, and they differ from the plain step's.
#[test]
fn simclr_micro_batches_in_one_process() {
    let d = scratch("pt-micro");
    let args: &[&str] = &["simclr", "--data", "digits", "--epochs", "3", "--probe-every", "2", "--log-every", "2", "--batch", "48"];
    let plain = train(&d, "plain", &[args, &["--threads", "1"]].concat());
    let m2 = train(&d, "m2", &[args, &["--micro-batches", "2", "--threads", "1"]].concat());
    let m2t = train(&d, "m2-threads2", &[args, &["--micro-batches", "2", "--threads", "2"]].concat());
    compare(&m2, &m2t, "--micro-batches 2, 1 vs 2 threads");
    assert!(std::fs::read_to_string(m2.join("config.toml")).unwrap().contains("micro_batches = 2"));
    assert!(!std::fs::read_to_string(plain.join("config.toml")).unwrap().contains("micro_batches"));
    assert!(std::fs::read(plain.join("checkpoint.safetensors")).unwrap() != std::fs::read(m2.join("checkpoint.safetensors")).unwrap());
    // Each micro-batch's own NT-Xent (24 images' negatives instead of 48) would be far lower.
    let (lp, lm) = (scalars_sans_timing(&plain)["losses/nt_xent"].clone(), scalars_sans_timing(&m2)["losses/nt_xent"].clone());
    for ((_, a), (_, b)) in lp.iter().zip(&lm) {
        assert!((a - b).abs() < 0.01 * a.abs(), "nt_xent curves: plain {lp:?} vs micro-batches 2 {lm:?}");
    }

    let crashed = d.join("crashed");
    let mut a: Vec<&str> = vec!["train"];
    a.extend(args);
    a.extend(["--micro-batches", "2", "--quiet", "--logdir", s(&d), "--run-name", "crashed"]);
    let status = wick().args(&a).env("WICK_FAULT", "after-log:2").stderr(std::process::Stdio::null()).status().unwrap();
    assert!(!status.success(), "WICK_FAULT should abort the run");
    run_ok(&["train", "simclr", "--resume", s(&crashed), "--quiet"]);
    compare(&m2, &crashed, "--micro-batches 2: crash and resume");
    let _ = std::fs::remove_dir_all(&d);
}
