//! Role sessions named after the object they serve: the RoleSessionName and session tags
//! keyfleet sends with sts:AssumeRole (pure), so CloudTrail shows which object asked and IAM
//! policies can scope by tag; and the credentials provider that assumes them (STS I/O).

use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials, future};
use aws_sdk_sts::error::DisplayErrorContext;
use aws_sdk_sts::types::Tag;

/// Session tag carrying the object's namespace (`aws:PrincipalTag/keyfleet-namespace`).
pub const NAMESPACE_TAG: &str = "keyfleet-namespace";
/// Session tag carrying the object's name (`aws:PrincipalTag/keyfleet-name`).
pub const NAME_TAG: &str = "keyfleet-name";

/// Prefix of every session name keyfleet uses.
const SESSION_PREFIX: &str = "kf.";
/// RoleSessionName: 2 to 64 characters.
const SESSION_NAME_MAX: usize = 64;
/// Session tag values: at most 256 characters.
const TAG_VALUE_MAX: usize = 256;
/// Hex digits of the SHA-256 of the object's identity appended to a shortened or rewritten
/// name (64 bits: two objects of one cluster never share a session or tag value by chance).
const HASH_DIGITS: usize = 16;
/// Separates a shortened or rewritten name from its hash. Kubernetes names never contain it,
/// so a hashed name never equals a verbatim one.
const HASH_SEPARATOR: char = '+';

/// The Kubernetes object KMS calls are made for (an AwsKey or AwsReplicaKey): its calls run
/// under a role session of its own.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Requester {
    pub namespace: String,
    pub name: String,
}

impl Requester {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Requester {
        Requester {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// The object `obj` (namespace and name from its metadata).
    pub fn of<K: kube::Resource>(obj: &K) -> Requester {
        let meta = obj.meta();
        Requester::new(
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        )
    }

    /// `kf.<namespace>.<name>` when that is a valid RoleSessionName (it is for every namespace
    /// and name up to 60 characters together); otherwise its first 47 characters, with any
    /// character STS refuses replaced by `_`, then `+` and 16 hex digits of the SHA-256 of the
    /// identity. Always 3 to 64 characters of `[\w+=,.@-]`, and different for different objects.
    pub fn session_name(&self) -> String {
        // A namespace has no dots (RFC 1123 label), so `kf.<namespace>.<name>` names one object.
        let verbatim = format!("{SESSION_PREFIX}{}.{}", self.namespace, self.name);
        let exact = !self.namespace.contains('.')
            && verbatim.len() <= SESSION_NAME_MAX
            && verbatim.chars().all(session_char);
        if exact {
            return verbatim;
        }
        shortened(&verbatim, session_char, SESSION_NAME_MAX, &self.hash())
    }

    /// The session tags: `keyfleet-namespace` and `keyfleet-name` with the object's namespace
    /// and name verbatim (always, for Kubernetes names); a value STS would refuse (longer than
    /// 256 characters, or a character outside `[A-Za-z0-9 _.:/=@-]`) is rewritten like
    /// [`Requester::session_name`], hashed on the value alone.
    pub fn session_tags(&self) -> [(&'static str, String); 2] {
        [
            (NAMESPACE_TAG, self.tag_value(&self.namespace)),
            (NAME_TAG, self.tag_value(&self.name)),
        ]
    }

    fn tag_value(&self, value: &str) -> String {
        if value.len() <= TAG_VALUE_MAX && value.chars().all(tag_char) {
            return value.to_string();
        }
        // The value's own hash: every object of a namespace carries the same namespace tag.
        shortened(value, tag_char, TAG_VALUE_MAX, &short_hash(value))
    }

    /// Names the object unambiguously: `<namespace length>:<namespace>/<name>`.
    fn hash(&self) -> String {
        short_hash(&format!(
            "{}:{}/{}",
            self.namespace.len(),
            self.namespace,
            self.name
        ))
    }
}

/// `text` with every character outside `allowed` replaced by `_`, cut so that `+` and `hash`
/// fit within `max` characters, then `+<hash>`.
fn shortened(text: &str, allowed: fn(char) -> bool, max: usize, hash: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if allowed(c) { c } else { '_' })
        .take(max - 1 - hash.len())
        .collect();
    out.push(HASH_SEPARATOR);
    out.push_str(hash);
    out
}

/// The first [`HASH_DIGITS`] hex digits of the SHA-256 of `text`.
fn short_hash(text: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
    let mut hex = String::with_capacity(HASH_DIGITS);
    for byte in digest.as_ref().iter().take(HASH_DIGITS / 2) {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Credentials are renewed when less than this remains of them.
const RENEW_BEFORE_EXPIRY: Duration = Duration::from_secs(60);

/// Credentials of the role session of one object: sts:AssumeRole with the object's session
/// name and tags (and the connection's ExternalId), kept until shortly before they expire.
pub struct RoleSessionCredentials {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    external_id: Option<String>,
    session_name: String,
    tags: Vec<Tag>,
    /// The session's current credentials; locked while they are renewed, so concurrent calls
    /// of one object wait for one AssumeRole.
    current: tokio::sync::Mutex<Option<Credentials>>,
}

impl RoleSessionCredentials {
    pub fn new(
        sts: aws_sdk_sts::Client,
        role_arn: &str,
        external_id: Option<String>,
        requester: &Requester,
    ) -> RoleSessionCredentials {
        let tags = requester
            .session_tags()
            .into_iter()
            .filter_map(|(key, value)| Tag::builder().key(key).value(value).build().ok())
            .collect();
        RoleSessionCredentials {
            sts,
            role_arn: role_arn.to_string(),
            external_id,
            session_name: requester.session_name(),
            tags,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The current credentials, or new ones when they are missing or about to expire.
    async fn credentials(&self) -> provider::Result {
        let mut current = self.current.lock().await;
        let fresh = |c: &Credentials| {
            c.expiry().is_none_or(|expiry| {
                expiry
                    .duration_since(SystemTime::now())
                    .is_ok_and(|left| left > RENEW_BEFORE_EXPIRY)
            })
        };
        if let Some(credentials) = current.as_ref().filter(|c| fresh(c)) {
            return Ok(credentials.clone());
        }
        let credentials = self.assume().await?;
        *current = Some(credentials.clone());
        Ok(credentials)
    }

    async fn assume(&self) -> provider::Result {
        let out = self
            .sts
            .assume_role()
            .role_arn(&self.role_arn)
            .role_session_name(&self.session_name)
            .set_external_id(self.external_id.clone())
            .set_tags(Some(self.tags.clone()))
            .send()
            .await
            .map_err(|e| {
                tracing::warn!(role = %self.role_arn, session = %self.session_name, error = %DisplayErrorContext(&e), "sts:AssumeRole failed");
                CredentialsError::provider_error(e)
            })?;
        let granted = out.credentials.ok_or_else(|| {
            CredentialsError::unhandled("sts:AssumeRole answered without credentials")
        })?;
        let expiry = SystemTime::try_from(granted.expiration)
            .map_err(|e| CredentialsError::unhandled(format!("sts:AssumeRole expiration: {e}")))?;
        Ok(Credentials::new(
            granted.access_key_id,
            granted.secret_access_key,
            Some(granted.session_token),
            Some(expiry),
            "keyfleet-role-session",
        ))
    }
}

impl std::fmt::Debug for RoleSessionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The ExternalId is a shared secret of the role's trust policy: not printed.
        f.debug_struct("RoleSessionCredentials")
            .field("role_arn", &self.role_arn)
            .field("session_name", &self.session_name)
            .finish_non_exhaustive()
    }
}

impl ProvideCredentials for RoleSessionCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.credentials())
    }
}

/// A character RoleSessionName allows (`[\w+=,.@-]`, ASCII), other than the hash separator.
fn session_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '=' | ',' | '.' | '@' | '-')
}

/// A character a session tag value allows (`[\p{L}\p{Z}\p{N}_.:/=+\-@]`), kept to ASCII so
/// no Unicode category question arises, other than the hash separator.
fn tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '.' | ':' | '/' | '=' | '-' | '@')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_session_name(name: &str) -> bool {
        (2..=SESSION_NAME_MAX).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c))
    }

    fn valid_tag_value(value: &str) -> bool {
        value.chars().count() <= TAG_VALUE_MAX
            && value
                .chars()
                .all(|c| c.is_alphanumeric() || c == ' ' || "_.:/=+-@".contains(c))
    }

    #[test]
    fn an_ordinary_object_is_named_verbatim() {
        let r = Requester::new("payments", "orders-key");
        assert_eq!(r.session_name(), "kf.payments.orders-key");
        assert_eq!(
            r.session_tags(),
            [
                ("keyfleet-namespace", "payments".to_string()),
                ("keyfleet-name", "orders-key".to_string())
            ]
        );
        // Dots in the name are kept: the namespace has none, so the name is still unambiguous.
        let dotted = Requester::new("team-a", "db.orders.v2");
        assert_eq!(dotted.session_name(), "kf.team-a.db.orders.v2");
        assert_eq!(dotted.session_tags()[1].1, "db.orders.v2");
    }

    #[test]
    fn a_name_at_the_limit_is_kept_and_one_past_it_is_hashed() {
        // "kf." + ns + "." + name = 64 characters exactly.
        let at_limit = Requester::new("n".repeat(20), "x".repeat(40));
        assert_eq!(at_limit.session_name().len(), 64);
        assert!(!at_limit.session_name().contains('+'));

        let over = Requester::new("n".repeat(20), "x".repeat(41));
        let name = over.session_name();
        assert_eq!(name.len(), 64);
        assert!(valid_session_name(&name), "{name}");
        let (prefix, hash) = name.split_once('+').unwrap();
        assert!(prefix.starts_with("kf.nnnn"), "{name}");
        assert_eq!(hash.len(), 16);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn the_documented_example_holds() {
        // docs/iam.md
        let r = Requester::new(
            "platform-shared-keys",
            "orders-signing-key-for-eu-central-1-production",
        );
        assert_eq!(
            r.session_name(),
            "kf.platform-shared-keys.orders-signing-key-for-+c4abffb848426a4e"
        );
    }

    #[test]
    fn long_names_sharing_a_prefix_get_different_sessions() {
        // Kubernetes allows 63-character namespaces and 253-character names.
        let ns = "n".repeat(63);
        let a = Requester::new(&ns, format!("{}-a", "k".repeat(250)));
        let b = Requester::new(&ns, format!("{}-b", "k".repeat(250)));
        assert_ne!(a.session_name(), b.session_name());
        assert!(valid_session_name(&a.session_name()));
        assert!(valid_session_name(&b.session_name()));
        // Tags fit as they are (63 and 252 characters).
        assert_eq!(a.session_tags()[0].1, ns);
        assert_eq!(a.session_tags()[1].1, format!("{}-a", "k".repeat(250)));
        // Moving characters between namespace and name changes the hash.
        let c = Requester::new("ab", "c".repeat(70));
        let d = Requester::new("abc", "c".repeat(69));
        assert_ne!(c.session_name(), d.session_name());
    }

    #[test]
    fn a_hashed_name_never_equals_a_verbatim_one() {
        // Same 47-character prefix as a verbatim name could have, but the separator differs.
        let long = Requester::new("team", "o".repeat(80));
        let name = long.session_name();
        assert!(name.contains('+'));
        let verbatim = Requester::new("team", "x").session_name();
        assert!(!verbatim.contains('+'));
    }

    #[test]
    fn characters_sts_refuses_are_replaced_and_hashed() {
        let unicode = Requester::new("zahlungen", "schlüssel");
        let name = unicode.session_name();
        assert!(valid_session_name(&name), "{name}");
        assert!(name.starts_with("kf.zahlungen.schl_ssel+"), "{name}");
        let [(_, ns), (_, tag)] = unicode.session_tags();
        assert_eq!(ns, "zahlungen");
        assert!(tag.starts_with("schl_ssel+"), "{tag}");
        assert!(valid_tag_value(&tag));

        // Two names that sanitise alike stay apart.
        let other = Requester::new("zahlungen", "schlössel");
        assert_ne!(other.session_name(), name);
        assert_ne!(other.session_tags()[1].1, tag);

        // A value with the hash separator of its own is rewritten, never taken for a hashed one.
        let plus = Requester::new("ns", "a+b");
        assert!(plus.session_name().starts_with("kf.ns.a_b+"));
        assert!(plus.session_tags()[1].1.starts_with("a_b+"));
        assert_eq!(plus.session_tags()[1].1.matches('+').count(), 1);

        let slash = Requester::new("a/b", "k");
        assert!(valid_session_name(&slash.session_name()));
        assert!(slash.session_name().starts_with("kf.a_b.k+"));
        assert_eq!(slash.session_tags()[0].1, "a/b");
    }

    #[test]
    fn a_dotted_namespace_cannot_impersonate_another_object() {
        // "kf.a.b.c" would name both (a, b.c) and (a.b, c); the namespace with a dot is hashed.
        let real = Requester::new("a", "b.c");
        let fake = Requester::new("a.b", "c");
        assert_eq!(real.session_name(), "kf.a.b.c");
        assert_ne!(fake.session_name(), real.session_name());
        assert!(fake.session_name().starts_with("kf.a.b.c+"));
    }

    #[test]
    fn overlong_tag_values_are_shortened_with_a_hash() {
        let r = Requester::new("ns", "v".repeat(300));
        let [_, (key, value)] = r.session_tags();
        assert_eq!(key, "keyfleet-name");
        assert_eq!(value.len(), 256);
        assert!(valid_tag_value(&value));
        let other = Requester::new("ns", format!("{}w", "v".repeat(299)));
        assert_ne!(other.session_tags()[1].1, value);
        // The namespace tag depends on the namespace alone: objects of one namespace share it.
        let long_ns = "é".repeat(10);
        assert_eq!(
            Requester::new(&long_ns, "a").session_tags()[0],
            Requester::new(&long_ns, "b").session_tags()[0]
        );
        assert_ne!(
            Requester::new(&long_ns, "a").session_name(),
            Requester::new(&long_ns, "b").session_name()
        );
    }

    #[test]
    fn empty_identities_still_give_valid_names() {
        let empty = Requester::new("", "");
        assert_eq!(empty.session_name(), "kf..");
        assert!(valid_session_name(&empty.session_name()));
        assert_eq!(
            empty.session_tags(),
            [
                ("keyfleet-namespace", String::new()),
                ("keyfleet-name", String::new())
            ]
        );
    }
}
