//! Acceptance suite (tests live in tests/).
