//! PEM (RFC 7468) reading and writing with zeroized buffers, and selection of the private key block.

use super::MaterialError;
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use zeroize::Zeroizing;

/// The kinds of PEM block we recognise (labels are not kept, so nothing user-supplied leaks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PemKind {
    /// `PRIVATE KEY` (PKCS#8).
    PrivateKey,
    /// `RSA PRIVATE KEY` (PKCS#1).
    RsaPrivateKey,
    /// `EC PRIVATE KEY` (SEC1).
    EcPrivateKey,
    /// `ENCRYPTED PRIVATE KEY` (PKCS#8 `EncryptedPrivateKeyInfo`).
    EncryptedPrivateKey,
    /// `OPENSSH PRIVATE KEY`.
    OpensshPrivateKey,
    /// `DSA PRIVATE KEY`.
    DsaPrivateKey,
    /// `PUBLIC KEY`, `RSA PUBLIC KEY`, `EC PUBLIC KEY`.
    PublicKey,
    /// `CERTIFICATE`, `TRUSTED CERTIFICATE`, `X509 CERTIFICATE`.
    Certificate,
    /// `CERTIFICATE REQUEST`, `NEW CERTIFICATE REQUEST`.
    CertificateRequest,
    /// `EC PARAMETERS` (emitted by `openssl ecparam -genkey` before the key; ignored).
    EcParameters,
    /// Any other label.
    Other,
}

impl PemKind {
    fn from_label(label: &[u8]) -> PemKind {
        match label {
            b"PRIVATE KEY" => PemKind::PrivateKey,
            b"RSA PRIVATE KEY" => PemKind::RsaPrivateKey,
            b"EC PRIVATE KEY" => PemKind::EcPrivateKey,
            b"ENCRYPTED PRIVATE KEY" => PemKind::EncryptedPrivateKey,
            b"OPENSSH PRIVATE KEY" => PemKind::OpensshPrivateKey,
            b"DSA PRIVATE KEY" => PemKind::DsaPrivateKey,
            b"PUBLIC KEY" | b"RSA PUBLIC KEY" | b"EC PUBLIC KEY" => PemKind::PublicKey,
            b"CERTIFICATE" | b"TRUSTED CERTIFICATE" | b"X509 CERTIFICATE" => PemKind::Certificate,
            b"CERTIFICATE REQUEST" | b"NEW CERTIFICATE REQUEST" => PemKind::CertificateRequest,
            b"EC PARAMETERS" => PemKind::EcParameters,
            _ => PemKind::Other,
        }
    }

    fn is_private_key(self) -> bool {
        matches!(
            self,
            PemKind::PrivateKey
                | PemKind::RsaPrivateKey
                | PemKind::EcPrivateKey
                | PemKind::EncryptedPrivateKey
                | PemKind::OpensshPrivateKey
                | PemKind::DsaPrivateKey
        )
    }
}

/// One decoded PEM block.
pub(super) struct PemBlock {
    pub kind: PemKind,
    /// RFC 1421 `Proc-Type: 4,ENCRYPTED` header (legacy OpenSSL encryption).
    pub legacy_encrypted: bool,
    pub der: Zeroizing<Vec<u8>>,
}

fn unparseable(detail: &str) -> MaterialError {
    MaterialError::Unparseable {
        detail: detail.to_string(),
    }
}

/// Whether `input` looks like PEM text (a `-----BEGIN ` line anywhere).
pub(super) fn looks_like_pem(input: &[u8]) -> bool {
    input.windows(11).any(|w| w == b"-----BEGIN ")
}

/// A block whose END line has not been seen yet.
struct OpenBlock<'a> {
    label: &'a [u8],
    encrypted: bool,
    body: Zeroizing<Vec<u8>>,
}

/// Decodes every PEM block in `input`; text outside blocks is ignored (RFC 7468 §2).
pub(super) fn parse_blocks(input: &[u8]) -> Result<Vec<PemBlock>, MaterialError> {
    let mut blocks = Vec::new();
    let mut current: Option<OpenBlock<'_>> = None;
    for raw_line in input.split(|b| *b == b'\n') {
        let line = raw_line.trim_ascii();
        match current.as_mut() {
            None => {
                if let Some(label) = line
                    .strip_prefix(b"-----BEGIN ")
                    .and_then(|l| l.strip_suffix(b"-----"))
                {
                    // Capacity for the whole input: the body never reallocates (no stray copies).
                    current = Some(OpenBlock {
                        label,
                        encrypted: false,
                        body: Zeroizing::new(Vec::with_capacity(input.len())),
                    });
                }
            }
            Some(OpenBlock {
                label,
                encrypted,
                body,
            }) => {
                if let Some(end_label) = line
                    .strip_prefix(b"-----END ")
                    .and_then(|l| l.strip_suffix(b"-----"))
                {
                    if end_label != *label {
                        return Err(unparseable("a PEM END line does not match its BEGIN line"));
                    }
                    let kind = PemKind::from_label(label);
                    let legacy_encrypted = *encrypted;
                    let der = decode_base64_body(body)?;
                    blocks.push(PemBlock {
                        kind,
                        legacy_encrypted,
                        der,
                    });
                    current = None;
                    continue;
                }
                if line.starts_with(b"-----") {
                    return Err(unparseable("a PEM block is not terminated by its END line"));
                }
                if line.contains(&b':') {
                    // RFC 1421 header (base64 never contains ':'), e.g. `Proc-Type: 4,ENCRYPTED`.
                    if line.starts_with(b"Proc-Type:") && line.ends_with(b"ENCRYPTED") {
                        *encrypted = true;
                    }
                    continue;
                }
                body.extend(line.iter().copied().filter(|b| !b.is_ascii_whitespace()));
            }
        }
    }
    if current.is_some() {
        return Err(unparseable("a PEM block has no END line"));
    }
    Ok(blocks)
}

fn decode_base64_body(body: &[u8]) -> Result<Zeroizing<Vec<u8>>, MaterialError> {
    const PEM_ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let mut out = Zeroizing::new(vec![0u8; base64::decoded_len_estimate(body.len())]);
    let n = PEM_ENGINE
        .decode_slice(body, &mut out[..])
        .map_err(|_| unparseable("a PEM block's body is not valid base64"))?;
    out.truncate(n);
    Ok(out)
}

/// Picks the single private key block of a PEM document and returns its DER.
pub(super) fn select_private_key(input: &[u8]) -> Result<Zeroizing<Vec<u8>>, MaterialError> {
    let blocks = parse_blocks(input)?;
    let mut keys: Vec<PemBlock> = Vec::new();
    let mut others: Vec<PemKind> = Vec::new();
    for block in blocks {
        if block.kind.is_private_key() {
            keys.push(block);
        } else {
            others.push(block.kind);
        }
    }
    if keys.len() > 1 {
        return Err(MaterialError::Unparseable {
            detail: format!(
                "the PEM text holds {} private keys; the Secret value must hold exactly one",
                keys.len()
            ),
        });
    }
    let Some(key) = keys.pop() else {
        let found = if others.contains(&PemKind::PublicKey) {
            "a public key"
        } else if others.contains(&PemKind::Certificate) {
            "a certificate"
        } else if others.contains(&PemKind::CertificateRequest) {
            "a certificate signing request"
        } else if others.contains(&PemKind::EcParameters) {
            "only EC curve parameters"
        } else if others.is_empty() {
            return Err(unparseable("no complete PEM block was found"));
        } else {
            return Err(unparseable(
                "unsupported PEM block type; expected `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`",
            ));
        };
        return Err(MaterialError::NotPrivateKey { found });
    };
    match key.kind {
        PemKind::EncryptedPrivateKey => Err(MaterialError::Encrypted {
            format: "PEM `ENCRYPTED PRIVATE KEY`",
        }),
        _ if key.legacy_encrypted => Err(MaterialError::Encrypted {
            format: "PEM with `Proc-Type: 4,ENCRYPTED` header",
        }),
        PemKind::DsaPrivateKey => Err(unparseable(
            "the PEM block is a DSA private key; KMS imports only RSA and EC private keys",
        )),
        PemKind::OpensshPrivateKey => Err(unparseable(
            "the OpenSSH private key format is not supported; convert it to PKCS#8 with \
             `ssh-keygen -p -m PKCS8 -f <file>`",
        )),
        _ => Ok(key.der),
    }
}
