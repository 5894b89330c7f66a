//! The CSV checker takes any bytes without panicking, and its findings are coherent.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let check = jumio_batchd::validate::check_csv(data);
    for problem in check.findings.errors.iter().chain(&check.findings.warnings) {
        assert!(problem.row.is_none_or(|row| row >= 1 && row <= check.rows.max(1)));
        assert!(!problem.message.is_empty());
    }
});
