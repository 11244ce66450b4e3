#!/usr/bin/env bash
# Regenerates the seed corpus in fuzz/corpus/ with OpenSSL: throwaway keys of every key spec
# in every container keyfleet reads (PKCS#8, PKCS#1, SEC1; PEM and DER; Raw, Base64, Hex),
# and the inputs it must refuse (public keys, certificates, encrypted keys, other algorithms,
# curves and sizes). No key here protects anything; each run makes new ones.
#
#   fuzz/seed-corpus.sh
#
# secret_value seeds start with a selector byte: encoding_index * 12 + spec_index, in the order
# of KeySpec::ALL and keyfleet::material::fuzzing::ENCODINGS (Raw, Base64, Hex).
set -euo pipefail

FUZZ="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CORPUS="$FUZZ/corpus"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
rm -rf "$CORPUS"
mkdir -p "$CORPUS/secret_value" "$CORPUS/pem" "$CORPUS/der"

spec_index() {
    case "$1" in
        SYMMETRIC_DEFAULT) echo 0 ;; RSA_2048) echo 1 ;; RSA_3072) echo 2 ;; RSA_4096) echo 3 ;;
        ECC_NIST_P256) echo 4 ;; ECC_NIST_P384) echo 5 ;; ECC_NIST_P521) echo 6 ;;
        ECC_SECG_P256K1) echo 7 ;; HMAC_224) echo 8 ;; HMAC_256) echo 9 ;; HMAC_384) echo 10 ;;
        HMAC_512) echo 11 ;; *) echo "unknown spec $1" >&2; exit 1 ;;
    esac
}

# secret NAME SPEC ENCODING FILE: a secret_value seed (FILE encoded as ENCODING, selector first).
secret() {
    local name="$1" spec="$2" encoding="$3" file="$4" e
    case "$encoding" in Raw) e=0 ;; Base64) e=1 ;; Hex) e=2 ;; esac
    local selector=$((e * 12 + $(spec_index "$spec")))
    {
        printf "\\$(printf '%03o' "$selector")"
        case "$encoding" in
            Raw) cat "$file" ;;
            Base64) base64 -w 76 "$file" ;;
            Hex) od -An -v -tx1 "$file" | tr -d ' \n' ;;
        esac
    } > "$CORPUS/secret_value/$name"
}

pem() { cp "$2" "$CORPUS/pem/$1"; }
der() { cp "$2" "$CORPUS/der/$1"; }

cd "$WORK"

# Symmetric and HMAC material: random bytes of each accepted length, and one of a wrong length.
head -c 32 /dev/urandom > aes.bin
head -c 28 /dev/urandom > hmac224.bin
head -c 32 /dev/urandom > hmac256.bin
head -c 48 /dev/urandom > hmac384.bin
head -c 64 /dev/urandom > hmac512.bin
head -c 31 /dev/urandom > short.bin
secret symmetric-raw SYMMETRIC_DEFAULT Raw aes.bin
secret symmetric-base64 SYMMETRIC_DEFAULT Base64 aes.bin
secret symmetric-hex SYMMETRIC_DEFAULT Hex aes.bin
secret symmetric-31-bytes SYMMETRIC_DEFAULT Raw short.bin
secret hmac224-raw HMAC_224 Raw hmac224.bin
secret hmac256-hex HMAC_256 Hex hmac256.bin
secret hmac384-base64 HMAC_384 Base64 hmac384.bin
secret hmac512-raw HMAC_512 Raw hmac512.bin
printf 'not*base64!' > bad-base64.txt
secret symmetric-bad-base64 SYMMETRIC_DEFAULT Raw bad-base64.txt
secret symmetric-invalid-base64 SYMMETRIC_DEFAULT Base64 bad-base64.txt

# RSA: PKCS#8 and PKCS#1, PEM and DER.
for bits in 2048 3072 4096; do
    openssl genpkey -quiet -algorithm RSA -pkeyopt "rsa_keygen_bits:$bits" -out "rsa$bits.pem"
    openssl pkey -in "rsa$bits.pem" -outform DER -out "rsa$bits.der"
    openssl rsa -in "rsa$bits.pem" -traditional -out "rsa$bits-pkcs1.pem" 2>/dev/null
    openssl rsa -in "rsa$bits.pem" -traditional -outform DER -out "rsa$bits-pkcs1.der" 2>/dev/null
done
secret rsa2048-pkcs8-pem RSA_2048 Raw rsa2048.pem
secret rsa2048-pkcs1-der RSA_2048 Raw rsa2048-pkcs1.der
secret rsa2048-pkcs8-der-base64 RSA_2048 Base64 rsa2048.der
secret rsa2048-pkcs1-pem-hex RSA_2048 Hex rsa2048-pkcs1.pem
secret rsa3072-pkcs1-pem RSA_3072 Raw rsa3072-pkcs1.pem
secret rsa4096-pkcs8-der-hex RSA_4096 Hex rsa4096.der
secret rsa2048-for-rsa3072 RSA_3072 Raw rsa2048.pem
secret rsa2048-for-p256 ECC_NIST_P256 Raw rsa2048.pem
pem rsa2048-pkcs8.pem rsa2048.pem
pem rsa3072-pkcs1.pem rsa3072-pkcs1.pem
der rsa2048-pkcs8.der rsa2048.der
der rsa4096-pkcs1.der rsa4096-pkcs1.der

# EC: PKCS#8 and SEC1 on every curve KMS imports; `ecparam -genkey` adds an EC PARAMETERS block.
for curve in prime256v1 secp384r1 secp521r1 secp256k1; do
    openssl ecparam -name "$curve" -genkey -out "$curve-sec1-params.pem"
    openssl pkey -in "$curve-sec1-params.pem" -out "$curve.pem"
    openssl pkey -in "$curve.pem" -outform DER -out "$curve.der"
    openssl ec -in "$curve.pem" -outform DER -out "$curve-sec1.der" 2>/dev/null
done
secret p256-sec1-with-params-pem ECC_NIST_P256 Raw prime256v1-sec1-params.pem
secret p256-pkcs8-der-base64 ECC_NIST_P256 Base64 prime256v1.der
secret p256-sec1-der ECC_NIST_P256 Raw prime256v1-sec1.der
secret p384-pkcs8-pem ECC_NIST_P384 Raw secp384r1.pem
secret p521-sec1-der-hex ECC_NIST_P521 Hex secp521r1-sec1.der
secret secp256k1-pkcs8-pem ECC_SECG_P256K1 Raw secp256k1.pem
secret p384-for-p256 ECC_NIST_P256 Raw secp384r1.pem
secret p256-for-rsa2048 RSA_2048 Raw prime256v1.pem
pem p256-sec1-with-params.pem prime256v1-sec1-params.pem
pem secp256k1-pkcs8.pem secp256k1.pem
der p384-pkcs8.der secp384r1.der
der p521-sec1.der secp521r1-sec1.der

# EC with explicit curve parameters instead of a name.
openssl ec -in prime256v1.pem -param_enc explicit -out p256-explicit.pem 2>/dev/null
openssl ec -in prime256v1.pem -param_enc explicit -outform DER -out p256-explicit.der 2>/dev/null
secret p256-explicit-params ECC_NIST_P256 Raw p256-explicit.pem
der p256-explicit-sec1.der p256-explicit.der

# Other algorithms.
openssl genpkey -algorithm ED25519 -out ed25519.pem
openssl pkey -in ed25519.pem -outform DER -out ed25519.der
secret ed25519-for-p256 ECC_NIST_P256 Raw ed25519.pem
der ed25519-pkcs8.der ed25519.der

# Public keys and certificates.
openssl pkey -in rsa2048.pem -pubout -out rsa2048-pub.pem
openssl pkey -in rsa2048.pem -pubout -outform DER -out rsa2048-pub.der
openssl rsa -in rsa2048.pem -RSAPublicKey_out -outform DER -out rsa2048-pkcs1-pub.der 2>/dev/null
openssl req -x509 -new -key prime256v1.pem -subj /CN=keyfleet-fuzz-seed -days 1 -out cert.pem
openssl x509 -in cert.pem -outform DER -out cert.der
secret rsa2048-public-key RSA_2048 Raw rsa2048-pub.pem
secret p256-certificate ECC_NIST_P256 Raw cert.pem
cat cert.pem prime256v1.pem > cert-and-key.pem
tr -d '\r' < cert-and-key.pem | sed 's/$/\r/' > cert-and-key-crlf.pem
secret p256-certificate-and-key-crlf ECC_NIST_P256 Raw cert-and-key-crlf.pem
pem rsa2048-public.pem rsa2048-pub.pem
pem certificate.pem cert.pem
pem certificate-and-key-crlf.pem cert-and-key-crlf.pem
der rsa2048-spki.der rsa2048-pub.der
der rsa2048-pkcs1-public.der rsa2048-pkcs1-pub.der
der certificate.der cert.der

# Encrypted keys: PKCS#8 EncryptedPrivateKeyInfo and legacy OpenSSL `Proc-Type: 4,ENCRYPTED`.
openssl pkcs8 -topk8 -in prime256v1.pem -passout pass:seed -out p256-encrypted.pem
openssl pkcs8 -topk8 -in prime256v1.pem -passout pass:seed -outform DER -out p256-encrypted.der
openssl rsa -in rsa2048.pem -traditional -aes128 -passout pass:seed -out rsa-legacy-encrypted.pem 2>/dev/null
secret p256-encrypted-pkcs8 ECC_NIST_P256 Raw p256-encrypted.pem
secret rsa2048-legacy-encrypted RSA_2048 Raw rsa-legacy-encrypted.pem
pem p256-encrypted-pkcs8.pem p256-encrypted.pem
pem rsa-legacy-encrypted.pem rsa-legacy-encrypted.pem
der p256-encrypted-pkcs8.der p256-encrypted.der

# Malformed PEM: empty blocks, a missing END line, mismatched labels, bad base64.
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17; do
    printf -- '-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n'
done > empty-blocks.pem
printf -- '-----BEGIN PRIVATE KEY-----\nMIIB\n' > no-end.pem
printf -- '-----BEGIN PRIVATE KEY-----\nMIIB\n-----END EC PRIVATE KEY-----\n' > mismatched.pem
printf -- '-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n' > bad-body.pem
secret empty-pem-blocks RSA_2048 Raw empty-blocks.pem
secret pem-without-end ECC_NIST_P256 Raw no-end.pem
pem empty-blocks.pem empty-blocks.pem
pem no-end.pem no-end.pem
pem mismatched-labels.pem mismatched.pem
pem bad-base64-body.pem bad-body.pem

echo "seed corpus: $(find "$CORPUS" -type f | wc -l) files in $CORPUS" >&2
