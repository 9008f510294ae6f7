//! Where the staircase kernels spend their time at FVSBN's and MADE's mnist5k sizes (batch 100).
use std::time::Instant;
use wick_core::rng::Rng;
use wick_generative::staircase::{bce_rows_host, Staircase};
fn time(name: &str, mut f: impl FnMut()) {
    f();
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..10 {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() * 100.0);
    }
    println!("{name}: {best:.3} ms (best of 5×10)");
}
fn main() {
    let (d, h, rows) = (784, 500, 100);
    let mut r = Rng::stream(0, "x");
    let x: Vec<f32> = (0..rows * d).map(|_| (r.uniform() < 0.2) as u8 as f32).collect();
    let deg: Vec<usize> = (0..d).collect();
    let tri = Staircase::new(&deg, &deg, true);
    let w: Vec<f32> = (0..d * d).map(|_| r.normal() as f32 * 0.03).collect();
    let (mut ws, mut dws, mut z, mut db) = (vec![0f32; d * d], vec![0f32; d * d], vec![0f32; rows * d], vec![0f32; d]);
    let b = vec![0f32; d];
    println!("FVSBN D={d}: blocked MACs {:.3} of dense", tri.blocked_macs() as f64 / (d * d) as f64);
    time("pack", || tri.pack(&w, true, &mut ws));
    time("forward", || tri.forward(&x, &ws, true, &b, &mut z, rows));
    time("bce+grad", || { tri.forward(&x, &ws, true, &b, &mut z, rows); bce_rows_host(&mut z, &x, d, Some(0.01)); });
    time("grad_weight", || tri.grad_weight(&x, &z, true, &mut dws, &mut db, rows));
    time("unpack (fresh vec)", || { std::hint::black_box(tri.unpack(&dws, true)); });
    // MADE, one hidden layer, natural order.
    let mut mr = Rng::stream(0, "masks");
    let hd: Vec<usize> = (0..h).map(|_| 1 + mr.below((d - 1) as u64) as usize).collect();
    let l0 = Staircase::new(&(1..=d).collect::<Vec<_>>(), &hd, false);
    let l1 = Staircase::new(&hd, &(1..=d).collect::<Vec<_>>(), true);
    println!("MADE H={h}: blocked MACs {:.3}, {:.3} of dense", l0.blocked_macs() as f64 / (d * h) as f64, l1.blocked_macs() as f64 / (d * h) as f64);
    let w0: Vec<f32> = (0..d * h).map(|_| r.normal() as f32 * 0.03).collect();
    let (mut w0s, mut w1s, mut hb, mut dh, mut dw0, mut dw1, mut db0) = (vec![0f32; d * h], vec![0f32; d * h], vec![0f32; rows * h], vec![0f32; rows * h], vec![0f32; d * h], vec![0f32; d * h], vec![0f32; h]);
    let b0 = vec![0f32; h];
    time("made pack ×2", || { l0.pack(&w0, false, &mut w0s); l1.pack(&w0, false, &mut w1s); });
    time("made fwd layer0", || l0.forward(&x, &w0s, false, &b0, &mut hb, rows));
    time("made fwd layer1", || l1.forward(&hb, &w1s, false, &b, &mut z, rows));
    time("made bce", || { bce_rows_host(&mut z, &x, d, Some(0.01)); });
    time("made grad_weight1", || l1.grad_weight(&hb, &z, false, &mut dw1, &mut db, rows));
    time("made grad_input1", || l1.grad_input(&z, &w1s, false, &mut dh, rows));
    time("made grad_weight0", || l0.grad_weight(&x, &dh, false, &mut dw0, &mut db0, rows));
    time("made unpack ×2 (fresh vecs)", || { std::hint::black_box((l0.unpack(&dw0, false), l1.unpack(&dw1, false))); });
    // MADE at the paper's width, H = 8000, with a random input ordering (--order-agnostic): every
    // step packs both weight matrices into sorted order and unpacks their gradients.
    let h = 8000;
    let mut m0: Vec<usize> = (1..=d).collect();
    for i in (1..d).rev() {
        m0.swap(i, mr.below(i as u64 + 1) as usize);
    }
    let hd: Vec<usize> = (0..h).map(|_| 1 + mr.below((d - 1) as u64) as usize).collect();
    let l0 = Staircase::new(&m0, &hd, false);
    let l1 = Staircase::new(&hd, &m0, true);
    let w: Vec<f32> = (0..d * h).map(|_| r.normal() as f32 * 0.03).collect();
    let (mut w0s, mut w1s) = (vec![0f32; d * h], vec![0f32; d * h]);
    time("made H=8000 random order: pack ×2", || { l0.pack(&w, false, &mut w0s); l1.pack(&w, false, &mut w1s); });
    time("made H=8000 random order: unpack ×2 (fresh vecs)", || { std::hint::black_box((l0.unpack(&w0s, false), l1.unpack(&w1s, false))); });
}
