//! Thread priorities: the agent's own work (parsing, events, shipping,
//! shadow scoring) runs below the champion's traffic, so that when the
//! cores are all busy the traffic runs first and that work waits, then
//! sheds (counted).

/// The nice value of the threads that do the agent's own work.
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's scheduling priority to `BACKGROUND_NICE`
/// (Linux; threads it starts inherit it). Raising it back is not allowed
/// without privileges, so this is done once per thread, at its start.
pub fn lower_thread_priority() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), BACKGROUND_NICE) {
            tracing::warn!("cannot lower the priority of a background thread: {e}");
        }
    }
}
