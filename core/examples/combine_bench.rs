//! Where the data-parallel combine's time goes (docs/distributed.md, "Speed"): times
//! [`DataParallel::step`] on gradients of P parameters with no compute around it (alone, and
//! followed by the Adam update as the trainers take it, `DataParallel::update`), and, for
//! reference, the bare collectives of the same sizes (an `MPI_Alltoall` of P f32s, an
//! `MPI_Allgather` of P/N; the step itself makes two `MPI_Alltoallv` exchanges of those sizes
//! that leave each rank's own block out), so the transport's cost shows apart from the ordered
//! sum and from waiting for a slower rank.
//!
//! ```sh
//! cargo build --release --features mpi -p wick-core --example combine_bench
//! mpirun --allow-run-as-root -np 2 target/release/examples/combine_bench [P] [STEPS]
//! ```
//!
//! P defaults to 785,284 (MADE 1×500 on MNIST), STEPS to 200. Rank 0 prints milliseconds per
//! step (median of STEPS) and the bandwidth each collective reached.
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor};
use std::time::Instant;
use wick_core::dist::{self, DataParallel};
use wick_core::optim::{OptimConfig, Optimizer};
use wick_core::params::Params;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> wick_core::Result<()> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("P and STEPS are numbers")).collect();
    let (p, steps) = (args.first().copied().unwrap_or(785_284), args.get(1).copied().unwrap_or(200));
    wick_core::cpu::keep_freed_memory(); // as the wick binary does
    let world = dist::init()?;
    let (rank, n) = (world.rank(), world.size());
    if n < 2 {
        eprintln!("combine_bench: run it under mpirun with 2 or more ranks (one rank combines nothing)");
        std::process::exit(2);
    }
    let dev = Device::Cpu;
    // Two tensors, as MADE's weight matrices; values differ by rank so nothing is constant-folded.
    let mut params = Params::new();
    let half = p / 2;
    let a = params.add("a", &[half], vec![0.0; half], &dev)?;
    let b = params.add("b", &[p - half], vec![0.0; p - half], &dev)?;
    let ga = Tensor::from_vec((0..half).map(|i| (i + rank) as f32 * 1e-6).collect::<Vec<_>>(), half, &dev)?;
    let gb = Tensor::from_vec((0..p - half).map(|i| (i * 3 + rank) as f32 * 1e-6).collect::<Vec<_>>(), p - half, &dev)?;
    let dp = DataParallel::new(n, 100 * n, world)?;
    // Every micro-batch's gradients: the same two tensors each step.
    let shard = |_: usize, _: usize| {
        let mut g = GradStore::default();
        g.insert(&a, ga.clone());
        g.insert(&b, gb.clone());
        Ok((0.5, g))
    };
    let mut times = Vec::with_capacity(steps);
    for s in 0..steps + 5 {
        let t = Instant::now();
        let out = dp.step(&params, 100 * n, &shard)?;
        std::hint::black_box(out.into_grads(&params)?);
        if s >= 5 {
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    // The trainers' path: the combine, then Adam through `DataParallel::update` (sharded among
    // ranks on one node: each updates its slice; with WICK_COMBINE=alltoall, all of it).
    let mut opt = Optimizer::new(OptimConfig::default(), &params)?;
    let mut updates = Vec::with_capacity(steps);
    for s in 0..steps + 5 {
        let t = Instant::now();
        let out = dp.step(&params, 100 * n, &shard)?;
        dp.update(&mut opt, &params, out, 1e-3)?;
        if s >= 5 {
            updates.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    dp.sync_optimizer(&mut opt, &params)?;
    let c = p.div_ceil(n);
    let send = vec![rank as f32; n * c];
    let mut a2a = Vec::with_capacity(steps);
    let mut ag = Vec::with_capacity(steps);
    for _ in 0..steps {
        let t = Instant::now();
        std::hint::black_box(world.all_to_all_f32(&send));
        a2a.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        std::hint::black_box(world.all_gather_f32(&send[..c]));
        ag.push(t.elapsed().as_secs_f64() * 1e3);
    }
    if rank == 0 {
        let mb = (n - 1) as f64 * c as f64 * 4.0 / 1e6; // bytes each rank receives per collective
        let (t, t1, t2) = (median(times), median(a2a), median(ag));
        let via = if std::env::var("WICK_COMBINE").is_ok_and(|v| v == "alltoall") { "MPI_Alltoallv (WICK_COMBINE=alltoall)" } else { "the node's shared window where the ranks share one" };
        println!("{n} ranks, P = {p}, combine through {via}:");
        println!("  DataParallel::step and the whole gradient (Combined::into_grads): {t:.3} ms per step");
        println!("  DataParallel::step and DataParallel::update with Adam (the trainers' path): {:.3} ms per step", median(updates));
        println!("  all-to-all of {} f32s: {t1:.3} ms ({:.2} GB/s received per rank)", n * c, mb / t1);
        println!("  all-gather of {c} f32s: {t2:.3} ms ({:.2} GB/s received per rank)", mb / t2);
        println!("  the step less these two (flatten, ordered sum, head exchange; the step's own exchanges skip the rank's own block): {:.3} ms", t - t1 - t2);
    }
    dist::finalize();
    Ok(())
}
