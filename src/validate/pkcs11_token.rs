//! `Pkcs11Token` checks: CEL rules (one token, absolute module, well-formed allowedNamespaces)
//! and settings that can never work. Login and key checks need the token: made at run time.

use serde_json::Value;

use super::finding::{Check, Finding};
use super::kind::{Bundle, KindContext, KindDef, Typed, read};
use super::object::{Object, ObjectFindings};
use crate::api::Pkcs11Token;

pub(crate) const KIND: KindDef = KindDef {
    kind: "Pkcs11Token",
    check_object,
    check_bundle,
};

fn check_object(
    _object: &Object,
    value: &Value,
    out: &mut ObjectFindings<'_>,
    ctx: &KindContext<'_>,
) -> Option<Typed> {
    let token: Pkcs11Token = read(value, out)?;
    ctx.cel.check(&token, out);
    if token
        .spec
        .token_label
        .as_deref()
        .is_some_and(|label| label.trim_end().is_empty())
    {
        out.add_at(
            Check::Semantic,
            "/spec/tokenLabel",
            "TokenNotFound",
            "tokenLabel is blank: token labels are compared without trailing blanks, so no \
             token can match",
        );
    }
    Some(Typed::Pkcs11Token(Box::new(token)))
}

fn check_bundle(_bundle: &Bundle<'_>, _findings: &mut Vec<Finding>) {}
