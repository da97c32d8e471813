//! Debug: prints scores around each onset of the synthetic corpus.
#![allow(clippy::needless_range_loop)]
use prognos_models::stream::{StreamConfig, StreamScorer};
use prognos_models::synth::benchmark;

fn main() {
    let corpus = benchmark(40, 5000, 2026);
    let want: Vec<String> = std::env::args().skip(1).collect();
    for (i, l) in corpus.iter().enumerate() {
        let base = ["noise", "walk", "seasonal", "flat"][i % 4];
        let mut ps = Vec::new();
        let mut s = StreamScorer::new(StreamConfig::default()).expect("cfg");
        let sc: Vec<_> = l
            .values
            .iter()
            .map(|v| (s.score(*v), s.last_p_values()))
            .collect();
        let sc: Vec<_> = sc
            .into_iter()
            .map(|(a, b)| {
                ps.push(b);
                a
            })
            .collect();
        for ((&o, k), w) in l.onsets.iter().zip(&l.kinds).zip(&l.windows) {
            let key = format!("{k:?}/{base}");
            if !want.is_empty() && !want.contains(&key) {
                continue;
            }
            let fires: Vec<usize> = (o.saturating_sub(200)..o)
                .filter(|&j| sc[j].is_anomaly)
                .collect();
            println!("stream {i} {key} onset {o} window {w:?} fires in 200 before: {fires:?}");
            for j in (o.saturating_sub(2)..(o + 300).min(l.values.len())).step_by(
                std::env::var("STEP")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1),
            ) {
                println!(
                    "   {j} x={:.3} score={:.3} p={:.2e}",
                    l.values[j], sc[j].score, sc[j].p_value
                );
                println!(
                    "      per stat {:?}",
                    ps[j].map(|p: f64| format!("{p:.1e}"))
                );
            }
        }
    }
}
