//! The aggregators' HPKE keys (RFC 9180: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM —
//! the suite DAP deployments use) and the sealed shares.

use hpke::aead::AesGcm128;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand_core::CryptoRng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::error::{malformed, Result, SecAggError};

type Kem = X25519HkdfSha256;
type PrivateKey = <Kem as hpke::Kem>::PrivateKey;
type PublicKey = <Kem as hpke::Kem>::PublicKey;
type EncappedKey = <Kem as hpke::Kem>::EncappedKey;

/// Bytes of an X25519 public key, private key and encapsulated key.
pub const KEY_LEN: usize = 32;

/// An aggregator's public key: what a device seals that aggregator's share to.
#[derive(Clone, PartialEq, Eq)]
pub struct HpkePublicKey {
    key: PublicKey,
    bytes: [u8; KEY_LEN],
}

impl HpkePublicKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let key = PublicKey::from_bytes(bytes).map_err(|e| malformed("HPKE public key", e))?;
        let bytes = bytes
            .try_into()
            .expect("an X25519 key parsed from 32 bytes");
        Ok(Self { key, bytes })
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    /// `sha256:` and the hex SHA-256 of the key's bytes: what a site's privacy team pins
    /// (`Ranker.create({ privacy: { helpers: [...] } })`) so that the leader cannot swap the
    /// helper for a party it controls.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", hex(&Sha256::digest(self.bytes)))
    }

    /// Hex of the key's bytes (its JSON form).
    pub fn to_hex(&self) -> String {
        hex(&self.bytes)
    }

    pub fn from_hex(text: &str) -> Result<Self> {
        Self::from_bytes(&unhex(text).ok_or_else(|| malformed("HPKE public key", "not hex"))?)
    }
}

impl std::fmt::Debug for HpkePublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HpkePublicKey({})", self.fingerprint())
    }
}

impl Serialize for HpkePublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for HpkePublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Self::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// An aggregator's key pair. Its private half never leaves that aggregator.
#[derive(Clone)]
pub struct HpkeKeyPair {
    private: PrivateKey,
    public: HpkePublicKey,
}

impl HpkeKeyPair {
    pub fn generate<R: CryptoRng>(rng: &mut R) -> Self {
        let (private, public) = Kem::gen_keypair_with_rng(rng);
        Self::from_parts(private, public)
    }

    /// The pair of a stored private key (32 bytes).
    pub fn from_private_bytes(bytes: &[u8]) -> Result<Self> {
        let private =
            PrivateKey::from_bytes(bytes).map_err(|e| malformed("HPKE private key", e))?;
        let public = Kem::sk_to_pk(&private);
        Ok(Self::from_parts(private, public))
    }

    fn from_parts(private: PrivateKey, public: PublicKey) -> Self {
        let bytes = public.to_bytes().into();
        Self {
            private,
            public: HpkePublicKey { key: public, bytes },
        }
    }

    /// The private key's bytes, to store it (the aggregator's own database or key file).
    pub fn private_bytes(&self) -> [u8; KEY_LEN] {
        self.private.to_bytes().into()
    }

    pub fn public(&self) -> &HpkePublicKey {
        &self.public
    }
}

impl std::fmt::Debug for HpkeKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HpkeKeyPair({})", self.public.fingerprint())
    }
}

/// One sealed share: the HPKE encapsulated key and the AEAD ciphertext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HpkeCiphertext {
    pub(crate) encapsulated_key: [u8; KEY_LEN],
    pub(crate) payload: Vec<u8>,
}

impl HpkeCiphertext {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.encapsulated_key);
        crate::codec::put_bytes(out, &self.payload);
    }

    pub(crate) fn decode(reader: &mut crate::codec::Reader<'_>) -> Result<Self> {
        Ok(Self {
            encapsulated_key: reader.fixed::<KEY_LEN>()?,
            payload: reader.bytes()?.to_vec(),
        })
    }
}

pub(crate) fn seal<R: CryptoRng>(
    recipient: &HpkePublicKey,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<HpkeCiphertext> {
    let (encapped, payload) = hpke::single_shot_seal_with_rng::<AesGcm128, HkdfSha256, Kem>(
        &OpModeS::Base,
        &recipient.key,
        info,
        plaintext,
        aad,
        rng,
    )
    .map_err(|e| SecAggError::Internal(format!("HPKE seal: {e}")))?;
    Ok(HpkeCiphertext {
        encapsulated_key: encapped.to_bytes().into(),
        payload,
    })
}

pub(crate) fn open(
    keys: &HpkeKeyPair,
    info: &[u8],
    aad: &[u8],
    sealed: &HpkeCiphertext,
    role: &'static str,
) -> Result<Vec<u8>> {
    let encapped = EncappedKey::from_bytes(&sealed.encapsulated_key)
        .map_err(|_| SecAggError::Decrypt { role })?;
    hpke::single_shot_open::<AesGcm128, HkdfSha256, Kem>(
        &OpModeR::Base,
        &keys.private,
        &encapped,
        info,
        &sealed.payload,
        aad,
    )
    .map_err(|_| SecAggError::Decrypt { role })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Lowercase or uppercase hex → bytes; `None` for anything else.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}
