//! Counting global allocators (filled in by the test-helpers work of issue 24).
