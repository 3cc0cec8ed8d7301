//! Scalar functions in straight-line code, so that the loops of the kernels that call them
//! vectorise: `exp` and `erf` for f32.

/// `e^x` for f32 in straight-line code: `2^n * e^r` with `n = round(x / ln 2)`, `r` reduced in
/// two parts (Cody-Waite) and `e^r` from a degree-7 polynomial on `|r| <= ln 2 / 2`; relative
/// error below 3e-7 for `x` in [-87.3, 88]. Below -87.3 it returns 0 (as a masked attention
/// score needs, and no subnormal numbers downstream); above 88 about 1.7e38 (not infinity);
/// NaN propagates. Rounding is done by adding and subtracting 1.5 * 2^23, not `f32::round`,
/// which compiles to a library call on baseline x86-64 and would keep loops scalar.
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    let underflow = x < -87.3;
    let x = x.clamp(-87.3, 88.0);
    // n lands in the low mantissa bits of t (one unit per ulp at this magnitude).
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor coefficients 1/k!, k = 0..7.
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2^n from the exponent bits n + 127, in [1, 254] after the clamp. Integer n is read from
    // t's bits with wrapping arithmetic, not `n as i32`: a saturating float-to-int conversion or
    // an overflow-checked add (papertune-models keeps overflow checks in the dev profile) keeps
    // the loops around this function from vectorising.
    let exponent = t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127);
    let scale = f32::from_bits(exponent << 23);
    if underflow { 0.0 } else { p * scale }
}

/// `erf(x)` in straight-line code (Abramowitz and Stegun 7.1.26 with [`exp_approx`]):
/// absolute error below 1e-6 (at most 5.7e-7 over [-6, 6] in the unit test).
#[inline(always)]
pub(crate) fn erf_approx(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_8, -1.453_152_1, 1.061_405_4];
    let ax = x.abs();
    let t = 1.0 / (1.0 + P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * exp_approx(-ax * ax);
    y.copysign(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_approx_is_within_1e6_absolute() {
        let mut worst = 0.0f64;
        let mut x = -6.0f32;
        while x < 6.0 {
            worst = worst.max((erf_approx(x) as f64 - libm_erf(x as f64)).abs());
            x += 0.000_37;
        }
        assert!(worst < 1e-6, "worst absolute error {worst}");
        assert!(erf_approx(0.0).abs() < 1e-7);
        assert_eq!(erf_approx(-10.0), -1.0);
    }

    /// erf in f64 from its Taylor series (|x| < 3) and continued fraction (beyond), a
    /// reference independent of the approximation under test.
    fn libm_erf(x: f64) -> f64 {
        let ax = x.abs();
        let value = if ax < 3.0 {
            let (mut term, mut sum, mut n) = (ax, ax, 0.0);
            while term.abs() > 1e-17 * sum.abs() {
                n += 1.0;
                term *= -ax * ax / n;
                sum += term / (2.0 * n + 1.0);
            }
            2.0 / std::f64::consts::PI.sqrt() * sum
        } else {
            // erfc(x) = exp(-x^2) / sqrt(pi) * 1 / (x + 1/2 / (x + 1 / (x + 3/2 / (x + ...))))
            let mut fraction = ax;
            for k in (1..60).rev() {
                fraction = ax + (k as f64 / 2.0) / fraction;
            }
            1.0 - (-ax * ax).exp() / std::f64::consts::PI.sqrt() / fraction
        };
        value.copysign(x)
    }

    #[test]
    fn exp_approx_is_within_3e7_relative() {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let exact = (x as f64).exp();
            worst = worst.max(((exp_approx(x) as f64) - exact).abs() / exact);
            x += 0.001_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_approx(0.0), 1.0);
        assert_eq!(exp_approx(-1e9), 0.0);
        assert!(exp_approx(-87.2) > 0.0);
        assert!(exp_approx(f32::NAN).is_nan());
    }
}
