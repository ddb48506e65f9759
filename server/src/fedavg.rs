//! Aggregation: FedAvg over decoded lattice updates, Flower-style weighted `aggregate`, and the
//! server optimizers FedAvg / FedAvgM / FedAdam (Reddi et al., "Adaptive Federated
//! Optimization", ICLR 2021; the same update rules as Flower's `FedAvgM` and `FedAdam`).
//!
//! Weighting: privatized updates carry no example counts (a count would itself leak), so the
//! server weighs every participant equally — FedAvg's mean is the plain mean of the cohort's
//! updates. [`aggregate`] keeps Flower's example-count weighting for callers that have counts;
//! with equal counts it equals the plain mean.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Flower's `aggregate`: the mean of the vectors weighted by their example counts,
/// `Σ nᵢ·xᵢ / Σ nᵢ`. Panics on nothing; returns an empty vector for no input or zero total weight.
pub fn aggregate(results: &[(Vec<f64>, u64)]) -> Vec<f64> {
    let total: u64 = results.iter().map(|(_, n)| n).sum();
    let Some((first, _)) = results.first() else {
        return Vec::new();
    };
    if total == 0 {
        return Vec::new();
    }
    let mut acc = vec![0.0f64; first.len()];
    for (x, n) in results {
        for (a, v) in acc.iter_mut().zip(x) {
            *a += v * *n as f64;
        }
    }
    acc.iter().map(|a| a / total as f64).collect()
}

/// FedAvg of lattice updates with equal weights: the integers are summed exactly (i128), then
/// scaled once, `mean = γ · Σ vᵢ / n`. Errors on an empty cohort or ragged dimensions.
pub fn fedavg_lattice<V: AsRef<[i64]>>(updates: &[V], granularity: f64) -> Result<Vec<f64>> {
    let Some(first) = updates.first() else {
        return Err(Error::internal("FedAvg of an empty cohort"));
    };
    let d = first.as_ref().len();
    let mut sum = vec![0i128; d];
    for u in updates {
        let u = u.as_ref();
        if u.len() != d {
            return Err(Error::internal(
                "FedAvg of updates with different dimensions",
            ));
        }
        for (s, &v) in sum.iter_mut().zip(u) {
            *s += v as i128;
        }
    }
    Ok(mean_of_lattice_sum(&sum, updates.len() as u64, granularity))
}

/// `γ · Σ / n` per coordinate: the mean of `n` lattice updates from their exact integer sum. The
/// local path sums the updates it decoded; the secure path gets the (noisy) sum from unsharding
/// the two aggregators' shares. One formula, so both give the same bits for the same sum.
pub fn mean_of_lattice_sum<S: Copy + Into<i128>>(sum: &[S], n: u64, granularity: f64) -> Vec<f64> {
    let n = n as f64;
    sum.iter()
        .map(|&s| s.into() as f64 * granularity / n)
        .collect()
}

/// The server optimizer: how the cohort mean moves the global head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ServerOptimizer {
    /// `head += lr · mean` (lr = 1 is plain FedAvg).
    FedAvg { lr: f64 },
    /// `m ← β·m + mean; head += lr · m`.
    FedAvgM { lr: f64, momentum: f64 },
    /// `m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; head += lr · m / (√v + τ)`.
    FedAdam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        tau: f64,
    },
}

impl Default for ServerOptimizer {
    fn default() -> Self {
        Self::FedAvg { lr: 1.0 }
    }
}

impl ServerOptimizer {
    /// Flower's defaults: FedAvgM lr 1, β 0.9; FedAdam lr 0.1, β₁ 0.9, β₂ 0.99, τ 1e-9.
    pub fn from_name(name: &str) -> Result<Self, String> {
        match name {
            "fedavg" => Ok(Self::FedAvg { lr: 1.0 }),
            "fedavgm" => Ok(Self::FedAvgM {
                lr: 1.0,
                momentum: 0.9,
            }),
            "fedadam" => Ok(Self::FedAdam {
                lr: 0.1,
                beta1: 0.9,
                beta2: 0.99,
                tau: 1e-9,
            }),
            other => Err(format!(
                "unknown server optimizer `{other}` (fedavg, fedavgm, fedadam)"
            )),
        }
    }

    /// Replaces the learning rate.
    pub fn with_lr(self, new_lr: f64) -> Self {
        match self {
            Self::FedAvg { .. } => Self::FedAvg { lr: new_lr },
            Self::FedAvgM { momentum, .. } => Self::FedAvgM {
                lr: new_lr,
                momentum,
            },
            Self::FedAdam {
                beta1, beta2, tau, ..
            } => Self::FedAdam {
                lr: new_lr,
                beta1,
                beta2,
                tau,
            },
        }
    }

    /// `fedavg`, `fedavgm` or `fedadam`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::FedAvg { .. } => "fedavg",
            Self::FedAvgM { .. } => "fedavgm",
            Self::FedAdam { .. } => "fedadam",
        }
    }

    /// One server step: returns the new head and updates `state` (reset when it belongs to another
    /// optimizer or dimension).
    pub fn step(&self, head: &[f64], mean: &[f64], state: &mut OptimizerState) -> Vec<f64> {
        let d = head.len();
        if state.kind != self.name() || state.m.len() != d {
            *state = OptimizerState::fresh(self.name(), d);
        }
        state.steps += 1;
        match *self {
            Self::FedAvg { lr } => head.iter().zip(mean).map(|(h, g)| h + lr * g).collect(),
            Self::FedAvgM { lr, momentum } => {
                for (m, g) in state.m.iter_mut().zip(mean) {
                    *m = momentum * *m + g;
                }
                head.iter().zip(&state.m).map(|(h, m)| h + lr * m).collect()
            }
            Self::FedAdam {
                lr,
                beta1,
                beta2,
                tau,
            } => {
                for ((m, v), g) in state.m.iter_mut().zip(state.v.iter_mut()).zip(mean) {
                    *m = beta1 * *m + (1.0 - beta1) * g;
                    *v = beta2 * *v + (1.0 - beta2) * g * g;
                }
                head.iter()
                    .zip(state.m.iter().zip(&state.v))
                    .map(|(h, (m, v))| h + lr * m / (v.sqrt() + tau))
                    .collect()
            }
        }
    }
}

/// The optimizer's persistent state (per deployment; reset on rollback).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerState {
    pub kind: String,
    pub steps: u64,
    /// First moment / momentum buffer.
    pub m: Vec<f64>,
    /// Second moment (FedAdam).
    pub v: Vec<f64>,
}

impl OptimizerState {
    pub fn fresh(kind: &str, dimension: usize) -> Self {
        Self {
            kind: kind.to_string(),
            steps: 0,
            m: vec![0.0; dimension],
            v: vec![0.0; dimension],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flower's aggregate, transcribed literally (flwr/server/strategy/aggregate.py):
    /// `num_examples_total = sum(n); weighted = [x * n]; sum(weighted) / total`.
    fn flower_reference(results: &[(Vec<f64>, u64)]) -> Vec<f64> {
        let total: f64 = results.iter().map(|r| r.1 as f64).sum();
        let weighted: Vec<Vec<f64>> = results
            .iter()
            .map(|(x, n)| x.iter().map(|v| v * *n as f64).collect())
            .collect();
        (0..results[0].0.len())
            .map(|i| weighted.iter().map(|w| w[i]).sum::<f64>() / total)
            .collect()
    }

    #[test]
    fn aggregate_weights_by_example_counts_like_flower() {
        let results = vec![
            (vec![1.0, 2.0, -3.0], 10),
            (vec![4.0, -1.0, 0.5], 30),
            (vec![0.0, 0.0, 7.0], 60),
        ];
        let got = aggregate(&results);
        let want = flower_reference(&results);
        assert_eq!(got.len(), 3);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-12, "{g} vs {w}");
        }
        // By hand: (1·10 + 4·30 + 0·60)/100 = 1.3.
        assert!((got[0] - 1.3).abs() < 1e-12);
        assert!(aggregate(&[]).is_empty());
    }

    #[test]
    fn fedavg_lattice_is_the_equal_weight_mean_in_model_units() {
        let updates: Vec<Vec<i64>> =
            vec![vec![3, -7, 1 << 40], vec![-1, 2, 1 << 40], vec![0, 5, 1]];
        let gamma = 0.01;
        let got = fedavg_lattice(&updates, gamma).unwrap();
        let flower = aggregate(
            &updates
                .iter()
                .map(|u| (u.iter().map(|&v| v as f64 * gamma).collect(), 1))
                .collect::<Vec<_>>(),
        );
        let exact = [
            2.0 * gamma / 3.0,
            0.0,
            ((1i128 << 41) + 1) as f64 * gamma / 3.0,
        ];
        for i in 0..3 {
            assert!((got[i] - exact[i]).abs() <= 1e-12 * exact[i].abs().max(1.0));
            assert!((got[i] - flower[i]).abs() <= 1e-9 * flower[i].abs().max(1.0));
        }
        assert!(fedavg_lattice::<Vec<i64>>(&[], gamma).is_err());
        assert!(fedavg_lattice(&[vec![1i64], vec![1, 2]], gamma).is_err());
    }

    #[test]
    fn server_optimizers_follow_their_update_rules() {
        let head = vec![1.0, -1.0];
        let g = vec![0.5, 0.25];
        let mut st = OptimizerState::fresh("fedavg", 2);
        assert_eq!(
            ServerOptimizer::FedAvg { lr: 1.0 }.step(&head, &g, &mut st),
            vec![1.5, -0.75]
        );

        let opt = ServerOptimizer::FedAvgM {
            lr: 0.5,
            momentum: 0.9,
        };
        let mut st = OptimizerState::fresh("fedavgm", 2);
        let h1 = opt.step(&head, &g, &mut st);
        assert_eq!(h1, vec![1.25, -0.875]);
        let h2 = opt.step(&h1, &g, &mut st);
        // m = 0.9·0.5 + 0.5 = 0.95 → 1.25 + 0.475.
        assert!((h2[0] - 1.725).abs() < 1e-12);
        assert_eq!(st.steps, 2);

        let opt = ServerOptimizer::FedAdam {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
        };
        let mut st = OptimizerState::fresh("other", 0); // reset on kind mismatch
        let h = opt.step(&head, &g, &mut st);
        let (m, v) = (0.1 * 0.5, 0.01 * 0.25);
        assert!((h[0] - (1.0 + 0.1 * m / (f64::sqrt(v) + 1e-3))).abs() < 1e-12);
        assert_eq!(st.kind, "fedadam");
    }
}
