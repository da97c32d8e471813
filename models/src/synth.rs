//! Deterministic synthetic labelled streams (seeded), for testing the
//! streaming scorer and for a NAB-style benchmark: several base behaviours
//! (white noise, a smooth random walk, a daily cycle, a quantised flat line)
//! with injected anomalies (spikes, level shifts, drifts, variance changes,
//! stuck-at-constant) and missing values.

use prognos_stats::sample::XorShift;
use serde::{Deserialize, Serialize};

/// Standard normal draw (Box–Muller) from the crate's generator.
pub fn gaussian(rng: &mut XorShift) -> f64 {
    let u1 = rng.next_f64().max(1e-12);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Normal behaviour of a synthetic stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Base {
    /// Level 50 + N(0, 1).
    Noise,
    /// A mean-reverting smooth walk (AR(1), φ = 0.995, step σ 0.3) plus N(0, 0.2).
    Walk,
    /// A daily cycle of amplitude 10 over `period` samples plus N(0, 1).
    Seasonal {
        /// Samples per cycle.
        period: usize,
    },
    /// Constant 7.0 with, every ~50 samples, a one-sample quantised wobble of ±0.5.
    Flat,
}

/// Injected anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// One sample +8σ.
    Spike,
    /// Permanent shift of +6σ from the onset.
    LevelShift,
    /// Linear drift reaching +8σ over 400 samples, then staying.
    Drift,
    /// Noise σ × 4 for 300 samples.
    VarianceChange,
    /// The sensor sticks at its last value for 300 samples.
    Stuck,
}

/// All anomaly kinds.
pub const KINDS: [Kind; 5] = [
    Kind::Spike,
    Kind::LevelShift,
    Kind::Drift,
    Kind::VarianceChange,
    Kind::Stuck,
];

/// A labelled stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Labelled {
    /// Values (NaN = missing).
    pub values: Vec<f64>,
    /// Onset row of each anomaly, sorted.
    pub onsets: Vec<usize>,
    /// Kind of each anomaly.
    pub kinds: Vec<Kind>,
    /// NAB windows (inclusive), one per anomaly, sorted and disjoint.
    pub windows: Vec<(usize, usize)>,
}

fn base_sigma(base: Base) -> f64 {
    match base {
        Base::Noise | Base::Seasonal { .. } => 1.0,
        Base::Walk => 1.0,
        Base::Flat => 0.5,
    }
}

/// Generates `n` rows of `base` with anomalies `(onset, kind)` and a fraction
/// `missing` of NaN cells. NAB windows: width 10 % of `n` divided by the number
/// of anomalies (NAB's convention), centred on the onset, clipped to the stream
/// and to the neighbouring windows.
pub fn generate(
    base: Base,
    n: usize,
    anomalies: &[(usize, Kind)],
    missing: f64,
    seed: u64,
) -> Labelled {
    let mut rng = XorShift::new(seed);
    let mut an: Vec<(usize, Kind)> = anomalies.iter().copied().filter(|a| a.0 < n).collect();
    an.sort_by_key(|a| a.0);
    let sigma = base_sigma(base);
    let mut walk = 0.0;
    let mut values = Vec::with_capacity(n);
    let mut last = 0.0;
    for i in 0..n {
        walk = 0.995 * walk + 0.3 * gaussian(&mut rng);
        let mut noise_mult = 1.0;
        let mut offset = 0.0;
        let mut stuck = false;
        let mut spike = 0.0;
        for &(t, k) in &an {
            if i < t {
                continue;
            }
            let d = i - t;
            match k {
                Kind::Spike if d == 0 => spike += 8.0 * sigma,
                Kind::LevelShift => offset += 6.0 * sigma,
                Kind::Drift => offset += 8.0 * sigma * (d.min(400) as f64 / 400.0),
                Kind::VarianceChange if d < 300 => noise_mult *= 4.0,
                Kind::Stuck if d < 300 => stuck = true,
                _ => {}
            }
        }
        let e = gaussian(&mut rng) * noise_mult;
        let v = match base {
            Base::Noise => 50.0 + e,
            Base::Walk => 20.0 + walk + 0.2 * e,
            Base::Seasonal { period } => {
                let ph = 2.0 * std::f64::consts::PI * i as f64 / period.max(2) as f64;
                30.0 + 10.0 * ph.sin() + e
            }
            Base::Flat => {
                let wobble = if rng.next_u64().is_multiple_of(50) {
                    0.5
                } else {
                    0.0
                };
                7.0 + wobble + if noise_mult > 1.0 { 0.5 * e } else { 0.0 }
            }
        } + offset
            + spike;
        let v = if stuck { last } else { v };
        last = v;
        values.push(v);
    }
    for v in values.iter_mut() {
        if rng.next_f64() < missing {
            *v = f64::NAN;
        }
    }
    let k = an.len().max(1);
    let width = (n / 10 / k).max(2);
    let mut windows: Vec<(usize, usize)> = Vec::with_capacity(an.len());
    for &(t, _) in &an {
        let mut start = t.saturating_sub(width / 2);
        if let Some(&(_, pe)) = windows.last() {
            start = start.max(pe + 1);
        }
        let end = (t + width / 2).min(n - 1);
        windows.push((start.min(end), end));
    }
    // Clip each window before the next one starts.
    for j in 1..windows.len() {
        if windows[j - 1].1 >= windows[j].0 {
            windows[j - 1].1 = windows[j].0.saturating_sub(1).max(windows[j - 1].0);
        }
    }
    Labelled {
        values,
        onsets: an.iter().map(|a| a.0).collect(),
        kinds: an.iter().map(|a| a.1).collect(),
        windows,
    }
}

/// A NAB-style corpus of `streams` streams of `n` rows: bases cycle through
/// noise, walk, seasonal (period 288) and flat; each stream gets 1–3 anomalies
/// of random kinds at random onsets after a 15 % probation period, at least
/// 12 % of the stream apart; 1 % missing cells in every other stream.
pub fn benchmark(streams: usize, n: usize, seed: u64) -> Vec<Labelled> {
    let mut rng = XorShift::new(seed);
    let bases = [
        Base::Noise,
        Base::Walk,
        Base::Seasonal { period: 288 },
        Base::Flat,
    ];
    (0..streams)
        .map(|s| {
            let base = bases[s % bases.len()];
            let count = 1 + (rng.next_u64() % 3) as usize;
            let gap = n * 12 / 100;
            let mut onsets = Vec::new();
            let mut t = n * 15 / 100;
            for _ in 0..count {
                t += (rng.next_u64() as usize) % gap.max(1);
                if t >= n * 95 / 100 {
                    break;
                }
                onsets.push(t);
                t += gap + 300;
            }
            let anomalies: Vec<(usize, Kind)> = onsets
                .into_iter()
                .map(|o| (o, KINDS[(rng.next_u64() % KINDS.len() as u64) as usize]))
                .collect();
            let missing = if s % 2 == 1 { 0.01 } else { 0.0 };
            generate(base, n, &anomalies, missing, seed ^ ((s as u64 + 1) * 7919))
        })
        .collect()
}
