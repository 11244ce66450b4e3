//! What every keyfleet kind declares alike: derives, API group and version, the `keyfleet`
//! category, CEL, and the Ready / Reason / Age printer columns (`keyfleet_kind!`).

/// Declares a keyfleet kind's spec struct with what every kind shares: the derives, unset
/// `Option` fields left out when serialized (`skip_serializing_none`), the API group and
/// version, the `keyfleet` category, CEL rules, and the printer columns `Ready`, `Reason` and
/// `Age`. The kind gives its own `kube(...)` arguments (kind, short name, scope, status, doc;
/// kube derives the singular and plural names from the kind) and its own columns: those shown
/// before Ready, between Reason and Age, and after Age.
macro_rules! keyfleet_kind {
    (
        kube($($kube:tt)*),
        columns_before($($before:tt)*),
        columns_between($($between:tt)*),
        columns_after($($after:tt)*),
        $(#[$attr:meta])*
        $vis:vis struct $name:ident $body:tt
    ) => {
        #[serde_with::skip_serializing_none]
        #[derive(
            kube::CustomResource,
            kube::KubeSchema,
            Clone,
            Debug,
            PartialEq,
            serde::Serialize,
            serde::Deserialize,
        )]
        #[kube(group = "kms.keyfleet.dev", version = "v1alpha1", category = "keyfleet", cel, $($kube)*)]
        #[kube($($before)*)]
        #[kube(
            printcolumn(
                name = "Ready",
                type_ = "string",
                json_path = ".status.conditions[?(@.type==\"Ready\")].status"
            ),
            printcolumn(
                name = "Reason",
                type_ = "string",
                json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
            ),
        )]
        #[kube($($between)*)]
        #[kube(printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"))]
        #[kube($($after)*)]
        $(#[$attr])*
        $vis struct $name $body
    };
}
