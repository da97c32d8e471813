//! Property-style tests with a seeded generator (no proptest dependency):
//! scores are finite and in range for any finite input, and detectors are
//! causal — appending rows never changes earlier scores.

use prognos_models::detector::Detector;
use prognos_models::multivariate::{KnnConfig, KnnDetector, PcaT2Q};
use prognos_models::parse::parse_table;
use prognos_models::pca::PcaConfig;
use prognos_models::score::{DETECTORS, score_table};
use prognos_models::univariate::{Cusum, Ewma, RobustZ, Threshold, UnivariateDetector};
use prognos_stats::sample::XorShift;

/// Values with wild magnitudes, constants, steps and spikes.
fn series(rng: &mut XorShift, n: usize) -> Vec<f64> {
    let scale = 10f64.powi((rng.next_u64() % 13) as i32 - 6);
    let constant = rng.next_u64().is_multiple_of(5);
    (0..n)
        .map(|i| {
            if constant {
                return scale;
            }
            let mut v = (rng.next_f64() - 0.5) * scale;
            if i > n / 2 {
                v += scale * 3.0;
            }
            if rng.next_u64().is_multiple_of(50) {
                v *= 1e6;
            }
            v
        })
        .collect()
}

#[test]
fn univariate_scores_are_finite_for_any_finite_input() {
    let mut rng = XorShift::new(11);
    for case in 0..60 {
        let xs = series(&mut rng, 200);
        let mut dets: Vec<Box<dyn UnivariateDetector>> = vec![
            Box::new(Threshold::new(1.0, 0.5, 2).unwrap()),
            Box::new(RobustZ::new(30, 3.5).unwrap()),
            Box::new(Ewma::new(0.2, 3.0, 20).unwrap()),
            Box::new(Cusum::new(0.5, 5.0, 20).unwrap()),
        ];
        if case % 2 == 0 {
            for d in &mut dets {
                d.fit(&xs[..50]).unwrap();
            }
        }
        for d in &mut dets {
            for x in &xs {
                let s = d.update(*x).unwrap();
                assert!(s.ratio.is_finite() && s.ratio >= 0.0, "case {case}");
                assert!((0.0..=1.0).contains(&s.anomaly_score), "case {case}");
            }
        }
    }
}

#[test]
fn multivariate_scores_are_finite_and_causal() {
    let mut rng = XorShift::new(12);
    for case in 0..15 {
        let cols: Vec<Vec<f64>> = (0..3).map(|_| series(&mut rng, 160)).collect();
        let rows: Vec<Vec<f64>> = (0..160)
            .map(|i| cols.iter().map(|c| c[i]).collect())
            .collect();
        let train = &rows[..60];
        let mut a: Vec<Box<dyn Detector>> = Vec::new();
        let mut b: Vec<Box<dyn Detector>> = Vec::new();
        if let (Ok(x), Ok(y)) = (
            KnnDetector::fit(train, &[], KnnConfig::default()),
            KnnDetector::fit(train, &[], KnnConfig::default()),
        ) {
            a.push(Box::new(x));
            b.push(Box::new(y));
        }
        if let (Ok(x), Ok(y)) = (
            PcaT2Q::fit(train, &PcaConfig::default(), 5),
            PcaT2Q::fit(train, &PcaConfig::default(), 5),
        ) {
            a.push(Box::new(x));
            b.push(Box::new(y));
        }
        for (da, db) in a.iter_mut().zip(b.iter_mut()) {
            // Stream 100 rows into one, all 160 into the other: the first 100
            // scores must be identical.
            let short: Vec<_> = rows[..100].iter().map(|r| da.update(r).unwrap()).collect();
            let long: Vec<_> = rows.iter().map(|r| db.update(r).unwrap()).collect();
            assert_eq!(short[..], long[..100], "case {case}");
            assert!(
                long.iter()
                    .all(|s| s.ratio.is_finite() && (0.0..=1.0).contains(&s.anomaly_score))
            );
        }
    }
}

#[test]
fn score_table_is_causal_for_every_detector() {
    let mut rng = XorShift::new(13);
    let a = series(&mut rng, 300);
    let b = series(&mut rng, 300);
    let text = |n: usize| {
        let mut s = String::from("time,a,b\n");
        for i in 0..n {
            s.push_str(&format!("{i},{},{}\n", a[i], b[i]));
        }
        s
    };
    let short = parse_table(&text(200)).unwrap();
    let long = parse_table(&text(300)).unwrap();
    for d in DETECTORS {
        for train in [None, Some(120)] {
            let (Ok(s), Ok(l)) = (
                score_table(&short, None, &[], train, d),
                score_table(&long, None, &[], train, d),
            ) else {
                continue;
            };
            assert_eq!(s.anomaly_score[..], l.anomaly_score[..200], "{d} {train:?}");
            assert_eq!(s.is_anomaly[..], l.is_anomaly[..200], "{d} {train:?}");
        }
    }
}
