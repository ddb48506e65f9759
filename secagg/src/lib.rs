//! # feedloop-secagg
//!
//! Secure aggregation with two non-colluding aggregators, in the shape of IETF DAP
//! (draft-ietf-ppm-dap) with the Prio3 VDAF (draft-irtf-cfrg-vdaf): no aggregator sees one
//! device's update, only the sum of a whole cohort, and the noise that makes the sum
//! differentially private is added once, by the helper, instead of by every device.
//!
//! The flow, one concept per module:
//! * [`round`] — [`SecureRound`], what the device, the leader and the helper agree on for one round
//!   (the DAP "task"): dimension, the value radius R, the Prio3SumVec instance and its context.
//! * [`keys`] — the aggregators' HPKE key pairs (X25519-HKDF-SHA256 + AES-128-GCM, as DAP uses),
//!   the public key a device seals to and its fingerprint, which a privacy team pins.
//! * [`report`] — the device: a clipped lattice update ([`feedloop_privacy::LatticeUpdate`],
//!   never sent as it is) offset into `[0, 2R]`, sharded with Prio3SumVec, each share sealed to
//!   one aggregator: a [`Report`], the only thing that leaves the device in a secure round.
//! * [`verify`] — the aggregators: each opens its share, and together they check the validity
//!   proof (every coordinate in `[0, 2R]`) in one exchange; each keeps an output share.
//! * [`metric`] — [`MetricTask`], one metric of one model version (a thumbs verdict, a star
//!   rating…): a one-hot Prio3Histogram report per device, released in noisy batches.
//! * [`batch`] — accumulating output shares, one report per id; the helper's release (exact
//!   discrete Gaussian noise on its aggregate share, refused below the minimum cohort or twice);
//!   unsharding the two aggregate shares into the noisy integer sum.
//!
//! Every primitive is from a maintained crate (`prio`, `hpke`, `sha2`); nothing here is
//! hand-written cryptography. The trust assumption, in words: a report's value stays hidden as
//! long as the leader and the helper do not collude; the sum's ε holds as long as the helper
//! adds its noise (docs/PRIVACY.md §10).

pub mod batch;
mod codec;
mod error;
pub mod keys;
pub mod metric;
pub mod report;
pub mod round;
pub mod verify;

pub use batch::{unshard, AggregateShare, Batch, NoisyAggregateShare};
pub use error::{Result, SecAggError};
pub use keys::{unhex, HpkeCiphertext, HpkeKeyPair, HpkePublicKey};
pub use metric::{seal_metric, MetricTask};
pub use report::{seal_report, Report, ReportId};
pub use round::{SecureRound, Task, VerifyKey};
pub use verify::{
    helper_verify, leader_finish, leader_init, HelperRequest, HelperResponse, LeaderPending,
    OutputShare,
};
