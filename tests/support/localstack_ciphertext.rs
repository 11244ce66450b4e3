//! Opens a LocalStack KMS ciphertext with the key material itself, outside KMS: proof that KMS
//! encrypts with exactly the bytes a Secret holds. LocalStack's blob is the key id (36 bytes),
//! a 16-byte IV, the 16-byte GCM tag and AES-256-GCM ciphertext of the padded plaintext (the
//! last byte says how many bytes of padding), with the encryption context's keys and values
//! concatenated as additional data. aws-lc-rs's AEAD takes 12-byte nonces only, so the GCM
//! counter block of the 16-byte IV is derived here (GHASH, NIST SP 800-38D §7.1) and the
//! ciphertext decrypted with AES-CTR from there.

use aws_lc_rs::cipher::{
    AES_256, DecryptingKey, DecryptionContext, EncryptingKey, UnboundCipherKey,
};
use aws_lc_rs::iv::FixedLength;

/// Multiplication in GF(2^128) with GCM's bit order.
fn gf_mul(x: u128, y: u128) -> u128 {
    let mut z = 0u128;
    let mut v = y;
    for i in 0..128 {
        if (x >> (127 - i)) & 1 == 1 {
            z ^= v;
        }
        let carry = v & 1;
        v >>= 1;
        if carry == 1 {
            v ^= 0xE1 << 120;
        }
    }
    z
}

/// The plaintext of a LocalStack ciphertext `blob` under the 32-byte `key`, or None when the
/// key does not open it (the padding does not read back).
pub fn open(key: &[u8], blob: &[u8]) -> Option<Vec<u8>> {
    assert!(
        blob.len() > 68,
        "a LocalStack ciphertext is longer than its header"
    );
    let (iv, ciphertext) = (&blob[36..52], &blob[68..]);
    // H = AES_K(0^128); J0 = GHASH_H(IV || 0^64 || [len(IV)]_64).
    let mut h = [0u8; 16];
    EncryptingKey::ecb(UnboundCipherKey::new(&AES_256, key).ok()?)
        .ok()?
        .encrypt(&mut h)
        .ok()?;
    let h = u128::from_be_bytes(h);
    let iv_block = u128::from_be_bytes(iv.try_into().ok()?);
    let j0 = gf_mul(gf_mul(iv_block, h) ^ 128, h);
    // Encryption starts at inc32(J0).
    let counter = (j0 & !0xFFFF_FFFF) | u128::from((j0 as u32).wrapping_add(1));
    let mut plain = ciphertext.to_vec();
    DecryptingKey::ctr(UnboundCipherKey::new(&AES_256, key).ok()?)
        .ok()?
        .decrypt(
            &mut plain,
            DecryptionContext::Iv128(FixedLength::from(counter.to_be_bytes())),
        )
        .ok()?;
    let pad = usize::from(*plain.last()?);
    if pad == 0
        || pad > 16
        || pad > plain.len()
        || !plain[plain.len() - pad..]
            .iter()
            .all(|b| usize::from(*b) == pad)
    {
        return None;
    }
    plain.truncate(plain.len() - pad);
    Some(plain)
}
