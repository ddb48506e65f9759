//! The product randomness source: ChaCha20 keyed from the operating system.
//!
//! In browsers `getrandom` reads `crypto.getRandomValues`; natively it reads the
//! kernel CSPRNG. Seeded generators are for tests only: the library's sampling
//! functions take any `rand_core::Rng`, and the privatizer demands `CryptoRng`.

use core::convert::Infallible;

use chacha20::ChaCha20Rng;
use rand_core::{SeedableRng, TryCryptoRng, TryRng};

use crate::error::{PrivacyError, Result};

/// ChaCha20 with a fresh 256-bit key from the OS for every instance.
///
/// Why a stream cipher instead of calling the OS for every word: a discrete
/// Gaussian sample consumes ~20 words, and a JS round trip per word would cost
/// far more than the sampling itself.
pub struct OsCsprng(ChaCha20Rng);

impl OsCsprng {
    /// Keys a new generator from OS randomness.
    pub fn new() -> Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| PrivacyError::RandomnessUnavailable(e.to_string()))?;
        Ok(Self(ChaCha20Rng::from_seed(seed)))
    }
}

impl core::fmt::Debug for OsCsprng {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("OsCsprng(..)") // never print key material
    }
}

impl TryRng for OsCsprng {
    type Error = Infallible;

    #[inline]
    fn try_next_u32(&mut self) -> core::result::Result<u32, Infallible> {
        self.0.try_next_u32()
    }

    #[inline]
    fn try_next_u64(&mut self) -> core::result::Result<u64, Infallible> {
        self.0.try_next_u64()
    }

    #[inline]
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> core::result::Result<(), Infallible> {
        self.0.try_fill_bytes(dst)
    }
}

impl TryCryptoRng for OsCsprng {}
