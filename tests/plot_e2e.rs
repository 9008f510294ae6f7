//! `wick plot` end to end, the figures the trainers log to TensorBoard, and `wick sample
//! --complete-from`'s side-by-side picture.

mod common;
use common::*;
use std::path::Path;

/// Decode a PNG file: (width, height, RGB or grey pixels, channels).
fn decode(path: &Path) -> (u32, u32, Vec<u8>, usize) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))));
    let mut r = dec.read_info().expect("a PNG header");
    let mut buf = vec![0; r.output_buffer_size()];
    let info = r.next_frame(&mut buf).expect("a PNG frame");
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf, info.color_type.samples())
}

fn distinct_colours(px: &[u8]) -> usize {
    px.chunks(3).map(|p| [p[0], p[1], p[2]]).collect::<std::collections::HashSet<_>>().len()
}

/// The image tags of a run's event files, with their (width, height).
fn tb_images(dir: &Path) -> Vec<(String, i32, i32)> {
    let mut out = Vec::new();
    for f in wick_core::tb::event_files(dir).unwrap() {
        for ev in wick_core::tb::read_event_file(&f).unwrap() {
            for v in ev.get_summary().get_value() {
                if v.has_image() {
                    out.push((v.get_tag().to_string(), v.get_image().get_width(), v.get_image().get_height()));
                }
            }
        }
    }
    out
}

fn one_line_exit_2(args: &[&str], want: &str) {
    let (code, out, err) = run(args);
    assert_eq!(code, 2, "wick {args:?}: exit {code}, stdout {out}, stderr {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "wick {args:?}: not one line: {err}");
    assert!(err.contains(want), "wick {args:?}: {err:?} does not say {want:?}");
}

#[test]
fn blackjack_figure_in_tensorboard_and_from_wick_plot() {
    let d = scratch("plot-bj");
    run_ok(&["train", "mc-es", "--episodes", "20000", "--threads", "1", "--logdir", s(&d), "--run-name", "es", "-q"]);
    let run = d.join("es");
    // The trainer's picture: in TensorBoard and as values_and_policy.png, the same size.
    let (w, h, px, ch) = decode(&run.join("values_and_policy.png"));
    assert_eq!(ch, 3);
    assert!(tb_images(&run).contains(&("blackjack/values_and_policy".to_string(), w as i32, h as i32)), "{:?}", tb_images(&run));
    // Policy, heat maps and colour bar, and text: far more than the old four-block picture's colours.
    assert!(distinct_colours(&px) > 100, "{}", distinct_colours(&px));
    // `wick plot` redraws it from the checkpoint, pixel for pixel.
    let out = run_ok(&["plot", s(&run)]);
    assert!(out.contains("figure.png"), "{out}");
    assert_eq!(std::fs::read(run.join("figure.png")).unwrap(), std::fs::read(run.join("values_and_policy.png")).unwrap());
    // SVG: labelled axes, panel titles, the legend.
    let svg_path = d.join("es.svg");
    run_ok(&["plot", s(&run), "--out", s(&svg_path)]);
    let svg = std::fs::read_to_string(&svg_path).unwrap();
    for want in ["Dealer showing", "Player sum", "Usable ace: policy", "No usable ace: value", "H = HIT", "S = STICK", "v(s)"] {
        assert!(svg.contains(want), "{want} missing from the SVG");
    }
    // An existing output is kept without --force, replaced with it.
    std::fs::write(&svg_path, b"keep me").unwrap();
    one_line_exit_2(&["plot", s(&run), "--out", s(&svg_path)], "--force");
    assert_eq!(std::fs::read(&svg_path).unwrap(), b"keep me");
    run_ok(&["plot", s(&run), "--out", s(&svg_path), "--force"]);
    assert!(std::fs::read_to_string(&svg_path).unwrap().starts_with("<svg"));
}

#[test]
fn grid_world_and_importance_sampling_figures() {
    let d = scratch("plot-grid");
    run_ok(&["train", "mc-epsilon-greedy", "--env", "GridWorld", "--episodes", "300", "--threads", "1", "--logdir", s(&d), "--run-name", "g", "-q"]);
    let g = d.join("g");
    assert!(tb_images(&g).iter().any(|t| t.0 == "grid/values_and_policy"));
    let svg = d.join("g.svg");
    run_ok(&["plot", s(&g), "--out", s(&svg)]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("forbidden") && text.contains("target") && text.contains("greedy action"));

    run_ok(&["train", "mc-off-policy-prediction", "--runs", "5", "--episodes", "200", "--threads", "1", "--logdir", s(&d), "--run-name", "is", "-q"]);
    let is = d.join("is");
    let (w, h, px, _) = decode(&is.join("mse.png"));
    assert!(tb_images(&is).contains(&("eval/mse_curves".to_string(), w as i32, h as i32)));
    assert!(distinct_colours(&px) > 20);
    let svg = d.join("is.svg");
    run_ok(&["plot", s(&is), "--out", s(&svg)]);
    let text = std::fs::read_to_string(&svg).unwrap();
    for want in ["Ordinary importance sampling", "Weighted importance sampling", "Episodes (log scale)", "\n100\n"] {
        assert!(text.contains(want), "{want:?} missing");
    }
}

#[test]
fn reinforce_learning_curve() {
    let d = scratch("plot-rf");
    run_ok(&["train", "reinforce", "--env", "CartPole-v1", "--total-steps", "2000", "--threads", "1", "--logdir", s(&d), "--run-name", "rf", "-q"]);
    let rf = d.join("rf");
    let (w, h, px, _) = decode(&rf.join("learning_curve.png"));
    assert!(tb_images(&rf).contains(&("charts/learning_curve".to_string(), w as i32, h as i32)));
    assert!(distinct_colours(&px) > 20);
    let png_path = d.join("curve.png");
    run_ok(&["plot", s(&rf), "--out", s(&png_path)]);
    assert_eq!((decode(&png_path).0, decode(&png_path).1), (w, h));
    let svg = d.join("curve.svg");
    run_ok(&["plot", s(&rf), "--out", s(&svg)]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("Environment steps") && text.contains("Episodic return") && text.contains("mean of the last 100 episodes"));
}

#[test]
fn plot_bad_input_is_one_line_and_writes_nothing() {
    let d = scratch("plot-bad");
    one_line_exit_2(&["plot", s(&d)], "");
    one_line_exit_2(&["plot", s(&d.join("missing"))], "");
    // A density-model run: pointed at `wick sample`.
    let fake = d.join("nade-run");
    std::fs::create_dir_all(&fake).unwrap();
    std::fs::write(fake.join("config.toml"), "algo = \"nade\"\n").unwrap();
    one_line_exit_2(&["plot", s(&fake), "--out", s(&d.join("x.png"))], "wick sample");
    std::fs::write(fake.join("config.toml"), "algo = \"nosuch\"\n").unwrap();
    one_line_exit_2(&["plot", s(&fake), "--out", s(&d.join("x.png"))], "nosuch");
    // A tabular run: bad --out names, an unwritable place.
    run_ok(&["train", "mc-es", "--episodes", "1000", "--threads", "1", "--logdir", s(&d), "--run-name", "es", "-q"]);
    let es = d.join("es");
    one_line_exit_2(&["plot", s(&es), "--out", s(&d.join("x.txt"))], ".png or .svg");
    one_line_exit_2(&["plot", s(&es), "--out", s(&d.join("no/such/dir/x.png"))], "x.png");
    std::fs::create_dir_all(d.join("dir.png")).unwrap();
    one_line_exit_2(&["plot", s(&es), "--out", s(&d.join("dir.png")), "--force"], "directory");
    // A tabular run without its checkpoint.
    std::fs::remove_file(es.join("checkpoint.safetensors")).unwrap();
    one_line_exit_2(&["plot", s(&es)], "checkpoint");
    assert!(!d.join("x.png").exists() && !d.join("x.txt").exists() && !es.join("figure.png").exists());
}

#[test]
fn completions_beside_their_originals() {
    let d = scratch("plot-complete");
    run_ok(&["train", "fvsbn", "--data", "digits", "--epochs", "2", "--threads", "1", "--logdir", s(&d), "--run-name", "f", "-q"]);
    let out = d.join("c.png");
    let text = run_ok(&["sample", s(&d.join("f")), "--complete-from", "digits", "--n", "6", "--out", s(&out)]);
    assert!(text.contains("original | completion"), "{text}");
    let (w, h, px, ch) = decode(&out);
    assert_eq!(ch, 3);
    // 6 pairs of 8x8 digits, 4 pairs a row: two rows of tiles, red outline and blue hidden region.
    assert!(w > 4 * 2 * 8 && h > 2 * 8, "{w}x{h}");
    let has = |c: [u8; 3]| px.chunks(3).any(|p| p == c);
    assert!(has([220, 30, 30]), "no observed-region outline");
    assert!(px.chunks(3).any(|p| p[2] > p[0] + 60), "no blue hidden region");
    let svg = d.join("c.svg");
    run_ok(&["sample", s(&d.join("f")), "--complete-from", "digits", "--n", "2", "--out", s(&svg), "--observe", "left-half"]);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("left-half observed"));
}
