//! Policy step of the plan: put the rendered policy in place unless it is too large or would
//! lock keyfleet out.

use super::{Action, Blocker, DesiredKey, ObservedKey, Plan};
use crate::policy::{self, DesiredPolicy};

/// The desired policy for this key (placeholders filled in from its identity).
pub fn rendered_policy(policy: &DesiredPolicy, observed: &ObservedKey) -> serde_json::Value {
    policy.render(&observed.identity)
}

pub(super) fn plan_policy(desired: &DesiredKey, observed: &ObservedKey, plan: &mut Plan) {
    let Some(policy) = &desired.policy else {
        return;
    };
    if !observed.policy_read {
        return;
    }
    let rendered = rendered_policy(policy, observed);
    if observed.policy.as_ref() == Some(&rendered) {
        return;
    }
    let text = rendered.to_string();
    let lockout = policy
        .keep_manageable_by
        .as_ref()
        .filter(|_| !desired.bypass_policy_lockout_safety_check)
        .and_then(|caller| policy::lockout::check(&rendered, caller).err());
    if text.len() > policy::MAX_POLICY_BYTES {
        plan.block(Blocker::PolicyTooLarge(text.len()));
    } else if let Some(why) = lockout {
        plan.block(Blocker::PolicyLockout(why));
    } else {
        plan.actions.push(Action::PutKeyPolicy {
            policy: text,
            bypass_lockout_check: desired.bypass_policy_lockout_safety_check,
        });
    }
}
