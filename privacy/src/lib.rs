//! # feedloop-privacy
//!
//! The privacy layer of feedloop: everything that decides what leaves a device
//! and how much privacy it costs. Pure Rust, no floating-point noise, builds for
//! `wasm32-unknown-unknown`.
//!
//! Modules, one concept each:
//! * [`sampler`] — exact discrete Laplace / discrete Gaussian samplers
//!   (Canonne–Kamath–Steinke 2020), integer arithmetic only.
//! * [`rng`] — [`rng::OsCsprng`], ChaCha20 keyed from OS randomness.
//! * [`privatizer`] — clip → lattice (conditional randomized rounding) → discrete
//!   Gaussian noise; produces [`PrivatizedUpdate`], the only thing that may leave as it is. For
//!   secure aggregation, [`clip_to_lattice`] stops before the noise: its [`LatticeUpdate`] leaves
//!   only as secret shares sealed to two aggregators (`feedloop-secagg`).
//! * [`wire`] — the versioned binary encoding of a [`PrivatizedUpdate`] and the
//!   server-side decoder that yields a distinct [`ReceivedUpdate`].
//! * [`randomized_response`] — ε-LDP randomized response for binary signals.
//! * [`accounting`] — zCDP (ρ, composition, exact OpenDP-compatible ρ→(ε,δ)) and an
//!   RDP accountant matching Google's `dp-accounting`.
//! * [`budget`] — the per-device [`budget::PrivacyPolicy`] and monotone
//!   [`budget::BudgetState`].
//! * [`ledger`] — an append-only, hash-chained record of every release.
//! * [`audit`] — empirical lower bounds on ε (Clopper–Pearson) for the real mechanisms.
//!
//! See `docs/PRIVACY.md` for the threat model, formulas and wire layout.
//!
//! # The boundary
//!
//! On the device, in order (docs/PRIVACY.md §2): `privacy/src/privatizer.rs` [`PrivatizedUpdate`]
//! (clipped, lattice, exact noise; no public constructor) → `core/src/contribution.rs`
//! `PreparedUpload` (eligibility, policy and budget checked; inspectable, not sendable) →
//! `core/src/contribution.rs` `Release` (budget charged, ledger appended) →
//! `core/src/outbox.rs` `QueuedUpload` (only from a `Release`; persisted with the privacy state in
//! one IndexedDB transaction) → `src/network.rs` `send`/`beacon`, the only requests with a body.
//! The server turns the bytes into [`ReceivedUpdate`] with [`decode_update`].

pub mod accounting;
pub mod audit;
pub mod budget;
pub mod categorical_response;
mod error;
mod exact;
pub mod ledger;
pub mod privatizer;
pub mod randomized_response;
pub mod rng;
pub mod sampler;
pub mod wire;

pub use error::{PrivacyError, Result};
pub use privatizer::{
    clip_to_lattice, privatize, privatize_with_os_rng, LatticeUpdate, PrivatizedUpdate,
    PrivatizerConfig, UpdateParams,
};
pub use wire::{decode_update, ExpectedRound, ReceivedUpdate};
