//! Debug probe: one synthetic stream with NaN every 7th row.
use prognos_models::stream::{StreamConfig, StreamScorer};
use prognos_models::synth::{Base, Kind, generate};
fn main() {
    let mut l = generate(Base::Noise, 3000, &[(2000, Kind::LevelShift)], 0.0, 5);
    for (i, v) in l.values.iter_mut().enumerate() {
        if i % 7 == 3 {
            *v = f64::NAN;
        }
    }
    l.values[2000] = f64::NAN;
    let mut s = StreamScorer::new(StreamConfig::default()).expect("cfg");
    for (i, v) in l.values.iter().enumerate() {
        let r = s.score(*v);
        if (1995..2010).contains(&i) || (r.is_anomaly && i > 1500) {
            println!(
                "{i} {v:.3} {:.3} {:?} {:?}",
                r.score,
                r.is_anomaly,
                s.last_p_values()
            );
        }
    }
}
