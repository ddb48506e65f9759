//! Privacy accounting.
//!
//! * [`zcdp`] — zero-concentrated DP (Bun–Steinke): ρ of a discrete Gaussian
//!   release, composition by addition, and the tight ρ → (ε, δ) conversion of
//!   Canonne–Kamath–Steinke 2020 computed exactly as OpenDP's
//!   `make_zCDP_to_approxDP` does.
//! * [`rdp`] — a Rényi-DP accountant for the (Poisson-subsampled) Gaussian that
//!   replicates Google's `dp_accounting.rdp.RdpAccountant` (orders, log-space
//!   series, and the RDP → (ε, δ) conversion) for the central/server view.
//!
//! * [`pld`] — a privacy-loss-distribution accountant for the (Poisson-subsampled) Gaussian,
//!   a port of `dp_accounting.pld.PLDAccountant` (connect-the-dots, FFT composition).
//! * [`ddgauss`] — ε of the distributed discrete Gaussian (Kairouz–Liu–Steinke 2021): the
//!   guarantee of client noise shares that holds even if both aggregators collude.
//!
//! Accounting is done in `f64`, like both reference libraries; the fixture test
//! `privacy/tests/reference.rs` holds it to their numbers.

pub mod ddgauss;
pub mod pld;
pub mod rdp;
mod special;
pub mod zcdp;

pub use ddgauss::{ddgauss_epsilon, DistributedDiscreteGaussian};
pub use pld::{PldAccountant, DEFAULT_PLD_DISCRETIZATION};
pub use rdp::{RdpAccountant, DEFAULT_RDP_ORDERS_LEN};
pub use zcdp::{max_rho_for_epsilon, zcdp_rho_gaussian, zcdp_to_approx_dp};
