//! The registry: Gymnasium ids with keyword options, as `gym.make(id, **kwargs)`.
//!
//! ```text
//! make("FrozenLake-v1", &[("map_name", "8x8"), ("is_slippery", "false")])
//! make_str("FrozenLake-v1", "map_name=8x8,is_slippery=false")      // the CLI form
//! ```
//!
//! Every id also takes `max_episode_steps` (`none` removes the limit), like `gym.make`. Values
//! are parsed from strings: booleans `true`/`false` (also `True`/`False`, `1`/`0`), numbers
//! (fractions such as `1/3` too), `reward_schedule` as `goal:hole:frozen`, maps as rows
//! separated by `/`. An unknown id, option or a bad value is a one-line error listing the valid
//! ones. The env comes back wrapped as `gym.make` wraps it: in a
//! [`crate::wrappers::TimeLimit`] where a limit is registered.

use std::path::Path;

use wick_core::{bail, Result};

use crate::acrobot::{Acrobot, Dynamics};
use crate::blackjack::{Blackjack, BlackjackConfig};
use crate::cartpole::CartPole;
use crate::cliff_walking::CliffWalking;
use crate::env::{Dyn, DynEnv, Env};
use crate::frozen_lake::{parse_map, FrozenLake, FrozenLakeConfig};
use crate::grid_world::{GridWorld, GridWorldConfig};
use crate::mountain_car::MountainCar;
use crate::taxi::{Taxi, TaxiConfig};
use crate::wrappers::TimeLimit;

/// One option: name, default (as text), what it does.
pub type OptionSpec = (&'static str, &'static str, &'static str);

struct Entry {
    id: &'static str,
    description: &'static str,
    options: &'static [OptionSpec],
    max_episode_steps: Option<u64>,
}

const FROZEN_OPTS: &[OptionSpec] = &[
    ("map_name", "4x4", "4x4 or 8x8"),
    ("desc", "", "a custom map, rows separated by '/' (e.g. SFFF/FHFH/FFFH/HFFG); overrides map_name"),
    ("map_file", "", "a custom map from a text file, one row a line; overrides map_name"),
    ("is_slippery", "true", "move perpendicular with probability (1 - success_rate)/2 each"),
    ("success_rate", "1/3", "probability of moving as intended when slippery"),
    ("reward_schedule", "1:0:0", "rewards for entering goal:hole:frozen"),
    ("max_episode_steps", "100", "time limit (none: no limit)"),
];

const ENTRIES: &[Entry] = &[
    Entry {
        id: "Blackjack-v1",
        description: "Blackjack, S&B Example 5.1: infinite deck, hit or stick against a dealer who draws to 17",
        options: &[
            ("natural", "false", "a winning natural pays 1.5 (only with sab=false)"),
            ("sab", "true", "Sutton & Barto's rules: a natural wins unless the dealer has one"),
            ("max_episode_steps", "none", "time limit"),
        ],
        max_episode_steps: None,
    },
    Entry {
        id: "FrozenLake-v1",
        description: "FrozenLake: cross a slippery 4x4 lake from S to G without falling in a hole",
        options: FROZEN_OPTS,
        max_episode_steps: Some(100),
    },
    Entry {
        id: "FrozenLake8x8-v1",
        description: "FrozenLake on the 8x8 map, 200-step limit",
        options: &[
            ("map_name", "8x8", "4x4 or 8x8"),
            ("desc", "", "a custom map, rows separated by '/'; overrides map_name"),
            ("map_file", "", "a custom map from a text file; overrides map_name"),
            ("is_slippery", "true", "move perpendicular with probability (1 - success_rate)/2 each"),
            ("success_rate", "1/3", "probability of moving as intended when slippery"),
            ("reward_schedule", "1:0:0", "rewards for entering goal:hole:frozen"),
            ("max_episode_steps", "200", "time limit (none: no limit)"),
        ],
        max_episode_steps: Some(200),
    },
    Entry {
        id: "CliffWalking-v1",
        description: "CliffWalking, S&B Example 6.6: 4x12 grid, -1 a step, -100 and back to start on the cliff",
        options: &[
            ("is_slippery", "false", "move in each of the intended and perpendicular directions with probability 1/3"),
            ("max_episode_steps", "none", "time limit"),
        ],
        max_episode_steps: None,
    },
    Entry {
        id: "CliffWalkingSlippery-v1",
        description: "CliffWalking with is_slippery=true",
        options: &[
            ("is_slippery", "true", "move in each of the intended and perpendicular directions with probability 1/3"),
            ("max_episode_steps", "none", "time limit"),
        ],
        max_episode_steps: None,
    },
    Entry {
        id: "Taxi-v4",
        description: "Taxi (Dietterich 2000): pick up a passenger and drop them at their destination on a 5x5 grid, 200-step limit",
        options: &[
            ("is_rainy", "false", "moves go as intended with probability rainy_probability, else to a side"),
            ("rainy_probability", "0.8", "probability of the intended move when rainy"),
            ("fickle_passenger", "false", "the passenger may change destination on the first move after pickup"),
            ("fickle_probability", "0.3", "probability that the passenger is fickle"),
            ("max_episode_steps", "200", "time limit (none: no limit)"),
        ],
        max_episode_steps: Some(200),
    },
    Entry {
        id: "CartPole-v1",
        description: "CartPole: balance a pole on a cart, +1 a step, 500-step limit",
        options: &[
            ("sutton_barto_reward", "false", "0 a step and -1 on failure instead of +1 a step"),
            ("max_episode_steps", "500", "time limit (none: no limit)"),
        ],
        max_episode_steps: Some(500),
    },
    Entry {
        id: "MountainCar-v0",
        description: "MountainCar: drive an underpowered car up a hill, -1 a step, 200-step limit",
        options: &[
            ("goal_velocity", "0", "the velocity needed at the goal position"),
            ("max_episode_steps", "200", "time limit (none: no limit)"),
        ],
        max_episode_steps: Some(200),
    },
    Entry {
        id: "Acrobot-v1",
        description: "Acrobot: swing a two-link arm's tip above a bar, -1 a step, 500-step limit",
        options: &[
            ("book_or_nips", "book", "dynamics of joint 2: book (Sutton & Barto) or nips"),
            ("max_episode_steps", "500", "time limit (none: no limit)"),
        ],
        max_episode_steps: Some(500),
    },
    Entry {
        id: "GridWorld",
        description: "Zhao's grid world (Mathematical Foundations of RL ch. 5): 5x5, forbidden cells, a target, 5 actions",
        options: &[
            ("map", "", "a custom map, rows separated by '/' (. plain, # forbidden, T target, S start)"),
            ("map_file", "", "a custom map from a text file, one row a line"),
            ("r_boundary", "-1", "reward for bumping into the boundary"),
            ("r_forbidden", "-10", "reward for entering a forbidden cell"),
            ("r_target", "1", "reward for entering or staying on the target"),
            ("r_other", "0", "reward for any other move"),
            ("max_episode_steps", "none", "time limit"),
        ],
        max_episode_steps: None,
    },
];

/// `(id, one-line description)` of every registered env, for `wick list`.
pub fn list() -> Vec<(&'static str, &'static str)> {
    ENTRIES.iter().map(|e| (e.id, e.description)).collect()
}

fn entry(id: &str) -> Result<&'static Entry> {
    match ENTRIES.iter().find(|e| e.id == id) {
        Some(e) => Ok(e),
        None => {
            let ids: Vec<&str> = ENTRIES.iter().map(|e| e.id).collect();
            bail!("unknown environment '{id}'; valid: {}", ids.join(", "))
        }
    }
}

/// The options an id takes: `(name, default, help)`.
pub fn options(id: &str) -> Result<&'static [OptionSpec]> {
    Ok(entry(id)?.options)
}

/// Split `key=value,key=value` (empty string: no options).
pub fn parse_options(s: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("env option '{part}' is not key=value");
        };
        out.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(out)
}

/// [`make`] with the options as one `key=value,key=value` string.
pub fn make_str(id: &str, options: &str) -> Result<Box<dyn DynEnv>> {
    let opts = parse_options(options)?;
    let refs: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    make(id, &refs)
}

struct Opts<'a> {
    id: &'static str,
    given: &'a [(&'a str, &'a str)],
}

impl Opts<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.given.iter().rev().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
    fn bad(&self, key: &str, v: &str, want: &str) -> wick_core::Error {
        wick_core::Error::new(format!("{}: option {key}={v}: expected {want}", self.id))
    }
    fn bool(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some("true" | "True" | "1") => Ok(true),
            Some("false" | "False" | "0") => Ok(false),
            Some(v) => Err(self.bad(key, v, "true or false")),
        }
    }
    fn f64(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => parse_number(v).ok_or_else(|| self.bad(key, v, "a number")),
        }
    }
}

fn parse_number(v: &str) -> Option<f64> {
    if let Some((a, b)) = v.split_once('/') {
        let (a, b) = (a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?);
        return Some(a / b).filter(|x| x.is_finite());
    }
    v.parse::<f64>().ok().filter(|x| x.is_finite())
}

fn boxed<E: Env + 'static>(env: E, limit: Option<u64>) -> Box<dyn DynEnv> {
    match limit {
        Some(n) => Box::new(Dyn::new(TimeLimit::new(env, n))),
        None => Box::new(Dyn::new(env)),
    }
}

/// `gym.make(id, **options)`.
pub fn make(id: &str, options: &[(&str, &str)]) -> Result<Box<dyn DynEnv>> {
    let e = entry(id)?;
    for (k, _) in options {
        if !e.options.iter().any(|o| o.0 == *k) {
            let names: Vec<&str> = e.options.iter().map(|o| o.0).collect();
            bail!("{}: unknown option '{k}'; valid: {}", e.id, names.join(", "));
        }
    }
    let o = Opts { id: e.id, given: options };
    let limit = match o.get("max_episode_steps") {
        None => e.max_episode_steps,
        Some("none" | "None") => None,
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(o.bad("max_episode_steps", v, "a positive integer or none")),
        },
    };
    let ctx = |err: wick_core::Error| {
        let m = err.to_string();
        if m.starts_with(e.id) {
            err
        } else {
            err.context(e.id)
        }
    };
    Ok(match e.id {
        "Blackjack-v1" => boxed(Blackjack::new(BlackjackConfig { natural: o.bool("natural", false)?, sab: o.bool("sab", true)? }), limit),
        "FrozenLake-v1" | "FrozenLake8x8-v1" => {
            let default_map = if e.id == "FrozenLake-v1" { "4x4" } else { "8x8" };
            let map = if let Some(d) = o.get("desc") {
                parse_map(d).map_err(ctx)?
            } else if let Some(p) = o.get("map_file") {
                let text = std::fs::read_to_string(p).map_err(|err| wick_core::Error::new(format!("{}: cannot read map_file '{p}': {err}", e.id)))?;
                parse_map(&text).map_err(|err| err.context(format!("{}: map_file '{p}'", e.id)))?
            } else {
                FrozenLakeConfig::named_map(o.get("map_name").unwrap_or(default_map))?
            };
            let reward_schedule = match o.get("reward_schedule") {
                None => (1.0, 0.0, 0.0),
                Some(v) => {
                    let parts: Vec<Option<f64>> = v.split(':').map(parse_number).collect();
                    match parts.as_slice() {
                        [Some(a), Some(b), Some(c)] => (*a, *b, *c),
                        _ => return Err(o.bad("reward_schedule", v, "goal:hole:frozen, three numbers")),
                    }
                }
            };
            let cfg = FrozenLakeConfig {
                map,
                is_slippery: o.bool("is_slippery", true)?,
                success_rate: o.f64("success_rate", 1.0 / 3.0)?,
                reward_schedule,
            };
            boxed(FrozenLake::new(&cfg).map_err(ctx)?, limit)
        }
        "CliffWalking-v1" | "CliffWalkingSlippery-v1" => {
            boxed(CliffWalking::new(o.bool("is_slippery", e.id == "CliffWalkingSlippery-v1")?), limit)
        }
        "Taxi-v4" => {
            let cfg = TaxiConfig {
                is_rainy: o.bool("is_rainy", false)?,
                fickle_passenger: o.bool("fickle_passenger", false)?,
                rainy_probability: o.f64("rainy_probability", 0.8)?,
                fickle_probability: o.f64("fickle_probability", 0.3)?,
            };
            boxed(Taxi::new(&cfg)?, limit)
        }
        "CartPole-v1" => boxed(CartPole::new(o.bool("sutton_barto_reward", false)?), limit),
        "MountainCar-v0" => boxed(MountainCar::new(o.f64("goal_velocity", 0.0)?), limit),
        "Acrobot-v1" => {
            let dynamics = match o.get("book_or_nips").unwrap_or("book") {
                "book" => Dynamics::Book,
                "nips" => Dynamics::Nips,
                v => return Err(o.bad("book_or_nips", v, "book or nips")),
            };
            boxed(Acrobot::new(dynamics), limit)
        }
        "GridWorld" => {
            let mut cfg = if let Some(m) = o.get("map") {
                GridWorldConfig::parse_map(&m.replace('/', "\n")).map_err(ctx)?
            } else if let Some(p) = o.get("map_file") {
                GridWorldConfig::from_file(Path::new(p)).map_err(ctx)?
            } else {
                GridWorldConfig::default()
            };
            cfg.r_boundary = o.f64("r_boundary", -1.0)?;
            cfg.r_forbidden = o.f64("r_forbidden", -10.0)?;
            cfg.r_target = o.f64("r_target", 1.0)?;
            cfg.r_other = o.f64("r_other", 0.0)?;
            boxed(GridWorld::new(cfg), limit)
        }
        _ => unreachable!("every entry is built"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_builds_and_runs() {
        for (id, _) in list() {
            let mut env = make(id, &[]).unwrap();
            let mut obs = vec![0.0; env.obs_dim()];
            env.reset(Some(0), &mut obs).unwrap();
            for _ in 0..20 {
                let st = env.step(0, &mut obs).unwrap();
                if st.done() {
                    env.reset(None, &mut obs).unwrap();
                }
            }
            assert_eq!(env.id(), if id.starts_with("FrozenLake") { "FrozenLake-v1" } else if id.starts_with("CliffWalking") { "CliffWalking-v1" } else { id });
        }
        assert_eq!(make("FrozenLake-v1", &[]).unwrap().max_episode_steps(), Some(100));
        assert_eq!(make("FrozenLake8x8-v1", &[]).unwrap().max_episode_steps(), Some(200));
        assert_eq!(make("FrozenLake-v1", &[("map_name", "8x8")]).unwrap().max_episode_steps(), Some(100)); // as gym.make
        assert_eq!(make("CartPole-v1", &[]).unwrap().max_episode_steps(), Some(500));
        assert_eq!(make("CartPole-v1", &[("max_episode_steps", "none")]).unwrap().max_episode_steps(), None);
        assert_eq!(make("Blackjack-v1", &[]).unwrap().max_episode_steps(), None);
        assert_eq!(make("Taxi-v4", &[]).unwrap().max_episode_steps(), Some(200));
        assert_eq!(make("MountainCar-v0", &[]).unwrap().max_episode_steps(), Some(200));
        assert_eq!(make("Acrobot-v1", &[]).unwrap().max_episode_steps(), Some(500));
        assert_eq!(make("Taxi-v4", &[]).unwrap().num_states(), Some(500));
        assert_eq!(make("MountainCar-v0", &[]).unwrap().observation_space().to_string(), "Box([-1.2 -0.07], [0.6 0.07], (2,), float32)");
        assert_eq!(
            make("Acrobot-v1", &[]).unwrap().observation_space().to_string(),
            "Box([-1 -1 -1 -1 -12.566371 -28.274334], [1 1 1 1 12.566371 28.274334], (6,), float32)"
        );
        assert_eq!(make("FrozenLake-v1", &[("map_name", "8x8")]).unwrap().num_states(), Some(64));
        assert_eq!(make("CartPole-v1", &[]).unwrap().observation_space().to_string(), "Box([-4.8 -inf -0.41887903 -inf], [4.8 inf 0.41887903 inf], (4,), float32)");
    }

    fn trajectory(id: &str, opts: &[(&str, &str)], seed: u64) -> Vec<(Vec<f32>, f64, bool, bool)> {
        let mut env = make(id, opts).unwrap();
        let mut obs = vec![0.0; env.obs_dim()];
        env.reset(Some(seed), &mut obs).unwrap();
        let mut out = vec![(obs.clone(), 0.0, false, false)];
        for t in 0..300 {
            let st = env.step((t * 5 + t / 7) % env.num_actions(), &mut obs).unwrap();
            out.push((obs.clone(), st.reward, st.terminated, st.truncated));
            if st.done() {
                env.reset(None, &mut obs).unwrap();
                out.push((obs.clone(), 0.0, false, false));
            }
        }
        out
    }

    #[test]
    fn same_seed_same_trajectory_different_seed_different() {
        for (id, opts) in [
            ("CartPole-v1", &[][..]),
            ("Blackjack-v1", &[][..]),
            ("FrozenLake-v1", &[][..]),
            ("FrozenLake8x8-v1", &[][..]),
            ("CliffWalkingSlippery-v1", &[][..]),
            ("Taxi-v4", &[][..]),
            ("Taxi-v4", &[("is_rainy", "true"), ("fickle_passenger", "true")][..]),
            ("MountainCar-v0", &[][..]),
            ("Acrobot-v1", &[][..]),
            ("Acrobot-v1", &[("book_or_nips", "nips")][..]),
        ] {
            assert_eq!(trajectory(id, opts, 3), trajectory(id, opts, 3), "{id}");
            assert_ne!(trajectory(id, opts, 3), trajectory(id, opts, 4), "{id}");
        }
        // Deterministic envs do not depend on the seed at all.
        assert_eq!(trajectory("GridWorld", &[], 3), trajectory("GridWorld", &[], 4));
        assert_eq!(trajectory("CliffWalking-v1", &[], 3), trajectory("CliffWalking-v1", &[], 4));
    }

    #[test]
    fn deterministic_models_match_steps() {
        for id in ["GridWorld", "CliffWalking-v1", "Taxi-v4"] {
            let mut env = make(id, &[]).unwrap();
            let m = env.model().unwrap().clone();
            let mut obs = vec![0.0; env.obs_dim()];
            for s in 0..m.num_states() {
                for a in 0..m.num_actions() {
                    if env.reset_to_state(s, &mut obs).is_err() {
                        continue;
                    }
                    let st = env.step(a, &mut obs).unwrap();
                    let t = m.transitions(s, a)[0];
                    assert_eq!((st.state, st.reward, st.terminated), (Some(t.next), t.reward, t.terminated), "{id} s {s} a {a}");
                }
            }
        }
    }

    #[test]
    fn options_parse() {
        let e = make_str("FrozenLake-v1", "map_name=8x8, is_slippery=false").unwrap();
        assert_eq!(e.model().unwrap().transitions(0, 2).len(), 1);
        let e = make_str("FrozenLake-v1", "desc=SF/HG,success_rate=3/4").unwrap();
        assert_eq!(e.num_states(), Some(4));
        assert_eq!(e.model().unwrap().transitions(0, 2)[1].prob, 0.75);
        let e = make_str("FrozenLake-v1", "is_slippery=false,reward_schedule=2:-1:-0.01").unwrap();
        assert_eq!(e.model().unwrap().transitions(0, 2)[0].reward, -0.01);
        let e = make("GridWorld", &[("r_forbidden", "-1"), ("max_episode_steps", "15")]).unwrap();
        assert_eq!(e.model().unwrap().transitions(1, 2)[0].reward, -1.0);
        assert_eq!(e.max_episode_steps(), Some(15));
        let e = make("Blackjack-v1", &[("sab", "False"), ("natural", "True")]).unwrap();
        assert!(e.model().unwrap().transitions(704 + 4, 0).iter().any(|t| t.reward == 1.5));
    }

    #[test]
    fn errors_are_one_line_and_list_the_valid_ones() {
        let err = |id: &str, o: &str| make_str(id, o).err().unwrap().to_string();
        assert_eq!(
            err("Pong-v5", ""),
            "unknown environment 'Pong-v5'; valid: Blackjack-v1, FrozenLake-v1, FrozenLake8x8-v1, CliffWalking-v1, CliffWalkingSlippery-v1, Taxi-v4, CartPole-v1, MountainCar-v0, Acrobot-v1, GridWorld"
        );
        assert_eq!(err("Blackjack-v1", "sab=maybe"), "Blackjack-v1: option sab=maybe: expected true or false");
        assert_eq!(err("Blackjack-v1", "nat=1"), "Blackjack-v1: unknown option 'nat'; valid: natural, sab, max_episode_steps");
        assert_eq!(err("FrozenLake-v1", "map_name=5x5"), "FrozenLake-v1: unknown map_name '5x5'; valid: 4x4, 8x8");
        assert_eq!(err("FrozenLake-v1", "desc=SX/FG"), "FrozenLake-v1: FrozenLake map row 1 column 2: 'X' is not one of S, F, H, G");
        assert_eq!(err("FrozenLake-v1", "success_rate=abc"), "FrozenLake-v1: option success_rate=abc: expected a number");
        assert_eq!(err("FrozenLake-v1", "success_rate=2"), "FrozenLake-v1: success_rate 2 is not in [0, 1]");
        assert_eq!(err("Taxi-v4", "rainy_probability=1.5"), "Taxi-v4: rainy_probability 1.5 is not in [0, 1]");
        assert_eq!(err("Acrobot-v1", "book_or_nips=paper"), "Acrobot-v1: option book_or_nips=paper: expected book or nips");
        assert_eq!(err("CartPole-v1", "max_episode_steps=0"), "CartPole-v1: option max_episode_steps=0: expected a positive integer or none");
        assert!(err("GridWorld", "map_file=/nonexistent/x.txt").starts_with("GridWorld: cannot read grid world map '/nonexistent/x.txt'"));
        assert_eq!(err("GridWorld", "oops"), "env option 'oops' is not key=value");
        let mut e = make("CartPole-v1", &[]).unwrap();
        let mut buf = vec![0.0; 3];
        assert!(e.reset(None, &mut buf).unwrap_err().to_string().contains("length 3"));
        let mut buf = vec![0.0; 4];
        e.reset(None, &mut buf).unwrap();
        assert_eq!(e.step(5, &mut buf).unwrap_err().to_string(), "CartPole-v1: action 5 is outside the action space Discrete(2)");
        assert!(e.reset_to_state(0, &mut buf).unwrap_err().to_string().contains("no start-state option"));
    }
}
