//! Log lines with levels, kept by the host with the invocation's logs
//! (beside what the function writes to stdout and stderr).
//!
//! Each level is both a function taking a message and a macro taking
//! format arguments; `use wisp_sdk::log::info` imports both:
//!
//! ```no_run
//! use wisp_sdk::log::{self, info};
//!
//! let id = 7;
//! info("starting");
//! info!("created todo {id}");
//! log::warn!("slow upstream: {} ms", 1200);
//! log::error("giving up");
//! ```
//!
//! Outside a Wisp host (`cargo test`), lines go to stderr.

#[cfg(target_arch = "wasm32")]
use crate::bindings::wisp::function::log as sys;
#[cfg(not(target_arch = "wasm32"))]
use crate::native::log as sys;

/// The level of a log line, most verbose first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the function handled.
    Warn,
    /// A failure.
    Error,
}

/// Records `message` at `level`.
///
/// ```no_run
/// wisp_sdk::log::log(wisp_sdk::log::Level::Info, "hello");
/// ```
pub fn log(level: Level, message: &str) {
    use crate::bindings::wisp::function::log::Level as Wit;
    let level = match level {
        Level::Trace => Wit::Trace,
        Level::Debug => Wit::Debug,
        Level::Info => Wit::Info,
        Level::Warn => Wit::Warn,
        Level::Error => Wit::Error,
    };
    sys::log(level, message);
}

/// Records `message` at level trace.
///
/// ```no_run
/// wisp_sdk::log::trace("entering");
/// ```
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Records `message` at level debug.
///
/// ```no_run
/// wisp_sdk::log::debug("cache miss");
/// ```
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Records `message` at level info.
///
/// ```no_run
/// wisp_sdk::log::info("created");
/// ```
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Records `message` at level warn.
///
/// ```no_run
/// wisp_sdk::log::warn("retrying");
/// ```
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Records `message` at level error.
///
/// ```no_run
/// wisp_sdk::log::error("upstream failed");
/// ```
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Records a line at level trace, with `format!` arguments.
///
/// ```no_run
/// wisp_sdk::log::trace!("at step {}", 3);
/// ```
#[doc(inline)]
pub use crate::__log_trace as trace;

/// Records a line at level debug, with `format!` arguments.
///
/// ```no_run
/// wisp_sdk::log::debug!("key {:?}", "todo:1");
/// ```
#[doc(inline)]
pub use crate::__log_debug as debug;

/// Records a line at level info, with `format!` arguments.
///
/// ```no_run
/// let id = 7;
/// wisp_sdk::log::info!("created todo {id}");
/// ```
#[doc(inline)]
pub use crate::__log_info as info;

/// Records a line at level warn, with `format!` arguments.
///
/// ```no_run
/// wisp_sdk::log::warn!("slow: {} ms", 1200);
/// ```
#[doc(inline)]
pub use crate::__log_warn as warn;

/// Records a line at level error, with `format!` arguments.
///
/// ```no_run
/// wisp_sdk::log::error!("failed: {}", "timeout");
/// ```
#[doc(inline)]
pub use crate::__log_error as error;

#[doc(hidden)]
#[macro_export]
macro_rules! __log_trace {
    ($($arg:tt)*) => {
        $crate::log::log($crate::log::Level::Trace, &::std::format!($($arg)*))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_debug {
    ($($arg:tt)*) => {
        $crate::log::log($crate::log::Level::Debug, &::std::format!($($arg)*))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_info {
    ($($arg:tt)*) => {
        $crate::log::log($crate::log::Level::Info, &::std::format!($($arg)*))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_warn {
    ($($arg:tt)*) => {
        $crate::log::log($crate::log::Level::Warn, &::std::format!($($arg)*))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __log_error {
    ($($arg:tt)*) => {
        $crate::log::log($crate::log::Level::Error, &::std::format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    #[test]
    fn functions_and_macros() {
        let n = 3;
        super::info("plain");
        super::info!("formatted {n}");
        super::error!("{}", "x");
        super::trace!("t");
        super::debug!("d");
        super::warn!("w");
    }
}
