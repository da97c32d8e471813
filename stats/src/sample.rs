//! Small numeric helpers: descriptive statistics, distribution quantiles and
//! a symmetric eigen solver.
//!
//! They are hand-written so that the models crate needs no BLAS/LAPACK and
//! builds fast in CI; all the matrices involved are tiny (tens of columns).

use crate::special::regularized_beta;
pub use crate::special::{ln_gamma, normal_cdf, normal_quantile};

/// Arithmetic mean; 0 for an empty slice so callers need not special-case.
pub fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    x.iter().sum::<f64>() / x.len() as f64
}

/// Standard deviation with `ddof` degrees of freedom removed.
pub fn std_dev(x: &[f64], ddof: usize) -> f64 {
    if x.len() <= ddof {
        return 0.0;
    }
    let m = mean(x);
    let ss: f64 = x.iter().map(|v| (v - m) * (v - m)).sum();
    (ss / (x.len() - ddof) as f64).sqrt()
}

/// Median (average of the two middle values for even lengths). NaNs sort last.
pub fn median(x: &[f64]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Scale given to a column that is constant in a training window: 10⁻⁶ of
/// its level (10⁻⁹ at level 0). Why not drop it: a sensor that never moved
/// while healthy and then moves is exactly what should be flagged; dividing by
/// a floor instead of by zero keeps that information finite.
pub fn constant_scale_floor(level: f64) -> f64 {
    (1e-6 * level.abs()).max(1e-9)
}

/// Median absolute deviation (unscaled).
pub fn mad(x: &[f64]) -> f64 {
    let m = median(x);
    let d: Vec<f64> = x.iter().map(|v| (v - m).abs()).collect();
    median(&d)
}

/// Empirical quantile with linear interpolation (numpy's default).
pub fn quantile(x: &[f64], q: f64) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let mut v = x.to_vec();
    v.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    v[lo] * (1.0 - frac) + v[hi] * frac
}

/// Regularised incomplete beta function I_x(a, b), argument order of the F-distribution code.
pub fn inc_beta(x: f64, a: f64, b: f64) -> f64 {
    regularized_beta(a, b, x)
}

/// CDF of the F distribution with `d1`, `d2` degrees of freedom.
pub fn f_cdf(x: f64, d1: f64, d2: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    inc_beta(d1 * x / (d1 * x + d2), d1 / 2.0, d2 / 2.0)
}

/// Quantile of the F distribution by bisection on [`f_cdf`].
pub fn f_quantile(p: f64, d1: f64, d2: f64) -> f64 {
    let mut lo = 0.0;
    let mut hi = 1.0;
    while f_cdf(hi, d1, d2) < p && hi < 1e12 {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if f_cdf(mid, d1, d2) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations.
///
/// Returns eigenvalues in descending order and the matching eigenvectors as
/// columns (`vectors[row][col]`). Jacobi is slow for big matrices but exact
/// enough and branch-free of any LAPACK dependency for the p < 100 we use.
pub fn symmetric_eigen(m: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = m.len();
    let mut a: Vec<Vec<f64>> = m.to_vec();
    let mut v = vec![vec![0.0; n]; n];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        let scale: f64 = (0..n).map(|i| a[i][i] * a[i][i]).sum::<f64>().max(1e-300);
        if off <= 1e-24 * scale {
            break;
        }
        for p in 0..n {
            for q in (p + 1)..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let akp = row[p];
                    let akq = row[q];
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (rp, rq) = (a[p].clone(), a[q].clone());
                for (k, (apk, aqk)) in rp.iter().zip(&rq).enumerate() {
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let vkp = row[p];
                    let vkq = row[q];
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j][j].total_cmp(&a[i][i]));
    let values = order.iter().map(|&i| a[i][i]).collect();
    let vectors = (0..n)
        .map(|r| order.iter().map(|&c| v[r][c]).collect())
        .collect();
    (values, vectors)
}

/// Deterministic xorshift64* generator: the crate needs reproducible
/// pseudo-randomness (row subsampling, tests) without a `rand` dependency.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// Seeded generator; a zero seed is remapped because xorshift sticks at 0.
    pub fn new(seed: u64) -> Self {
        Self(if seed == 0 {
            0x9E37_79B9_7F4A_7C15
        } else {
            seed
        })
    }
    /// Next raw 64-bit value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_match_tables() {
        assert!((normal_quantile(0.999) - 3.090_232).abs() < 1e-5);
        assert!((normal_quantile(0.5)).abs() < 1e-9);
        // For d1 = 2 the F CDF has the closed form 1 - (1 + 2x/d2)^(-d2/2).
        for x in [0.5, 2.0, 7.0] {
            let exact = 1.0 - (1.0 + 2.0 * x / 40.0_f64).powf(-20.0);
            assert!((f_cdf(x, 2.0, 40.0) - exact).abs() < 1e-9);
        }
        // Large d2 tends to chi2(3)/3: 16.266/3 = 5.422 at p = 0.999.
        let f = f_quantile(0.999, 3.0, 1e6);
        assert!((f - 5.422).abs() < 0.01, "{f}");
        assert!((normal_cdf(1.96) - 0.975).abs() < 1e-4);
    }

    #[test]
    fn eigen_of_diagonalisable_matrix() {
        let m = vec![vec![2.0, 1.0], vec![1.0, 2.0]];
        let (vals, vecs) = symmetric_eigen(&m);
        assert!((vals[0] - 3.0).abs() < 1e-10 && (vals[1] - 1.0).abs() < 1e-10);
        assert!((vecs[0][0].abs() - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-8);
    }

    #[test]
    fn robust_stats() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(mad(&[1.0, 1.0, 2.0, 2.0, 4.0, 6.0, 9.0]), 1.0);
        assert!((quantile(&[1.0, 2.0, 3.0, 4.0], 0.5) - 2.5).abs() < 1e-12);
    }
}
