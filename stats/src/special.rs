//! Special functions, one implementation each: log-gamma, the regularised incomplete gamma
//! and beta functions, the complementary error function and the normal CDF and quantile.
//!
//! Written here rather than taken from statrs: the crate stays free of dependencies
//! (statrs brings nalgebra and rand), and these few functions are checked against published
//! values in the tests below and in `reliability`'s.

/// Natural log of the gamma function (Lanczos, g=7, n=9).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Standard normal CDF, Φ(x) = erfc(−x/√2)/2.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// Complementary error function from the incomplete gamma: erfc(x) = Q(½, x²) for x ≥ 0,
/// so it keeps the relative precision of Q in the far tail (~1e-15).
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let q = if x == 0.0 {
        1.0
    } else {
        regularized_gamma_q(0.5, x * x)
    };
    if x >= 0.0 { q } else { 2.0 - q }
}

/// Smallest magnitude the continued fractions may divide by (Lentz).
const FPMIN: f64 = 1e-300;

/// Iteration cap for the series and continued fractions: they need
/// O(√a) terms near the transition point, so the cap grows with the size.
fn max_terms(size: f64) -> usize {
    10_000 + (20.0 * size.sqrt()) as usize
}

/// ln of the common prefactor x^a e^{−x} / Γ(a).
fn gamma_prefactor(a: f64, x: f64) -> f64 {
    (a * x.ln() - x - ln_gamma(a)).exp()
}

/// Series for P(a, x), used for x < a + 1.
fn gamma_series(a: f64, x: f64) -> f64 {
    let mut ap = a;
    let mut term = 1.0 / a;
    let mut sum = term;
    for _ in 0..max_terms(a) {
        ap += 1.0;
        term *= x / ap;
        sum += term;
        if term.abs() < sum.abs() * 1e-16 {
            break;
        }
    }
    sum * gamma_prefactor(a, x)
}

/// Continued fraction for Q(a, x) (modified Lentz), used for x ≥ a + 1.
fn gamma_cf(a: f64, x: f64) -> f64 {
    let mut b = x + 1.0 - a;
    let mut c = 1.0 / FPMIN;
    let mut d = 1.0 / b;
    let mut h = d;
    for i in 1..max_terms(a) {
        let i = i as f64;
        let an = -i * (i - a);
        b += 2.0;
        d = an * d + b;
        if d.abs() < FPMIN {
            d = FPMIN;
        }
        c = b + an / c;
        if c.abs() < FPMIN {
            c = FPMIN;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h * gamma_prefactor(a, x)
}

/// (P, Q) of the regularised incomplete gamma, each from the side where it converges fast
/// and keeps its relative precision: the series below x = a + 1, the continued fraction
/// above. NaN for a ≤ 0 or NaN input.
fn gamma_p_q(a: f64, x: f64) -> (f64, f64) {
    if a.is_nan() || a <= 0.0 || x.is_nan() {
        return (f64::NAN, f64::NAN);
    }
    if x <= 0.0 {
        return (0.0, 1.0);
    }
    if x == f64::INFINITY {
        return (1.0, 0.0);
    }
    if x < a + 1.0 {
        let p = gamma_series(a, x);
        (p, 1.0 - p)
    } else {
        let q = gamma_cf(a, x);
        (1.0 - q, q)
    }
}

/// Regularised lower incomplete gamma P(a, x) = γ(a, x)/Γ(a).
pub fn regularized_gamma_p(a: f64, x: f64) -> f64 {
    gamma_p_q(a, x).0
}

/// Regularised upper incomplete gamma Q(a, x) = 1 − P(a, x), computed directly in the upper
/// tail so small p-values keep their relative precision.
pub fn regularized_gamma_q(a: f64, x: f64) -> f64 {
    gamma_p_q(a, x).1
}

/// Continued fraction for I_x(a, b) (Numerical Recipes `betacf`, modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    let qab = a + b;
    let qap = a + 1.0;
    let qam = a - 1.0;
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < FPMIN {
        d = FPMIN;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..max_terms(a.max(b)) {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < FPMIN {
            d = FPMIN;
        }
        c = 1.0 + aa / c;
        if c.abs() < FPMIN {
            c = FPMIN;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < FPMIN {
            d = FPMIN;
        }
        c = 1.0 + aa / c;
        if c.abs() < FPMIN {
            c = FPMIN;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

/// Regularised incomplete beta I_x(a, b).
///
/// The continued fraction converges quickly for x < (a+1)/(a+b+2); above
/// that the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) is used. NaN for a ≤ 0,
/// b ≤ 0 or NaN x; 0 for x ≤ 0 and 1 for x ≥ 1.
pub fn regularized_beta(a: f64, b: f64, x: f64) -> f64 {
    if !(a > 0.0 && b > 0.0) || x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (-x).ln_1p();
    let front = ln_front.exp();
    if x < (a + 1.0) / (a + b + 2.0) {
        front * beta_cf(a, b, x) / a
    } else {
        1.0 - front * beta_cf(b, a, 1.0 - x) / b
    }
}

/// Standard normal quantile (Wichura's AS241 `PPND16`, ~1e-16 relative).
///
/// The crate's one normal quantile: interval bounds carry no error beyond the statistics
/// themselves.
/// −∞ at p ≤ 0, +∞ at p ≥ 1, NaN for NaN.
// The coefficients are kept digit for digit as published (Appl. Statist.
// 37(3), 1988) so they can be checked against the paper; the extra digits
// round to the same f64.
#[allow(clippy::excessive_precision)]
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 8] = [
        3.387_132_872_796_366_608,
        1.331_416_678_917_843_774_5e2,
        1.971_590_950_306_551_442_7e3,
        1.373_169_376_550_946_112_5e4,
        4.592_195_393_154_987_145_7e4,
        6.726_577_092_700_870_085_3e4,
        3.343_057_558_358_812_810_5e4,
        2.509_080_928_730_122_672_7e3,
    ];
    const B: [f64; 8] = [
        1.0,
        4.231_333_070_160_091_125_2e1,
        6.871_870_074_920_579_083e2,
        5.394_196_021_424_751_107_7e3,
        2.121_379_430_158_659_586_7e4,
        3.930_789_580_009_271_061e4,
        2.872_908_573_572_194_267_4e4,
        5.226_495_278_852_854_561e3,
    ];
    const C: [f64; 8] = [
        1.423_437_110_749_683_577_34,
        4.630_337_846_156_545_295_9,
        5.769_497_221_460_691_405_5,
        3.647_848_324_763_204_605_04,
        1.270_458_252_452_368_382_58,
        2.417_807_251_774_506_117_7e-1,
        2.272_384_498_926_918_458_33e-2,
        7.745_450_142_783_414_076_4e-4,
    ];
    const D: [f64; 8] = [
        1.0,
        2.053_191_626_637_758_821_87,
        1.676_384_830_183_803_849_4,
        6.897_673_349_851_000_045_5e-1,
        1.481_039_764_274_800_745_9e-1,
        1.519_866_656_361_645_719_66e-2,
        5.475_938_084_995_344_946e-4,
        1.050_750_071_644_416_843_24e-9,
    ];
    const E: [f64; 8] = [
        6.657_904_643_501_103_777_2,
        5.463_784_911_164_114_369_9,
        1.784_826_539_917_291_335_8,
        2.965_605_718_285_048_912_3e-1,
        2.653_218_952_657_612_309_3e-2,
        1.242_660_947_388_078_438_6e-3,
        2.711_555_568_743_487_578_15e-5,
        2.010_334_399_292_288_132_65e-7,
    ];
    const F: [f64; 8] = [
        1.0,
        5.998_322_065_558_879_376_9e-1,
        1.369_298_809_227_358_053_1e-1,
        1.487_536_129_085_061_485_25e-2,
        7.868_691_311_456_132_591e-4,
        1.846_318_317_510_054_681_8e-5,
        1.421_511_758_316_445_888_7e-7,
        2.044_263_103_389_939_785_64e-15,
    ];
    fn poly(c: &[f64; 8], x: f64) -> f64 {
        c.iter().rev().fold(0.0, |acc, &k| acc * x + k)
    }
    if p.is_nan() {
        return f64::NAN;
    }
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180_625 - q * q;
        return q * poly(&A, r) / poly(&B, r);
    }
    let tail = if q < 0.0 { p } else { 1.0 - p };
    let r = (-tail.ln()).sqrt();
    let x = if r <= 5.0 {
        let r = r - 1.6;
        poly(&C, r) / poly(&D, r)
    } else {
        let r = r - 5.0;
        poly(&E, r) / poly(&F, r)
    };
    if q < 0.0 { -x } else { x }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_published_values() {
        // Abramowitz & Stegun table 7.1.
        assert!((erfc(0.5) - 0.479_500_122_186_953_5).abs() < 1e-14);
        assert!((erfc(2.0) - 4.677_734_981_047_266e-3).abs() < 1e-16);
        assert!((erfc(-1.0) - 1.842_700_792_949_715).abs() < 1e-14);
        assert!((normal_cdf(1.96) - 0.975_002_104_851_780).abs() < 1e-13);
    }

    #[test]
    fn normal_quantile_inverts_the_cdf() {
        for p in [1e-10, 0.001, 0.2, 0.5, 0.9, 0.999] {
            assert!((normal_cdf(normal_quantile(p)) - p).abs() < 1e-12 * p.max(1e-3));
        }
    }
}
