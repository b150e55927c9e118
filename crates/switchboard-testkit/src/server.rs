//! Server test helpers (filled in by the server split of issue 24).
