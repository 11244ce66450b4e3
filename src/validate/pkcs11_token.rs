//! `Pkcs11Token` checks: CEL rules (one token, absolute module, well-formed allowedNamespaces)
//! and settings that can never work. Login and key checks need the token: made at run time.

use super::finding::Check;
use super::kind::{Kind, KindContext, Typed};
use super::object::{Object, ObjectFindings};
use crate::api::Pkcs11Token;

impl Kind for Pkcs11Token {
    fn into_typed(self) -> Typed {
        Typed::Pkcs11Token(Box::new(self))
    }

    fn check(&self, _object: &Object, out: &mut ObjectFindings<'_>, _ctx: &KindContext<'_>) {
        if self
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
    }
}
