//! Tests of material parsing, fingerprints and wrapping with real crypto.
