//! Attribute templates for `C_CreateObject`, `C_GenerateKey` and `C_FindObjects`: the object's class and key type, then the flags it must have on and off, instead of `Attribute::X(bool)` lists written out again for every object.

use std::ops::Deref;

use cryptoki::object::{Attribute, KeyType, ObjectClass};

/// A boolean key attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Flag {
    Token,
    Private,
    Sensitive,
    Extractable,
    Wrap,
    Unwrap,
    Encrypt,
    Decrypt,
    Sign,
    Verify,
    Derive,
}

impl Flag {
    fn attribute(self, value: bool) -> Attribute {
        match self {
            Flag::Token => Attribute::Token(value),
            Flag::Private => Attribute::Private(value),
            Flag::Sensitive => Attribute::Sensitive(value),
            Flag::Extractable => Attribute::Extractable(value),
            Flag::Wrap => Attribute::Wrap(value),
            Flag::Unwrap => Attribute::Unwrap(value),
            Flag::Encrypt => Attribute::Encrypt(value),
            Flag::Decrypt => Attribute::Decrypt(value),
            Flag::Sign => Attribute::Sign(value),
            Flag::Verify => Attribute::Verify(value),
            Flag::Derive => Attribute::Derive(value),
        }
    }
}

/// An attribute template, built in the order the attributes are added.
#[derive(Clone, Debug, Default)]
pub(super) struct Template(Vec<Attribute>);

impl Template {
    /// A key of `class` and `key_type` that lives only in this session (`CKA_TOKEN` false).
    pub(super) fn session_key(class: ObjectClass, key_type: KeyType) -> Template {
        Template::of_class(class)
            .with(Attribute::KeyType(key_type))
            .off(&[Flag::Token])
    }

    /// The objects of `class`.
    pub(super) fn of_class(class: ObjectClass) -> Template {
        Template(vec![Attribute::Class(class)])
    }

    /// Adds one attribute.
    pub(super) fn with(mut self, attribute: Attribute) -> Template {
        self.0.push(attribute);
        self
    }

    /// Sets each of `flags` true.
    pub(super) fn on(self, flags: &[Flag]) -> Template {
        self.flags(flags, true)
    }

    /// Sets each of `flags` false.
    pub(super) fn off(self, flags: &[Flag]) -> Template {
        self.flags(flags, false)
    }

    fn flags(mut self, flags: &[Flag], value: bool) -> Template {
        self.0
            .extend(flags.iter().map(|flag| flag.attribute(value)));
        self
    }
}

impl Deref for Template {
    type Target = [Attribute];

    fn deref(&self) -> &[Attribute] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_stand_in_the_order_they_are_added() {
        let template = Template::session_key(ObjectClass::SECRET_KEY, KeyType::AES)
            .on(&[Flag::Wrap, Flag::Sensitive])
            .off(&[Flag::Sign])
            .with(Attribute::ValueLen(32.into()));
        assert_eq!(
            template.to_vec(),
            vec![
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Wrap(true),
                Attribute::Sensitive(true),
                Attribute::Sign(false),
                Attribute::ValueLen(32.into()),
            ]
        );
    }
}
