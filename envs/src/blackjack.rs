//! `Blackjack-v1`: Gymnasium's `gymnasium/envs/toy_text/blackjack.py` (Sutton & Barto,
//! *Reinforcement Learning: An Introduction*, 2nd ed., Example 5.1), rule for rule.
//!
//! - Infinite deck (cards drawn with replacement): A=1, 2–9, and 10 with probability 4/13
//!   (10, J, Q, K). An ace counts 11 ("usable") while that does not bust the hand.
//! - Reset deals the dealer two cards (one showing), then the player two, in that order.
//! - Actions: 0 = stick, 1 = hit. Hit: draw a card; bust (sum > 21) ends the episode with −1,
//!   otherwise reward 0. Stick: the dealer draws while their sum is below 17 (a soft 17
//!   stands), then the higher score wins (+1 / −1, 0 for a draw; a bust scores 0).
//! - `sab` (default **true**, as `gym.make` registers it): a player natural (A + 10-card)
//!   wins +1 unless the dealer also has a natural (then 0); `natural` is ignored.
//!   `natural` (only with `sab=false`): a winning natural pays +1.5.
//! - Observation `(player sum, dealer showing card 1–10, usable ace 0/1)` in
//!   `Tuple(Discrete(32), Discrete(11), Discrete(2))`; no time limit.
//!
//! For tabular agents the state index is the observation raveled over (32, 11, 2) —
//! `sum * 22 + dealer * 2 + ace`, 704 values — plus ten states 704..714 for "the player holds
//! a natural, the dealer shows d" (a natural 21 pays differently from a drawn 21 under `sab`
//! or `natural`, so it is a state of its own in the exact model). [`BlackjackObs::decision_index`]
//! numbers the 200 states of S&B Figure 5.2 (sum 12–21 × dealer A–10 × usable ace).
//!
//! The randomness is a [`CardSource`]: the env's generator by default, or any card sequence
//! ([`Cards`]) through [`Blackjack::reset_with`] / [`Blackjack::step_with`] — how the parity
//! check deals Gymnasium and wick the same cards. Stepping after the episode ended is an error
//! (Gymnasium lets the hand go on; its result is meaningless).

use wick_core::rng::Rng;
use wick_core::{bail, Error, Result};

use crate::env::{bad_action, env_rng, no_reset, Env, Info, Model, Observation, Step, Transition};
use crate::space::Space;

/// Gymnasium's deck: `[1, 2, ..., 9, 10, 10, 10, 10]`, drawn uniformly with replacement.
pub const DECK: [u8; 13] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 10, 10];
/// The probability of drawing card value `c` (1..=10).
pub fn card_prob(c: u8) -> f64 {
    if c == 10 {
        4.0 / 13.0
    } else {
        1.0 / 13.0
    }
}

pub const STICK: usize = 0;
pub const HIT: usize = 1;
/// States of the tabular index: 704 raveled observations + 10 natural states.
pub const NUM_STATES: usize = 32 * 11 * 2 + 10;

/// Where cards come from.
pub trait CardSource {
    /// The next card value (1..=10), or `None` when the source is exhausted.
    fn draw(&mut self) -> Option<u8>;
}

impl CardSource for Rng {
    #[inline]
    fn draw(&mut self) -> Option<u8> {
        Some(DECK[self.below(13) as usize])
    }
}

/// A fixed card sequence (values 1..=10) as a [`CardSource`].
pub struct Cards<I>(pub I);

impl<I: Iterator<Item = u8>> CardSource for Cards<I> {
    fn draw(&mut self) -> Option<u8> {
        self.0.next()
    }
}

/// `(player sum, dealer showing card, usable ace)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BlackjackObs {
    pub player_sum: u8,
    pub dealer_card: u8,
    pub usable_ace: bool,
}

impl BlackjackObs {
    /// `sum * 22 + dealer * 2 + ace` (the observation raveled over (32, 11, 2); sums above 31,
    /// reachable only by hitting past a bust, are clamped).
    #[inline]
    pub fn index(&self) -> usize {
        (self.player_sum.min(31) as usize) * 22 + self.dealer_card as usize * 2 + self.usable_ace as usize
    }

    /// Inverse of [`BlackjackObs::index`] for indices below 704.
    pub fn from_index(i: usize) -> BlackjackObs {
        BlackjackObs { player_sum: (i / 22) as u8, dealer_card: ((i % 22) / 2) as u8, usable_ace: i % 2 == 1 }
    }

    /// The 200 decision states of S&B Figure 5.2 (sum 12–21 × dealer A–10 × usable ace) as
    /// state indices ([`BlackjackObs::index`]), in [`BlackjackObs::decision_index`] order.
    pub fn decision_states() -> Vec<usize> {
        let mut v = Vec::with_capacity(200);
        for player_sum in 12..=21u8 {
            for dealer_card in 1..=10u8 {
                for usable_ace in [false, true] {
                    v.push(BlackjackObs { player_sum, dealer_card, usable_ace }.index());
                }
            }
        }
        v
    }

    /// Index among the 200 decision states of S&B Figure 5.2 (sum 12–21, dealer 1–10, ace):
    /// `(sum − 12) * 20 + (dealer − 1) * 2 + ace`; `None` outside them.
    pub fn decision_index(&self) -> Option<usize> {
        if (12..=21).contains(&self.player_sum) && (1..=10).contains(&self.dealer_card) {
            Some((self.player_sum as usize - 12) * 20 + (self.dealer_card as usize - 1) * 2 + self.usable_ace as usize)
        } else {
            None
        }
    }
}

impl Observation for BlackjackObs {
    #[inline]
    fn write_f32(&self, out: &mut [f32]) {
        out[0] = self.player_sum as f32;
        out[1] = self.dealer_card as f32;
        out[2] = self.usable_ace as u8 as f32;
    }
}

/// A hand: running raw total (aces as 1), whether it holds an ace, and its cards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hand {
    raw: u16,
    ace: bool,
    n: u8,
    cards: [u8; 24],
}

impl Hand {
    pub const EMPTY: Hand = Hand { raw: 0, ace: false, n: 0, cards: [0; 24] };

    pub fn from_cards(cards: &[u8]) -> Hand {
        let mut h = Hand::EMPTY;
        for &c in cards {
            h.push(c);
        }
        h
    }

    #[inline]
    pub fn push(&mut self, c: u8) {
        self.raw += c as u16;
        self.ace |= c == 1;
        if (self.n as usize) < self.cards.len() {
            self.cards[self.n as usize] = c;
        }
        self.n = self.n.saturating_add(1);
    }
    /// Gymnasium's `usable_ace`.
    #[inline]
    pub fn usable_ace(&self) -> bool {
        self.ace && self.raw + 10 <= 21
    }
    /// Gymnasium's `sum_hand`.
    #[inline]
    pub fn sum(&self) -> u16 {
        if self.usable_ace() {
            self.raw + 10
        } else {
            self.raw
        }
    }
    #[inline]
    pub fn is_bust(&self) -> bool {
        self.sum() > 21
    }
    /// Gymnasium's `score`: 0 if bust.
    #[inline]
    pub fn score(&self) -> u16 {
        if self.is_bust() {
            0
        } else {
            self.sum()
        }
    }
    /// Gymnasium's `is_natural`: exactly an ace and a 10-card.
    #[inline]
    pub fn is_natural(&self) -> bool {
        self.n == 2 && self.ace && self.raw == 11
    }
    /// The cards (the first 24).
    pub fn cards(&self) -> &[u8] {
        &self.cards[..(self.n as usize).min(self.cards.len())]
    }
}

/// Options of `Blackjack-v1`; `Default` is what `gym.make("Blackjack-v1")` uses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlackjackConfig {
    pub natural: bool,
    pub sab: bool,
}

impl Default for BlackjackConfig {
    fn default() -> Self {
        BlackjackConfig { natural: false, sab: true }
    }
}

/// Blackjack-v1.
#[derive(Clone, Debug)]
pub struct Blackjack {
    cfg: BlackjackConfig,
    rng: Rng,
    player: Hand,
    dealer: Hand,
    /// 0: never reset, 1: in an episode, 2: episode over.
    phase: u8,
    model: std::sync::Arc<Model>,
}

fn cmp(a: u16, b: u16) -> f64 {
    (a > b) as i32 as f64 - ((a < b) as i32 as f64)
}

impl Blackjack {
    pub fn new(cfg: BlackjackConfig) -> Blackjack {
        Blackjack {
            cfg,
            rng: env_rng(0),
            player: Hand::EMPTY,
            dealer: Hand::EMPTY,
            phase: 0,
            model: std::sync::Arc::new(build_model(cfg)),
        }
    }

    pub fn config(&self) -> BlackjackConfig {
        self.cfg
    }
    pub fn player(&self) -> &Hand {
        &self.player
    }
    pub fn dealer(&self) -> &Hand {
        &self.dealer
    }

    /// The current observation.
    #[inline]
    pub fn obs(&self) -> BlackjackObs {
        BlackjackObs { player_sum: self.player.sum() as u8, dealer_card: self.dealer.cards[0], usable_ace: self.player.usable_ace() }
    }

    /// `reset` dealing from `src` (dealer's two cards, then the player's two) instead of the
    /// env's generator.
    pub fn reset_with(&mut self, src: &mut impl CardSource) -> Result<(BlackjackObs, Info)> {
        deal(&mut self.player, &mut self.dealer, &mut self.phase, src)?;
        Ok((self.obs(), Info::default()))
    }

    /// `step` drawing from `src` instead of the env's generator.
    #[inline]
    pub fn step_with(&mut self, action: usize, src: &mut impl CardSource) -> Result<Step<BlackjackObs>> {
        let (reward, terminated) = play(self.cfg, &mut self.player, &mut self.dealer, &mut self.phase, action, src)?;
        Ok(Step { obs: self.obs(), reward, terminated, truncated: false, info: Info::default() })
    }
}

fn deal(player: &mut Hand, dealer: &mut Hand, phase: &mut u8, src: &mut impl CardSource) -> Result<()> {
    let mut d = [0u8; 4];
    for c in d.iter_mut() {
        *c = draw(src)?;
    }
    *dealer = Hand::from_cards(&d[..2]);
    *player = Hand::from_cards(&d[2..]);
    *phase = 1;
    Ok(())
}

/// One step of the rules: (reward, terminated).
#[inline]
fn play(
    cfg: BlackjackConfig,
    player: &mut Hand,
    dealer: &mut Hand,
    phase: &mut u8,
    action: usize,
    src: &mut impl CardSource,
) -> Result<(f64, bool)> {
    if action > 1 {
        return Err(bad_action("Blackjack-v1", action, 2));
    }
    if *phase != 1 {
        return Err(if *phase == 0 {
            no_reset("Blackjack-v1")
        } else {
            Error::new("Blackjack-v1: step() after the episode ended; call reset()")
        });
    }
    let out = if action == HIT {
        player.push(draw(src)?);
        if player.is_bust() {
            (-1.0, true)
        } else {
            (0.0, false)
        }
    } else {
        while dealer.sum() < 17 {
            dealer.push(draw(src)?);
        }
        let mut r = cmp(player.score(), dealer.score());
        if cfg.sab && player.is_natural() && !dealer.is_natural() {
            r = 1.0;
        } else if !cfg.sab && cfg.natural && player.is_natural() && r == 1.0 {
            r = 1.5;
        }
        (r, true)
    };
    if out.1 {
        *phase = 2;
    }
    Ok(out)
}

#[inline]
fn draw(src: &mut impl CardSource) -> Result<u8> {
    match src.draw() {
        Some(c @ 1..=10) => Ok(c),
        Some(c) => bail!("Blackjack-v1: card value {c} is not in 1..=10"),
        None => bail!("Blackjack-v1: the card source ran out of cards"),
    }
}

impl Env for Blackjack {
    type Obs = BlackjackObs;

    fn id(&self) -> &'static str {
        "Blackjack-v1"
    }
    fn observation_space(&self) -> Space {
        Space::Tuple(vec![Space::discrete(32), Space::discrete(11), Space::discrete(2)])
    }
    fn num_actions(&self) -> usize {
        2
    }
    fn obs_dim(&self) -> usize {
        3
    }

    fn reset(&mut self, seed: Option<u64>) -> (BlackjackObs, Info) {
        if let Some(s) = seed {
            self.rng = env_rng(s);
        }
        deal(&mut self.player, &mut self.dealer, &mut self.phase, &mut self.rng).expect("the generator never runs out");
        (self.obs(), Info::default())
    }

    #[inline]
    fn step(&mut self, action: usize) -> Result<Step<BlackjackObs>> {
        let (reward, terminated) = play(self.cfg, &mut self.player, &mut self.dealer, &mut self.phase, action, &mut self.rng)?;
        Ok(Step { obs: self.obs(), reward, terminated, truncated: false, info: Info::default() })
    }

    fn num_states(&self) -> Option<usize> {
        Some(NUM_STATES)
    }
    fn state_index(&self) -> Option<usize> {
        if self.phase == 0 {
            return None;
        }
        Some(if self.player.is_natural() { 704 + self.dealer.cards[0] as usize - 1 } else { self.obs().index() })
    }
    fn model(&self) -> Option<&Model> {
        Some(&self.model)
    }

    /// Exploring starts: the player gets a hand with the state's sum and usable ace (a natural
    /// for states 704..714), the dealer the state's showing card and a hidden card from the
    /// generator. Valid: sum 4–21 without usable ace, 12–21 with one, dealer 1–10.
    fn reset_to_state(&mut self, s: usize) -> Result<(BlackjackObs, Info)> {
        let (player, dealer_card): (Hand, u8) = if (704..NUM_STATES).contains(&s) {
            (Hand::from_cards(&[1, 10]), (s - 703) as u8)
        } else {
            let o = BlackjackObs::from_index(s.min(703));
            let (sum, d) = (o.player_sum, o.dealer_card);
            let ok = s < 704
                && (1..=10).contains(&d)
                && if o.usable_ace { (12..=21).contains(&sum) } else { (4..=21).contains(&sum) };
            if !ok {
                bail!(
                    "Blackjack-v1: state {s} (player sum {sum}, dealer {d}, usable ace {}) is not a valid start state; \
                     valid: sum 4-21 without a usable ace or 12-21 with one, dealer 1-10, or 704-713 for a natural",
                    o.usable_ace as u8
                );
            }
            let hand = match (o.usable_ace, sum) {
                (true, 21) => Hand::from_cards(&[1, 5, 5]),
                (true, s) => Hand::from_cards(&[1, s - 11]),
                (false, 21) => Hand::from_cards(&[10, 9, 2]),
                (false, s) if s >= 12 => Hand::from_cards(&[10, s - 10]),
                (false, s) => Hand::from_cards(&[2, s - 2]),
            };
            (hand, d)
        };
        let hidden = DECK[self.rng.below(13) as usize];
        self.dealer = Hand::from_cards(&[dealer_card, hidden]);
        self.player = player;
        self.phase = 1;
        Ok((self.obs(), Info::default()))
    }

    fn render_text(&self) -> Option<String> {
        if self.phase == 0 {
            return None;
        }
        let name = |c: &u8| if *c == 1 { "A".to_string() } else { c.to_string() };
        let p: Vec<String> = self.player.cards().iter().map(name).collect();
        let dealer = if self.phase == 2 {
            let d: Vec<String> = self.dealer.cards().iter().map(name).collect();
            format!("{} = {}", d.join(" "), self.dealer.sum())
        } else {
            format!("{} ?", name(&self.dealer.cards[0]))
        };
        Some(format!(
            "Dealer: {dealer}\nPlayer: {} = {}{}\n",
            p.join(" "),
            self.player.sum(),
            if self.player.usable_ace() { " (usable ace)" } else { "" }
        ))
    }
}

/// The dealer's final outcome given the showing card: probabilities of
/// `[17, 18, 19, 20, 21 (not natural), natural, bust]`.
pub fn dealer_outcomes(showing: u8) -> [f64; 7] {
    fn rec(h: Hand, p: f64, out: &mut [f64; 7]) {
        if h.sum() >= 17 {
            let i = if h.is_bust() {
                6
            } else if h.is_natural() {
                5
            } else {
                (h.sum() - 17) as usize
            };
            out[i] += p;
            return;
        }
        for c in 1..=10u8 {
            let mut h2 = h;
            h2.push(c);
            rec(h2, p * card_prob(c), out);
        }
    }
    let mut out = [0.0; 7];
    rec(Hand::from_cards(&[showing]), 1.0, &mut out);
    out
}

fn build_model(cfg: BlackjackConfig) -> Model {
    let dealer: Vec<[f64; 7]> = (0..=10u8).map(|d| if d == 0 { [0.0; 7] } else { dealer_outcomes(d) }).collect();
    let idx = |sum: u16, d: u8, ace: bool| BlackjackObs { player_sum: sum.min(31) as u8, dealer_card: d, usable_ace: ace }.index();
    // Start distribution: player's two cards and the dealer's showing card.
    let mut start = std::collections::BTreeMap::<usize, f64>::new();
    for d in 1..=10u8 {
        for c1 in 1..=10u8 {
            for c2 in 1..=10u8 {
                let h = Hand::from_cards(&[c1, c2]);
                let s = if h.is_natural() { 704 + d as usize - 1 } else { idx(h.sum(), d, h.usable_ace()) };
                *start.entry(s).or_default() += card_prob(d) * card_prob(c1) * card_prob(c2);
            }
        }
    }
    let start: Vec<(f64, usize)> = start.into_iter().map(|(s, p)| (p, s)).collect();
    Model::build(NUM_STATES, 2, start, |s, a, out| {
        let (sum, d, ace, natural) = if s >= 704 {
            (21u16, (s - 703) as u8, true, true)
        } else {
            let o = BlackjackObs::from_index(s);
            (o.player_sum as u16, o.dealer_card, o.usable_ace, false)
        };
        if sum > 21 || !(1..=10).contains(&d) {
            // Bust (or impossible) states: absorbing and terminal.
            out.push(Transition { prob: 1.0, next: s, reward: 0.0, terminated: true });
            return;
        }
        if a == HIT {
            for c in 1..=10u8 {
                let c16 = c as u16;
                let (ns, nace) = if ace {
                    if sum + c16 <= 21 {
                        (sum + c16, true)
                    } else {
                        (sum + c16 - 10, false)
                    }
                } else if c == 1 && sum + 11 <= 21 {
                    (sum + 11, true)
                } else {
                    (sum + c16, false)
                };
                let bust = ns > 21;
                out.push(Transition {
                    prob: card_prob(c),
                    next: idx(ns, d, nace && !bust),
                    reward: if bust { -1.0 } else { 0.0 },
                    terminated: bust,
                });
            }
        } else {
            let dd = &dealer[d as usize];
            // Rewards -1, 0, +1, +1.5.
            let mut r = [0.0f64; 4];
            for (i, &p) in dd.iter().enumerate() {
                let dscore: u16 = match i {
                    0..=4 => 17 + i as u16,
                    5 => 21,
                    _ => 0,
                };
                let mut rew = cmp(sum, dscore);
                if cfg.sab && natural && i != 5 {
                    rew = 1.0;
                } else if !cfg.sab && cfg.natural && natural && rew == 1.0 {
                    rew = 1.5;
                }
                let k = match rew {
                    x if x < -0.5 => 0,
                    x if x < 0.5 => 1,
                    x if x < 1.25 => 2,
                    _ => 3,
                };
                r[k] += p;
            }
            for (k, &p) in r.iter().enumerate() {
                if p > 0.0 {
                    out.push(Transition { prob: p, next: s, reward: [-1.0, 0.0, 1.0, 1.5][k], terminated: true });
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deal(cfg: BlackjackConfig, cards: &[u8], actions: &[usize]) -> Vec<Step<BlackjackObs>> {
        let mut env = Blackjack::new(cfg);
        let mut src = Cards(cards.iter().copied());
        env.reset_with(&mut src).unwrap();
        actions.iter().map(|&a| env.step_with(a, &mut src).unwrap()).collect()
    }

    #[test]
    fn scoring_and_usable_ace() {
        assert_eq!(Hand::from_cards(&[1, 5]).sum(), 16);
        assert!(Hand::from_cards(&[1, 5]).usable_ace());
        assert_eq!(Hand::from_cards(&[1, 5, 9]).sum(), 15);
        assert!(!Hand::from_cards(&[1, 5, 9]).usable_ace());
        assert_eq!(Hand::from_cards(&[1, 1]).sum(), 12);
        assert!(Hand::from_cards(&[10, 10, 5]).is_bust());
        assert_eq!(Hand::from_cards(&[10, 10, 5]).score(), 0);
        assert!(Hand::from_cards(&[10, 1]).is_natural());
        assert!(!Hand::from_cards(&[5, 5, 1]).is_natural());
        // Dealer 10,6 then 3: hits on 16, stands on 19; player 10,9 = 19: draw.
        let s = deal(BlackjackConfig::default(), &[10, 6, 10, 9, 3], &[STICK]);
        assert_eq!(s[0].reward, 0.0);
        assert!(s[0].terminated);
        // Dealer stands on soft 17 (A,6); player 18 wins.
        let s = deal(BlackjackConfig::default(), &[1, 6, 10, 8], &[STICK]);
        assert_eq!(s[0].reward, 1.0);
        // Player hits to bust.
        let s = deal(BlackjackConfig::default(), &[10, 7, 10, 5, 9], &[HIT]);
        assert_eq!((s[0].reward, s[0].terminated, s[0].obs.player_sum), (-1.0, true, 24));
        // Soft hand survives a big card.
        let s = deal(BlackjackConfig::default(), &[10, 7, 1, 5, 9, 1], &[HIT, HIT]);
        assert_eq!(s[0].obs, BlackjackObs { player_sum: 15, dealer_card: 10, usable_ace: false });
        assert!(!s[0].terminated);
        assert_eq!(s[1].obs.player_sum, 16);
    }

    #[test]
    fn naturals_under_sab_and_natural() {
        let sab = BlackjackConfig { natural: false, sab: true };
        let plain = BlackjackConfig { natural: false, sab: false };
        let nat = BlackjackConfig { natural: true, sab: false };
        // Player natural, dealer reaches 21 with three cards: sab wins, otherwise a draw.
        let cards = [10, 5, 1, 10, 6];
        assert_eq!(deal(sab, &cards, &[STICK])[0].reward, 1.0);
        assert_eq!(deal(plain, &cards, &[STICK])[0].reward, 0.0);
        assert_eq!(deal(nat, &cards, &[STICK])[0].reward, 0.0);
        // Both naturals: a draw under every rule.
        let cards = [1, 10, 10, 1];
        for c in [sab, plain, nat] {
            assert_eq!(deal(c, &cards, &[STICK])[0].reward, 0.0);
        }
        // Natural beats a dealer 18: +1, or +1.5 with natural=true (sab=false).
        let cards = [10, 8, 1, 10];
        assert_eq!(deal(sab, &cards, &[STICK])[0].reward, 1.0);
        assert_eq!(deal(plain, &cards, &[STICK])[0].reward, 1.0);
        assert_eq!(deal(nat, &cards, &[STICK])[0].reward, 1.5);
        // sab overrides natural.
        assert_eq!(deal(BlackjackConfig { natural: true, sab: true }, &cards, &[STICK])[0].reward, 1.0);
    }

    #[test]
    fn dealer_hits_to_17() {
        for d in 1..=10 {
            let o = dealer_outcomes(d);
            assert!((o.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        // The exact dealer distribution agrees with dealing (player holds 20 and sticks).
        let mut env = Blackjack::new(BlackjackConfig::default());
        env.reset(Some(9));
        let n = 300_000;
        let mut counts = [[0usize; 7]; 11];
        let mut shown = [0usize; 11];
        for _ in 0..n {
            let shows = (env.rng.below(10) + 1) as u8;
            env.reset_to_state(BlackjackObs { player_sum: 20, dealer_card: shows, usable_ace: false }.index()).unwrap();
            env.step(STICK).unwrap();
            let d = env.dealer();
            let k = if d.is_bust() { 6 } else if d.is_natural() { 5 } else { (d.sum() - 17) as usize };
            counts[d.cards()[0] as usize][k] += 1;
            shown[d.cards()[0] as usize] += 1;
        }
        for d in 1..=10u8 {
            let exact = dealer_outcomes(d);
            for k in 0..7 {
                let f = counts[d as usize][k] as f64 / shown[d as usize] as f64;
                assert!((f - exact[k]).abs() < 0.01, "dealer {d} outcome {k}: {f} vs {}", exact[k]);
            }
        }
        let mut env = Blackjack::new(BlackjackConfig::default());
        env.reset(Some(3));
        for ep in 0..2000 {
            let (_, _) = env.reset(None);
            let s = env.step(STICK).unwrap();
            assert!(s.terminated);
            assert!(env.dealer().sum() >= 17, "episode {ep}");
            let cards = env.dealer().cards();
            let before = Hand::from_cards(&cards[..cards.len() - 1]);
            if env.dealer().n > 2 {
                assert!(before.sum() < 17);
            }
        }
    }

    #[test]
    fn errors() {
        let mut env = Blackjack::new(BlackjackConfig::default());
        assert!(env.step(0).unwrap_err().to_string().contains("before reset"));
        env.reset(Some(0));
        assert_eq!(env.step(2).unwrap_err().to_string(), "Blackjack-v1: action 2 is outside the action space Discrete(2)");
        env.step(STICK).unwrap();
        assert!(env.step(STICK).is_err());
        let e = env.reset_to_state(BlackjackObs { player_sum: 5, dealer_card: 3, usable_ace: true }.index()).unwrap_err();
        assert!(e.to_string().contains("not a valid start state"), "{e}");
        let mut short = Cards([10u8, 5, 3].into_iter());
        assert!(env.reset_with(&mut short).unwrap_err().to_string().contains("ran out"));
    }

    #[test]
    fn model_is_a_distribution_and_matches_sampling() {
        let env = Blackjack::new(BlackjackConfig::default());
        let m = env.model().unwrap();
        for s in 0..NUM_STATES {
            for a in 0..2 {
                let t: f64 = m.transitions(s, a).iter().map(|t| t.prob).sum();
                assert!((t - 1.0).abs() < 1e-12, "state {s} action {a}: {t}");
            }
        }
        let st: f64 = m.start().iter().map(|x| x.0).sum();
        assert!((st - 1.0).abs() < 1e-12);
        // Sampled sticks from a few states agree with the model's expected reward.
        let mut env = Blackjack::new(BlackjackConfig::default());
        env.reset(Some(1));
        let states = [
            BlackjackObs { player_sum: 13, dealer_card: 2, usable_ace: true }.index(),
            BlackjackObs { player_sum: 20, dealer_card: 10, usable_ace: false }.index(),
            BlackjackObs { player_sum: 16, dealer_card: 1, usable_ace: false }.index(),
            704, // natural vs an ace
        ];
        for &s in &states {
            for a in 0..2 {
                let n = 200_000;
                let mut total = 0.0;
                for _ in 0..n {
                    env.reset_to_state(s).unwrap();
                    assert_eq!(env.state_index(), Some(s));
                    total += env.step(a).unwrap().reward;
                }
                let exact = m.expected_reward(s, a);
                assert!((total / n as f64 - exact).abs() < 0.01, "state {s} action {a}: {} vs {exact}", total / n as f64);
            }
        }
        // Sampled start states follow the start distribution.
        let n = 400_000;
        let mut counts = vec![0usize; NUM_STATES];
        for _ in 0..n {
            env.reset(None);
            counts[env.state_index().unwrap()] += 1;
        }
        for &(p, s) in m.start() {
            let f = counts[s] as f64 / n as f64;
            assert!((f - p).abs() < 4.0 * (p / n as f64).sqrt() + 1e-4, "start {s}: {f} vs {p}");
        }
    }

    #[test]
    fn optimal_policy_matches_sutton_barto() {
        // S&B Figure 5.2, usable ace: stick on 19+ everywhere; hit on 18 against 9, 10, A.
        let env = Blackjack::new(BlackjackConfig::default());
        let m = env.model().unwrap();
        let (v, pi) = m.value_iteration(1.0, 1e-12);
        let ix = |s, d, a| BlackjackObs { player_sum: s, dealer_card: d, usable_ace: a }.index();
        assert_eq!(pi[ix(18, 9, true)], HIT);
        assert_eq!(pi[ix(18, 8, true)], STICK);
        assert_eq!(pi[ix(19, 10, true)], STICK);
        // No usable ace: stick on 13–16 against 2–6 (except hit 12 vs 2, 3).
        assert_eq!(pi[ix(13, 2, false)], STICK);
        assert_eq!(pi[ix(12, 2, false)], HIT);
        assert_eq!(pi[ix(12, 4, false)], STICK);
        assert_eq!(pi[ix(16, 7, false)], HIT);
        assert_eq!(pi[ix(17, 10, false)], STICK);
        // Example 5.4's state under the "stick on 20 or 21" policy: S&B quote -0.27726.
        let mut policy = vec![HIT; NUM_STATES];
        for (s, p) in policy.iter_mut().enumerate() {
            if s >= 704 || matches!(BlackjackObs::from_index(s).player_sum, 20 | 21) {
                *p = STICK;
            }
        }
        let vp = m.evaluate(&policy, 1.0, 1e-12);
        // (S&B's figure is a 10^8-episode estimate, standard error about 1e-4.)
        assert!((vp[ix(13, 2, true)] + 0.27726).abs() < 2e-4, "{}", vp[ix(13, 2, true)]);
        assert!(v[ix(21, 5, true)] > 0.8);
    }

    #[test]
    fn seeding() {
        let run = |seed| {
            let mut env = Blackjack::new(BlackjackConfig::default());
            let mut v = vec![env.reset(Some(seed)).0];
            for _ in 0..200 {
                let s = env.step(HIT).unwrap();
                v.push(s.obs);
                if s.terminated {
                    v.push(env.reset(None).0);
                }
            }
            v
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
