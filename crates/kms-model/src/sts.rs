//! The one STS call keyfleet makes, GetCallerIdentity (AWS Query protocol, XML answer), so a
//! process pointed at the model's endpoint learns who it calls as.

/// The ARN the model gives a caller: an IAM user named after its access key id.
pub fn caller_arn(account: &str, access_key_id: &str) -> String {
    format!("arn:aws:iam::{account}:user/{access_key_id}")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The answer to an STS request body; `Err` with (status, XML) for anything else.
pub fn answer(body: &[u8], account: &str, access_key_id: &str) -> Result<String, String> {
    let action = form_value(body, "Action");
    if action.as_deref() != Some("GetCallerIdentity") {
        return Err(format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>InvalidAction</Code><Message>the KMS model answers only GetCallerIdentity, not {}</Message></Error><RequestId>kms-model</RequestId></ErrorResponse>",
            escape(action.as_deref().unwrap_or("nothing"))
        ));
    }
    Ok(format!(
        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult><Arn>{}</Arn><UserId>{}</UserId><Account>{}</Account></GetCallerIdentityResult><ResponseMetadata><RequestId>kms-model</RequestId></ResponseMetadata></GetCallerIdentityResponse>",
        escape(&caller_arn(account, access_key_id)),
        escape(access_key_id),
        escape(account)
    ))
}

fn form_value(body: &[u8], name: &str) -> Option<String> {
    std::str::from_utf8(body).ok()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}
