//! Synthetic NAB-style benchmark and calibration of the streaming scorer.
//! `cargo run --release -p prognos-models --example stream_bench`

use prognos_models::metrics::{NabProfile, NabRaw, nab_normalised, nab_score_stream};
use prognos_models::stream::{StreamConfig, StreamScorer};
use prognos_models::synth::{Base, benchmark, generate};

fn scores(values: &[f64], cfg: StreamConfig) -> Vec<f64> {
    let mut s = StreamScorer::new(cfg).expect("valid config");
    values.iter().map(|v| s.score(*v).score).collect()
}

fn main() {
    let cfg = StreamConfig::default();
    let p = NabProfile::STANDARD;
    // Calibration on normal streams.
    println!("calibration on anomaly-free streams (20,000 rows each):");
    for (name, base) in [
        ("noise", Base::Noise),
        ("walk", Base::Walk),
        ("seasonal", Base::Seasonal { period: 288 }),
        ("flat", Base::Flat),
    ] {
        let l = generate(base, 20_000, &[], 0.01, 11);
        let s = scores(&l.values, cfg);
        let n = s.len() as f64;
        let f = |t: f64| s.iter().filter(|v| **v > t).count() as f64 / n * 100.0;
        println!(
            "  {name:<9} > 0.5: {:6.3} %   > 0.9: {:6.3} %   max {:.3}",
            f(0.5),
            f(0.9),
            s.iter().copied().fold(0.0, f64::max)
        );
    }
    let corpus = benchmark(40, 5000, 2026);
    let windows: usize = corpus.iter().map(|l| l.windows.len()).sum();
    println!(
        "\nNAB-style synthetic corpus: {} streams x 5000 rows, {windows} windows",
        corpus.len()
    );
    let all: Vec<Vec<f64>> = corpus.iter().map(|l| scores(&l.values, cfg)).collect();
    for thr in [0.5, 0.7, 0.8, 0.9, 0.95, 1.0] {
        let parts: Vec<NabRaw> = corpus
            .iter()
            .zip(&all)
            .map(|(l, s)| {
                let d: Vec<bool> = s.iter().map(|v| *v >= thr).collect();
                nab_score_stream(&d, &l.windows, p)
            })
            .collect();
        let det: usize = parts.iter().map(|r| r.detected).sum();
        let fp: usize = parts.iter().map(|r| r.false_positives).sum();
        println!(
            "  stream scorer, threshold {thr:.2}: NAB standard {:7.2}  windows detected {det}/{windows}  FP {fp}",
            nab_normalised(&parts, p)
        );
    }
    // Detection per kind and false positives per base at 0.9.
    let mut per_kind = std::collections::BTreeMap::new();
    for (l, s) in corpus.iter().zip(&all) {
        for ((&o, k), &(ws, we)) in l.onsets.iter().zip(&l.kinds).zip(&l.windows) {
            let first = (ws..=we).find(|&i| s[i] >= cfg.alarm);
            let base = ["noise", "walk", "seasonal", "flat"]
                [corpus.iter().position(|c| std::ptr::eq(c, l)).unwrap_or(0) % 4];
            let e = per_kind
                .entry(format!("{k:?}/{base}"))
                .or_insert((0, 0, 0i64));
            e.0 += 1;
            if let Some(f) = first {
                e.1 += 1;
                e.2 += f as i64 - o as i64;
            }
        }
    }
    for (k, (n, d, delay)) in &per_kind {
        println!(
            "    {k:<15} detected {d}/{n}  mean delay {:.1} rows",
            *delay as f64 / (*d).max(1) as f64
        );
    }
    let mut fp_base = std::collections::BTreeMap::new();
    for (i, (l, s)) in corpus.iter().zip(&all).enumerate() {
        let d: Vec<bool> = s.iter().map(|v| *v >= cfg.alarm).collect();
        let r = nab_score_stream(&d, &l.windows, p);
        *fp_base.entry(i % 4).or_insert(0) += r.false_positives;
    }
    println!("    FP by base (noise, walk, seasonal, flat): {fp_base:?}");
    let never: Vec<NabRaw> = corpus
        .iter()
        .map(|l| nab_score_stream(&vec![false; l.values.len()], &l.windows, p))
        .collect();
    println!(
        "  never fires: NAB standard {:7.2}",
        nab_normalised(&never, p)
    );
}
