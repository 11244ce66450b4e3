//! DER `SubjectPublicKeyInfo` from PKCS#11 attributes, and RSA components from KMS's wrapping key.

use crate::material::der::{
    self, BIT_STRING, Curve, INTEGER, OCTET_STRING, OID, OID_EC_PUBLIC_KEY, OID_RSA_ENCRYPTION,
    SEQUENCE,
};

/// DER NULL (the parameters of rsaEncryption).
const NULL: &[u8] = &[0x05, 0x00];

/// One DER element with a definite length.
fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = contents.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(contents);
    out
}

/// A DER INTEGER of the unsigned big-endian `value` (CKA_MODULUS, CKA_PUBLIC_EXPONENT).
fn unsigned_integer(value: &[u8]) -> Vec<u8> {
    let trimmed: &[u8] = match value.iter().position(|b| *b != 0) {
        Some(i) => &value[i..],
        None => &[0],
    };
    let mut contents = Vec::with_capacity(trimmed.len() + 1);
    if trimmed[0] & 0x80 != 0 {
        contents.push(0);
    }
    contents.extend_from_slice(trimmed);
    tlv(INTEGER, &contents)
}

fn bit_string(contents: &[u8]) -> Vec<u8> {
    let mut with_unused_bits = Vec::with_capacity(contents.len() + 1);
    with_unused_bits.push(0);
    with_unused_bits.extend_from_slice(contents);
    tlv(BIT_STRING, &with_unused_bits)
}

/// The SPKI of an RSA public key: what KMS `GetPublicKey` returns for an RSA key.
pub(super) fn rsa_spki(modulus: &[u8], public_exponent: &[u8]) -> Vec<u8> {
    let algorithm = tlv(
        SEQUENCE,
        &[tlv(OID, OID_RSA_ENCRYPTION), NULL.to_vec()].concat(),
    );
    let key = tlv(
        SEQUENCE,
        &[unsigned_integer(modulus), unsigned_integer(public_exponent)].concat(),
    );
    tlv(SEQUENCE, &[algorithm, bit_string(&key)].concat())
}

/// The SPKI of an EC public key on a named curve (uncompressed point).
pub(super) fn ec_spki(curve: Curve, point: &[u8]) -> Vec<u8> {
    let algorithm = tlv(
        SEQUENCE,
        &[tlv(OID, OID_EC_PUBLIC_KEY), tlv(OID, curve.oid())].concat(),
    );
    tlv(SEQUENCE, &[algorithm, bit_string(point)].concat())
}

/// CKA_EC_PARAMS of a named curve: the DER OID.
pub(super) fn ec_params(curve: Curve) -> Vec<u8> {
    tlv(OID, curve.oid())
}

/// Length of an uncompressed point (0x04 || X || Y) on `curve`.
fn point_len(curve: Curve) -> usize {
    match curve {
        Curve::P256 | Curve::Secp256k1 => 65,
        Curve::P384 => 97,
        Curve::P521 => 133,
    }
}

/// The uncompressed point from CKA_EC_POINT, which PKCS#11 defines as a DER OCTET STRING
/// (some tokens return the raw point instead; both are accepted).
pub(super) fn ec_point(curve: Curve, attribute: &[u8]) -> Option<Vec<u8>> {
    let expected = point_len(curve);
    if let Some(tlv) = der::single(attribute)
        && tlv.tag == OCTET_STRING
        && tlv.value.len() == expected
        && tlv.value[0] == 0x04
    {
        return Some(tlv.value.to_vec());
    }
    (attribute.len() == expected && attribute[0] == 0x04).then(|| attribute.to_vec())
}

/// Modulus and public exponent (unsigned big-endian) of an RSA SPKI such as the wrapping key
/// from `GetParametersForImport`; `None` if `spki` is not one.
pub(super) fn rsa_components(spki: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let outer = der::single(spki).filter(|t| t.tag == SEQUENCE)?;
    let parts = der::children(outer.value)?;
    let [algorithm, key] = parts.as_slice() else {
        return None;
    };
    let algorithm = der::children(algorithm.value)?;
    if algorithm.first()?.tag != OID || algorithm.first()?.value != OID_RSA_ENCRYPTION {
        return None;
    }
    if key.tag != BIT_STRING || key.value.first() != Some(&0) {
        return None;
    }
    let rsa_key = der::single(&key.value[1..]).filter(|t| t.tag == SEQUENCE)?;
    let numbers = der::children(rsa_key.value)?;
    let [n, e] = numbers.as_slice() else {
        return None;
    };
    if n.tag != INTEGER || e.tag != INTEGER {
        return None;
    }
    let strip = |v: &[u8]| {
        v.iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<u8>>()
    };
    Some((strip(n.value), strip(e.value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};

    #[test]
    fn an_rsa_spki_rebuilt_from_its_components_is_byte_identical() {
        let key = PrivateDecryptingKey::generate(KeySize::Rsa2048).expect("RSA key generation");
        let spki = key.public_key().as_der().expect("SPKI").as_ref().to_vec();
        let (n, e) = rsa_components(&spki).expect("an RSA SPKI");
        assert_eq!(n.len(), 256);
        assert_eq!(e, vec![0x01, 0x00, 0x01]);
        assert_eq!(rsa_spki(&n, &e), spki);
    }

    #[test]
    fn an_ec_spki_matches_aws_lc() {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
        let key = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).expect("EC key");
        let point = key.public_key().as_ref().to_vec();
        let spki = key.public_key().as_der().expect("SPKI").as_ref().to_vec();
        let wrapped = tlv(OCTET_STRING, &point);
        assert_eq!(ec_point(Curve::P256, &wrapped).as_deref(), Some(&point[..]));
        assert_eq!(ec_point(Curve::P256, &point).as_deref(), Some(&point[..]));
        assert_eq!(ec_spki(Curve::P256, &point), spki);
    }

    #[test]
    fn non_rsa_input_has_no_components() {
        assert_eq!(rsa_components(b"not der"), None);
        assert_eq!(rsa_components(&ec_spki(Curve::P256, &[4; 65])), None);
    }
}
