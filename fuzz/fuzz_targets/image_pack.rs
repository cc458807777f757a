//! The packer's inputs through `normalize_reference`, `Platform::parse` and `write_archive`,
//! and the archive read back.
#![no_main]

use fuzz_support::pack::ImageInput;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: ImageInput| fuzz_support::pack::check(&input));
