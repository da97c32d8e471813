//! Evaluation metrics exactly as the benchmarks define them.

use serde::{Deserialize, Serialize};

/// Confusion counts plus the SKAB binary metrics derived from them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct BinaryMetrics {
    /// True positives.
    pub tp: u64,
    /// False positives.
    pub fp: u64,
    /// False negatives (serialised as `fn`).
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// True negatives.
    pub tn: u64,
    /// TP / (TP + FP); 0 when nothing was flagged.
    pub precision: f64,
    /// TP / (TP + FN).
    pub recall: f64,
    /// SKAB's F1 = TP / (TP + (FP + FN) / 2).
    pub f1: f64,
    /// False alarm rate, % = FP / (FP + TN) · 100.
    pub far: f64,
    /// Missed alarm rate, % = FN / (FN + TP) · 100.
    pub mar: f64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

impl BinaryMetrics {
    /// Counts agreement of `predicted` with `truth` (zipped; extra items ignored).
    pub fn from_labels(truth: &[bool], predicted: &[bool]) -> Self {
        let mut m = Self::default();
        for (&t, &p) in truth.iter().zip(predicted) {
            match (t, p) {
                (true, true) => m.tp += 1,
                (false, true) => m.fp += 1,
                (true, false) => m.fn_ += 1,
                (false, false) => m.tn += 1,
            }
        }
        m.finish()
    }

    /// Sums the counts of several parts (SKAB sums over all 34 test parts
    /// before computing the ratios, so ratios are not averaged).
    pub fn sum<'a>(parts: impl IntoIterator<Item = &'a BinaryMetrics>) -> Self {
        let mut m = Self::default();
        for p in parts {
            m.tp += p.tp;
            m.fp += p.fp;
            m.fn_ += p.fn_;
            m.tn += p.tn;
        }
        m.finish()
    }

    fn finish(mut self) -> Self {
        self.precision = ratio(self.tp, self.tp + self.fp);
        self.recall = ratio(self.tp, self.tp + self.fn_);
        let denom = self.tp as f64 + (self.fp + self.fn_) as f64 / 2.0;
        self.f1 = if denom > 0.0 {
            self.tp as f64 / denom
        } else {
            0.0
        };
        self.far = round2(100.0 * ratio(self.fp, self.fp + self.tn));
        self.mar = round2(100.0 * ratio(self.fn_, self.fn_ + self.tp));
        self
    }
}

/// Rounds to 2 decimal places, as SKAB reports FAR and MAR.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Root mean squared error of `predicted − truth`.
pub fn rmse(predicted: &[f64], truth: &[f64]) -> f64 {
    let n = predicted.len().min(truth.len());
    if n == 0 {
        return 0.0;
    }
    let ss: f64 = predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| (p - t) * (p - t))
        .sum();
    (ss / n as f64).sqrt()
}

/// PHM08 asymmetric score: Σ exp(−d/13) − 1 for early (d < 0) and
/// Σ exp(d/10) − 1 for late predictions, d = predicted − true. Late
/// predictions cost more because a missed failure is worse than an early
/// service visit.
pub fn phm08_score(predicted: &[f64], truth: &[f64]) -> f64 {
    predicted
        .iter()
        .zip(truth)
        .map(|(p, t)| {
            let d = p - t;
            if d < 0.0 {
                (-d / 13.0).exp() - 1.0
            } else {
                (d / 10.0).exp() - 1.0
            }
        })
        .sum()
}

/// NAB-style changepoint score as SKAB computes it (windows to the right of
/// each true changepoint, "Standard" profile A_tp = 1, A_fp = −0.11,
/// A_fn = −1), normalised so the null detector scores 0 and a perfect one 100.
///
/// This is a simplified version: a detection inside a window earns the
/// sigmoid-scaled reward by its relative position (earlier is better),
/// detections outside any window cost A_fp each. It is indicative only and is
/// not claimed to reproduce SKAB's "improved" scale function digit for digit.
pub fn nab_standard(
    truth_changepoints: &[Vec<usize>],
    detected_changepoints: &[Vec<usize>],
    window: usize,
) -> f64 {
    let (a_tp, a_fp, a_fn) = (1.0, -0.11, -1.0);
    let mut score = 0.0;
    let mut null = 0.0;
    let mut perfect = 0.0;
    for (truth, det) in truth_changepoints.iter().zip(detected_changepoints) {
        null += a_fn * truth.len() as f64;
        perfect += a_tp * truth.len() as f64;
        let mut used = vec![false; det.len()];
        for &cp in truth {
            let end = cp + window;
            let hit = det
                .iter()
                .enumerate()
                .find(|(i, d)| !used[*i] && **d >= cp && **d < end);
            match hit {
                Some((i, &d)) => {
                    used[i] = true;
                    let rel = (d - cp) as f64 / window.max(1) as f64; // 0..1
                    let sig = 2.0 / (1.0 + (5.0 * rel).exp()); // 1 at rel=0, ~0 at rel=1
                    score += a_tp * sig.max(0.0);
                }
                None => score += a_fn,
            }
        }
        score += a_fp * used.iter().filter(|u| !**u).count() as f64;
    }
    if (perfect - null).abs() < 1e-12 {
        return 0.0;
    }
    100.0 * (score - null) / (perfect - null)
}

/// NAB application profile: reward for a detected window, cost per false
/// positive, cost per missed window (all as positive weights).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NabProfile {
    /// Weight of a true positive (the first detection in a window).
    pub tp: f64,
    /// Weight of a false positive (a detection outside every window).
    pub fp: f64,
    /// Weight of a missed window.
    pub fn_: f64,
}

impl NabProfile {
    /// NAB's "standard" profile: A_tp = 1, A_fp = 0.11, A_fn = 1.
    pub const STANDARD: Self = Self {
        tp: 1.0,
        fp: 0.11,
        fn_: 1.0,
    };
}

/// NAB's scaled sigmoid: ≈ 1 at the start of a window (y = −1), 0 at its end
/// (y = 0), tending to −1 long after it; −1 beyond y = 3.
pub fn nab_scaled_sigmoid(y: f64) -> f64 {
    if y > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * y).exp()) - 1.0
    }
}

/// Raw NAB score of one stream, with the counts behind it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct NabRaw {
    /// Weighted score (TP rewards − FP costs − FN costs).
    pub score: f64,
    /// Windows in the stream.
    pub windows: usize,
    /// Windows with at least one detection.
    pub detected: usize,
    /// Detections outside every window.
    pub false_positives: usize,
}

/// NAB scoring of one stream: `detections[i]` is a detection at row i,
/// `windows` are inclusive, sorted, non-overlapping `(start, end)` row
/// ranges around the labelled anomalies.
///
/// As in NAB's sweeper: the first detection in a window earns
/// `tp · σ(y) / σ(−1)` with y = −(end − i + 1) / width (earlier is better);
/// later detections in the same window count nothing; a detection outside
/// the windows costs `fp` when no window precedes it, else adds
/// `fp · σ((i − prev_end) / (prev_width − 1))`, which is ≤ 0 (a detection
/// just after a window costs almost nothing, one long after it costs `fp`);
/// each window without a detection costs `fn_`.
pub fn nab_score_stream(
    detections: &[bool],
    windows: &[(usize, usize)],
    profile: NabProfile,
) -> NabRaw {
    let max_tp = nab_scaled_sigmoid(-1.0);
    let mut raw = NabRaw {
        windows: windows.len(),
        ..NabRaw::default()
    };
    let mut hit = vec![false; windows.len()];
    let mut w = 0; // first window not entirely before i
    let mut prev: Option<(usize, usize)> = None;
    for (i, &d) in detections.iter().enumerate() {
        while w < windows.len() && windows[w].1 < i {
            prev = Some(windows[w]);
            w += 1;
        }
        if !d {
            continue;
        }
        match windows.get(w) {
            Some(&(start, end)) if start <= i => {
                if !hit[w] {
                    hit[w] = true;
                    raw.detected += 1;
                    let width = (end - start + 1) as f64;
                    let y = -((end - i + 1) as f64) / width;
                    raw.score += profile.tp * nab_scaled_sigmoid(y) / max_tp;
                }
            }
            _ => {
                raw.false_positives += 1;
                raw.score += match prev {
                    None => -profile.fp,
                    Some((ps, pe)) => {
                        let width = ((pe - ps + 1) as f64 - 1.0).max(1.0);
                        profile.fp * nab_scaled_sigmoid((i - pe) as f64 / width)
                    }
                };
            }
        }
    }
    raw.score -= profile.fn_ * (windows.len() - raw.detected) as f64;
    raw
}

/// Normalised NAB score over a corpus: 100 · (S − S_null) / (S_perfect −
/// S_null), where the null detector (never fires) scores 0 and the perfect
/// one (detects every window at its start, no false positive) 100.
pub fn nab_normalised(parts: &[NabRaw], profile: NabProfile) -> f64 {
    let windows: usize = parts.iter().map(|p| p.windows).sum();
    let score: f64 = parts.iter().map(|p| p.score).sum();
    let null = -profile.fn_ * windows as f64;
    let perfect = profile.tp * windows as f64;
    if (perfect - null).abs() < 1e-12 {
        return 0.0;
    }
    100.0 * (score - null) / (perfect - null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skab_f1_definition() {
        let truth = [true, true, false, false];
        let pred = [true, false, true, false];
        let m = BinaryMetrics::from_labels(&truth, &pred);
        assert_eq!((m.tp, m.fp, m.fn_, m.tn), (1, 1, 1, 1));
        assert!((m.f1 - 0.5).abs() < 1e-12);
        assert_eq!(m.far, 50.0);
        assert_eq!(m.mar, 50.0);
        let all = BinaryMetrics::sum([&m, &m]);
        assert_eq!(all.tp, 2);
    }

    #[test]
    fn rul_metrics() {
        assert_eq!(rmse(&[1.0, 3.0], &[1.0, 1.0]), 2.0_f64.sqrt());
        let s = phm08_score(&[10.0, 0.0], &[0.0, 13.0]);
        assert!((s - ((1.0f64).exp() - 1.0) * 2.0).abs() < 1e-12);
    }

    #[test]
    fn nab_stream_scoring_follows_the_sweeper() {
        let p = NabProfile::STANDARD;
        let windows = [(10, 19), (50, 59)];
        let none = nab_score_stream(&[false; 80], &windows, p);
        assert_eq!(none.score, -2.0);
        assert!(nab_normalised(&[none], p).abs() < 1e-12);
        // Detecting both windows at their first row is (almost) perfect.
        let mut d = vec![false; 80];
        d[10] = true;
        d[50] = true;
        d[11] = true; // a second detection in a window counts nothing
        let r = nab_score_stream(&d, &windows, p);
        assert_eq!((r.detected, r.false_positives), (2, 0));
        assert!((nab_normalised(&[r], p) - 100.0).abs() < 1e-9);
        // Late in a window earns less; a false positive before any window costs fp.
        let mut d = vec![false; 80];
        d[18] = true;
        d[2] = true;
        let r = nab_score_stream(&d, &windows, p);
        assert_eq!((r.detected, r.false_positives), (1, 1));
        assert!(r.score < -1.0 - 0.11 + 0.5 && r.score > -1.11 - 1e-9);
        // Just after a window a false positive is nearly free; long after it costs fp.
        let mut near = vec![false; 80];
        near[20] = true;
        let mut far = vec![false; 80];
        far[45] = true;
        let (n, f) = (
            nab_score_stream(&near, &windows, p),
            nab_score_stream(&far, &windows, p),
        );
        assert!(n.score > f.score && f.score >= -2.11 - 1e-9);
        assert!(nab_scaled_sigmoid(-1.0) > 0.98 && nab_scaled_sigmoid(4.0) == -1.0);
    }

    #[test]
    fn nab_bounds() {
        let truth = vec![vec![10, 50]];
        assert!((nab_standard(&truth, &[vec![10, 50]], 60) - 100.0).abs() < 1e-9);
        assert!(nab_standard(&truth, &[vec![]], 60).abs() < 1e-9);
    }
}
