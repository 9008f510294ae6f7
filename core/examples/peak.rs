//! The fp32 peak that the benchmarks' roofline lines divide by, as JSON (`scripts/bench.py` reads
//! it): `cargo run --release -p wick-core --example peak -- [THREADS]` (default 2).
fn main() {
    let threads = std::env::args().nth(1).and_then(|v| v.parse().ok()).unwrap_or(2);
    let (peak, how) = wick_core::cpu::peak_gflops(threads).unwrap_or((f64::NAN, "unknown".into()));
    let nominal = wick_core::cpu::nominal_peak_gflops(threads).map(|p| p.0).unwrap_or(f64::NAN);
    println!("{{\"threads\": {threads}, \"gflops\": {peak:.1}, \"nominal_gflops\": {nominal:.1}, \"how\": {how:?}}}");
}
