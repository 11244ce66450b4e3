//! The DER reader: element splitting and key container classification.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyfleet::material::fuzzing::der(data);
});
