//! Per-destination concurrency, as Postfix's qmgr(8) schedules it (pure: no I/O, time passed in).
//!
//! Every destination (transport plus next hop; plus the recipient when the transport's
//! recipient limit is 1, as in Postfix) has a concurrency window. It starts at
//! `initial_destination_concurrency` and grows by one each time the positive feedback,
//! added after every delivery in which the next hop answered, sums to one, up to
//! `<transport>_destination_concurrency_limit`. A delivery in which nobody answered
//! (connection refused, timeout, no such host) is negative feedback: the window shrinks by
//! one each time it sums to one (at the start of the cycle), never below one. Feedback is a
//! constant (Postfix's default, `1`: one step per delivery) or `N/concurrency` (divided by
//! the window at the time, so a whole window of deliveries makes one step).
//!
//! Failures also count in "pseudo-cohorts" of `1/window` each; after
//! `<transport>_destination_concurrency_failed_cohort_limit` cohorts without a success in
//! between the destination is dead: nothing is sent there until `resume` (qmgr uses
//! `minimal_backoff_time`, as Postfix does), and messages for it are deferred without an
//! attempt ("delivery temporarily suspended: <the last failure>"). It comes back with the
//! initial window.

use std::time::{Duration, Instant};

use rpost_config::{ConfigError, Params};

/// Sums of 1/window fractions miss 1 by rounding (6 x 1/6 < 1.0).
const EPSILON: f64 = 1e-9;

/// A feedback amount: a constant, or a numerator over the current window
/// (`1/concurrency`, Postfix's default).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Feedback {
    Fixed(f64),
    PerConcurrency(f64),
}

impl Feedback {
    /// Postfix syntax: `1/concurrency`, `N/concurrency`, `1/8`, or a number from 0 to 1.
    pub fn parse(text: &str) -> Result<Feedback, String> {
        let t = text.trim();
        let bad = || format!("bad feedback value {t:?}: want a number between 0 and 1, or 1/concurrency");
        let num = |s: &str| s.trim().parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0);
        let fb = match t.split_once('/') {
            Some((n, d)) if d.trim().eq_ignore_ascii_case("concurrency") => {
                Feedback::PerConcurrency(num(n).ok_or_else(bad)?)
            }
            Some((n, d)) => {
                let (n, d) = (num(n).ok_or_else(bad)?, num(d).filter(|d| *d > 0.0).ok_or_else(bad)?);
                Feedback::Fixed(n / d)
            }
            None => Feedback::Fixed(num(t).ok_or_else(bad)?),
        };
        match fb {
            Feedback::Fixed(v) | Feedback::PerConcurrency(v) if v <= 1.0 => Ok(fb),
            _ => Err(bad()),
        }
    }

    fn value(self, window: usize) -> f64 {
        match self {
            Feedback::Fixed(v) => v,
            Feedback::PerConcurrency(v) => v / window.max(1) as f64,
        }
    }
}

/// The scheduling parameters of one transport.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub initial: usize,
    /// Largest window; 0 = no limit.
    pub limit: usize,
    pub positive: Feedback,
    pub negative: Feedback,
    /// Failed pseudo-cohorts that make a destination dead; 0 = never.
    pub cohort_limit: f64,
    /// Most recipients per delivery request; 0 = no limit.
    pub recipient_limit: usize,
}

impl Policy {
    /// `<transport>_NAME` when main.cf (or the registry) has it, else `default_NAME` (or
    /// the plain name for `initial_destination_concurrency`), as Postfix's per-transport
    /// parameters work.
    pub fn from_params(p: &Params, transport: &str) -> Result<Policy, ConfigError> {
        let pick = |suffix: &str, fallback: &str| {
            let own = format!("{transport}_{suffix}");
            if p.raw(&own).is_some() { own } else { fallback.to_string() }
        };
        let int = |suffix: &str, fallback: &str| -> Result<usize, ConfigError> {
            Ok(p.get_int(&pick(suffix, fallback))?.max(0) as usize)
        };
        let feedback = |suffix: &str, fallback: &str| -> Result<Feedback, ConfigError> {
            let name = pick(suffix, fallback);
            let text = p.get(&name)?;
            Feedback::parse(&text).map_err(|message| {
                let (file, line) = p.origin(&name).unwrap_or_else(|| (rpost_config::BUILTIN_FILE.to_string(), 0));
                ConfigError::Param { file, line, param: name, message }
            })
        };
        let cohorts_name =
            pick("destination_concurrency_failed_cohort_limit", "default_destination_concurrency_failed_cohort_limit");
        Ok(Policy {
            initial: int("initial_destination_concurrency", "initial_destination_concurrency")?.max(1),
            limit: int("destination_concurrency_limit", "default_destination_concurrency_limit")?,
            positive: feedback(
                "destination_concurrency_positive_feedback",
                "default_destination_concurrency_positive_feedback",
            )?,
            negative: feedback(
                "destination_concurrency_negative_feedback",
                "default_destination_concurrency_negative_feedback",
            )?,
            cohort_limit: p.get_int(&cohorts_name)?.max(0) as f64,
            recipient_limit: int("destination_recipient_limit", "default_destination_recipient_limit")?,
        })
    }
}

impl Default for Policy {
    /// Postfix's defaults.
    fn default() -> Policy {
        Policy {
            initial: 5,
            limit: 20,
            positive: Feedback::Fixed(1.0),
            negative: Feedback::Fixed(1.0),
            cohort_limit: 1.0,
            recipient_limit: 50,
        }
    }
}

/// Why a destination is dead, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dead {
    pub until: Instant,
    pub dsn: String,
    pub reason: String,
}

/// One destination's state.
#[derive(Debug, Clone)]
pub struct Dest {
    /// Deliveries allowed at once; 0 while dead.
    window: usize,
    success: f64,
    failure: f64,
    fail_cohorts: f64,
    /// Deliveries running now.
    busy: usize,
    dead: Option<Dead>,
}

/// What one finished delivery says about the destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The next hop answered (whatever it said about the recipients).
    Reached,
    /// Nobody answered; `dsn` and `reason` of the failure.
    Unreachable { dsn: String, reason: String },
    /// Says nothing about the destination (the delivery agent itself failed).
    Neutral,
}

impl Dest {
    pub fn new(policy: &Policy) -> Dest {
        Dest { window: policy.initial, success: 0.0, failure: 0.0, fail_cohorts: 0.0, busy: 0, dead: None }
    }

    pub fn window(&self) -> usize {
        self.window
    }

    pub fn busy(&self) -> usize {
        self.busy
    }

    /// Brings a dead destination back once its time has come (with the initial window).
    pub fn resume_if_due(&mut self, policy: &Policy, now: Instant) {
        if self.dead.as_ref().is_some_and(|d| now >= d.until) {
            self.revive(policy);
        }
    }

    fn revive(&mut self, policy: &Policy) {
        self.dead = None;
        self.window = policy.initial;
        self.success = 0.0;
        self.failure = 0.0;
        self.fail_cohorts = 0.0;
    }

    /// Why nothing may be sent now, if the destination is dead.
    pub fn dead(&self) -> Option<&Dead> {
        self.dead.as_ref()
    }

    /// Whether one more delivery may start now.
    pub fn has_slot(&self) -> bool {
        self.dead.is_none() && self.busy < self.window
    }

    pub fn start(&mut self) {
        self.busy += 1;
    }

    /// Applies one finished delivery. Returns true when this made the destination dead
    /// (until `now + resume_after`).
    pub fn finish(&mut self, policy: &Policy, outcome: Outcome, now: Instant, resume_after: Duration) -> bool {
        self.busy = self.busy.saturating_sub(1);
        match outcome {
            Outcome::Neutral => false,
            Outcome::Reached => {
                if self.dead.is_some() {
                    // A delivery that started before the destination died got through.
                    self.revive(policy);
                    return false;
                }
                // Only a completed positive adjustment restarts the negative cycle (Postfix).
                self.fail_cohorts = 0.0;
                if policy.limit == 0 || self.window < policy.limit {
                    self.success += policy.positive.value(self.window);
                    while self.success >= 1.0 - EPSILON {
                        self.window += 1;
                        self.success -= 1.0;
                        self.failure = 0.0;
                    }
                    if policy.limit > 0 {
                        self.window = self.window.min(policy.limit);
                    }
                }
                false
            }
            Outcome::Unreachable { dsn, reason } => {
                if self.dead.is_some() {
                    return false;
                }
                self.fail_cohorts += 1.0 / self.window.max(1) as f64;
                if policy.cohort_limit > 0.0 && self.fail_cohorts >= policy.cohort_limit {
                    self.window = 0;
                    self.dead = Some(Dead { until: now + resume_after, dsn, reason });
                    return true;
                }
                self.failure -= policy.negative.value(self.window);
                while self.failure < -EPSILON {
                    self.window = self.window.saturating_sub(1);
                    self.failure += 1.0;
                    self.success = 0.0;
                }
                self.window = self.window.max(1);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unreachable() -> Outcome {
        Outcome::Unreachable { dsn: "4.4.1".into(), reason: "connect to x[192.0.2.1]:25: Connection refused".into() }
    }

    #[test]
    fn feedback_syntax() {
        assert_eq!(Feedback::parse("1/concurrency"), Ok(Feedback::PerConcurrency(1.0)));
        assert_eq!(Feedback::parse(" 1 / Concurrency "), Ok(Feedback::PerConcurrency(1.0)));
        assert_eq!(Feedback::parse("1/8"), Ok(Feedback::Fixed(0.125)));
        assert_eq!(Feedback::parse("0.5"), Ok(Feedback::Fixed(0.5)));
        assert_eq!(Feedback::parse("1"), Ok(Feedback::Fixed(1.0)));
        for bad in ["", "2", "-1", "1/0", "x/concurrency", "NaN", "inf", "1/x"] {
            assert!(Feedback::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn positive_feedback_grows_the_window_one_step_per_window_of_successes() {
        let p = Policy { positive: Feedback::PerConcurrency(1.0), ..Policy::default() };
        let mut d = Dest::new(&p);
        let now = Instant::now();
        assert_eq!(d.window(), 5);
        // 1/concurrency: five successes at window 5 make it 6, six more make it 7.
        for _ in 0..4 {
            d.start();
            d.finish(&p, Outcome::Reached, now, Duration::ZERO);
        }
        assert_eq!(d.window(), 5);
        d.start();
        d.finish(&p, Outcome::Reached, now, Duration::ZERO);
        assert_eq!(d.window(), 6);
        for _ in 0..6 {
            d.finish(&p, Outcome::Reached, now, Duration::ZERO);
        }
        assert_eq!(d.window(), 7);
        // ... and never past the limit.
        for _ in 0..1000 {
            d.finish(&p, Outcome::Reached, now, Duration::ZERO);
        }
        assert_eq!(d.window(), 20);
        // Postfix's default constant feedback: one step per success.
        let p = Policy::default();
        let mut d = Dest::new(&p);
        d.finish(&p, Outcome::Reached, now, Duration::ZERO);
        assert_eq!(d.window(), 6);
        let unlimited = Policy { limit: 0, ..Policy::default() };
        let mut d = Dest::new(&unlimited);
        for _ in 0..1000 {
            d.finish(&unlimited, Outcome::Reached, now, Duration::ZERO);
        }
        assert!(d.window() > 20);
    }

    #[test]
    fn negative_feedback_shrinks_the_window_but_not_below_one() {
        // No dead destinations here: only the window moves.
        let p = Policy { cohort_limit: 0.0, negative: Feedback::PerConcurrency(1.0), ..Policy::default() };
        let mut d = Dest::new(&p);
        let now = Instant::now();
        d.finish(&p, unreachable(), now, Duration::ZERO);
        assert_eq!(d.window(), 4, "the first failure takes a slot at once");
        // 1/concurrency: the next step down comes after a window's worth (4) of failures.
        for _ in 0..3 {
            d.finish(&p, unreachable(), now, Duration::ZERO);
        }
        assert_eq!(d.window(), 4);
        d.finish(&p, unreachable(), now, Duration::ZERO);
        assert_eq!(d.window(), 3);
        for _ in 0..100 {
            d.finish(&p, unreachable(), now, Duration::ZERO);
        }
        assert_eq!(d.window(), 1);
        assert!(d.dead().is_none() && d.has_slot());
        // Neutral results change nothing.
        let before = d.clone();
        d.finish(&p, Outcome::Neutral, now, Duration::ZERO);
        assert_eq!(d.window(), before.window());
    }

    #[test]
    fn one_failed_cohort_makes_the_destination_dead_until_resumed() {
        let p = Policy::default();
        let mut d = Dest::new(&p);
        let now = Instant::now();
        let pause = Duration::from_secs(300);
        // Constant feedback 1: windows 5, 4, 3 (1/5 + 1/4 + 1/3 = 0.78 cohorts), then the
        // fourth failure at window 2 completes the cohort: dead.
        for i in 0..3 {
            d.start();
            assert!(!d.finish(&p, unreachable(), now, pause), "failure {i}");
        }
        assert!(d.dead().is_none());
        d.start();
        assert!(d.finish(&p, unreachable(), now, pause));
        let dead = d.dead().unwrap().clone();
        assert_eq!(dead.until, now + pause);
        assert!(dead.reason.contains("Connection refused"));
        assert!(!d.has_slot());
        d.resume_if_due(&p, now + Duration::from_secs(299));
        assert!(d.dead().is_some());
        d.resume_if_due(&p, now + pause);
        assert!(d.dead().is_none());
        assert_eq!(d.window(), 5, "back with the initial concurrency");
    }

    #[test]
    fn a_success_in_between_restarts_the_cohort_count() {
        let p = Policy { negative: Feedback::PerConcurrency(1.0), ..Policy::default() };
        let mut d = Dest::new(&p);
        let now = Instant::now();
        for _ in 0..20 {
            for _ in 0..3 {
                d.finish(&p, unreachable(), now, Duration::ZERO);
            }
            d.finish(&p, Outcome::Reached, now, Duration::ZERO);
        }
        assert!(d.dead().is_none(), "an answering destination never dies");
        // A late success of a delivery started before the death revives it.
        let p1 = Policy { initial: 1, ..Policy::default() };
        let mut d = Dest::new(&p1);
        d.start();
        d.start();
        assert!(d.finish(&p1, unreachable(), now, Duration::from_secs(60)));
        d.finish(&p1, Outcome::Reached, now, Duration::from_secs(60));
        assert!(d.dead().is_none() && d.window() == 1);
    }

    #[test]
    fn per_transport_parameters_fall_back_to_the_defaults() {
        let mut p = Params::empty();
        p.set("smtp_destination_concurrency_limit", "3");
        p.set("default_destination_concurrency_failed_cohort_limit", "2");
        p.set("default_destination_concurrency_negative_feedback", "1/8");
        let smtp = Policy::from_params(&p, "smtp").unwrap();
        assert_eq!(smtp.limit, 3);
        assert_eq!(smtp.cohort_limit, 2.0);
        assert_eq!(smtp.negative, Feedback::Fixed(0.125));
        assert_eq!(smtp.recipient_limit, 50);
        let relay = Policy::from_params(&p, "relay").unwrap();
        assert_eq!(relay.limit, 20);
        // Postfix's own per-transport defaults for local delivery.
        let local = Policy::from_params(&p, "local").unwrap();
        assert_eq!((local.limit, local.recipient_limit), (2, 1));
        p.set("lmtp_destination_concurrency_positive_feedback", "3");
        assert!(Policy::from_params(&p, "lmtp").is_err());
    }
}
