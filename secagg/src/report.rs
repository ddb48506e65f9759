//! The device's side: one [`Report`] per secure round, made from a clipped lattice update.

use feedloop_privacy::LatticeUpdate;
use prio::codec::Encode;
use prio::vdaf::Client;
use rand_core::CryptoRng;

use crate::codec::{put_bytes, Reader};
use crate::error::{malformed, Result, SecAggError};
use crate::keys::{seal, HpkeCiphertext, HpkePublicKey};
use crate::round::{SecureRound, Task};

/// The report encoding's version byte.
pub const REPORT_VERSION: u8 = 1;

/// A report's id: random, 16 bytes (the VDAF nonce, as in DAP). Both aggregators take one report
/// per id, so a device that resends the same bytes after a failure is counted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReportId(pub [u8; 16]);

impl ReportId {
    /// From its 32 hex digits (its `Display`).
    pub fn from_hex(text: &str) -> Option<Self> {
        crate::keys::unhex(text)?.try_into().ok().map(Self)
    }
}

impl std::fmt::Display for ReportId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// What a device sends in a secure round, and all it sends: the Prio3 public share (the joint
/// randomness parts, no measurement information) and one HPKE ciphertext per aggregator. Each
/// aggregator's share alone is uniformly random; the values exist only in their sum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub(crate) id: ReportId,
    pub(crate) public_share: Vec<u8>,
    pub(crate) leader_share: HpkeCiphertext,
    pub(crate) helper_share: HpkeCiphertext,
}

/// The aggregators' roles, as DAP numbers them (the device is 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Leader = 2,
    Helper = 3,
}

impl Role {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Helper => "helper",
        }
    }

    pub(crate) fn aggregator_id(self) -> usize {
        match self {
            Role::Leader => 0,
            Role::Helper => 1,
        }
    }
}

/// HPKE `info`: the purpose and the sender → recipient roles (DAP's shape).
pub(crate) fn share_info(role: Role) -> Vec<u8> {
    let mut info = b"feedloop-secagg input share".to_vec();
    info.extend_from_slice(&[1, role as u8]);
    info
}

/// HPKE associated data: the round's context, the report id and the public share, so a share
/// cannot be moved into another report or round.
pub(crate) fn share_aad<T: Task>(round: &T, id: &ReportId, public_share: &[u8]) -> Vec<u8> {
    let mut aad = round.context();
    aad.extend_from_slice(&id.0);
    put_bytes(&mut aad, public_share);
    aad
}

/// Shards `update` (consumed: after this the device holds only the report) for `round` and seals
/// the leader's and the helper's shares to their keys.
pub fn seal_report<R: CryptoRng>(
    update: LatticeUpdate,
    round: &SecureRound,
    leader: &HpkePublicKey,
    helper: &HpkePublicKey,
    rng: &mut R,
) -> Result<Report> {
    if update.values().len() != round.dimension() {
        return Err(SecAggError::Measurement(format!(
            "the update has {} values, the round expects {}",
            update.values().len(),
            round.dimension()
        )));
    }
    if update.value_radius() > round.value_radius() {
        return Err(SecAggError::Measurement(format!(
            "the update's values reach ±{}, the round accepts ±{}: its clip norm or granularity differ",
            update.value_radius(),
            round.value_radius()
        )));
    }
    let radius = round.value_radius() as i64;
    let measurement: Vec<u64> = update
        .values()
        .iter()
        .map(|&z| {
            if z.abs() > radius {
                Err(SecAggError::Measurement(format!(
                    "value {z} is outside ±{radius}"
                )))
            } else {
                Ok((z + radius) as u64)
            }
        })
        .collect::<Result<_>>()?;
    drop(update);
    seal_measurement(round, &measurement, leader, helper, rng)
}

/// Shards one measurement of `task` and seals the leader's and the helper's shares to their
/// keys: the report. The measurement is the caller's to drop.
pub(crate) fn seal_measurement<T: Task, R: CryptoRng>(
    task: &T,
    measurement: &<T::Circuit as prio::flp::Type>::Measurement,
    leader: &HpkePublicKey,
    helper: &HpkePublicKey,
    rng: &mut R,
) -> Result<Report> {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let id = ReportId(id);
    let vdaf = task.vdaf()?;
    let (public_share, input_shares) = vdaf
        .shard(&task.context(), measurement, &id.0)
        .map_err(|e| SecAggError::Internal(format!("Prio3 shard: {e}")))?;
    let public_share = public_share
        .get_encoded()
        .map_err(|e| SecAggError::Internal(e.to_string()))?;
    let aad = share_aad(task, &id, &public_share);
    let mut sealed = Vec::with_capacity(2);
    for (role, share) in [Role::Leader, Role::Helper].into_iter().zip(&input_shares) {
        let plaintext = share
            .get_encoded()
            .map_err(|e| SecAggError::Internal(e.to_string()))?;
        sealed.push(seal(
            role_key(role, leader, helper),
            &share_info(role),
            &aad,
            &plaintext,
            rng,
        )?);
    }
    let helper_share = sealed.pop().expect("two shares");
    let leader_share = sealed.pop().expect("two shares");
    Ok(Report {
        id,
        public_share,
        leader_share,
        helper_share,
    })
}

fn role_key<'a>(
    role: Role,
    leader: &'a HpkePublicKey,
    helper: &'a HpkePublicKey,
) -> &'a HpkePublicKey {
    match role {
        Role::Leader => leader,
        Role::Helper => helper,
    }
}

impl Report {
    pub fn id(&self) -> ReportId {
        self.id
    }

    /// The upload's bytes: version, id, public share, leader ciphertext, helper ciphertext.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![REPORT_VERSION];
        out.extend_from_slice(&self.id.0);
        put_bytes(&mut out, &self.public_share);
        self.leader_share.encode(&mut out);
        self.helper_share.encode(&mut out);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut reader = Reader::new("report", bytes);
        let [version] = reader.fixed::<1>()?;
        if version != REPORT_VERSION {
            return Err(malformed(
                "report",
                format!("version {version}, expected {REPORT_VERSION}"),
            ));
        }
        let report = Self {
            id: ReportId(reader.fixed::<16>()?),
            public_share: reader.bytes()?.to_vec(),
            leader_share: HpkeCiphertext::decode(&mut reader)?,
            helper_share: HpkeCiphertext::decode(&mut reader)?,
        };
        reader.finish()?;
        Ok(report)
    }
}
