//! PEM (RFC 7468) reading and writing with zeroized buffers, and selection of the private key block.

use super::MaterialError;
use super::buffer::SecretBytes;
use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use std::fmt;

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

/// At most this many PEM blocks are read from one Secret value. One private key with its
/// certificate chain or curve parameters fits many times over; at the next `BEGIN` line the
/// value is refused before that block is read.
pub(super) const MAX_PEM_BLOCKS: usize = 16;

/// One decoded PEM block.
pub(super) struct PemBlock {
    pub kind: PemKind,
    /// RFC 1421 `Proc-Type: 4,ENCRYPTED` header (legacy OpenSSL encryption).
    pub legacy_encrypted: bool,
    pub der: SecretBytes,
}

impl fmt::Debug for PemBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PemBlock")
            .field("kind", &self.kind)
            .field("legacy_encrypted", &self.legacy_encrypted)
            .field("der_len", &self.der.len())
            .finish()
    }
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

/// The label of a `-----BEGIN label-----` / `-----END label-----` line (`prefix` says which).
fn boundary_label<'a>(line: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    line.strip_prefix(prefix)
        .and_then(|l| l.strip_suffix(b"-----"))
}

/// What a (trimmed) line inside a PEM block is.
enum BodyLine<'a> {
    /// The `END` line, with its label.
    End(&'a [u8]),
    /// Base64 text.
    Data(&'a [u8]),
    /// An RFC 1421 header (base64 never contains ':'); `true` for `Proc-Type: 4,ENCRYPTED`.
    Header(bool),
}

fn body_line(line: &[u8]) -> Result<BodyLine<'_>, MaterialError> {
    if let Some(label) = boundary_label(line, b"-----END ") {
        return Ok(BodyLine::End(label));
    }
    if line.starts_with(b"-----") {
        return Err(unparseable("a PEM block is not terminated by its END line"));
    }
    if line.contains(&b':') {
        return Ok(BodyLine::Header(
            line.starts_with(b"Proc-Type:") && line.ends_with(b"ENCRYPTED"),
        ));
    }
    Ok(BodyLine::Data(line))
}

/// Decodes every PEM block in `input`; text outside blocks is ignored (RFC 7468 §2).
///
/// Work is linear in the input: each block is scanned once to find its END line and the size
/// of its body, then read into a buffer of exactly that size, and at most [`MAX_PEM_BLOCKS`]
/// blocks are read.
pub(super) fn parse_blocks(input: &[u8]) -> Result<Vec<PemBlock>, MaterialError> {
    let mut blocks = Vec::new();
    let mut lines = input.split(|b| *b == b'\n');
    while let Some(raw_line) = lines.next() {
        let Some(label) = boundary_label(raw_line.trim_ascii(), b"-----BEGIN ") else {
            continue;
        };
        if blocks.len() == MAX_PEM_BLOCKS {
            return Err(MaterialError::Unparseable {
                detail: format!(
                    "the PEM text has more than {MAX_PEM_BLOCKS} blocks; keyfleet reads at most \
                     {MAX_PEM_BLOCKS}, and the Secret value must hold one private key"
                ),
            });
        }
        // First pass (no copy): find the END line, the body's size and the headers.
        let mut body_len = 0usize;
        let mut body_lines = 0usize;
        let mut legacy_encrypted = false;
        let mut scan = lines.clone();
        loop {
            let Some(raw) = scan.next() else {
                return Err(unparseable("a PEM block has no END line"));
            };
            match body_line(raw.trim_ascii())? {
                BodyLine::End(end_label) if end_label != label => {
                    return Err(unparseable("a PEM END line does not match its BEGIN line"));
                }
                BodyLine::End(_) => break,
                BodyLine::Header(encrypted) => legacy_encrypted |= encrypted,
                BodyLine::Data(data) => body_len += data.len(),
            }
            body_lines += 1;
        }
        // Second pass: copy the body into a buffer of its size, then past the END line.
        let mut body = SecretBytes::with_capacity(body_len);
        for raw in lines.by_ref().take(body_lines) {
            if let Ok(BodyLine::Data(data)) = body_line(raw.trim_ascii()) {
                body.extend_compact(data);
            }
        }
        lines.next();
        blocks.push(PemBlock {
            kind: PemKind::from_label(label),
            legacy_encrypted,
            der: decode_base64_body(&body)?,
        });
    }
    Ok(blocks)
}

fn decode_base64_body(body: &[u8]) -> Result<SecretBytes, MaterialError> {
    const PEM_ENGINE: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let mut out = SecretBytes::zeroed(base64::decoded_len_estimate(body.len()));
    let n = PEM_ENGINE
        .decode_slice(body, &mut out[..])
        .map_err(|_| unparseable("a PEM block's body is not valid base64"))?;
    out.truncate(n);
    Ok(out)
}

/// Picks the single private key block of a PEM document and returns its DER.
pub(super) fn select_private_key(input: &[u8]) -> Result<SecretBytes, MaterialError> {
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

/// A PKCS#8 private key as PEM text (`PRIVATE KEY`, 64 base64 characters a line), written into
/// a zeroized buffer.
pub(super) fn private_key_pem(der: &[u8]) -> SecretBytes {
    const BEGIN: &[u8] = b"-----BEGIN PRIVATE KEY-----\n";
    const END: &[u8] = b"-----END PRIVATE KEY-----\n";
    let engine = GeneralPurpose::new(&base64::alphabet::STANDARD, GeneralPurposeConfig::new());
    let mut out = SecretBytes::with_capacity(BEGIN.len() + END.len() + der.len() * 2 + 64);
    out.extend_from(BEGIN);
    // 48 bytes of DER are exactly one line of 64 base64 characters.
    let mut line = SecretBytes::zeroed(64);
    for chunk in der.chunks(48) {
        let n = engine
            .encode_slice(chunk, &mut line[..])
            .unwrap_or_default();
        out.extend_from(&line[..n]);
        out.extend_from(b"\n");
    }
    out.extend_from(END);
    out
}
