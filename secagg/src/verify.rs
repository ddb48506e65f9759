//! The aggregators' side of one report: open their shares and check the validity proof together.
//!
//! One exchange, as DAP's aggregation job for a one-round VDAF: the leader opens its share and
//! sends the helper its verifier share with the helper's sealed share ([`HelperRequest`]); the
//! helper opens its share, combines both verifier shares into the verifier message, keeps its
//! output share if the proof holds and answers with the message ([`HelperResponse`]); the leader
//! finishes with it. Neither learns more than that the report is valid.

use prio::codec::{Encode, ParameterizedDecode};
use prio::field::Field64;
use prio::vdaf::prio3::{
    Prio3, Prio3InputShare, Prio3PublicShare, Prio3VerifierMessage, Prio3VerifierShare,
    Prio3VerifyState,
};
use prio::vdaf::xof::XofHmacSha256Aes128;
use prio::vdaf::{Aggregator, VerifyTransition};

use crate::codec::{put_bytes, Reader};
use crate::error::{malformed, Result, SecAggError};
use crate::keys::{open, HpkeCiphertext, HpkeKeyPair};
use crate::report::{share_aad, share_info, Report, ReportId, Role};
use crate::round::{Task, VerifyKey};

/// The Prio3 instance of a task.
type VdafOf<T> = Prio3<<T as Task>::Circuit, XofHmacSha256Aes128, 32>;

type VerifyState = Prio3VerifyState<Field64, 32>;

/// One aggregator's output share of one valid report: its additive share of `z + R`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputShare {
    pub(crate) id: ReportId,
    pub(crate) share: prio::vdaf::OutputShare<Field64>,
}

impl OutputShare {
    pub fn report_id(&self) -> ReportId {
        self.id
    }

    /// For an aggregator that keeps its output shares in its database until the batch is
    /// collected. On its own an output share is uniformly random: it says nothing of the report.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.id.0.to_vec();
        put_bytes(&mut out, &encoded(&self.share));
        out
    }

    pub fn from_bytes<T: Task>(round: &T, bytes: &[u8]) -> Result<Self> {
        let vdaf = round.vdaf()?;
        let mut reader = Reader::new("output share", bytes);
        let id = ReportId(reader.fixed::<16>()?);
        let share = prio::vdaf::OutputShare::<Field64>::get_decoded_with_param(
            &(&vdaf, &()),
            reader.bytes()?,
        )
        .map_err(|e| malformed("output share", e))?;
        reader.finish()?;
        if share.as_ref().len() != round.output_len() {
            return Err(malformed("output share", "wrong dimension"));
        }
        Ok(Self { id, share })
    }
}

/// The leader's state for a report between [`leader_init`] and [`leader_finish`].
#[derive(Debug, Clone)]
pub struct LeaderPending {
    id: ReportId,
    state: VerifyState,
}

impl LeaderPending {
    pub fn report_id(&self) -> ReportId {
        self.id
    }

    /// For a leader that keeps pending reports in its database while the helper answers.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.id.0.to_vec();
        put_bytes(&mut out, &encoded(&self.state));
        out
    }

    pub fn from_bytes<T: Task>(round: &T, bytes: &[u8]) -> Result<Self> {
        let vdaf = round.vdaf()?;
        let mut reader = Reader::new("leader state", bytes);
        let id = ReportId(reader.fixed::<16>()?);
        let state = VerifyState::get_decoded_with_param(&(&vdaf, 0), reader.bytes()?)
            .map_err(|e| malformed("leader state", e))?;
        reader.finish()?;
        Ok(Self { id, state })
    }
}

/// What the leader sends the helper for one report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperRequest {
    id: ReportId,
    public_share: Vec<u8>,
    helper_share: HpkeCiphertext,
    leader_verifier_share: Vec<u8>,
}

impl HelperRequest {
    pub fn report_id(&self) -> ReportId {
        self.id
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.id.0.to_vec();
        put_bytes(&mut out, &self.public_share);
        self.helper_share.encode(&mut out);
        put_bytes(&mut out, &self.leader_verifier_share);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut reader = Reader::new("helper request", bytes);
        let request = Self {
            id: ReportId(reader.fixed::<16>()?),
            public_share: reader.bytes()?.to_vec(),
            helper_share: HpkeCiphertext::decode(&mut reader)?,
            leader_verifier_share: reader.bytes()?.to_vec(),
        };
        reader.finish()?;
        Ok(request)
    }
}

/// The helper's answer for one valid report: the verifier message both finish with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelperResponse {
    id: ReportId,
    verifier_message: Vec<u8>,
}

impl HelperResponse {
    pub fn report_id(&self) -> ReportId {
        self.id
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.id.0.to_vec();
        put_bytes(&mut out, &self.verifier_message);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut reader = Reader::new("helper response", bytes);
        let response = Self {
            id: ReportId(reader.fixed::<16>()?),
            verifier_message: reader.bytes()?.to_vec(),
        };
        reader.finish()?;
        Ok(response)
    }
}

fn encoded<E: Encode>(value: &E) -> Vec<u8> {
    value
        .get_encoded()
        .expect("in-memory encoding of a VDAF message cannot fail")
}

/// One aggregator's part of a report: the report id, the public share and its sealed share.
struct SealedPart<'a> {
    id: &'a ReportId,
    public_share: &'a [u8],
    sealed: &'a HpkeCiphertext,
}

/// Opens `role`'s share of a report and starts verification: (state, verifier share).
fn init<T: Task>(
    vdaf: &VdafOf<T>,
    round: &T,
    verify_key: &VerifyKey,
    keys: &HpkeKeyPair,
    role: Role,
    part: SealedPart<'_>,
) -> Result<(VerifyState, Prio3VerifierShare<Field64, 32>)> {
    let SealedPart {
        id,
        public_share: public_share_bytes,
        sealed,
    } = part;
    let public_share = Prio3PublicShare::get_decoded_with_param(vdaf, public_share_bytes)
        .map_err(|e| malformed("public share", e))?;
    let aad = share_aad(round, id, public_share_bytes);
    let plaintext = open(keys, &share_info(role), &aad, sealed, role.name())?;
    let input_share =
        Prio3InputShare::get_decoded_with_param(&(vdaf, role.aggregator_id()), &plaintext)
            .map_err(|e| malformed("input share", e))?;
    vdaf.verify_init(
        &verify_key.0,
        &round.context(),
        role.aggregator_id(),
        &(),
        &id.0,
        &public_share,
        &input_share,
    )
    .map_err(|e| SecAggError::InvalidProof(e.to_string()))
}

fn finish<T: Task>(
    vdaf: &VdafOf<T>,
    round: &T,
    state: VerifyState,
    message: Prio3VerifierMessage<32>,
    id: ReportId,
) -> Result<OutputShare> {
    match vdaf.verify_next(&round.context(), state, message) {
        Ok(VerifyTransition::Finish(share)) => Ok(OutputShare { id, share }),
        Ok(VerifyTransition::Continue(..)) => Err(SecAggError::Internal(
            "Prio3 verification took more than one round".into(),
        )),
        Err(e) => Err(SecAggError::InvalidProof(e.to_string())),
    }
}

/// The leader opens its share of `report` and starts verification.
pub fn leader_init<T: Task>(
    round: &T,
    verify_key: &VerifyKey,
    leader_keys: &HpkeKeyPair,
    report: &Report,
) -> Result<(LeaderPending, HelperRequest)> {
    let vdaf = round.vdaf()?;
    let (state, verifier_share) = init(
        &vdaf,
        round,
        verify_key,
        leader_keys,
        Role::Leader,
        SealedPart {
            id: &report.id,
            public_share: &report.public_share,
            sealed: &report.leader_share,
        },
    )?;
    let request = HelperRequest {
        id: report.id,
        public_share: report.public_share.clone(),
        helper_share: report.helper_share.clone(),
        leader_verifier_share: encoded(&verifier_share),
    };
    Ok((
        LeaderPending {
            id: report.id,
            state,
        },
        request,
    ))
}

/// The helper opens its share, checks the proof with the leader's verifier share and, if it holds,
/// returns its output share and the message for the leader.
pub fn helper_verify<T: Task>(
    round: &T,
    verify_key: &VerifyKey,
    helper_keys: &HpkeKeyPair,
    request: &HelperRequest,
) -> Result<(OutputShare, HelperResponse)> {
    let vdaf = round.vdaf()?;
    let (state, helper_share) = init(
        &vdaf,
        round,
        verify_key,
        helper_keys,
        Role::Helper,
        SealedPart {
            id: &request.id,
            public_share: &request.public_share,
            sealed: &request.helper_share,
        },
    )?;
    let leader_share =
        Prio3VerifierShare::get_decoded_with_param(&state, &request.leader_verifier_share)
            .map_err(|e| malformed("leader verifier share", e))?;
    let message = vdaf
        .verifier_shares_to_message(&round.context(), &(), [leader_share, helper_share])
        .map_err(|e| SecAggError::InvalidProof(e.to_string()))?;
    let response = HelperResponse {
        id: request.id,
        verifier_message: encoded(&message),
    };
    let output = finish(&vdaf, round, state, message, request.id)?;
    Ok((output, response))
}

/// The leader finishes a report with the helper's message: its output share.
pub fn leader_finish<T: Task>(
    round: &T,
    pending: LeaderPending,
    response: &HelperResponse,
) -> Result<OutputShare> {
    if response.id != pending.id {
        return Err(malformed(
            "helper response",
            format!("for report {}, expected {}", response.id, pending.id),
        ));
    }
    let vdaf = round.vdaf()?;
    let message =
        Prio3VerifierMessage::get_decoded_with_param(&pending.state, &response.verifier_message)
            .map_err(|e| malformed("verifier message", e))?;
    finish(&vdaf, round, pending.state, message, pending.id)
}

/// What the leader learns from one report: the field elements of its decrypted input share
/// (measurement share and proof share), as integers. For audits of the leader's view
/// (`tests/secure_aggregation.rs` checks that it does not depend on the device's input).
pub fn leader_view<T: Task>(
    round: &T,
    leader_keys: &HpkeKeyPair,
    report: &Report,
) -> Result<Vec<u64>> {
    let vdaf = round.vdaf()?;
    let aad = share_aad(round, &report.id, &report.public_share);
    let plaintext = open(
        leader_keys,
        &share_info(Role::Leader),
        &aad,
        &report.leader_share,
        Role::Leader.name(),
    )?;
    match Prio3InputShare::<Field64, 32>::get_decoded_with_param(&(&vdaf, 0), &plaintext)
        .map_err(|e| malformed("input share", e))?
    {
        Prio3InputShare::Leader {
            measurement_share,
            proofs_share,
            ..
        } => Ok(measurement_share
            .iter()
            .chain(&proofs_share)
            .map(|&f| u64::from(f))
            .collect()),
        Prio3InputShare::Helper { .. } => Err(malformed("input share", "not the leader's")),
    }
}

#[cfg(test)]
mod tests {
    //! Malformed and malicious reports: each refused by the step that must catch it.
    use chacha20::rand_core::SeedableRng;
    use chacha20::ChaCha20Rng;
    use feedloop_privacy::{clip_to_lattice, PrivatizerConfig};
    use prio::field::FieldElement;

    use super::*;
    use crate::keys::seal;
    use crate::{seal_report, Batch, SecureRound};

    struct Fixture {
        round: SecureRound,
        config: PrivatizerConfig,
        leader: HpkeKeyPair,
        helper: HpkeKeyPair,
        verify_key: VerifyKey,
        rng: ChaCha20Rng,
    }

    fn fixture() -> Fixture {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let config = PrivatizerConfig::new(1.0, 1e-3, 4.0).unwrap();
        Fixture {
            round: SecureRound::for_privatizer(7, 24, &config, 1).unwrap(),
            config,
            leader: HpkeKeyPair::generate(&mut rng),
            helper: HpkeKeyPair::generate(&mut rng),
            verify_key: VerifyKey::generate(&mut rng),
            rng,
        }
    }

    fn report(f: &mut Fixture) -> Report {
        let update: Vec<f32> = (0..24).map(|i| (i as f32 - 12.0) / 30.0).collect();
        let lattice = clip_to_lattice(&update, &f.config, &mut f.rng).unwrap();
        seal_report(
            lattice,
            &f.round,
            f.leader.public(),
            f.helper.public(),
            &mut f.rng,
        )
        .unwrap()
    }

    fn run(f: &Fixture, report: &Report) -> Result<()> {
        let (pending, request) = leader_init(&f.round, &f.verify_key, &f.leader, report)?;
        let (_, response) = helper_verify(&f.round, &f.verify_key, &f.helper, &request)?;
        leader_finish(&f.round, pending, &response).map(|_| ())
    }

    /// Re-seals the leader's share after `tamper` changed its plaintext: a device that ignores
    /// the protocol (it holds both keys' public halves, so it can always do this).
    fn tampered_leader_share(
        f: &mut Fixture,
        report: &Report,
        tamper: impl FnOnce(&mut Vec<Field64>, &mut Vec<Field64>),
    ) -> Report {
        let vdaf = f.round.vdaf().unwrap();
        let aad = share_aad(&f.round, &report.id, &report.public_share);
        let info = share_info(Role::Leader);
        let plaintext = open(&f.leader, &info, &aad, &report.leader_share, "leader").unwrap();
        let Prio3InputShare::Leader {
            mut measurement_share,
            mut proofs_share,
            joint_rand_blind,
        } = Prio3InputShare::<Field64, 32>::get_decoded_with_param(&(&vdaf, 0), &plaintext)
            .unwrap()
        else {
            unreachable!()
        };
        tamper(&mut measurement_share, &mut proofs_share);
        let share = Prio3InputShare::Leader {
            measurement_share,
            proofs_share,
            joint_rand_blind,
        };
        let mut out = report.clone();
        out.leader_share =
            seal(f.leader.public(), &info, &aad, &encoded(&share), &mut f.rng).unwrap();
        out
    }

    #[test]
    fn honest_reports_verify() {
        let mut f = fixture();
        for _ in 0..20 {
            let r = report(&mut f);
            run(&f, &r).unwrap();
        }
    }

    #[test]
    fn a_changed_measurement_share_fails_the_proof() {
        let mut f = fixture();
        for position in [0usize, 5, 100] {
            let r = report(&mut f);
            let bad = tampered_leader_share(&mut f, &r, |m, _| m[position] += Field64::one());
            let err = run(&f, &bad).unwrap_err();
            assert!(matches!(err, SecAggError::InvalidProof(_)), "{err}");
        }
    }

    #[test]
    fn a_corrupted_proof_fails() {
        let mut f = fixture();
        let r = report(&mut f);
        let bad = tampered_leader_share(&mut f, &r, |_, p| p[3] += Field64::one());
        let err = run(&f, &bad).unwrap_err();
        assert!(matches!(err, SecAggError::InvalidProof(_)), "{err}");
    }

    #[test]
    fn a_wrong_length_share_is_malformed() {
        let mut f = fixture();
        let r = report(&mut f);
        let bad = tampered_leader_share(&mut f, &r, |m, _| {
            m.pop();
        });
        let err = run(&f, &bad).unwrap_err();
        assert!(matches!(err, SecAggError::Malformed { .. }), "{err}");
    }

    #[test]
    fn corrupted_ciphertexts_and_wrong_keys_do_not_open() {
        let mut f = fixture();
        let r = report(&mut f);
        let mut bad = r.clone();
        bad.leader_share.payload[10] ^= 1;
        assert_eq!(
            run(&f, &bad).unwrap_err(),
            SecAggError::Decrypt { role: "leader" }
        );
        let mut bad = r.clone();
        bad.helper_share.payload[0] ^= 0x80;
        assert_eq!(
            run(&f, &bad).unwrap_err(),
            SecAggError::Decrypt { role: "helper" }
        );
        // Sealed to another leader key.
        let other = HpkeKeyPair::generate(&mut f.rng);
        let lattice = clip_to_lattice(&[0.1f32; 24], &f.config, &mut f.rng).unwrap();
        let bad = seal_report(
            lattice,
            &f.round,
            other.public(),
            f.helper.public(),
            &mut f.rng,
        )
        .unwrap();
        assert_eq!(
            run(&f, &bad).unwrap_err(),
            SecAggError::Decrypt { role: "leader" }
        );
        // Moved into another round (the AAD binds round, id and public share).
        let mut moved = r.clone();
        moved.id.0[0] ^= 1;
        assert_eq!(
            run(&f, &moved).unwrap_err(),
            SecAggError::Decrypt { role: "leader" }
        );
        let other_round = SecureRound::new(8, 24, f.round.value_radius()).unwrap();
        assert!(leader_init(&other_round, &f.verify_key, &f.leader, &r).is_err());
    }

    #[test]
    fn a_helper_opens_no_share_sealed_under_other_privacy_terms() {
        // The leader told the device σ = 8 and a minimum of 100; the helper applies σ = 4 and 1.
        let mut f = fixture();
        let r = report(&mut f);
        let (_, request) = leader_init(&f.round, &f.verify_key, &f.leader, &r).unwrap();
        let told = PrivatizerConfig::new(1.0, 1e-3, 8.0).unwrap();
        for (config, min) in [(&told, 1), (&f.config, 100)] {
            let helper_round = SecureRound::for_privatizer(7, 24, config, min).unwrap();
            assert_eq!(
                helper_verify(&helper_round, &f.verify_key, &f.helper, &request).unwrap_err(),
                SecAggError::Decrypt { role: "helper" }
            );
        }
    }

    #[test]
    fn an_output_share_round_trips_through_its_bytes() {
        let mut f = fixture();
        let r = report(&mut f);
        let (pending, request) = leader_init(&f.round, &f.verify_key, &f.leader, &r).unwrap();
        let (helper_share, response) =
            helper_verify(&f.round, &f.verify_key, &f.helper, &request).unwrap();
        let leader_share = leader_finish(&f.round, pending, &response).unwrap();
        for share in [leader_share, helper_share] {
            let back = OutputShare::from_bytes(&f.round, &share.to_bytes()).unwrap();
            assert_eq!(back, share);
        }
        let narrow = SecureRound::new(7, 23, f.round.value_radius()).unwrap();
        let bytes = OutputShare::from_bytes(&f.round, &r.to_bytes()[..10]);
        assert!(bytes.is_err());
        let share = leader_finish(
            &f.round,
            leader_init(&f.round, &f.verify_key, &f.leader, &r)
                .unwrap()
                .0,
            &response,
        )
        .unwrap();
        assert!(OutputShare::from_bytes(&narrow, &share.to_bytes()).is_err());
    }

    #[test]
    fn truncated_and_trailing_bytes_are_malformed() {
        let mut f = fixture();
        let bytes = report(&mut f).to_bytes();
        for cut in [0, 1, 17, bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(
                Report::from_bytes(&bytes[..cut]).unwrap_err(),
                SecAggError::Malformed { .. }
            ));
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Report::from_bytes(&longer).is_err());
        let mut version = bytes;
        version[0] = 9;
        assert!(Report::from_bytes(&version).is_err());
    }

    #[test]
    fn the_device_refuses_an_update_of_another_shape() {
        let mut f = fixture();
        let lattice = clip_to_lattice(&[0.1f32; 23], &f.config, &mut f.rng).unwrap();
        let err = seal_report(
            lattice,
            &f.round,
            f.leader.public(),
            f.helper.public(),
            &mut f.rng,
        )
        .unwrap_err();
        assert!(matches!(err, SecAggError::Measurement(_)), "{err}");
        // A round whose R is below what the device's rounding allows.
        let narrow = SecureRound::new(7, 24, 10).unwrap();
        let lattice = clip_to_lattice(&[0.1f32; 24], &f.config, &mut f.rng).unwrap();
        let err = seal_report(
            lattice,
            &narrow,
            f.leader.public(),
            f.helper.public(),
            &mut f.rng,
        )
        .unwrap_err();
        assert!(matches!(err, SecAggError::Measurement(_)), "{err}");
    }

    #[test]
    fn shares_survive_their_encodings() {
        let mut f = fixture();
        let r = report(&mut f);
        let (pending, request) = leader_init(&f.round, &f.verify_key, &f.leader, &r).unwrap();
        let pending = LeaderPending::from_bytes(&f.round, &pending.to_bytes()).unwrap();
        let (helper_out, response) =
            helper_verify(&f.round, &f.verify_key, &f.helper, &request).unwrap();
        let leader_out = leader_finish(&f.round, pending, &response).unwrap();
        let mut leader = Batch::new(f.round).unwrap();
        leader.add(leader_out).unwrap();
        let mut helper = Batch::new(f.round).unwrap();
        helper.add(helper_out).unwrap();
        let share = leader.aggregate_share();
        let again = crate::AggregateShare::from_bytes(&f.round, &share.to_bytes()).unwrap();
        assert_eq!(share, again);
        let released = helper.release(1, None, &mut f.rng).unwrap();
        let again = crate::NoisyAggregateShare::from_bytes(&f.round, &released.to_bytes()).unwrap();
        assert_eq!(released, again);
    }
}
