//! Cross-crate integration tests (in `tests/tests/`) and the helpers they share.
