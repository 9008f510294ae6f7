//! wick's side of `scripts/gym_parity.py`: reads one JSON job on stdin, plays its episodes
//! with the injected randomness, prints the trajectories as JSON on stdout.
//!
//! Job: `{"env": id, "options": {k: v}, "max_episode_steps": n | null, "episodes": [...]}`, each
//! episode `{"actions": [...], "extra": k}` plus the randomness Gymnasium drew:
//! CartPole `"state_bits"` (the initial state as f64 bit patterns), Blackjack `"cards"`,
//! FrozenLake / CliffWalking `"uniform_bits"` (one uniform per step, as f64 bit patterns);
//! Taxi `"reset_bits"` (the start and fickleness uniforms), `"uniform_bits"` and `"choice"` (the
//! fickle passenger's new destination, an index into the other three); MountainCar and Acrobot
//! `"state_bits"` like CartPole.
//! Actions are played until the episode ends, then `extra` more (stepping past termination).
//! Output: `{"episodes": [{"reset": obs, "steps": [[obs, reward, terminated, truncated], ...]}]}`.
//! A render job `{"env": id, "render_states": [[f64 bits], ...]}` (CartPole, MountainCar,
//! Acrobot) prints `{"images": [{"height", "width", "hex"}]}` instead: each state's RGB render.

use std::io::Read;

use serde_json::{json, Value};
use wick_envs::acrobot::{Acrobot, Dynamics};
use wick_envs::blackjack::{Blackjack, BlackjackConfig, Cards};
use wick_envs::cartpole::CartPole;
use wick_envs::cliff_walking::CliffWalking;
use wick_envs::frozen_lake::{parse_map, FrozenLake, FrozenLakeConfig};
use wick_envs::mountain_car::MountainCar;
use wick_envs::taxi::{Taxi, TaxiConfig};
use wick_envs::wrappers::TimeLimit;
use wick_envs::{Env, Step};

fn opt<'a>(job: &'a Value, k: &str) -> Option<&'a str> {
    job["options"].get(k).and_then(Value::as_str)
}
fn opt_bool(job: &Value, k: &str, default: bool) -> bool {
    opt(job, k).map_or(default, |v| v == "true")
}
fn bits(v: &Value) -> Vec<f64> {
    v.as_array().map(|a| a.iter().map(|x| f64::from_bits(x.as_u64().unwrap())).collect()).unwrap_or_default()
}
fn actions(ep: &Value) -> Vec<usize> {
    ep["actions"].as_array().unwrap().iter().map(|a| a.as_u64().unwrap() as usize).collect()
}

/// Play `acts` until done, then `extra` more steps, with `step(i, action)`.
fn play<O>(acts: &[usize], extra: usize, obs: impl Fn(&O) -> Value, mut step: impl FnMut(usize, usize) -> wick_core::Result<Step<O>>) -> Vec<Value> {
    let mut out = Vec::new();
    let mut left: Option<usize> = None;
    for (i, &a) in acts.iter().enumerate() {
        if left == Some(0) {
            break;
        }
        let s = match step(i, a) {
            Ok(s) => s,
            Err(e) => {
                out.push(json!({"error": e.to_string()}));
                break;
            }
        };
        out.push(json!([obs(&s.obs), s.reward, s.terminated, s.truncated]));
        left = match left {
            Some(k) => Some(k - 1),
            None if s.done() => Some(extra),
            None => None,
        };
    }
    out
}

fn limit<E: Env>(env: E, job: &Value) -> TimeLimit<E> {
    TimeLimit::new(env, job["max_episode_steps"].as_u64().unwrap_or(u64::MAX))
}

fn main() {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).expect("stdin");
    let job: Value = serde_json::from_str(&input).expect("a JSON job");
    let id = job["env"].as_str().expect("env");
    // A render job: `{"env": id, "render_states": [[f64 bits], ...]}` -> the RGB images as hex.
    if let Some(states) = job["render_states"].as_array() {
        let images: Vec<Value> = states
            .iter()
            .map(|st| {
                let s = bits(st);
                let im = match id {
                    "CartPole-v1" => {
                        let mut e = CartPole::default();
                        e.set_state([s[0], s[1], s[2], s[3]]);
                        e.render_rgb()
                    }
                    "MountainCar-v0" => {
                        let mut e = MountainCar::default();
                        e.set_state([s[0], s[1]]);
                        e.render_rgb()
                    }
                    "Acrobot-v1" => {
                        let mut e = Acrobot::default();
                        e.set_state([s[0], s[1], s[2], s[3]]);
                        e.render_rgb()
                    }
                    other => panic!("parity: no render for {other}"),
                }
                .unwrap();
                json!({"height": im.height, "width": im.width, "hex": im.data.iter().map(|b| format!("{b:02x}")).collect::<String>()})
            })
            .collect();
        println!("{}", json!({ "images": images }));
        return;
    }
    let mut episodes = Vec::new();
    for ep in job["episodes"].as_array().expect("episodes") {
        let acts = actions(ep);
        let extra = ep["extra"].as_u64().unwrap_or(0) as usize;
        let (reset, steps) = match id {
            "CartPole-v1" => {
                let mut env = limit(CartPole::new(opt_bool(&job, "sutton_barto_reward", false)), &job);
                env.reset(Some(0));
                let s = bits(&ep["state_bits"]);
                let o = env.inner_mut().set_state([s[0], s[1], s[2], s[3]]);
                let f = |o: &[f32; 4]| json!(o.iter().map(|&x| x as f64).collect::<Vec<_>>());
                (f(&o), play(&acts, extra, f, |_, a| env.step(a)))
            }
            "Blackjack-v1" => {
                let cfg = BlackjackConfig { natural: opt_bool(&job, "natural", false), sab: opt_bool(&job, "sab", true) };
                let mut env = limit(Blackjack::new(cfg), &job);
                let cards: Vec<u8> = ep["cards"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap() as u8).collect();
                let mut src = Cards(cards.into_iter());
                env.reset(Some(0));
                let (o, _) = env.inner_mut().reset_with(&mut src).unwrap();
                let f = |o: &wick_envs::blackjack::BlackjackObs| json!([o.player_sum, o.dealer_card, o.usable_ace as u8]);
                (f(&o), play(&acts, extra, f, |_, a| env.step_with(|e| e.step_with(a, &mut src))))
            }
            "FrozenLake-v1" | "FrozenLake8x8-v1" => {
                let map = match opt(&job, "desc") {
                    Some(d) => parse_map(d).unwrap(),
                    None => FrozenLakeConfig::named_map(opt(&job, "map_name").unwrap_or(if id == "FrozenLake-v1" { "4x4" } else { "8x8" })).unwrap(),
                };
                let cfg = FrozenLakeConfig {
                    map,
                    is_slippery: opt_bool(&job, "is_slippery", true),
                    success_rate: opt(&job, "success_rate").map_or(1.0 / 3.0, |v| v.parse().unwrap()),
                    reward_schedule: opt(&job, "reward_schedule").map_or((1.0, 0.0, 0.0), |v| {
                        let r: Vec<f64> = v.split(':').map(|x| x.parse().unwrap()).collect();
                        (r[0], r[1], r[2])
                    }),
                };
                let mut env = limit(FrozenLake::new(&cfg).unwrap(), &job);
                let us = bits(&ep["uniform_bits"]);
                let (o, _) = env.reset(Some(0));
                (json!(o), play(&acts, extra, |o| json!(o), |i, a| env.step_with(|e| e.step_with_uniform(a, us[i]))))
            }
            "CliffWalking-v1" | "CliffWalkingSlippery-v1" => {
                let mut env = limit(CliffWalking::new(opt_bool(&job, "is_slippery", id == "CliffWalkingSlippery-v1")), &job);
                let us = bits(&ep["uniform_bits"]);
                let (o, _) = env.reset(Some(0));
                (json!(o), play(&acts, extra, |o| json!(o), |i, a| env.step_with(|e| e.step_with_uniform(a, us[i]))))
            }
            "Taxi-v4" => {
                let num = |k: &str, d: f64| opt(&job, k).map_or(d, |v| v.parse().unwrap());
                let cfg = TaxiConfig {
                    is_rainy: opt_bool(&job, "is_rainy", false),
                    fickle_passenger: opt_bool(&job, "fickle_passenger", false),
                    rainy_probability: num("rainy_probability", 0.8),
                    fickle_probability: num("fickle_probability", 0.3),
                };
                let mut env = limit(Taxi::new(&cfg).unwrap(), &job);
                let (r, us) = (bits(&ep["reset_bits"]), bits(&ep["uniform_bits"]));
                let choice = ep["choice"].as_u64().unwrap() as usize;
                env.reset(Some(0));
                let (o, _) = env.inner_mut().reset_with_draws(r[0], r[1]);
                (json!(o), play(&acts, extra, |o| json!(o), |i, a| env.step_with(|e| e.step_with_draws(a, us[i], choice))))
            }
            "MountainCar-v0" => {
                let goal_velocity = opt(&job, "goal_velocity").map_or(0.0, |v| v.parse().unwrap());
                let mut env = limit(MountainCar::new(goal_velocity), &job);
                env.reset(Some(0));
                let s = bits(&ep["state_bits"]);
                let o = env.inner_mut().set_state([s[0], s[1]]);
                let f = |o: &[f32; 2]| json!(o.iter().map(|&x| x as f64).collect::<Vec<_>>());
                (f(&o), play(&acts, extra, f, |_, a| env.step(a)))
            }
            "Acrobot-v1" => {
                let dynamics = if opt(&job, "book_or_nips") == Some("nips") { Dynamics::Nips } else { Dynamics::Book };
                let mut env = limit(Acrobot::new(dynamics), &job);
                env.reset(Some(0));
                let s = bits(&ep["state_bits"]);
                let o = env.inner_mut().set_state([s[0], s[1], s[2], s[3]]);
                let f = |o: &[f32; 6]| json!(o.iter().map(|&x| x as f64).collect::<Vec<_>>());
                (f(&o), play(&acts, extra, f, |_, a| env.step(a)))
            }
            other => panic!("parity: no driver for {other}"),
        };
        episodes.push(json!({"reset": reset, "steps": steps}));
    }
    println!("{}", json!({ "episodes": episodes }));
}
