//! The PEM reader: block splitting, base64 bodies, private key selection.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    keyfleet::material::fuzzing::pem(data);
});
