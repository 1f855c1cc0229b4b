//! The one way a ratio is measured here: every side of a comparison runs once per
//! round, in an order that rotates from round to round (so that drift on this shared
//! machine hits each side in each position), for several rounds; the report gives
//! each side's median rate with the rounds' min–max and this process's CPU per unit
//! of work (which the neighbours do not move), and each ratio as the median of the
//! per-round ratios, beside the ratio of the median rates and the per-round min–max.
//! A side that beat, in every round, the very work it wraps is reported as a
//! measuring fault, not as a result.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

static QUICK: AtomicBool = AtomicBool::new(false);

/// `--quick`: every bench with small counts and one round, to see that it still
/// compiles and runs to its end (CI); nothing it prints is a result.
pub fn set_quick() {
    QUICK.store(true, Ordering::Relaxed);
}

/// Whether this run is `--quick`.
pub fn quick() -> bool {
    QUICK.load(Ordering::Relaxed)
}

/// An amount of work: `full` in a measuring run, `small` under `--quick`. Reads as
/// the number it is (`*MESSAGES`, `{MESSAGES}`).
pub struct Count<T> {
    full: T,
    small: T,
}

impl<T> Count<T> {
    pub const fn new(full: T, small: T) -> Self {
        Self { full, small }
    }
}

impl<T> std::ops::Deref for Count<T> {
    type Target = T;

    fn deref(&self) -> &T {
        if quick() { &self.small } else { &self.full }
    }
}

impl<T: std::fmt::Display> std::fmt::Display for Count<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

/// One side measured once: the units of work it did, the wall time and this
/// process's CPU time (every thread) they took.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    units: f64,
    wall: Duration,
    cpu: Duration,
}

impl Sample {
    /// Units per second.
    pub fn rate(&self) -> f64 {
        self.units / self.wall.as_secs_f64()
    }

    /// This process's CPU µs per unit.
    pub fn cpu_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.units
    }
}

/// CPU time of this whole process (every thread) so far.
pub fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// Measures `work`, which answers how many units it did.
pub async fn sample(work: impl Future<Output = anyhow::Result<u64>>) -> anyhow::Result<Sample> {
    let (started, cpu) = (Instant::now(), process_cpu());
    let units = work.await?;
    anyhow::ensure!(units > 0, "a measured run did no work");
    Ok(Sample {
        units: units as f64,
        wall: started.elapsed(),
        cpu: process_cpu() - cpu,
    })
}

/// A sample from figures taken by the bench itself (when the work's start is not
/// where the measured future starts, e.g. at the first delivery).
pub fn sample_of(units: u64, wall: Duration, cpu: Duration) -> Sample {
    Sample {
        units: units as f64,
        wall,
        cpu,
    }
}

/// A sample of operations done one after another, each timed by itself: the rate is
/// operations per second of their summed times (what a caller waiting on each one
/// sees), the CPU what this process spent over them.
pub fn sample_of_times(times: &[Duration], cpu: Duration) -> Sample {
    Sample {
        units: times.len() as f64,
        wall: times.iter().sum(),
        cpu,
    }
}

/// The `q` quantile (0.5, 0.99) of `sorted`.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Each side's single-operation latencies, pooled over its rounds, for the p50 and
/// p99 beside the rates of [`Rounds::report`].
pub struct Latencies {
    sides: Vec<Vec<Duration>>,
}

impl Latencies {
    pub fn new(sides: usize) -> Self {
        Self {
            sides: vec![Vec::new(); sides],
        }
    }

    /// Adds one round of `side`'s latencies.
    pub fn add(&mut self, side: usize, times: &[Duration]) {
        self.sides[side].extend_from_slice(times);
    }

    /// Measures one round of `side` whose `work` times its operations one by one:
    /// adds their times, and answers the round's sample (rate of their summed times,
    /// this process's CPU over the whole of `work`).
    pub async fn timed(
        &mut self,
        side: usize,
        work: impl Future<Output = anyhow::Result<Vec<Duration>>>,
    ) -> anyhow::Result<Sample> {
        let cpu = process_cpu();
        let times = work.await?;
        anyhow::ensure!(!times.is_empty(), "a measured run did no work");
        self.add(side, &times);
        Ok(sample_of_times(&times, process_cpu() - cpu))
    }

    /// `side`'s `q` quantile over every round.
    pub fn quantile(&self, side: usize, q: f64) -> Duration {
        let mut sorted = self.sides[side].clone();
        sorted.sort();
        quantile(&sorted, q)
    }

    /// Prints each side's p50 and p99 (named as in the rounds' `sides`).
    pub fn report(&self, sides: &[&str]) {
        if quick() {
            return;
        }
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let line: Vec<String> = sides
            .iter()
            .enumerate()
            .map(|(side, name)| {
                format!(
                    "{name} p50 {:.0} us, p99 {:.0} us",
                    us(self.quantile(side, 0.5)),
                    us(self.quantile(side, 0.99))
                )
            })
            .collect();
        println!("  latency over all rounds: {}", line.join("; "));
    }
}

/// The samples of every side over the rounds.
pub struct Rounds {
    sides: Vec<String>,
    /// `samples[side][round]`.
    samples: Vec<Vec<Sample>>,
}

/// The middle value (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

/// Fewest rounds a ratio is printed from.
pub const MIN_ROUNDS: usize = 5;

impl Rounds {
    /// Runs `rounds` rounds (at least [`MIN_ROUNDS`]) of every side of `sides`, each
    /// round in an order rotated by one from the last; `run(side)` measures one side
    /// once. Warm up before: every sample counts.
    pub async fn alternate(
        sides: &[&str],
        rounds: usize,
        mut run: impl AsyncFnMut(usize) -> anyhow::Result<Sample>,
    ) -> anyhow::Result<Self> {
        let rounds = if quick() { 1 } else { rounds.max(MIN_ROUNDS) };
        let mut samples = vec![Vec::with_capacity(rounds); sides.len()];
        for round in 0..rounds {
            for step in 0..sides.len() {
                let side = (round + step) % sides.len();
                samples[side].push(run(side).await?);
            }
        }
        Ok(Self {
            sides: sides.iter().map(|s| s.to_string()).collect(),
            samples,
        })
    }

    /// How many rounds ran.
    pub fn rounds(&self) -> usize {
        self.samples[0].len()
    }

    /// The median rate of `side`.
    pub fn rate(&self, side: usize) -> f64 {
        median(self.samples[side].iter().map(Sample::rate).collect())
    }

    /// The median CPU µs per unit of `side`.
    pub fn cpu_us(&self, side: usize) -> f64 {
        median(self.samples[side].iter().map(Sample::cpu_us).collect())
    }

    /// `side`'s rate over `baseline`'s, round by round.
    fn ratios(&self, side: usize, baseline: usize) -> Vec<f64> {
        self.samples[side]
            .iter()
            .zip(&self.samples[baseline])
            .map(|(s, b)| s.rate() / b.rate())
            .collect()
    }

    /// The median of `side`'s per-round ratios to `baseline`.
    pub fn ratio(&self, side: usize, baseline: usize) -> f64 {
        median(self.ratios(side, baseline))
    }

    /// Prints `title`, one line per side (median rate in `unit`/s with the rounds'
    /// min–max, CPU µs per unit), and a line per `(side, baseline)` of `ratios`.
    pub fn report(&self, title: &str, unit: &str, ratios: &[(usize, usize)]) {
        if quick() {
            println!("{title}: ran (--quick: one small round, no figures)");
            return;
        }
        let rounds = self.rounds();
        println!("{title} ({rounds} alternating rounds, medians):");
        let width = self.sides.iter().map(String::len).max().unwrap_or(0);
        for (side, name) in self.sides.iter().enumerate() {
            let rates: Vec<f64> = self.samples[side].iter().map(Sample::rate).collect();
            let (lo, hi) = min_max(&rates);
            println!(
                "  {name:width$}  {:>10.0} {unit}/s ({lo:.0}–{hi:.0}), this process's CPU {:.1} us/{unit}",
                self.rate(side),
                self.cpu_us(side),
            );
        }
        for &(side, baseline) in ratios {
            let per_round = self.ratios(side, baseline);
            let (lo, hi) = min_max(&per_round);
            println!(
                "  {}/{} = {:.2} (median of per-round ratios; ratio of medians {:.2}; rounds {lo:.2}–{hi:.2}); CPU per {unit}: {:+.1} us",
                self.sides[side],
                self.sides[baseline],
                self.ratio(side, baseline),
                self.rate(side) / self.rate(baseline),
                self.cpu_us(side) - self.cpu_us(baseline),
            );
        }
    }

    /// Whether `side`, which does the work of `wrapped` and more, beat it in every
    /// round: then the sides were not measured under the same conditions, and the
    /// report says so instead of letting a ratio pass for a result.
    pub fn beats_what_it_wraps(&self, side: usize, wrapped: usize) -> bool {
        let (lowest, _) = min_max(&self.ratios(side, wrapped));
        let faulty = lowest > 1.0 && !quick();
        if faulty {
            println!(
                "  MEASURING FAULT: {} beat {} (the work it wraps) in every round (lowest ratio {lowest:.2}): that ratio is not a result",
                self.sides[side], self.sides[wrapped]
            );
        }
        faulty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rate: f64) -> Sample {
        sample_of(
            rate as u64,
            Duration::from_secs(1),
            Duration::from_millis(1),
        )
    }

    #[tokio::test]
    async fn sides_rotate_and_ratios_are_per_round_medians() {
        let mut order = Vec::new();
        let rates = [
            [100.0, 50.0],
            [90.0, 60.0],
            [80.0, 40.0],
            [100.0, 100.0],
            [70.0, 35.0],
        ];
        let mut calls = [0usize; 2];
        let rounds = Rounds::alternate(&["a", "b"], 5, async |side| {
            order.push(side);
            let round = calls[side];
            calls[side] += 1;
            Ok(at(rates[round][side]))
        })
        .await
        .unwrap();
        // Round 0: a then b; round 1: b then a; ...
        assert_eq!(order, [0, 1, 1, 0, 0, 1, 1, 0, 0, 1]);
        // Per-round ratios 2.0, 1.5, 2.0, 1.0, 2.0: median 2.0.
        assert_eq!(rounds.ratio(0, 1), 2.0);
        // Round 3 was a tie: not faster in every round.
        assert!(!rounds.beats_what_it_wraps(0, 1));
    }

    #[test]
    fn timed_operations_rate_over_their_summed_times() {
        let times = [Duration::from_millis(10), Duration::from_millis(30)];
        let sample = sample_of_times(&times, Duration::from_millis(4));
        assert_eq!(sample.rate(), 50.0);
        assert_eq!(sample.cpu_us(), 2_000.0);
        let mut latencies = Latencies::new(1);
        latencies.add(0, &times);
        latencies.add(0, &[Duration::from_millis(20)]);
        assert_eq!(latencies.quantile(0, 0.5), Duration::from_millis(20));
        assert_eq!(latencies.quantile(0, 0.99), Duration::from_millis(30));
    }

    #[tokio::test]
    async fn a_side_faster_than_what_it_wraps_in_every_round_is_a_fault() {
        let rounds = Rounds::alternate(&["plugin", "backend"], 5, async |side| {
            Ok(at(if side == 0 { 120.0 } else { 100.0 }))
        })
        .await
        .unwrap();
        assert!(rounds.beats_what_it_wraps(0, 1));
    }
}
