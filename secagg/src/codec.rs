//! Length-prefixed byte strings for the envelopes ([`crate::Report`], the aggregator messages).
//! The VDAF's own messages are encoded by `prio`'s codec inside them.

use crate::error::{malformed, Result};

pub(crate) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("messages are far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
}

pub(crate) struct Reader<'a> {
    what: &'static str,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Self { what, rest: bytes }
    }

    pub(crate) fn fixed<const N: usize>(&mut self) -> Result<[u8; N]> {
        if self.rest.len() < N {
            return Err(malformed(self.what, "truncated"));
        }
        let (head, rest) = self.rest.split_at(N);
        self.rest = rest;
        Ok(head.try_into().expect("split at N"))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = u32::from_be_bytes(self.fixed::<4>()?) as usize;
        if self.rest.len() < len {
            return Err(malformed(self.what, "truncated"));
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(head)
    }

    pub(crate) fn finish(self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(malformed(
                self.what,
                format!("{} trailing bytes", self.rest.len()),
            ))
        }
    }
}
