//! Synthetic NAB-style benchmark and calibration of the streaming scorer,
//! against the never-fire baseline and the previous default (`robust_z`,
//! score = ratio / (1 + ratio)).
//! `cargo run --release -p prognos-models --example stream_bench`
//!
//! Corpus seed 2026 was looked at while choosing the scorer's constants
//! ("dev"); seed 7 was not ("held out").

use prognos_models::metrics::{NabProfile, NabRaw, nab_normalised, nab_score_stream};
use prognos_models::stream::{StreamConfig, StreamScorer};
use prognos_models::synth::{Base, Labelled, benchmark, generate};
use prognos_models::univariate::{RobustZ, UnivariateDetector};

/// (score, is_anomaly) per row.
fn stream_scores(values: &[f64]) -> Vec<(f64, bool)> {
    let mut s = StreamScorer::new(StreamConfig::default()).expect("valid config");
    values
        .iter()
        .map(|v| {
            let r = s.score(*v);
            (r.score, r.is_anomaly)
        })
        .collect()
}

/// The previous default for one column: robust z (window 60, limit 3.5);
/// missing values score 0 and are skipped.
fn robust_z_scores(values: &[f64]) -> Vec<(f64, bool)> {
    let mut d = RobustZ::new(60, 3.5).expect("valid");
    values
        .iter()
        .map(|v| match d.update(*v) {
            Ok(s) => (s.anomaly_score, s.is_anomaly),
            Err(_) => (0.0, false),
        })
        .collect()
}

type Scorer = fn(&[f64]) -> Vec<(f64, bool)>;

fn nab(corpus: &[Labelled], all: &[Vec<(f64, bool)>], thr: Option<f64>) -> (f64, usize, usize) {
    let p = NabProfile::STANDARD;
    let parts: Vec<NabRaw> = corpus
        .iter()
        .zip(all)
        .map(|(l, s)| {
            let d: Vec<bool> = s.iter().map(|(v, a)| thr.map_or(*a, |t| *v >= t)).collect();
            nab_score_stream(&d, &l.windows, p)
        })
        .collect();
    (
        nab_normalised(&parts, p),
        parts.iter().map(|r| r.detected).sum(),
        parts.iter().map(|r| r.false_positives).sum(),
    )
}

fn main() {
    let scorers: [(&str, Scorer); 2] = [
        ("stream (new default)", stream_scores),
        ("robust_z (old default)", robust_z_scores),
    ];
    println!("calibration on anomaly-free streams (20,000 rows each, 1 % missing):");
    for (name, base) in [
        ("noise", Base::Noise),
        ("walk", Base::Walk),
        ("seasonal", Base::Seasonal { period: 288 }),
        ("flat", Base::Flat),
    ] {
        let l = generate(base, 20_000, &[], 0.01, 11);
        for (sname, f) in scorers {
            let s = f(&l.values);
            let n = s.len() as f64;
            let frac = |t: f64| s.iter().filter(|v| v.0 > t).count() as f64 / n * 100.0;
            let alarms = s.iter().filter(|v| v.1).count() as f64 / n * 100.0;
            println!(
                "  {name:<9} {sname:<23} > 0.5: {:6.3} %   > 0.9: {:6.3} %   alarms {:6.3} %",
                frac(0.5),
                frac(0.9),
                alarms
            );
        }
    }
    for (label, seed) in [("dev", 2026), ("held out", 7)] {
        let corpus = benchmark(40, 5000, seed);
        let windows: usize = corpus.iter().map(|l| l.windows.len()).sum();
        println!(
            "\nNAB standard profile, synthetic corpus seed {seed} ({label}): {} streams x 5000 rows, {windows} windows",
            corpus.len()
        );
        for (sname, f) in scorers {
            let all: Vec<Vec<(f64, bool)>> = corpus.iter().map(|l| f(&l.values)).collect();
            let (s, d, fp) = nab(&corpus, &all, None);
            println!(
                "  {sname:<23} own alarm flag:   NAB {s:7.2}  windows detected {d}/{windows}  FP rows {fp}"
            );
            for thr in [0.5, 0.8, 0.9, 0.95] {
                let (s, d, fp) = nab(&corpus, &all, Some(thr));
                println!(
                    "  {sname:<23} score >= {thr:.2}:    NAB {s:7.2}  windows detected {d}/{windows}  FP rows {fp}"
                );
            }
        }
        // Onset detection per anomaly kind (stream scorer's own alarm flag):
        // first alarm inside the window, delay counted from the onset.
        let all: Vec<Vec<(f64, bool)>> = corpus.iter().map(|l| stream_scores(&l.values)).collect();
        let mut per_kind: std::collections::BTreeMap<String, (usize, usize, Vec<i64>)> =
            std::collections::BTreeMap::new();
        for (l, s) in corpus.iter().zip(&all) {
            for ((&o, k), &(ws, we)) in l.onsets.iter().zip(&l.kinds).zip(&l.windows) {
                let e = per_kind.entry(format!("{k:?}")).or_default();
                e.0 += 1;
                if let Some(f) = (ws..=we).find(|&i| s[i].1) {
                    e.1 += 1;
                    e.2.push(f as i64 - o as i64);
                }
            }
        }
        for (k, (n, d, mut delays)) in per_kind {
            delays.sort_unstable();
            let med = delays.get(delays.len() / 2).copied().unwrap_or(0);
            println!("    {k:<15} windows detected {d}/{n}  median delay {med} rows");
        }
        let never: Vec<Vec<(f64, bool)>> = corpus
            .iter()
            .map(|l| vec![(0.0, false); l.values.len()])
            .collect();
        let (s, _, _) = nab(&corpus, &never, None);
        println!("  never fires:            NAB {s:7.2}");
    }
}
