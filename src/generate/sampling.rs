//! Choosing the next token from a row of logits: greedy (the first largest, so ties resolve the
//! same way every time), or sampled with temperature, top-k and top-p from a generator seeded per
//! request, so a seed reproduces its tokens whatever runs beside it.

use crate::generate::validation::Params;

/// SplitMix64: small, fast, and fully determined by its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The index of the first largest value; 0 for an empty row.
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best
}

/// The next token for `params` (greedy when the temperature is 0).
pub fn pick(logits: &[f32], params: &Params, rng: &mut Rng) -> usize {
    if params.temperature <= 0.0 || params.top_k == 1 {
        return argmax(logits);
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Largest first; equal values keep their index order.
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if params.top_k > 0 {
        order.truncate(params.top_k);
    }
    let t = f64::from(params.temperature);
    let top = f64::from(logits[order[0]]);
    let weights: Vec<f64> = order.iter().map(|&i| ((f64::from(logits[i]) - top) / t).exp()).collect();
    let total: f64 = weights.iter().sum();
    // Top-p: the smallest head of the order whose probability reaches p.
    let mut kept = 0.0;
    let mut n = 0;
    for w in &weights {
        kept += w / total;
        n += 1;
        if kept >= f64::from(params.top_p) {
            break;
        }
    }
    let mass: f64 = weights[..n].iter().sum();
    let mut target = rng.next_f64() * mass;
    for (i, w) in weights[..n].iter().enumerate() {
        if target < *w {
            return order[i];
        }
        target -= w;
    }
    order[n - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(temperature: f32, top_k: usize, top_p: f32) -> Params {
        Params {
            max_tokens: 1,
            temperature,
            top_k,
            top_p,
            seed: None,
            ignore_eos: false,
            stream: true,
            text_output: false,
        }
    }

    #[test]
    fn greedy_takes_the_first_largest() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        assert_eq!(pick(&[0.1, 3.0, 2.0], &params(0.0, 0, 1.0), &mut Rng::new(1)), 1);
    }

    #[test]
    fn a_seed_reproduces_and_limits_hold() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let run = |seed| {
            let mut rng = Rng::new(seed);
            (0..20).map(|_| pick(&logits, &params(1.0, 0, 1.0), &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        // top_k 2: only the two largest (indices 6 and 13: value 1.8, first by index).
        let mut rng = Rng::new(3);
        for _ in 0..100 {
            let t = pick(&logits, &params(1.0, 2, 1.0), &mut rng);
            assert!(t == 6 || t == 13, "{t}");
        }
        // top_p tiny: only the most likely.
        let mut rng = Rng::new(3);
        assert!((0..50).all(|_| pick(&logits, &params(1.0, 0, 1e-6), &mut rng) == 6));
    }
}
