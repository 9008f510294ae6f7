//! The hot path does not allocate: stepping (and resetting) every typed env, wrapped as the
//! registry wraps it, and a registry env through `DynEnv` with a caller's buffer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use wick_envs::blackjack::{Blackjack, BlackjackConfig};
use wick_envs::cartpole::CartPole;
use wick_envs::cliff_walking::CliffWalking;
use wick_envs::frozen_lake::{FrozenLake, FrozenLakeConfig};
use wick_envs::grid_world::{GridWorld, GridWorldConfig};
use wick_envs::wrappers::{EpisodeStatistics, TimeLimit};
use wick_envs::{make, Env};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only the test's own thread is counted: the test harness's other threads may allocate at
    /// any time (under load this made the test flaky: 4 foreign allocations in one window).
    static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTED.with(|c| c.get()) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn steps_without_alloc<E: Env>(mut env: E) {
    env.reset(Some(0));
    let n = env.num_actions();
    let before = ALLOCS.load(Ordering::Relaxed);
    for t in 0..20_000usize {
        let s = env.step((t * 7 + t / 3) % n).unwrap();
        if s.terminated || s.truncated {
            env.reset(None);
        }
    }
    assert_eq!(ALLOCS.load(Ordering::Relaxed) - before, 0, "{} allocated while stepping", env.id());
}

#[test]
fn hot_paths_do_not_allocate() {
    COUNTED.with(|c| c.set(true));
    steps_without_alloc(EpisodeStatistics::new(TimeLimit::new(CartPole::default(), 500)));
    steps_without_alloc(Blackjack::new(BlackjackConfig::default()));
    steps_without_alloc(TimeLimit::new(FrozenLake::new(&FrozenLakeConfig::default()).unwrap(), 100));
    steps_without_alloc(CliffWalking::new(true));
    steps_without_alloc(TimeLimit::new(GridWorld::new(GridWorldConfig::default()), 50));
    let mut env = make("CartPole-v1", &[]).unwrap();
    let mut obs = vec![0f32; env.obs_dim()];
    env.reset(Some(0), &mut obs).unwrap();
    let before = ALLOCS.load(Ordering::Relaxed);
    for t in 0..20_000usize {
        if env.step(t % 2, &mut obs).unwrap().done() {
            env.reset(None, &mut obs).unwrap();
        }
    }
    assert_eq!(ALLOCS.load(Ordering::Relaxed) - before, 0);
}
