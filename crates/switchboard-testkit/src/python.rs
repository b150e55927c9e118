//! The Python interpreter of the interop tests, which run Python's `websockets` library as a
//! third-party peer.
//!
//! `scripts/test.sh` installs `websockets` 15.0.1 into a virtualenv and names its interpreter
//! in `SWITCHBOARD_PYTHON`; without that variable the tests use `python3` from `PATH`.

use std::process::Command;

/// The version of `websockets` the tests are written against (what `scripts/test.sh`
/// installs).
pub const WEBSOCKETS_VERSION: &str = "15.0.1";

/// The interpreter: `$SWITCHBOARD_PYTHON`, or `python3`.
pub fn python() -> String {
    std::env::var("SWITCHBOARD_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// A command that runs the interpreter.
pub fn command() -> Command {
    Command::new(python())
}

/// Panics, saying how to install it, unless the interpreter can import
/// `websockets.sync.client`.
pub fn require_websockets() {
    let ok = command()
        .args(["-c", "import websockets.sync.client"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "Python `websockets` is missing: run `{} -m pip install 'websockets=={WEBSOCKETS_VERSION}'` \
         (scripts/test.sh does this)",
        python()
    );
}
