//! Policy documents: parsing, placeholders (`${AccountId}`, `${KeyArn}`, …), canonical hash.

use serde_json::Value;

use super::MAX_POLICY_BYTES;

/// Placeholders keyfleet fills in for each key.
pub const PLACEHOLDERS: [&str; 5] = ["AccountId", "Region", "KeyArn", "KeyId", "Partition"];

/// What a policy knows about the key it is rendered for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyIdentity {
    pub partition: String,
    pub account_id: String,
    pub region: String,
    pub key_id: String,
    pub key_arn: String,
}

impl KeyIdentity {
    /// From a key ARN, `arn:<partition>:kms:<region>:<account>:key/<id>`.
    pub fn from_arn(arn: &str) -> Option<KeyIdentity> {
        let mut parts = arn.splitn(6, ':');
        let (_, partition, _, region, account_id, resource) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        Some(KeyIdentity {
            partition: partition.to_string(),
            account_id: account_id.to_string(),
            region: region.to_string(),
            key_id: resource.strip_prefix("key/")?.to_string(),
            key_arn: arn.to_string(),
        })
    }

    /// An example identity for previews (`keyfleet render-policy`) before the key exists.
    pub fn preview(account_id: &str, region: &str, key_id: &str) -> KeyIdentity {
        let partition = partition_of_region(region);
        KeyIdentity {
            key_arn: format!("arn:{partition}:kms:{region}:{account_id}:key/{key_id}"),
            partition: partition.to_string(),
            account_id: account_id.to_string(),
            region: region.to_string(),
            key_id: key_id.to_string(),
        }
    }

    fn value(&self, placeholder: &str) -> Option<&str> {
        Some(match placeholder {
            "AccountId" => &self.account_id,
            "Region" => &self.region,
            "KeyArn" => &self.key_arn,
            "KeyId" => &self.key_id,
            "Partition" => &self.partition,
            _ => return None,
        })
    }
}

/// The AWS partition of a region (`aws`, `aws-cn`, `aws-us-gov`).
pub fn partition_of_region(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// Why a policy document is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyDocumentError {
    #[error("the policy is {0} bytes; KMS accepts at most {MAX_POLICY_BYTES}")]
    TooLarge(usize),
    #[error("the policy is not valid JSON: {0}")]
    NotJson(String),
    #[error("the policy must be a JSON object with a Statement")]
    NotAnObject,
    #[error(
        "unknown placeholder ${{{0}}}; keyfleet fills in ${{AccountId}}, ${{Region}}, ${{KeyArn}}, ${{KeyId}} and ${{Partition}} (IAM variables such as ${{aws:username}} are kept)"
    )]
    UnknownPlaceholder(String),
}

impl PolicyDocumentError {
    /// The `Ready=False` reason.
    pub fn reason(&self) -> &'static str {
        match self {
            PolicyDocumentError::TooLarge(_) => "PolicyTooLarge",
            _ => "PolicyInvalid",
        }
    }
}

/// Parses a policy document and checks its size and placeholders.
pub fn parse_document(text: &str) -> Result<Value, PolicyDocumentError> {
    if text.len() > MAX_POLICY_BYTES {
        return Err(PolicyDocumentError::TooLarge(text.len()));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| PolicyDocumentError::NotJson(e.to_string()))?;
    if !value.is_object() {
        return Err(PolicyDocumentError::NotAnObject);
    }
    check_placeholders(&value)?;
    Ok(value)
}

/// Refuses `${Name}` placeholders keyfleet does not know. Names with other characters than
/// letters (`${aws:username}`, `${*}`) are IAM's and are kept.
fn check_placeholders(value: &Value) -> Result<(), PolicyDocumentError> {
    let mut unknown = None;
    visit_strings(value, &mut |s| {
        for name in placeholder_names(s) {
            if !PLACEHOLDERS.contains(&name) && unknown.is_none() {
                unknown = Some(name.to_string());
            }
        }
    });
    match unknown {
        Some(name) => Err(PolicyDocumentError::UnknownPlaceholder(name)),
        None => Ok(()),
    }
}

fn visit_strings(value: &Value, f: &mut impl FnMut(&str)) {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| visit_strings(v, f)),
        Value::Object(map) => map.iter().for_each(|(k, v)| {
            f(k);
            visit_strings(v, f)
        }),
        _ => {}
    }
}

/// The `${Name}` placeholders (letters only) in `s`.
fn placeholder_names(s: &str) -> impl Iterator<Item = &str> {
    s.match_indices("${").filter_map(move |(start, _)| {
        let rest = &s[start + 2..];
        let end = rest.find('}')?;
        let name = &rest[..end];
        (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic())).then_some(name)
    })
}

/// The document with every known placeholder replaced (in keys and string values).
pub fn fill_placeholders(value: &Value, key: &KeyIdentity) -> Value {
    match value {
        Value::String(s) => Value::String(fill(s, key)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| fill_placeholders(v, key)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (fill(k, key), fill_placeholders(v, key)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn fill(s: &str, key: &KeyIdentity) -> String {
    if !s.contains("${") {
        return s.to_string();
    }
    let mut out = s.to_string();
    for name in PLACEHOLDERS {
        if let Some(v) = key.value(name) {
            out = out.replace(&format!("${{{name}}}"), v);
        }
    }
    out
}

/// `sha256:<hex>` of the policy's RFC 8785 canonical JSON (JCS: object keys sorted, no
/// whitespace, ES6 number and string forms): the same policy always has the same hash, however
/// it was written, and an auditor recomputes it with any JCS implementation (docs/key-policies.md).
pub fn hash(policy: &Value) -> String {
    // Serializing a serde_json::Value cannot fail: it holds no non-finite floats or non-string
    // keys, the only inputs JCS refuses.
    let canonical = serde_jcs::to_vec(policy).expect("a JSON value has a JCS form");
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &canonical);
    let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn identity() -> KeyIdentity {
        KeyIdentity::from_arn("arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab").unwrap()
    }

    #[test]
    fn identity_comes_from_the_key_arn() {
        let id = identity();
        assert_eq!(id.partition, "aws");
        assert_eq!(id.account_id, "111122223333");
        assert_eq!(id.region, "eu-west-1");
        assert_eq!(id.key_id, "1234abcd-12ab");
        let china =
            KeyIdentity::from_arn("arn:aws-cn:kms:cn-north-1:111122223333:key/mrk-1").unwrap();
        assert_eq!(china.partition, "aws-cn");
        assert_eq!(china.key_id, "mrk-1");
        assert_eq!(KeyIdentity::from_arn("not-an-arn"), None);
        assert_eq!(
            KeyIdentity::preview("111122223333", "us-gov-west-1", "k").key_arn,
            "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/k"
        );
    }

    #[test]
    fn placeholders_are_filled_in_keys_and_values_and_iam_variables_are_kept() {
        let doc = parse_document(
            r#"{"Statement":[{"Principal":{"AWS":"arn:${Partition}:iam::${AccountId}:root"},
                "Resource":"${KeyArn}","Condition":{"StringEquals":{"aws:username":"${aws:username}",
                "kms:CallerAccount":"${AccountId}","x-${Region}":"${KeyId}"}}}]}"#,
        )
        .unwrap();
        let filled = fill_placeholders(&doc, &identity());
        let st = &filled["Statement"][0];
        assert_eq!(st["Principal"]["AWS"], "arn:aws:iam::111122223333:root");
        assert_eq!(
            st["Resource"],
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab"
        );
        let cond = &st["Condition"]["StringEquals"];
        assert_eq!(cond["aws:username"], "${aws:username}");
        assert_eq!(cond["kms:CallerAccount"], "111122223333");
        assert_eq!(cond["x-eu-west-1"], "1234abcd-12ab");
    }

    #[test]
    fn bad_documents_get_precise_errors() {
        assert!(matches!(
            parse_document("{not json"),
            Err(PolicyDocumentError::NotJson(_))
        ));
        assert_eq!(parse_document("[]"), Err(PolicyDocumentError::NotAnObject));
        assert_eq!(
            parse_document(r#"{"Resource":"${KeyARN}"}"#),
            Err(PolicyDocumentError::UnknownPlaceholder("KeyARN".into()))
        );
        let huge = format!("{{\"Sid\": \"{}\"}}", "x".repeat(MAX_POLICY_BYTES));
        let err = parse_document(&huge).unwrap_err();
        assert_eq!(err.reason(), "PolicyTooLarge");
        assert!(err.to_string().contains("32768"), "{err}");
        assert!(parse_document(r#"{"Resource":"${*}${?}"}"#).is_ok());
    }

    /// RFC 8785 section 3.2.2's example: numbers in their ES6 form, strings with only the
    /// required escapes, keys sorted. The hash is SHA-256 over exactly these bytes.
    #[test]
    fn hash_is_sha256_of_the_rfc8785_form() {
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        let value: Value = serde_json::from_str(input).unwrap();
        let jcs = r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#;
        assert_eq!(
            String::from_utf8(serde_jcs::to_vec(&value).unwrap()).unwrap(),
            jcs
        );
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, jcs.as_bytes());
        assert_eq!(
            hash(&value),
            format!("sha256:{}", hex::encode(digest.as_ref()))
        );
    }

    #[test]
    fn hash_is_independent_of_key_order_and_whitespace_but_not_of_content() {
        let a =
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:*"}]});
        let b: Value = serde_json::from_str(
            r#"{ "Statement" : [ { "Action":"kms:*", "Effect":"Allow" } ], "Version":"2012-10-17" }"#,
        )
        .unwrap();
        assert_eq!(hash(&a), hash(&b));
        assert!(hash(&a).starts_with("sha256:") && hash(&a).len() == 7 + 64);
        let c =
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "kms:*"}]});
        assert_ne!(hash(&a), hash(&c));
    }
}
