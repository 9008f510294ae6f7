//! A team of threads that stays up for a whole run and runs one job at a time on all of them.
//!
//! Tabular MC hands its threads one short job per batch (10,000 Blackjack episodes are about
//! 0.35 ms on two threads). A thread pool that puts its workers to sleep between jobs pays a
//! futex wake-up per job, and on a virtual machine an idle vCPU takes tens of microseconds to
//! come back: measured here, 20–40 µs per batch, a tenth of the work. So the team's workers
//! **spin** for a while ([`SPIN`]) after a job, waiting for the next one, and only then park;
//! [`SpinBarrier`] spins too. A run of back-to-back batches never sleeps.
//!
//! Spinning is only for a team that fits the machine: with more threads than CPUs a spinning
//! thread takes the CPU from one with work to do (3 threads on 2 CPUs ran 6× slower than 2), so
//! such a team's workers park at once and its waits yield the CPU at every turn.

use std::any::Any;
use std::cell::UnsafeCell;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins for the next job before it parks.
pub const SPIN: Duration = Duration::from_millis(2);

/// The job of the moment: `f(t)` for thread `t`, its lifetime erased (see [`Team::run`]).
type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// How long idle workers spin before they park: [`SPIN`], or zero for a team larger than
    /// the machine.
    spin: Duration,
    /// Incremented to post a job.
    epoch: AtomicU64,
    /// Workers that have not yet finished the posted job.
    running: AtomicUsize,
    job: UnsafeCell<Job>,
    stop: AtomicBool,
    /// Parked workers, and where they park.
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    /// A worker's panic, re-raised on the caller.
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `job` is written only by `Team::run` while no worker reads it (every worker has
// finished the previous job: `running == 0`), and read by workers only between the `epoch`
// increment that publishes it (Release/Acquire) and their `running` decrement.
unsafe impl Sync for Shared {}
// SAFETY: as above; the raw job pointer is the only field that is not `Send` by itself.
unsafe impl Send for Shared {}

/// The caller plus `threads − 1` workers.
pub struct Team {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Team {
    /// A team of `threads` (the caller is thread 0; `threads − 1` workers are started).
    pub fn new(threads: usize) -> std::io::Result<Team> {
        let noop: &'static (dyn Fn(usize) + Sync) = &|_| {};
        let fits = threads <= std::thread::available_parallelism().map_or(1, |n| n.get());
        let shared = Arc::new(Shared {
            spin: if fits { SPIN } else { Duration::ZERO },
            epoch: AtomicU64::new(0),
            running: AtomicUsize::new(0),
            job: UnsafeCell::new(noop as Job),
            stop: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            panic: Mutex::new(None),
        });
        let mut team = Team { shared, workers: Vec::new() };
        for t in 1..threads.max(1) {
            let sh = team.shared.clone();
            // On failure `team` drops here, stopping the workers already started.
            team.workers.push(std::thread::Builder::new().name(format!("wick-mc-{t}")).spawn(move || work(&sh, t))?);
        }
        Ok(team)
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Run `f(t)` for every `t` in `0..threads` at once, `f(0)` on the caller, and return when
    /// all have finished; a panic in any of them is re-raised here.
    ///
    /// `&mut self`: one job at a time, never a job that runs another (a second job posted while
    /// a worker still runs the first would replace the job the worker is about to read).
    pub fn run(&mut self, f: &(dyn Fn(usize) + Sync)) {
        if self.workers.is_empty() {
            return f(0);
        }
        let sh = &*self.shared;
        sh.panic.lock().unwrap().take();
        // SAFETY: the lifetime of `f` is erased for the workers, and this function does not
        // return (nor unwind: `Wait` below) before every worker has finished with it.
        unsafe { *sh.job.get() = std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), Job>(f as *const _) };
        sh.running.store(self.workers.len(), Relaxed);
        sh.epoch.fetch_add(1, SeqCst);
        if sh.sleepers.load(SeqCst) > 0 {
            let _g = sh.lock.lock().unwrap();
            sh.wake.notify_all();
        }
        struct Wait<'a>(&'a Shared);
        impl Drop for Wait<'_> {
            fn drop(&mut self) {
                spin_until(self.0.spin, || self.0.running.load(Acquire) == 0);
            }
        }
        let wait = Wait(sh);
        f(0);
        drop(wait);
        let panic = sh.panic.lock().unwrap().take();
        if let Some(p) = panic {
            resume_unwind(p);
        }
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        self.shared.stop.store(true, SeqCst);
        {
            let _g = self.shared.lock.lock().unwrap();
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A worker's life: wait for a job (spinning, then parked), run it, count itself done.
fn work(sh: &Shared, t: usize) {
    let mut seen = 0u64;
    loop {
        let mut since = Instant::now();
        let mut spins = 0u32;
        loop {
            if sh.stop.load(Acquire) {
                return;
            }
            let e = sh.epoch.load(Acquire);
            if e != seen {
                seen = e;
                break;
            }
            // Spin, then yield between looks (another process may want the CPU), then park.
            spins = spins.saturating_add(1);
            if spins < 1 << 14 && !sh.spin.is_zero() {
                std::hint::spin_loop();
                continue;
            }
            if since.elapsed() < sh.spin {
                std::thread::yield_now();
                continue;
            }
            let mut g = sh.lock.lock().unwrap();
            sh.sleepers.fetch_add(1, SeqCst);
            while sh.epoch.load(SeqCst) == seen && !sh.stop.load(SeqCst) {
                g = sh.wake.wait(g).unwrap();
            }
            sh.sleepers.fetch_sub(1, SeqCst);
            since = Instant::now();
        }
        // SAFETY: published by the epoch increment just observed; `Team::run` keeps it alive
        // until `running` reaches 0, which this worker's decrement below is part of.
        let job = unsafe { &**sh.job.get() };
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| job(t))) {
            sh.panic.lock().unwrap().get_or_insert(p);
        }
        sh.running.fetch_sub(1, Release);
    }
}

/// Wait for `done`: spinning for the first 2^14 looks (about 0.4 ms here: a `pause` is 26 ns
/// on this AMD EPYC) if the team `spin`s at all, then yielding the CPU between looks.
fn spin_until(spin: Duration, done: impl Fn() -> bool) {
    let mut spins = if spin.is_zero() { u32::MAX } else { 0 };
    while !done() {
        if spins < 1 << 14 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

/// A barrier for the `n` threads of one job, spinning instead of sleeping. One use only.
/// Every thread must reach [`SpinBarrier::wait`], even one whose work failed or panicked
/// (catch the panic first), or the others wait for ever.
pub struct SpinBarrier {
    n: usize,
    arrived: AtomicUsize,
    spin: Duration,
}

impl SpinBarrier {
    /// A barrier for all threads of `team`.
    pub fn new(team: &Team) -> SpinBarrier {
        SpinBarrier { n: team.threads(), arrived: AtomicUsize::new(0), spin: team.shared.spin }
    }

    /// Wait until all `n` threads have called `wait`.
    pub fn wait(&self) {
        self.arrived.fetch_add(1, AcqRel);
        spin_until(self.spin, || self.arrived.load(Acquire) >= self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_runs_each_job_once() {
        // Up to a team larger than the machine (its workers park, its waits yield).
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        for threads in [1, 2, 3, cpus + 2] {
            let mut team = Team::new(threads).unwrap();
            let hits: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..1000 {
                team.run(&|t| {
                    hits[t].fetch_add(1, Relaxed);
                });
            }
            // Parked workers come back too.
            std::thread::sleep(SPIN * 3);
            team.run(&|t| {
                hits[t].fetch_add(1, Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Relaxed) == 1001), "{hits:?}");
        }
    }

    #[test]
    fn barrier_orders_the_phases() {
        let mut team = Team::new(2).unwrap();
        for _ in 0..200 {
            let (b, a) = (SpinBarrier::new(&team), AtomicUsize::new(0));
            team.run(&|_| {
                a.fetch_add(1, SeqCst);
                b.wait();
                assert_eq!(a.load(SeqCst), 2);
            });
        }
    }

    #[test]
    fn a_workers_panic_reaches_the_caller_and_the_team_goes_on() {
        let mut team = Team::new(2).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            team.run(&|t| {
                if t == 1 {
                    panic!("worker fails");
                }
            })
        }));
        let msg = r.unwrap_err();
        assert_eq!(msg.downcast_ref::<&str>(), Some(&"worker fails"));
        let n = AtomicUsize::new(0);
        team.run(&|_| {
            n.fetch_add(1, Relaxed);
        });
        assert_eq!(n.load(Relaxed), 2);
    }
}
