//! Minimal DER reader: classifies key containers (PKCS#8, PKCS#1, SEC1, SPKI, ...) by shape only.

pub(super) const INTEGER: u8 = 0x02;
pub(super) const BIT_STRING: u8 = 0x03;
pub(super) const OCTET_STRING: u8 = 0x04;
pub(super) const OID: u8 = 0x06;
pub(super) const SEQUENCE: u8 = 0x30;
pub(super) const CONTEXT_0: u8 = 0xa0;

pub(super) const OID_RSA_ENCRYPTION: &[u8] =
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_RSASSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
pub(super) const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_DSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x38, 0x04, 0x01];
const OID_X25519: &[u8] = &[0x2b, 0x65, 0x6e];
const OID_X448: &[u8] = &[0x2b, 0x65, 0x6f];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_ED448: &[u8] = &[0x2b, 0x65, 0x71];
const OID_SM2: &[u8] = &[0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const OID_SECP256K1: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x0a];

/// One DER element: tag byte and contents. The contents can be key material, so `Debug`
/// shows only the tag and the length.
#[derive(Clone, Copy)]
pub(super) struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
}

impl std::fmt::Debug for Tlv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tlv")
            .field("tag", &format_args!("{:#04x}", self.tag))
            .field("len", &self.value.len())
            .finish()
    }
}

/// Reads one element (single-byte tag, definite length) and returns it with the remaining input.
pub(super) fn read_tlv(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (len_bytes, rest) = rest.split_at(n);
        let len = len_bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (value, rest) = rest.split_at(len);
    Some((Tlv { tag, value }, rest))
}

/// Parses exactly one element spanning all of `input`.
pub(super) fn single(input: &[u8]) -> Option<Tlv<'_>> {
    let (tlv, rest) = read_tlv(input)?;
    rest.is_empty().then_some(tlv)
}

/// Splits constructed contents into their elements.
pub(super) fn children(mut value: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    while !value.is_empty() {
        let (tlv, rest) = read_tlv(value)?;
        out.push(tlv);
        value = rest;
    }
    Some(out)
}

/// Bit length of a DER INTEGER's contents read as unsigned.
pub(super) fn unsigned_bit_len(integer: &[u8]) -> usize {
    let trimmed = match integer.iter().position(|b| *b != 0) {
        Some(start) => &integer[start..],
        None => return 0,
    };
    (trimmed.len() - 1) * 8 + (8 - trimmed[0].leading_zeros() as usize)
}

/// Renders OID contents in dotted form (for messages; OIDs are public identifiers).
pub(super) fn oid_to_string(oid: &[u8]) -> String {
    let mut arcs: Vec<u128> = Vec::new();
    let mut acc: u128 = 0;
    for b in oid {
        acc = (acc << 7) | u128::from(b & 0x7f);
        if b & 0x80 == 0 {
            arcs.push(acc);
            acc = 0;
        }
        if arcs.len() > 32 || acc > u128::from(u64::MAX) {
            return "(malformed OID)".to_string();
        }
    }
    let Some(first) = arcs.first().copied() else {
        return "(empty OID)".to_string();
    };
    let (a, b) = if first < 40 {
        (0, first)
    } else if first < 80 {
        (1, first - 40)
    } else {
        (2, first - 80)
    };
    let mut s = format!("{a}.{b}");
    for arc in &arcs[1..] {
        s.push('.');
        s.push_str(&arc.to_string());
    }
    s
}

/// A named curve KMS supports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Curve {
    P256,
    P384,
    P521,
    Secp256k1,
}

impl Curve {
    pub(super) fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
            Curve::Secp256k1 => "secp256k1",
        }
    }

    pub(super) fn oid(self) -> &'static [u8] {
        match self {
            Curve::P256 => OID_P256,
            Curve::P384 => OID_P384,
            Curve::P521 => OID_P521,
            Curve::Secp256k1 => OID_SECP256K1,
        }
    }

    fn from_oid(oid: &[u8]) -> Option<Curve> {
        [Curve::P256, Curve::P384, Curve::P521, Curve::Secp256k1]
            .into_iter()
            .find(|c| c.oid() == oid)
    }
}

/// What an EC key says about its curve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum CurveParam {
    Named(Curve),
    /// A named curve KMS does not support (dotted OID).
    OtherNamed(String),
    /// Explicit (specifiedCurve) parameters instead of a name.
    Explicit,
    /// No parameters (allowed in SEC1 `ECPrivateKey`).
    Absent,
}

impl CurveParam {
    fn from_params(params: Option<&Tlv<'_>>) -> CurveParam {
        match params {
            None => CurveParam::Absent,
            Some(t) if t.tag == OID => match Curve::from_oid(t.value) {
                Some(c) => CurveParam::Named(c),
                None => CurveParam::OtherNamed(oid_to_string(t.value)),
            },
            Some(t) if t.tag == 0x05 => CurveParam::Absent,
            Some(_) => CurveParam::Explicit,
        }
    }

    /// Human description for errors.
    pub(super) fn describe(&self) -> String {
        match self {
            CurveParam::Named(c) => c.name().to_string(),
            CurveParam::OtherNamed(oid) => format!("the unsupported curve with OID {oid}"),
            CurveParam::Explicit => "explicit curve parameters (not a named curve)".to_string(),
            CurveParam::Absent => "an unnamed curve".to_string(),
        }
    }
}

/// The algorithm of a PKCS#8 key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Pkcs8Algorithm {
    Rsa {
        modulus_bits: Option<usize>,
    },
    Ec(CurveParam),
    /// Anything else: a display name such as `Ed25519` or a dotted OID.
    Other(String),
}

/// The shape of a DER key object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Container {
    /// PKCS#8 `PrivateKeyInfo` / `OneAsymmetricKey`.
    Pkcs8(Pkcs8Algorithm),
    /// PKCS#1 `RSAPrivateKey`.
    Pkcs1 { modulus_bits: usize },
    /// SEC1 / RFC 5915 `ECPrivateKey`.
    Sec1(CurveParam),
    /// PKCS#8 `EncryptedPrivateKeyInfo`.
    EncryptedPkcs8,
    /// `SubjectPublicKeyInfo` or PKCS#1 `RSAPublicKey`.
    PublicKey,
    /// X.509 certificate (or another signed structure of that shape).
    Certificate,
}

fn other_algorithm_name(oid: &[u8]) -> String {
    let known = [
        (OID_DSA, "DSA"),
        (OID_X25519, "X25519"),
        (OID_X448, "X448"),
        (OID_ED25519, "Ed25519"),
        (OID_ED448, "Ed448"),
        (OID_SM2, "SM2"),
        (OID_RSASSA_PSS, "RSASSA-PSS (PSS-restricted RSA)"),
    ];
    known
        .iter()
        .find(|(o, _)| *o == oid)
        .map(|(_, n)| (*n).to_string())
        .unwrap_or_else(|| format!("algorithm OID {}", oid_to_string(oid)))
}

/// Modulus size of a PKCS#1 `RSAPrivateKey`, if `der` is one.
fn pkcs1_private_modulus_bits(der: &[u8]) -> Option<usize> {
    let seq = single(der)?;
    if seq.tag != SEQUENCE {
        return None;
    }
    let items = children(seq.value)?;
    if items.len() < 9 || items.iter().take(9).any(|t| t.tag != INTEGER) {
        return None;
    }
    Some(unsigned_bit_len(items[1].value))
}

/// Classifies a DER object by its structure; `None` if it is no key object we know.
pub(super) fn classify(der: &[u8]) -> Option<Container> {
    let seq = single(der)?;
    if seq.tag != SEQUENCE {
        return None;
    }
    let items = children(seq.value)?;
    let first = items.first()?;
    match first.tag {
        INTEGER => {
            // PKCS#8: version, AlgorithmIdentifier, OCTET STRING privateKey, ...
            if items.len() >= 3 && items[1].tag == SEQUENCE && items[2].tag == OCTET_STRING {
                let alg = children(items[1].value)?;
                let oid = alg.first().filter(|t| t.tag == OID)?;
                let algorithm = if oid.value == OID_RSA_ENCRYPTION {
                    Pkcs8Algorithm::Rsa {
                        modulus_bits: pkcs1_private_modulus_bits(items[2].value),
                    }
                } else if oid.value == OID_EC_PUBLIC_KEY {
                    Pkcs8Algorithm::Ec(CurveParam::from_params(alg.get(1)))
                } else {
                    Pkcs8Algorithm::Other(other_algorithm_name(oid.value))
                };
                return Some(Container::Pkcs8(algorithm));
            }
            // SEC1: version 1, OCTET STRING privateKey, [0] parameters OPTIONAL, [1] publicKey OPTIONAL
            if items.len() >= 2 && first.value == [1] && items[1].tag == OCTET_STRING {
                let params = items
                    .iter()
                    .skip(2)
                    .find(|t| t.tag == CONTEXT_0)
                    .and_then(|t| single(t.value));
                return Some(Container::Sec1(CurveParam::from_params(params.as_ref())));
            }
            // PKCS#1 RSAPrivateKey: version, n, e, d, p, q, dp, dq, qinv
            if items.len() >= 9 && items.iter().take(9).all(|t| t.tag == INTEGER) {
                return Some(Container::Pkcs1 {
                    modulus_bits: unsigned_bit_len(items[1].value),
                });
            }
            // PKCS#1 RSAPublicKey: n, e
            if items.len() == 2 && items[1].tag == INTEGER {
                return Some(Container::PublicKey);
            }
            None
        }
        SEQUENCE => {
            let starts_with_oid = |t: &Tlv<'_>| {
                children(t.value).is_some_and(|c| c.first().is_some_and(|o| o.tag == OID))
            };
            if items.len() == 2 && starts_with_oid(first) {
                return match items[1].tag {
                    BIT_STRING => Some(Container::PublicKey),
                    OCTET_STRING => Some(Container::EncryptedPkcs8),
                    _ => None,
                };
            }
            if items.len() == 3
                && items[1].tag == SEQUENCE
                && items[2].tag == BIT_STRING
                && starts_with_oid(&items[1])
            {
                return Some(Container::Certificate);
            }
            None
        }
        _ => None,
    }
}

/// The `privateKey` OCTET STRING contents of a PKCS#8 `PrivateKeyInfo` (the PKCS#1 key for RSA).
#[cfg(any(test, fuzzing))]
pub(super) fn pkcs8_inner_key(der: &[u8]) -> Option<&[u8]> {
    let seq = single(der)?;
    let items = children(seq.value)?;
    items
        .get(2)
        .filter(|t| t.tag == OCTET_STRING && items[0].tag == INTEGER)
        .map(|t| t.value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_rendering_and_bit_lengths() {
        assert_eq!(oid_to_string(OID_RSA_ENCRYPTION), "1.2.840.113549.1.1.1");
        assert_eq!(oid_to_string(OID_P384), "1.3.132.0.34");
        assert_eq!(oid_to_string(OID_ED25519), "1.3.101.112");
        assert_eq!(unsigned_bit_len(&[0x00, 0x80, 0x00]), 16);
        assert_eq!(unsigned_bit_len(&[0x01]), 1);
        assert_eq!(unsigned_bit_len(&[0x00]), 0);
    }

    #[test]
    fn truncated_and_overlong_lengths_are_rejected() {
        assert!(read_tlv(&[0x30, 0x05, 0x02, 0x01]).is_none());
        assert!(read_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(single(&[0x02, 0x01, 0x00, 0x00]).is_none());
        assert!(classify(b"\x30\x03\x02\x01\x00").is_none());
    }
}
