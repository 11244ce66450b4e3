//! The STS calls keyfleet makes, over the model's endpoint (AWS Query protocol, XML answers):
//! GetCallerIdentity, and AssumeRole with an optional ExternalId that a registered role
//! requires. Credentials AssumeRole hands out call as the assumed-role session.

use std::collections::BTreeMap;

use crate::state::State;

/// One STS answer: HTTP status and XML body.
pub struct StsAnswer {
    pub status: u16,
    pub xml: String,
    /// The error code, for the request log.
    pub error: Option<String>,
}

/// The ARN a caller acts as: the assumed-role session its access key belongs to, else an IAM
/// user named after the access key id.
pub fn caller_arn(state: &State, access_key_id: &str) -> String {
    state
        .sessions
        .get(access_key_id)
        .cloned()
        .unwrap_or_else(|| format!("arn:aws:iam::{}:user/{access_key_id}", state.account))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The form parameters of a Query-protocol body.
pub fn form(body: &[u8]) -> BTreeMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn error(status: u16, code: &str, message: &str) -> StsAnswer {
    StsAnswer {
        status,
        xml: format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{}</Code><Message>{}</Message></Error><RequestId>kms-model</RequestId></ErrorResponse>",
            escape(code),
            escape(message)
        ),
        error: Some(code.to_string()),
    }
}

fn random_id(prefix: &str, bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    // A failing system RNG leaves zeros: ids stay unique enough per model for tests.
    let _ = aws_lc_rs::rand::fill(&mut b);
    format!("{prefix}{}", hex::encode_upper(b))
}

/// Answers one STS request.
pub fn answer(
    state: &mut State,
    params: &BTreeMap<String, String>,
    access_key_id: &str,
    now_ms: i64,
) -> StsAnswer {
    match params.get("Action").map(String::as_str) {
        Some("GetCallerIdentity") => {
            let arn = caller_arn(state, access_key_id);
            StsAnswer {
                status: 200,
                xml: format!(
                    "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>kms-model</RequestId></ResponseMetadata></GetCallerIdentityResponse>",
                    escape(&arn),
                    escape(access_key_id),
                    escape(&state.account)
                ),
                error: None,
            }
        }
        Some("AssumeRole") => assume_role(state, params, access_key_id, now_ms),
        other => error(
            400,
            "InvalidAction",
            &format!(
                "the KMS model answers GetCallerIdentity and AssumeRole, not {}",
                other.unwrap_or("nothing")
            ),
        ),
    }
}

fn assume_role(
    state: &mut State,
    params: &BTreeMap<String, String>,
    access_key_id: &str,
    now_ms: i64,
) -> StsAnswer {
    let (Some(role_arn), Some(session)) = (params.get("RoleArn"), params.get("RoleSessionName"))
    else {
        return error(
            400,
            "ValidationError",
            "RoleArn and RoleSessionName are required",
        );
    };
    let role_name = role_arn
        .strip_prefix("arn:aws:iam::")
        .and_then(|r| r.split_once(":role/"))
        .map(|(account, path)| (account, path.rsplit('/').next().unwrap_or(path)));
    let Some((account, role_name)) = role_name else {
        return error(
            400,
            "ValidationError",
            &format!("{role_arn} is not a role ARN"),
        );
    };
    let caller = caller_arn(state, access_key_id);
    if let Some(required) = state.roles.get(role_arn) {
        let given = params.get("ExternalId");
        if required.as_ref().is_some_and(|r| given != Some(r)) {
            return error(
                403,
                "AccessDenied",
                &format!(
                    "User: {caller} is not authorized to perform: sts:AssumeRole on resource: {role_arn}"
                ),
            );
        }
    }
    let duration_s: i64 = params
        .get("DurationSeconds")
        .and_then(|d| d.parse().ok())
        .unwrap_or(3600);
    let expiration = jiff::Timestamp::from_millisecond(now_ms + duration_s * 1000)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let key = random_id("ASIA", 8);
    let arn = format!("arn:aws:sts::{account}:assumed-role/{role_name}/{session}");
    state.sessions.insert(key.clone(), arn.clone());
    StsAnswer {
        status: 200,
        xml: format!(
            "<AssumeRoleResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><AssumeRoleResult><Credentials><AccessKeyId>{}</AccessKeyId><SecretAccessKey>{}</SecretAccessKey><SessionToken>{}</SessionToken><Expiration>{}</Expiration></Credentials><AssumedRoleUser><AssumedRoleId>{}:{}</AssumedRoleId><Arn>{}</Arn></AssumedRoleUser></AssumeRoleResult><ResponseMetadata><RequestId>kms-model</RequestId></ResponseMetadata></AssumeRoleResponse>",
            escape(&key),
            random_id("", 20),
            random_id("", 32),
            escape(&expiration),
            random_id("AROA", 8),
            escape(session),
            escape(&arn)
        ),
        error: None,
    }
}
