//! A compact L-BFGS minimizer (Nocedal & Wright, *Numerical Optimization*, Alg. 7.4 two-loop
//! recursion) with a strong-Wolfe line search (Alg. 3.5 bracketing + 3.6 zoom with safeguarded
//! quadratic interpolation). The objective returns its value and writes its gradient in one call.

use std::collections::VecDeque;

/// Sufficient-decrease constant of the Wolfe conditions.
const C1: f64 = 1e-4;
/// Curvature constant of the Wolfe conditions (the usual value for quasi-Newton methods).
const C2: f64 = 0.9;
/// Function evaluations allowed per line search.
const MAX_LINE_SEARCH: usize = 25;

/// Stopping rules of [`minimize`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct LbfgsOptions {
    /// Iterations allowed.
    pub(crate) max_iter: usize,
    /// Converged when the largest absolute gradient entry is at most this.
    pub(crate) gtol: f64,
    /// Converged when the loss changes by at most this, relative to its magnitude (at least 1).
    pub(crate) ftol: f64,
    /// Correction pairs kept.
    pub(crate) memory: usize,
}

/// Where [`minimize`] stopped.
#[derive(Debug, Clone)]
pub(crate) struct Minimum {
    /// The minimizer found.
    pub(crate) x: Vec<f64>,
    /// Iterations taken.
    pub(crate) iterations: usize,
    /// Whether a convergence test passed (rather than `max_iter` or a failed line search).
    pub(crate) converged: bool,
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// One evaluated point of the line search: step, value and directional derivative.
#[derive(Clone, Copy)]
struct Point {
    step: f64,
    value: f64,
    slope: f64,
}

/// The objective restricted to the ray `x + step·dir`; the last evaluation stays in `xt`/`gt`.
struct Ray<'a, F> {
    f: &'a mut F,
    x: &'a [f64],
    dir: &'a [f64],
    xt: Vec<f64>,
    gt: Vec<f64>,
}

impl<F: FnMut(&[f64], &mut [f64]) -> f64> Ray<'_, F> {
    fn eval(&mut self, step: f64) -> Point {
        for ((t, x), d) in self.xt.iter_mut().zip(self.x).zip(self.dir) {
            *t = x + step * d;
        }
        let value = (self.f)(&self.xt, &mut self.gt);
        Point {
            step,
            value,
            slope: dot(&self.gt, self.dir),
        }
    }
}

/// Strong-Wolfe line search from `start` (step 0) with first trial `step`. On success the accepted
/// point is left in the ray's `xt`/`gt` and its value returned.
fn line_search<F: FnMut(&[f64], &mut [f64]) -> f64>(
    ray: &mut Ray<'_, F>,
    start: Point,
    step: f64,
) -> Option<f64> {
    let armijo = |p: &Point| p.value <= start.value + C1 * p.step * start.slope;
    let curvature = |p: &Point| p.slope.abs() <= -C2 * start.slope;
    let mut prev = start;
    let mut step = step;
    let (mut lo, mut hi);
    let mut evals = 0;
    loop {
        let p = ray.eval(step);
        evals += 1;
        if !p.value.is_finite() || !armijo(&p) || (evals > 1 && p.value >= prev.value) {
            (lo, hi) = (prev, p);
            break;
        }
        if curvature(&p) {
            return Some(p.value);
        }
        if p.slope >= 0.0 {
            (lo, hi) = (p, prev);
            break;
        }
        if evals >= MAX_LINE_SEARCH {
            return None;
        }
        prev = p;
        step *= 2.0;
    }
    // Zoom: `lo` satisfies Armijo with the lowest value so far; the minimizer lies between lo and hi.
    while evals < MAX_LINE_SEARCH {
        let width = hi.step - lo.step;
        let denom = 2.0 * (hi.value - lo.value - lo.slope * width);
        let quad = lo.step - lo.slope * width * width / denom;
        let (a, b) = (lo.step + 0.1 * width, hi.step - 0.1 * width);
        let (min, max) = (a.min(b), a.max(b));
        let trial = if hi.value.is_finite() && denom > 0.0 && (min..=max).contains(&quad) {
            quad
        } else {
            lo.step + 0.5 * width
        };
        let p = ray.eval(trial);
        evals += 1;
        if !p.value.is_finite() || !armijo(&p) || p.value >= lo.value {
            hi = p;
        } else {
            if curvature(&p) {
                return Some(p.value);
            }
            if p.slope * (hi.step - lo.step) >= 0.0 {
                hi = lo;
            }
            lo = p;
        }
    }
    // Out of evaluations: settle for the best Armijo point, if it moved at all.
    (lo.step > 0.0).then(|| ray.eval(lo.step).value)
}

/// Minimizes `f` (value and gradient in one call) from `x0`.
pub(crate) fn minimize<F: FnMut(&[f64], &mut [f64]) -> f64>(
    mut f: F,
    x0: Vec<f64>,
    opts: &LbfgsOptions,
) -> Minimum {
    let n = x0.len();
    let mut x = x0;
    let mut g = vec![0.0; n];
    let mut value = f(&x, &mut g);
    let mut history: VecDeque<(Vec<f64>, Vec<f64>, f64)> = VecDeque::with_capacity(opts.memory);
    let mut dir = vec![0.0; n];
    let mut alpha = vec![0.0; opts.memory];
    for iteration in 0..opts.max_iter {
        if g.iter().all(|v| v.abs() <= opts.gtol) {
            return Minimum {
                x,
                iterations: iteration,
                converged: true,
            };
        }
        // Two-loop recursion: dir = -H·g.
        dir.iter_mut().zip(&g).for_each(|(d, g)| *d = -g);
        for (i, (s, y, rho)) in history.iter().enumerate().rev() {
            alpha[i] = rho * dot(s, &dir);
            dir.iter_mut().zip(y).for_each(|(d, y)| *d -= alpha[i] * y);
        }
        if let Some((s, y, _)) = history.back() {
            let gamma = dot(s, y) / dot(y, y);
            dir.iter_mut().for_each(|d| *d *= gamma);
        }
        for (i, (s, y, rho)) in history.iter().enumerate() {
            let beta = rho * dot(y, &dir);
            dir.iter_mut()
                .zip(s)
                .for_each(|(d, s)| *d += (alpha[i] - beta) * s);
        }
        let mut slope = dot(&dir, &g);
        if slope >= 0.0 || !slope.is_finite() {
            // Not a descent direction (numerical trouble): restart from steepest descent.
            history.clear();
            dir.iter_mut().zip(&g).for_each(|(d, g)| *d = -g);
            slope = -dot(&g, &g);
        }
        let first_step = if history.is_empty() {
            (1.0 / dot(&g, &g).sqrt()).min(1.0)
        } else {
            1.0
        };
        let mut ray = Ray {
            f: &mut f,
            x: &x,
            dir: &dir,
            xt: vec![0.0; n],
            gt: vec![0.0; n],
        };
        let start = Point {
            step: 0.0,
            value,
            slope,
        };
        let Some(new_value) = line_search(&mut ray, start, first_step) else {
            return Minimum {
                x,
                iterations: iteration,
                converged: false,
            };
        };
        let (xt, gt) = (ray.xt, ray.gt);
        let s: Vec<f64> = xt.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = gt.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &y);
        if sy > f64::EPSILON * dot(&y, &y) {
            if history.len() == opts.memory {
                history.pop_front();
            }
            history.push_back((s, y, 1.0 / sy));
        }
        let change = (value - new_value).abs() / value.abs().max(new_value.abs()).max(1.0);
        (x, g, value) = (xt, gt, new_value);
        if change <= opts.ftol {
            return Minimum {
                x,
                iterations: iteration + 1,
                converged: true,
            };
        }
    }
    let converged = g.iter().all(|v| v.abs() <= opts.gtol);
    Minimum {
        x,
        iterations: opts.max_iter,
        converged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: LbfgsOptions = LbfgsOptions {
        max_iter: 500,
        gtol: 1e-8,
        ftol: 0.0,
        memory: 10,
    };

    #[test]
    fn minimizes_the_rosenbrock_function() {
        let rosenbrock = |x: &[f64], g: &mut [f64]| {
            let (a, b) = (x[0], x[1]);
            g[0] = -2.0 * (1.0 - a) - 400.0 * a * (b - a * a);
            g[1] = 200.0 * (b - a * a);
            (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2)
        };
        let min = minimize(rosenbrock, vec![-1.2, 1.0], &OPTS);
        assert!(min.converged, "{min:?}");
        assert!(
            (min.x[0] - 1.0).abs() < 1e-6 && (min.x[1] - 1.0).abs() < 1e-6,
            "{min:?}"
        );
    }

    #[test]
    fn minimizes_an_ill_conditioned_quadratic_in_few_iterations() {
        let scales = [1.0, 10.0, 100.0, 1000.0, 1e4];
        let quadratic = |x: &[f64], g: &mut [f64]| {
            let mut v = 0.0;
            for ((g, x), s) in g.iter_mut().zip(x).zip(&scales) {
                *g = s * (x - 3.0);
                v += 0.5 * s * (x - 3.0) * (x - 3.0);
            }
            v
        };
        let min = minimize(quadratic, vec![0.0; 5], &OPTS);
        assert!(min.converged && min.iterations < 60, "{min:?}");
        assert!(min.x.iter().all(|x| (x - 3.0).abs() < 1e-8), "{min:?}");
    }
}
