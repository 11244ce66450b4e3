//! `KeyMaterial::from_secret_value` over every key spec and encoding (the first byte picks them).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyfleet::material::fuzzing::secret_value(data);
});
