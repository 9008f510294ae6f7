//! Learning-rate schedules: a factor in [0, 1] multiplied into the optimizer's base rate.
//!
//! `step` is always the 0-based index of the update about to be taken: the first
//! `Optimizer::step` of a run uses `schedule.lr(base, 0)`, the next one `lr(base, 1)`, and so
//! on; a resumed run continues from the optimizer's saved step count, so the schedule picks
//! up exactly where it left off.
//!
//! | schedule | CLI form | factor(step) |
//! | --- | --- | --- |
//! | constant | `constant` | 1 |
//! | linear warm-up | `warmup:W` | min(1, (step+1)/W) |
//! | cosine | `cosine:T`, `cosine:T:W`, `cosine:T:W:MIN` | warm-up, then cosine from 1 down to MIN, flat after T |
//! | step decay | `step:E:G` | G^⌊step/E⌋ |
//!
//! In TOML/JSON configs a schedule is a table tagged by `kind`, e.g.
//! `{ kind = "cosine", total_steps = 10000, warmup_steps = 500, min_factor = 0.0 }`.

use crate::bail;
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// A learning-rate schedule. See the module docs for the table of forms.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Schedule {
    /// `factor = 1` at every step.
    #[default]
    Constant,
    /// Linear warm-up over `steps` updates, then constant:
    /// `factor = min(1, (step + 1) / steps)`.
    ///
    /// The first update already uses `1/steps` of the base rate (never 0), and the update with
    /// index `steps - 1` is the first at the full rate.
    Warmup { steps: u64 },
    /// Linear warm-up over `warmup_steps` updates, then half a cosine period from 1 down to
    /// `min_factor`, reached at `total_steps` and held from then on:
    ///
    /// ```text
    /// step <  W:       factor = (step + 1) / W
    /// W <= step < T:   p = (step - W) / (T - W)
    ///                  factor = m + (1 - m) · ½ (1 + cos(π p))
    /// step >= T:       factor = m
    /// ```
    /// with `T = total_steps`, `W = warmup_steps`, `m = min_factor`. The schedule is continuous
    /// (factor 1 at the end of the warm-up and at the start of the cosine) and non-increasing after
    /// the warm-up.
    Cosine { total_steps: u64, warmup_steps: u64, min_factor: f64 },
    /// Step decay: multiply the rate by `gamma` every `every` updates (torch's `StepLR`):
    /// `factor = gamma^⌊step / every⌋`.
    Step { every: u64, gamma: f64 },
}

const FORMS: &str = "constant, warmup:STEPS, cosine:TOTAL[:WARMUP[:MIN_FACTOR]] or step:EVERY:GAMMA";

impl Schedule {
    /// The multiplier of the base learning rate for the update with 0-based index `step`.
    pub fn factor(&self, step: u64) -> f64 {
        match *self {
            Schedule::Constant => 1.0,
            Schedule::Warmup { steps } => warmup_factor(step, steps),
            Schedule::Cosine { total_steps, warmup_steps, min_factor } => {
                if step < warmup_steps {
                    return warmup_factor(step, warmup_steps);
                }
                if step >= total_steps {
                    return min_factor;
                }
                let p = (step - warmup_steps) as f64 / (total_steps - warmup_steps) as f64;
                let c = 0.5 * (1.0 + (std::f64::consts::PI * p).cos());
                min_factor + (1.0 - min_factor) * c
            }
            Schedule::Step { every, gamma } => {
                if every == 0 {
                    return 1.0;
                }
                let k = step / every;
                gamma.powf(k as f64)
            }
        }
    }

    /// The learning rate for the update with 0-based index `step`: `base · factor(step)`.
    pub fn lr(&self, base: f64, step: u64) -> f64 {
        base * self.factor(step)
    }

    /// Check the parameters; errors are one line naming the bad value.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Schedule::Constant => {}
            Schedule::Warmup { steps } => {
                if steps == 0 {
                    bail!("warm-up schedule needs at least 1 step, got 0");
                }
            }
            Schedule::Cosine { total_steps, warmup_steps, min_factor } => {
                if total_steps == 0 {
                    bail!("cosine schedule needs total_steps of at least 1, got 0");
                }
                if warmup_steps >= total_steps {
                    bail!(
                        "cosine schedule's warm-up ({warmup_steps} steps) must be shorter than its total ({total_steps} steps)"
                    );
                }
                if !(0.0..=1.0).contains(&min_factor) {
                    bail!("cosine schedule's min_factor must be in [0, 1], got {min_factor}");
                }
            }
            Schedule::Step { every, gamma } => {
                if every == 0 {
                    bail!("step schedule needs 'every' of at least 1 step, got 0");
                }
                if !(gamma > 0.0 && gamma <= 1.0) {
                    bail!("step schedule's gamma must be in (0, 1], got {gamma}");
                }
            }
        }
        Ok(())
    }
}

fn warmup_factor(step: u64, steps: u64) -> f64 {
    if steps == 0 || step >= steps {
        1.0
    } else {
        (step + 1) as f64 / steps as f64
    }
}

/// Parses the CLI forms `constant`, `warmup:STEPS`, `cosine:TOTAL[:WARMUP[:MIN_FACTOR]]` and
/// `step:EVERY:GAMMA`, and validates the result.
impl FromStr for Schedule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Schedule> {
        let bad = |why: &str| Error::new(format!("bad schedule '{s}': {why}; expected {FORMS}"));
        let parts: Vec<&str> = s.trim().split(':').map(str::trim).collect();
        let int = |name: &str, v: &str| -> Result<u64> {
            v.parse::<u64>().map_err(|_| bad(&format!("{name} must be a whole number, got '{v}'")))
        };
        let float = |name: &str, v: &str| -> Result<f64> {
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(x),
                _ => Err(bad(&format!("{name} must be a number, got '{v}'"))),
            }
        };
        let kind = parts[0].to_ascii_lowercase();
        let args = &parts[1..];
        let sched = match (kind.as_str(), args.len()) {
            ("constant", 0) => Schedule::Constant,
            ("warmup", 1) => Schedule::Warmup { steps: int("STEPS", args[0])? },
            ("cosine", 1..=3) => Schedule::Cosine {
                total_steps: int("TOTAL", args[0])?,
                warmup_steps: if args.len() >= 2 { int("WARMUP", args[1])? } else { 0 },
                min_factor: if args.len() == 3 { float("MIN_FACTOR", args[2])? } else { 0.0 },
            },
            ("step", 2) => Schedule::Step { every: int("EVERY", args[0])?, gamma: float("GAMMA", args[1])? },
            ("constant" | "warmup" | "cosine" | "step", n) => {
                return Err(bad(&format!("wrong number of ':'-separated values for '{kind}' ({n})")))
            }
            _ => return Err(Error::new(format!("unknown schedule '{s}': expected {FORMS}"))),
        };
        sched.validate().map_err(|e| bad(e.message()))?;
        Ok(sched)
    }
}

/// The CLI form, which [`FromStr`] parses back to the same schedule.
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant => write!(f, "constant"),
            Schedule::Warmup { steps } => write!(f, "warmup:{steps}"),
            Schedule::Cosine { total_steps, warmup_steps, min_factor } => {
                write!(f, "cosine:{total_steps}:{warmup_steps}:{min_factor}")
            }
            Schedule::Step { every, gamma } => write!(f, "step:{every}:{gamma}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * (1.0 + b.abs())
    }

    #[test]
    fn constant_is_one() {
        for s in [0, 1, 10, u64::MAX] {
            assert_eq!(Schedule::Constant.factor(s), 1.0);
        }
        assert_eq!(Schedule::Constant.lr(0.3, 7), 0.3);
    }

    #[test]
    fn warmup_is_linear_then_flat() {
        let s = Schedule::Warmup { steps: 4 };
        let f: Vec<f64> = (0..7).map(|i| s.factor(i)).collect();
        assert_eq!(f, vec![0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]);
        assert_eq!(s.lr(0.1, 0), 0.1 * 0.25);
        // One warm-up step is the same as constant.
        let one = Schedule::Warmup { steps: 1 };
        assert!((0..5).all(|i| one.factor(i) == 1.0));
        assert_eq!(s.factor(u64::MAX), 1.0);
    }

    #[test]
    fn cosine_values_edges_and_monotonicity() {
        let s = Schedule::Cosine { total_steps: 10, warmup_steps: 0, min_factor: 0.0 };
        assert_eq!(s.factor(0), 1.0);
        assert!(close(s.factor(5), 0.5));
        assert!(close(s.factor(2), 0.5 * (1.0 + (std::f64::consts::PI * 0.2).cos())));
        assert_eq!(s.factor(10), 0.0);
        assert_eq!(s.factor(1000), 0.0);

        let s = Schedule::Cosine { total_steps: 110, warmup_steps: 10, min_factor: 0.1 };
        assert!(close(s.factor(0), 0.1));
        assert!(close(s.factor(4), 0.5));
        assert_eq!(s.factor(9), 1.0);
        assert_eq!(s.factor(10), 1.0);
        // Half-way through the cosine part: m + (1 - m)/2.
        assert!(close(s.factor(60), 0.1 + 0.9 * 0.5));
        assert_eq!(s.factor(110), 0.1);
        assert_eq!(s.factor(u64::MAX), 0.1);
        // Rising during warm-up, non-increasing after, always in [min, 1].
        for i in 0..9 {
            assert!(s.factor(i + 1) > s.factor(i), "warm-up not rising at {i}");
        }
        for i in 10..200 {
            assert!(s.factor(i + 1) <= s.factor(i), "not non-increasing at {i}");
            assert!((0.1..=1.0).contains(&s.factor(i)));
        }
        assert!(s.factor(109) > 0.1);
    }

    #[test]
    fn step_decay() {
        let s = Schedule::Step { every: 3, gamma: 0.5 };
        let f: Vec<f64> = (0..8).map(|i| s.factor(i)).collect();
        assert_eq!(f, vec![1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]);
        assert_eq!(s.lr(2.0, 9), 2.0 * 0.125);
        let s = Schedule::Step { every: 1, gamma: 0.9 };
        for i in 0..50 {
            assert!(s.factor(i + 1) < s.factor(i));
        }
        assert_eq!(Schedule::Step { every: 5, gamma: 1.0 }.factor(1000), 1.0);
    }

    #[test]
    fn parses_the_cli_forms() {
        assert_eq!("constant".parse::<Schedule>().unwrap(), Schedule::Constant);
        assert_eq!("warmup:500".parse::<Schedule>().unwrap(), Schedule::Warmup { steps: 500 });
        assert_eq!(
            "cosine:10000".parse::<Schedule>().unwrap(),
            Schedule::Cosine { total_steps: 10000, warmup_steps: 0, min_factor: 0.0 }
        );
        assert_eq!(
            "cosine:10000:500".parse::<Schedule>().unwrap(),
            Schedule::Cosine { total_steps: 10000, warmup_steps: 500, min_factor: 0.0 }
        );
        assert_eq!(
            "cosine:10000:500:0.1".parse::<Schedule>().unwrap(),
            Schedule::Cosine { total_steps: 10000, warmup_steps: 500, min_factor: 0.1 }
        );
        assert_eq!("step:1000:0.5".parse::<Schedule>().unwrap(), Schedule::Step { every: 1000, gamma: 0.5 });
        assert_eq!(" Step:10:0.5 ".parse::<Schedule>().unwrap(), Schedule::Step { every: 10, gamma: 0.5 });
        // Display gives back a parseable form.
        for s in ["constant", "warmup:7", "cosine:100:10:0.25", "step:3:0.5"] {
            let p: Schedule = s.parse().unwrap();
            assert_eq!(p.to_string(), s);
            assert_eq!(p.to_string().parse::<Schedule>().unwrap(), p);
        }
    }

    #[test]
    fn parse_errors_are_one_line_and_name_the_forms() {
        for (s, want) in [
            ("linear", "unknown schedule 'linear'"),
            ("warmup", "wrong number"),
            ("warmup:abc", "STEPS must be a whole number, got 'abc'"),
            ("warmup:-5", "STEPS must be a whole number"),
            ("warmup:0", "at least 1 step"),
            ("cosine:100:200", "must be shorter than its total"),
            ("cosine:100:10:2", "min_factor must be in [0, 1], got 2"),
            ("step:1000", "wrong number"),
            ("step:0:0.5", "at least 1 step"),
            ("step:10:1.5", "gamma must be in (0, 1], got 1.5"),
            ("step:10:nan", "GAMMA must be a number"),
            ("constant:3", "wrong number"),
            ("", "unknown schedule"),
        ] {
            let e = s.parse::<Schedule>().unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
            assert!(e.contains("cosine:TOTAL[:WARMUP[:MIN_FACTOR]]"), "{s}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn validate_catches_bad_values() {
        assert!(Schedule::Constant.validate().is_ok());
        assert!(Schedule::Warmup { steps: 0 }.validate().is_err());
        assert!(Schedule::Cosine { total_steps: 0, warmup_steps: 0, min_factor: 0.0 }.validate().is_err());
        assert!(Schedule::Cosine { total_steps: 10, warmup_steps: 10, min_factor: 0.0 }.validate().is_err());
        assert!(Schedule::Cosine { total_steps: 10, warmup_steps: 9, min_factor: 1.0 }.validate().is_ok());
        assert!(Schedule::Cosine { total_steps: 10, warmup_steps: 0, min_factor: -0.1 }.validate().is_err());
        assert!(Schedule::Cosine { total_steps: 10, warmup_steps: 0, min_factor: f64::NAN }.validate().is_err());
        assert!(Schedule::Step { every: 0, gamma: 0.5 }.validate().is_err());
        assert!(Schedule::Step { every: 1, gamma: 0.0 }.validate().is_err());
        assert!(Schedule::Step { every: 1, gamma: f64::NAN }.validate().is_err());
    }

    #[test]
    fn serde_uses_a_kind_tag() {
        let s = Schedule::Cosine { total_steps: 100, warmup_steps: 5, min_factor: 0.0 };
        let j = serde_json::to_value(&s).unwrap();
        assert_eq!(j, serde_json::json!({"kind": "cosine", "total_steps": 100, "warmup_steps": 5, "min_factor": 0.0}));
        assert_eq!(serde_json::from_value::<Schedule>(j).unwrap(), s);
        let c: Schedule = serde_json::from_str(r#"{"kind":"constant"}"#).unwrap();
        assert_eq!(c, Schedule::Constant);
        let w: Schedule = toml::from_str("kind = \"warmup\"\nsteps = 10").unwrap();
        assert_eq!(w, Schedule::Warmup { steps: 10 });
    }
}
