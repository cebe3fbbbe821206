//! Latency samples and their summaries.

use std::time::{Duration, Instant};

use serde::Serialize;

/// Per-call latencies of one measurement, in nanoseconds.
#[derive(Debug, Default, Clone)]
pub struct Samples {
    nanos: Vec<u64>,
}

/// What a table row and the JSON report show of a set of samples.
/// Times are in microseconds so that the JSON is readable as is.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Samples {
            nanos: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, d: Duration) {
        // A single call longer than 584 years saturates; nothing here runs that long.
        self.nanos
            .push(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn extend(&mut self, other: Samples) {
        self.nanos.extend(other.nanos);
    }

    pub fn len(&self) -> usize {
        self.nanos.len()
    }

    /// None when nothing was recorded: a summary of no calls would be all
    /// zeros, which reads like an infinitely fast system.
    pub fn summary(&self) -> Option<Summary> {
        if self.nanos.is_empty() {
            return None;
        }
        let mut sorted = self.nanos.clone();
        sorted.sort_unstable();
        let total: u128 = sorted.iter().map(|&n| u128::from(n)).sum();
        let us = |n: u64| n as f64 / 1_000.0;
        Some(Summary {
            count: sorted.len(),
            mean_us: total as f64 / sorted.len() as f64 / 1_000.0,
            p50_us: us(percentile(&sorted, 0.50)),
            p99_us: us(percentile(&sorted, 0.99)),
            max_us: us(percentile(&sorted, 1.0)),
        })
    }
}

/// Nearest-rank percentile of ascending `sorted` samples: the smallest
/// sample with at least `q` of all samples at or below it. Unlike
/// interpolation it always returns a latency that was actually observed.
/// `q` is clamped to (0, 1]; an empty slice gives 0.
pub fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// `num / den`, or None when the denominator is zero.
pub fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den)
}

/// Events per second for `count` events in `elapsed`.
pub fn rate(count: usize, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        count as f64 / secs
    } else {
        0.0
    }
}

/// Checks `--rounds` and `--round-secs` of a benchmark that alternates
/// baseline and measured rounds: a median needs three of each, and a
/// round shorter than 0.2 s is mostly start-up.
pub fn check_rounds(rounds: usize, round_secs: f64) -> anyhow::Result<()> {
    if rounds < 3 {
        anyhow::bail!("--rounds {rounds}: must be at least 3");
    }
    if !(round_secs.is_finite() && round_secs >= 0.2) {
        anyhow::bail!("--round-secs {round_secs}: must be at least 0.2");
    }
    Ok(())
}

/// The median of a few measurements (e.g. per-round rates), which a
/// single disturbed round cannot move much.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Seconds for a throughput loop: the thread's on-CPU time where the
/// kernel gives it (other processes on a shared machine do not count),
/// else wall time.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    ThreadCpu,
    Wall,
}

pub enum Mark {
    Cpu(Duration),
    Wall(Instant),
}

impl Clock {
    pub fn detect() -> Self {
        if thread_cpu().is_some() {
            Clock::ThreadCpu
        } else {
            Clock::Wall
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Clock::ThreadCpu => "thread-cpu",
            Clock::Wall => "wall",
        }
    }

    pub fn now(self) -> Mark {
        match (self, thread_cpu()) {
            (Clock::ThreadCpu, Some(d)) => Mark::Cpu(d),
            _ => Mark::Wall(Instant::now()),
        }
    }

    pub fn since(self, mark: Mark) -> f64 {
        let secs = match (mark, thread_cpu()) {
            (Mark::Cpu(then), Some(now)) => now.saturating_sub(then).as_secs_f64(),
            (Mark::Wall(then), _) => then.elapsed().as_secs_f64(),
            // The clock vanished mid-run; nothing sensible to divide by.
            (Mark::Cpu(_), None) => f64::NAN,
        };
        // A loop shorter than the clock's resolution.
        secs.max(1e-9)
    }
}

/// This thread's CPU time, to the nanosecond (`/proc/thread-self/schedstat`
/// moves only at scheduler ticks, too coarse for short loops).
pub fn thread_cpu() -> Option<Duration> {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .ok()
        .map(Duration::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let hundred: Vec<u64> = (1..=100).collect();
        let cases: &[(&[u64], f64, u64)] = &[
            (&[], 0.5, 0),
            (&[7], 0.5, 7),
            (&[7], 0.99, 7),
            (&[1, 2], 0.5, 1),
            (&[1, 2], 0.51, 2),
            (&[1, 2, 3, 4], 0.99, 4),
            (&hundred, 0.50, 50),
            (&hundred, 0.99, 99),
            (&hundred, 1.0, 100),
            // Out-of-range quantiles are clamped, not a panic.
            (&hundred, 0.0, 1),
            (&hundred, 1.5, 100),
        ];
        for (sorted, q, want) in cases {
            assert_eq!(
                percentile(sorted, *q),
                *want,
                "q={q} of {} samples",
                sorted.len()
            );
        }
    }

    #[test]
    fn summary_reports_microseconds_of_observed_samples() {
        let mut s = Samples::default();
        assert_eq!(s.summary(), None);
        for us in [300u64, 100, 200] {
            s.push(Duration::from_micros(us));
        }
        let sum = s.summary().unwrap();
        assert_eq!(sum.count, 3);
        assert_eq!(sum.p50_us, 200.0);
        assert_eq!(sum.p99_us, 300.0);
        assert_eq!(sum.max_us, 300.0);
        assert_eq!(sum.mean_us, 200.0);
    }

    #[test]
    fn ratios_rates_and_medians() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(3.0, 0.0), None);
        assert_eq!(rate(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(rate(5, Duration::ZERO), 0.0);
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }
}
