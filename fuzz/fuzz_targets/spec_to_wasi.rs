//! Bytes as a bundle's config.json → oci-spec → `WasiPlan::from_spec` on a real rootfs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fuzz_support::spec::check_json(data));
