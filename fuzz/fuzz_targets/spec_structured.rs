//! A captured spec with fuzzed args, cwd, env, mounts and access annotations →
//! `WasiPlan::from_spec` on a real rootfs.
#![no_main]

use fuzz_support::structured::SpecInput;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: SpecInput| fuzz_support::spec::check(&input.build()));
