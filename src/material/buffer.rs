//! [`SecretBytes`]: the zeroized buffer every decoded Secret byte lives in; its `Debug` shows only the length.

use std::fmt;
use std::ops::{Deref, DerefMut};
use zeroize::Zeroizing;

/// A zeroized byte buffer for decoded material (base64/hex output, PEM bodies, DER).
///
/// It never reallocates in place: growing copies into a new buffer and zeroizes the old one,
/// so no stray copy of material is left in freed memory. `Debug` prints the length only.
pub(crate) struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// An empty buffer that can hold `capacity` bytes without growing.
    pub(crate) fn with_capacity(capacity: usize) -> SecretBytes {
        work::reserved(capacity);
        SecretBytes(Zeroizing::new(Vec::with_capacity(capacity)))
    }

    /// `len` zero bytes (an output buffer for a decoder).
    pub(crate) fn zeroed(len: usize) -> SecretBytes {
        work::reserved(len);
        SecretBytes(Zeroizing::new(vec![0u8; len]))
    }

    /// A copy of `bytes`.
    pub(crate) fn copy_of(bytes: &[u8]) -> SecretBytes {
        let mut out = SecretBytes::with_capacity(bytes.len());
        out.0.extend_from_slice(bytes);
        out
    }

    /// Grows (by copying into a new buffer, the old one zeroized) so that `extra` more bytes fit.
    fn make_room(&mut self, extra: usize) {
        if self.0.len() + extra > self.0.capacity() {
            let mut grown = SecretBytes::with_capacity((self.0.len() + extra).max(64) * 2);
            grown.0.extend_from_slice(&self.0);
            *self = grown;
        }
    }

    /// Appends the bytes of `part` that are not ASCII whitespace.
    pub(crate) fn extend_compact(&mut self, part: &[u8]) {
        self.make_room(part.len());
        self.0
            .extend(part.iter().copied().filter(|b| !b.is_ascii_whitespace()));
    }

    /// Appends `part` as it is.
    pub(crate) fn extend_from(&mut self, part: &[u8]) {
        self.make_room(part.len());
        self.0.extend_from_slice(part);
    }

    /// Shortens the buffer to `len` bytes (the rest is zeroized when the buffer is dropped).
    pub(crate) fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }

    /// The bytes as the zeroizing vector [`super::KeyMaterial`] keeps.
    pub(crate) fn into_zeroizing(self) -> Zeroizing<Vec<u8>> {
        self.0
    }
}

impl Deref for SecretBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for SecretBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretBytes")
            .field("len", &self.0.len())
            .finish()
    }
}

/// Test builds count the bytes every [`SecretBytes`] reserves (and zeroizes when dropped), so
/// tests can show that parsing work is bounded by the input rather than time it.
#[cfg(test)]
pub(crate) mod work {
    use std::cell::Cell;

    thread_local! {
        static RESERVED: Cell<usize> = const { Cell::new(0) };
    }

    pub(crate) fn reserved(bytes: usize) {
        RESERVED.with(|r| r.set(r.get().saturating_add(bytes)));
    }

    /// Bytes reserved on this thread since the last call (and resets the count).
    pub(crate) fn take_reserved() -> usize {
        RESERVED.with(|r| r.replace(0))
    }
}

#[cfg(not(test))]
mod work {
    #[inline(always)]
    pub(super) fn reserved(_bytes: usize) {}
}
